"""A real OpenAI-compatible server for tests: `transformers serve` on loopback, the tiny model
preloaded (its FORCE_MODEL argument), started as a subprocess that a test can kill and restart.

    server = Served(tiny_model_dir).start()   # waits for GET /health
    server.base_url                           # http://127.0.0.1:<port>/v1
    server.kill(); server.start()             # the same port again
    server.stop()

Requests must name the model as the server was started with it (`server.model`: the folder's
path), or it answers 400. The server's output goes to `log_path` (tests grep it for secrets).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

SERVE = Path(sys.executable).with_name("transformers")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    def __init__(self, model_dir: Path, log_path: Optional[Path] = None, port: Optional[int] = None,
                 env: Optional[dict] = None):
        self.model = str(model_dir)
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else Path(model_dir).parent / f"serve-{self.port}.log"
        self.env = env or {}
        self.proc: Optional[subprocess.Popen] = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 120) -> "Served":
        """Start the server and wait until /health answers (the model is loaded before it listens)."""
        env = os.environ | {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                            "PYTHONUNBUFFERED": "1"} | self.env
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(SERVE), "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
                 "--dtype", "float32", "--log-level", "info"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}; see {self.log_path}:\n"
                                   + self.log_path.read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer /health in {timeout:.0f} s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL the server (its whole process group): a crash, not a shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
