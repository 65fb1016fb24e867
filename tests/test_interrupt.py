"""Ctrl-C: the whole terminal process group gets SIGINT. The job says once that it was interrupted
and how to resume (exit 130); no process prints a stack trace; no worker or stage process is left."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from proc_util import alive

from sublim.cache import Store

SUBLIM = str(Path(sys.executable).with_name("sublim"))


def test_ctrl_c_ends_every_process_with_one_line(tmp_path, tiny_model_dir):
    """A sweep on two pool workers, each stage in its own process: the most processes a job has
    (a single cell goes through the same main and stage process)."""
    args = [SUBLIM, "--multirun", "hydra/launcher=parallel", "hydra.launcher.max_parallel=2", "seed=0,1",
            "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", "logger=none",
            f"paths.artifacts={tmp_path / 'a'}", "domain.n_prompts=4000", "isolate=always",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    # Ctrl-C as in a terminal: SIGINT at its default, whatever the test runner inherited (a shell's
    # background job starts with SIGINT ignored, and sublim, like its workers, then keeps ignoring it)
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"}, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    store = Store(tmp_path / "a")
    deadline = time.time() + 300
    while not (starts := [e for e in store.events() if e["stage"] == "sample" and e["event"] == "start"]):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted: finished stages are in the artifact store" in err and "run the same command again" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    deadline = time.time() + 15
    while any(alive(e["pid"]) for e in starts):  # the stage's process (and its pool worker) are gone
        assert time.time() < deadline, "a stage process outlived Ctrl-C"
        time.sleep(0.2)
