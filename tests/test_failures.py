"""Expected failures print one line (what, which key or path, the fix) and exit non-zero, through the
real `sublim` entrypoint; SUBLIM_DEBUG=1 adds the stack; a sweep records the line in outcome.json.
The store's event log records failed and interrupted stages. (A read-only store: test_readonly_store.py.)"""
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sublim.cache import Store
from sublim.failures import explain
from sublim.errors import ModelLoadError
from sublim.fingerprint import is_local_path, model_fingerprint
from sublim.pipeline import model_load_error

SUBLIM = str(Path(sys.executable).with_name("sublim"))
FAST = ["logger=none", "domain.n_prompts=20"]


def sublim(cwd: Path, *args: str, debug: bool = False, run_dir: str = "run", artifacts: bool = True,
           multirun: bool = False) -> subprocess.CompletedProcess:
    argv = [SUBLIM, *(["--multirun"] if multirun else []), *args,
            *([f"paths.artifacts={cwd / 'artifacts'}"] if artifacts else []),
            f"hydra.{'sweep' if multirun else 'run'}.dir={cwd / run_dir}"]
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("SUBLIM_DEBUG", None)
    if debug:
        env["SUBLIM_DEBUG"] = "1"
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def last_line(text: str) -> str:
    return [ln for ln in text.splitlines() if ln.strip()][-1]


def one_line_failure(r: subprocess.CompletedProcess) -> str:
    """The failure's last stderr line, after checking it failed without a stack."""
    assert r.returncode != 0, r.stdout[-2000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return last_line(r.stderr)


def test_smoke_before_the_tiny_model_is_built_says_how_to_build_it(tmp_path):
    """The default tiny-model path has the shape of a hub id (org/name): it is a path in the store."""
    r = sublim(tmp_path, "experiment=smoke", artifacts=False)
    assert one_line_failure(r) == ("config error: teacher.path=artifacts/tiny-model does not exist: "
                                   "build it with sublim-tiny-model artifacts/tiny-model")


def test_an_empty_folder_as_student_path_names_the_key(tmp_path, tiny_model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = ("experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"student.path={empty}")
    line = one_line_failure(sublim(tmp_path, *args))
    assert line == (f"config error: student.path={empty} is an empty folder, not a saved model: point student.path "
                    "at a saved model folder or a hub id (org/name)")
    assert not (tmp_path / "artifacts").exists()  # planning refused it: nothing ran
    r = sublim(tmp_path, *args, debug=True, run_dir="debug")
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert last_line(r.stderr) == line


def test_a_filter_shortfall_prints_its_message_without_a_stack(tmp_path, tiny_model_dir):
    """One token per completion: every one is cut off (truncated). Each stage in its own process
    (isolate=always): the stage process reports its error to the job, which prints it."""
    r = sublim(tmp_path, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", "sampler.max_new_tokens=1",
               "isolate=always", *FAST)
    line = one_line_failure(r)
    assert "sampler.max_new_tokens" in line  # the message's last line: the fix
    err = r.stderr
    assert "error: FilterError: only 0 of 20 teacher completions passed the filter" in err
    assert "Top reject reasons: truncated (20)" in err and "[truncated]" in err  # whole, with its examples
    failed = [e for e in Store(tmp_path / "artifacts").events() if e["event"] == "failed"]
    assert [e["stage"] for e in failed] == ["filter"]
    assert failed[0]["error"].startswith("FilterError: only 0 of 20") and "\n" not in failed[0]["error"]


def test_a_hub_model_that_cannot_be_fetched_names_the_key(tmp_path, tiny_model_dir):
    """A pinned commit plans without the hub; loading it offline, not in the HF cache, fails."""
    r = sublim(tmp_path, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", "teacher.path=no-org/no-model",
               f"teacher.revision={'a' * 40}", *FAST)
    line = one_line_failure(r)
    assert line.startswith("error: teacher.path=no-org/no-model: cannot load the tokenizer (")
    assert "huggingface-cli download no-org/no-model --revision " + "a" * 40 in line


def test_a_sweep_records_each_failure_in_one_line(tmp_path, tiny_model_dir):
    empty, bare = tmp_path / "empty", tmp_path / "bare"
    empty.mkdir()
    bare.mkdir()
    (bare / "weights.bin").write_text("x")
    r = sublim(tmp_path, "experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"student.path={empty},{bare}",
               multirun=True, run_dir="sweep")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "2 cell(s) failed" in r.stderr
    for job, folder, what in (("0", empty, "an empty folder"), ("1", bare, "a folder without config.json")):
        o = json.loads((tmp_path / "sweep" / job / "outcome.json").read_text())
        assert o["status"] == "failed" and o["error"] == (
            f"ConfigError: student.path={folder} is {what}, not a saved model: point student.path at a saved "
            "model folder or a hub id (org/name)")
        assert "Traceback" in o["traceback"] and "ConfigError" in o["traceback"]
        summary = [ln for ln in r.stderr.splitlines() if ln.startswith(f"  #{job} ")]
        assert len(summary) == 1 and f"student.path={folder}" in summary[0] and summary[0].endswith(f": {o['error']}")


# -- in-process ---------------------------------------------------------------------------------------
def test_hub_ids_and_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    store = tmp_path / "store"
    assert not is_local_path("Qwen/Qwen2.5-7B-Instruct", store)
    for path in ("./a/b", "../a", "/a/b", "~/model", "a/b/c", "models/x"):
        assert is_local_path(path, store), path
    assert not is_local_path("store/tiny-model") and is_local_path("store/tiny-model", store)
    assert is_local_path("artifacts/tiny-model", "artifacts")  # the defaults, before anything exists
    with pytest.raises(FileNotFoundError):
        model_fingerprint("artifacts/tiny-model", store_root=tmp_path / "artifacts")
    assert model_fingerprint("org/name", "b" * 40, store_root=store) == f"hub:org/name@{'b' * 40}"


def test_a_folder_without_tokenizer_files_names_the_key(tmp_path, tiny_model_dir):
    """The loaders' own error names no path: the failing loader's frame does, and the job the key."""
    from sublim.models import load_tokenizer

    bare = tmp_path / "bare"
    shutil.copytree(tiny_model_dir, bare, ignore=shutil.ignore_patterns("tokenizer*", "*.jinja"))
    with pytest.raises((OSError, ValueError)) as raised:
        load_tokenizer(str(bare))
    e = model_load_error(raised.value)
    assert isinstance(e, ModelLoadError) and (e.path, e.what) == (str(bare), "tokenizer")
    dcfg = OmegaConf.create({"paths": {"artifacts": str(tmp_path / "a")}, "teacher": {"path": str(tiny_model_dir)},
                             "student": {"path": str(bare)}})
    f = explain(e, dcfg)
    assert f.line == (f"ModelLoadError: student.path={bare}: cannot load the tokenizer (no tokenizer files in it "
                      "(tokenizer.json, tokenizer_config.json)): point student.path at a folder saved with "
                      "save_pretrained (config.json, the weights and the tokenizer files)")
    assert model_load_error(ValueError("not from a loader")) is None


def test_store_errors_name_paths_artifacts_and_bugs_stay_bugs(tmp_path):
    dcfg = OmegaConf.create({"paths": {"artifacts": str(tmp_path / "a")}})
    denied = PermissionError(13, "Permission denied", str(tmp_path / "a" / "sample" / ".locks"))
    assert explain(denied, dcfg).text == (
        f"error: paths.artifacts={tmp_path / 'a'}: Permission denied: {tmp_path / 'a' / 'sample' / '.locks'}: point "
        "paths.artifacts at a folder this job can write (a cell whose stages are all cached only reads the store)")
    full = OSError(28, "No space left on device", str(tmp_path / "a" / "x"))
    assert "free space there" in explain(full, dcfg).line
    assert explain(PermissionError(13, "Permission denied", "/elsewhere"), dcfg) is None
    assert explain(RuntimeError("a bug"), dcfg) is None and explain(KeyError("x"), dcfg) is None


def test_the_event_log_records_failed_and_interrupted_stages(tmp_path):
    store = Store(tmp_path)

    def fails(work):
        raise ValueError("bad value\nsecond line")

    def interrupted(work):
        raise KeyboardInterrupt

    with pytest.raises(ValueError):
        store.get_or_compute("st", "k1", {}, fails)
    with pytest.raises(KeyboardInterrupt):
        store.get_or_compute("st", "k2", {}, interrupted)
    rows = [(e["key"], e["event"], e.get("error")) for e in store.events()]
    assert rows == [("k1", "start", None), ("k1", "failed", "ValueError: bad value"),
                    ("k2", "start", None), ("k2", "interrupted", None)]
    assert not store.exists("st", "k1") and not store._lock_path("st", "k1").exists()


def test_an_event_log_that_cannot_be_written_fails_no_job(tmp_path, monkeypatch, caplog):
    """events.jsonl unwritable (read-only store, disk full): one warning, the stage still runs."""
    import sublim.cache as cache

    def denied(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache, "open", denied, raising=False)  # Store.event's open, nothing else
    store = Store(tmp_path)
    with caplog.at_level(logging.WARNING, logger="sublim.cache"):
        path, computed = store.get_or_compute("st", "k", {}, lambda work: (work / "out").write_text("x"))
        assert store.get_or_compute("st", "k", {}, lambda work: None) == (path, False)
    assert computed and (path / "out").read_text() == "x"
    warnings = [r for r in caplog.records if "events.jsonl" in r.getMessage()]
    assert len(warnings) == 1 and "Permission denied" in warnings[0].getMessage()
