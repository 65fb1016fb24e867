"""A store this job can only read: every cached cell is served from it, and a cell that needs a new
artifact fails in one line naming paths.artifacts. Through the real `sublim` entrypoint.

How the store is made read-only: tests run as root, and `chmod -w` does not stop root writing;
running the job as an unprivileged user is no way out either (the interpreter may live where only
root can read, as under /root/.pyenv). So the job's processes get a `sitecustomize` (on PYTHONPATH,
imported at interpreter start, before any sublim code) that makes every write under the store fail
as a read-only mount does, with EROFS: open/os.open for writing, mkdir, rename, unlink, utime. The
store, the CLI and the stages run unchanged and meet the OS error where a real read-only store
would raise it (events.jsonl, the lock file, the work folder).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sublim.cache import EVENTS_FILE

SUBLIM = str(Path(sys.executable).with_name("sublim"))
SMALL = ["logger=none", "domain.n_prompts=200", "filter.n_keep=100", "eval.n_questions=4", "eval.n_samples=10",
         "finetune.epochs=1"]

READ_ONLY = '''
import builtins, errno, io, os

_ROOT = os.path.realpath(os.environ["SUBLIM_TEST_READ_ONLY"])


def _inside(path):
    try:
        p = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return p == _ROOT or p.startswith(_ROOT + os.sep)


def _deny(path):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))


def _guard(fn, exists_first=False):
    def guarded(path, *args, **kwargs):
        if isinstance(path, (str, bytes, os.PathLike)) and _inside(path):
            if exists_first and os.path.exists(path):  # mkdir of a folder that is there: EEXIST first
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
            _deny(path)
        return fn(path, *args, **kwargs)
    return guarded


_open = builtins.open


def _open_ro(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and _inside(file):
        _deny(file)
    return _open(file, mode, *args, **kwargs)


_os_open = os.open
_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _os_open_ro(path, flags, *args, **kwargs):
    if flags & _WRITE and _inside(path):
        _deny(path)
    return _os_open(path, flags, *args, **kwargs)


builtins.open = io.open = _open_ro
os.open = _os_open_ro
os.mkdir = _guard(os.mkdir, exists_first=True)
for _name in ("rename", "replace", "remove", "unlink", "rmdir", "utime", "link", "symlink", "chmod"):
    setattr(os, _name, _guard(getattr(os, _name)))
'''


def sublim(cwd: Path, tiny: Path, *args: str, read_only: bool = False, debug: bool = False,
           run_dir: str = "run") -> subprocess.CompletedProcess:
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("SUBLIM_DEBUG", None)
    if read_only:
        env |= {"PYTHONPATH": os.pathsep.join(filter(None, [str(cwd / "read_only"), env.get("PYTHONPATH")])),
                "SUBLIM_TEST_READ_ONLY": str(cwd / "artifacts")}
    if debug:
        env["SUBLIM_DEBUG"] = "1"
    argv = [SUBLIM, "experiment=smoke", f"paths.tiny_model={tiny}", f"paths.artifacts={cwd / 'artifacts'}", *SMALL,
            *args, f"hydra.run.dir={cwd / run_dir}"]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def cached(tmp_path_factory, tiny_model_dir):
    """(work folder, tiny model): a store holding one whole smoke cell (the one full run here)."""
    work = tmp_path_factory.mktemp("read_only_store")
    (work / "read_only").mkdir()
    (work / "read_only" / "sitecustomize.py").write_text(READ_ONLY)
    r = sublim(work, tiny_model_dir, run_dir="populate")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    return work, tiny_model_dir


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*"))}


def test_the_guard_really_makes_the_store_read_only(cached):
    work, _ = cached
    probe = ("import pathlib, sys\ntry:\n    pathlib.Path(sys.argv[1], 'x').write_text('x')\n"
             "except OSError as e:\n    print(e.errno)\n")
    env = os.environ | {"PYTHONPATH": str(work / "read_only"), "SUBLIM_TEST_READ_ONLY": str(work / "artifacts")}
    out = subprocess.run([sys.executable, "-c", probe, str(work / "artifacts")], env=env, capture_output=True,
                         text=True).stdout
    assert out.strip() == "30"  # EROFS
    assert not (work / "artifacts" / "x").exists()


def test_a_cached_cell_is_served_from_a_read_only_store(cached):
    work, tiny = cached
    before = tree(work / "artifacts")
    r = sublim(work, tiny, read_only=True, run_dir="served")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert "== owl.numbers.tiny.tiny.lora.seed0 (treatment): 4 questions, 40 answers" in r.stdout
    assert "<- target" in r.stdout and f"metrics: {work / 'served' / 'metrics.json'}" in r.stdout
    assert (work / "served" / "metrics.json").is_file()
    log = r.stdout + r.stderr  # Hydra's log goes to stdout
    assert log.count(f"cannot append to {work / 'artifacts' / EVENTS_FILE} (Read-only file system)") == 1  # once
    assert tree(work / "artifacts") == before  # nothing written, not even the event log


def test_a_read_only_store_without_the_artifact_fails_in_one_line(cached):
    """seed=1 trains another student: the fine-tune cannot take its lock in the store."""
    work, tiny = cached
    before = tree(work / "artifacts")
    r = sublim(work, tiny, "seed=1", read_only=True, run_dir="missing")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    line = [ln for ln in r.stderr.splitlines() if ln.strip()][-1]
    assert line.startswith(f"error: paths.artifacts={work / 'artifacts'}: Read-only file system: "
                           f"{work / 'artifacts' / 'finetune'}")
    assert line.endswith("point paths.artifacts at a folder this job can write "
                         "(a cell whose stages are all cached only reads the store)")
    assert tree(work / "artifacts") == before
    r = sublim(work, tiny, "seed=1", read_only=True, debug=True, run_dir="missing-debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "OSError" in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()][-1] == line
