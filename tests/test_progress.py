"""Progress through files (sublim.progress) and a grid job's output into its own log (sublim.joblog):
real files, a real store, a real child process."""
import json
import logging
import subprocess
import sys
import textwrap

from sublim import progress
from sublim.cache import Store


def test_a_count_inside_a_stage_is_recorded_beside_its_lock_and_removed_at_the_end(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    monkeypatch.setattr(progress, "_counters", {})  # counts other tests left are not this one's
    store = Store(tmp_path / "store")
    seen = []

    def compute(work):
        bar = progress.bar(total=10, desc="sampling", unit="prompt")
        for _ in range(4):
            bar.update(1)
        seen.append(progress.read(tmp_path / "store" / "sample" / ".locks" / "k1.progress"))
        bar.close()
        (work / "out.txt").write_text("x")

    store.get_or_compute("sample", "k1", {}, compute)
    row = seen[0]
    assert row["stage"] == "sample" and row["key"] == "k1" and row["done"] == 4 and row["total"] == 10
    assert row["unit"] == "prompt" and row["rate"] > 0 and isinstance(row["pid"], int)
    assert progress.describe(row).startswith("sampling 4/10 prompt, ")
    assert not list((tmp_path / "store" / "sample" / ".locks").glob("*.progress"))  # gone with the lock


def test_outside_a_stage_nothing_is_written_and_iteration_counts(tmp_path):
    assert [x for x in progress.bar(range(3), desc="x")] == [0, 1, 2]
    assert not list(tmp_path.iterdir())


def test_off_a_terminal_the_count_is_plain_log_lines(caplog, monkeypatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="sublim.progress"):
        with progress.bar(total=3, desc="scoring", unit="batch", draw=False) as bar:
            bar.update(2)
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3 and lines[-1].startswith("scoring: 3/3 batch in ") and all("\r" not in ln for ln in lines)


def test_a_trainer_reports_its_steps_until_the_last(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    monkeypatch.setattr(progress, "_counters", {})  # counts other tests left are not this one's
    path = tmp_path / "k.progress"
    rows = []
    with progress.stage(path, "finetune", "k"):
        for step in range(1, 6):
            progress.report(step, 5, "step", "fine-tuning")
            rows.append(progress.read(path))
    assert rows[0] is None and rows[1]["done"] == 2 and rows[-1]["done"] == 5 and rows[-1]["total"] == 5
    assert progress._counters == {} and not path.exists()


def test_a_grid_jobs_output_goes_to_its_log_and_nowhere_else(tmp_path):
    """Prints, logging, warnings and a child process's output, at the file-descriptor level; the
    process's own streams come back afterwards."""
    script = textwrap.dedent(f"""
        import logging, subprocess, sys, warnings
        from sublim.joblog import capture
        logging.basicConfig(level=logging.INFO, stream=sys.stderr)
        print("before")
        with capture({str(tmp_path)!r}, "cli.log"):
            print("a print")
            logging.getLogger("sublim.x").info("a log line")
            warnings.warn("a library warning")
            subprocess.run([sys.executable, "-c", "import os; os.write(1, b'child says hi\\\\n')"])
            import os
            assert os.environ["TQDM_DISABLE"] == "1"
        print("after")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["before", "after"] and r.stderr == ""
    log = (tmp_path / "cli.log").read_text()
    for text in ("a print", "a log line", "a library warning", "child says hi"):
        assert text in log, log
    assert json.dumps(log)  # plain text


def test_a_count_a_stage_leaves_open_is_closed_when_the_stage_ends(tmp_path, monkeypatch):
    """A job that ends before its last reported step (a fine-tuning job whose events stop short)
    leaves no counter behind for the next stage of the process."""
    monkeypatch.setattr(progress, "EVERY_S", 0.0)
    monkeypatch.setattr(progress, "_counters", {})  # counts other tests left are not this one's
    with progress.stage(tmp_path / "k.progress", "finetune_openai", "k"):
        progress.report(1, 10, "step", "OpenAI fine-tuning")
        progress.report(3, 10, "step", "OpenAI fine-tuning")
    assert progress._counters == {} and not (tmp_path / "k.progress").exists()
