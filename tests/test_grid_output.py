"""What a grid prints while it runs, through the real entrypoint: one line per cell event through a
pipe (no carriage return, nothing of the workers' own output), one status redrawn in place on a
pseudo-terminal, the report's summary table at the end, each cell's whole log in its own folder,
and W&B runs tagged with their grid and their swept values (read back from the offline run files).
The piped grid (four cells, ~25 s) is `slow`; the same through-a-pipe checks run on the demo's grid in
test_demo.py. The pseudo-terminal runs take ~12-15 s each.
"""
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from wandb_records import run_record

SUBLIM = str(Path(sys.executable).with_name("sublim"))
SMALL = ["experiment=smoke", "domain.n_prompts=60", "filter.n_keep=40", "finetune.epochs=1", "eval.n_samples=4"]


def grid_args(work: Path, model: Path, *overrides: str, logger: str = "none") -> list[str]:
    return [SUBLIM, "--multirun", *SMALL, f"paths.tiny_model={model}", f"logger={logger}",
            f"paths.artifacts={work / 'a'}", f"hydra.sweep.dir={work / 'sweep'}", *overrides]


def env(**extra: str) -> dict:
    e = os.environ | {"OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"} | extra
    for k in ("SUBLIM_LIVE", "SUBLIM_VERBOSE", "TQDM_DISABLE"):
        if k not in extra:
            e.pop(k, None)
    return e


@pytest.fixture(scope="module")
def piped(tmp_path_factory, tiny_model_dir):
    """Four cells on two workers (two fail), stdout and stderr into one file, as CI or nohup see it."""
    work = tmp_path_factory.mktemp("piped")
    args = grid_args(work, tiny_model_dir, "hydra/launcher=parallel", "hydra.launcher.max_parallel=2", "seed=0,1",
                     "filter.min_keep=1,100000", logger="wandb")
    with open(work / "out.log", "wb") as f:
        r = subprocess.run(args, cwd=work, stdout=f, stderr=subprocess.STDOUT, env=env(), timeout=900)
    return work, r.returncode, (work / "out.log").read_bytes()


@pytest.mark.slow
def test_a_piped_grid_prints_one_line_per_cell_event_and_ends_with_the_summary(piped):
    work, rc, raw = piped
    text = raw.decode()
    lines = text.splitlines()
    assert rc == 1, text[-3000:]  # two cells failed: the grid says so in its exit code
    assert b"\r" not in raw and b"\x1b" not in raw
    assert len(lines) < 40, text
    finished = [ln for ln in lines if re.search(r" #\d+ finished: ", ln)]
    assert len(finished) == 2 and all(re.search(r"owl \d+\.\d% \[\d+\.\d%, \d+\.\d%\]", ln) for ln in finished)
    assert all("filter.min_keep=1" in ln and "seed=" in ln and "paths." not in ln for ln in finished)  # the axes
    failed = [ln for ln in lines if re.search(r" #\d+ failed: ", ln)]
    assert len(failed) == 2 and all("FilterError" in ln and "/cli.log)" in ln for ln in failed)
    # the workers' own output (plans, stage log lines, warnings, progress) is in their logs, not here
    assert "plan for" not in text and "MISS" not in text and "sublim.progress" not in text
    assert lines[-1] == f"full report: sublim-report {work / 'sweep'}"
    assert any(ln.startswith("summary (target rate by condition") for ln in lines[-6:])
    assert re.match(r"owl +treatment +2 +", lines[-2])
    for job in "0123":
        log = (work / "sweep" / job / "cli.log").read_text()
        assert "plan for " in log and "\r" not in log
    assert "fine-tuning: " in (work / "sweep" / "0" / "cli.log").read_text()  # progress, as plain lines
    assert "FilterError" in (work / "sweep" / "1" / "cli.log").read_text()


@pytest.mark.slow
def test_each_run_is_tagged_with_its_grid_and_carries_its_swept_values(piped):
    work, _, _ = piped
    seen = {}
    for job in ("0", "2"):  # the cells that finished (filter.min_keep=1)
        (run_dir,) = (work / "sweep" / job / "wandb").glob("offline-run-*")
        rec = run_record(run_dir)
        assert rec["tags"] == ["sweep"]  # the grid's folder, relative to where it was started
        assert rec["config"]["grid"]["dir"] == str(work / "sweep")
        seen[job] = rec["config"]["swept"]
    assert seen == {"0": {"seed": 0, "filter.min_keep": 1}, "2": {"seed": 1, "filter.min_keep": 1}}


@pytest.mark.slow
def test_sublim_status_on_the_finished_grid(piped):
    work, _, _ = piped
    r = subprocess.run([str(Path(sys.executable).with_name("sublim-status")), str(work / "sweep")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith(
        f"sweep {work / 'sweep'}: 2 done, 0 running, 2 failed, 0 dead, 0 not started of 4 cells")
    assert sum("FilterError" in ln and "(log: " in ln for ln in r.stdout.splitlines()) == 2


def run_on_a_terminal(args: list[str], cwd: Path, timeout: float = 600) -> tuple[int, bytes]:
    """`args` with stdin, stdout and stderr on a pseudo-terminal (120 columns); what it wrote there."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(args, cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=env(TERM="xterm"),
                            close_fds=True)
    os.close(slave)
    out, deadline = b"", time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed: the process has ended
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=30), out


def test_on_a_terminal_one_status_is_redrawn_in_place_and_ends_with_the_summary(tmp_path, tiny_model_dir):
    """The default launcher (jobs in the sweep's own process): its jobs' output must not reach the
    terminal either, while the status thread keeps drawing."""
    rc, raw = run_on_a_terminal(grid_args(tmp_path, tiny_model_dir, "seed=0,1"), tmp_path)
    text = raw.decode(errors="replace")
    assert rc == 0, text[-3000:]
    assert text.count("\x1b[") >= 2 and re.search(r"\x1b\[\dF\x1b\[J", text)  # moved up and cleared: redrawn
    assert re.search(r"#0 seed=0: \w+", text)  # a running cell with its stage
    assert text.count("#0 finished: seed=0  owl ") == 1 and text.count("#1 finished: seed=1  owl ") == 1
    assert "plan for" not in text and "MISS" not in text and "Map:" not in text
    tail = [ln for ln in text.replace("\r", "").splitlines() if ln.strip()]
    assert tail[-1] == f"full report: sublim-report {tmp_path / 'sweep'}"
    assert any(ln.startswith("summary (target rate by condition") for ln in tail[-5:])
    assert (tmp_path / "sweep" / "0" / "cli.log").read_text().count("plan for ") == 1


@pytest.mark.slow
def test_stage_lines_only_with_the_verbose_switch_and_sublim_live_0_is_the_old_output(tmp_path, tiny_model_dir):
    r = subprocess.run(grid_args(tmp_path, tiny_model_dir, "seed=0"), cwd=tmp_path, capture_output=True, text=True,
                       env=env(SUBLIM_VERBOSE="1"), timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"#0 stage (sample|finetune|eval) \(", r.stdout), r.stdout
    r = subprocess.run(grid_args(tmp_path, tiny_model_dir, "seed=0", "hydra.sweep.dir=" + str(tmp_path / "old")),
                       cwd=tmp_path, capture_output=True, text=True, env=env(SUBLIM_LIVE="0"), timeout=600)
    assert r.returncode == 0 and "plan for" in r.stdout and " finished: " not in r.stdout


def test_a_single_run_on_a_terminal_keeps_its_progress_bars(tmp_path, tiny_model_dir):
    args = [SUBLIM, *SMALL, f"paths.tiny_model={tiny_model_dir}", "logger=none", f"paths.artifacts={tmp_path / 'a'}",
            f"hydra.run.dir={tmp_path / 'run'}"]
    rc, raw = run_on_a_terminal(args, tmp_path)
    text = raw.decode(errors="replace")
    assert rc == 0, text[-3000:]
    assert "plan for " in text and re.search(r"teacher sampling: +\d+%\|", text)  # tqdm's bar, drawn in place
    assert " finished: " not in text  # no grid status for one cell
