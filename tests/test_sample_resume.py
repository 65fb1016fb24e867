"""A resumed sample stage never splices two random draws: the transformers sampler seeds each
batch, so a resume with another sampler.batch_size starts over (and says so); with the same size it
keeps the whole batches already written."""
from __future__ import annotations

import json
import logging

from config_util import plan_steps
from sublim.jsonl import read_jsonl
from sublim.spec import Runtime
from sublim.stages import sample


def texts(work):
    return [r["completion"] for r in read_jsonl(work / "samples.jsonl")]


def test_resume_with_another_batch_size_restarts(tmp_path, tiny_model_dir, caplog):
    step = plan_steps(tmp_path, tiny_model_dir, "domain.n_prompts=12", "sampler.max_new_tokens=8")["sample"]

    def run(work, batch_size):
        work.mkdir(exist_ok=True)
        sample.run(step.spec, work, step.inputs, Runtime(batch_size=batch_size))
        return texts(work)

    by4, by8 = run(tmp_path / "by4", 4), run(tmp_path / "by8", 8)
    assert len(by4) == len(by8) == 12 and by4 != by8  # the batch size picks the draw

    killed = tmp_path / "killed"  # one batch of 4 written, then the job died
    killed.mkdir()
    rows = list(read_jsonl(tmp_path / "by4" / "samples.jsonl"))[:5]  # and half a line of the next
    (killed / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]) + json.dumps(rows[4])[:9])
    (killed / "draw.json").write_text(json.dumps({"batch_size": 4}))
    resumed_same = tmp_path / "same"
    resumed_same.mkdir()
    for f in ("samples.jsonl", "draw.json"):
        (resumed_same / f).write_bytes((killed / f).read_bytes())
    with caplog.at_level(logging.INFO, logger="sublim.stages.sample"):
        assert run(resumed_same, 4) == by4
        assert "resuming at prompt 4" in caplog.text
        caplog.clear()
        assert run(killed, 8) == by8  # not 4 rows of one draw and 8 of another
        assert "drawn with sampler.batch_size=4, this run uses 8" in caplog.text
    assert json.loads((killed / "draw.json").read_text()) == {"batch_size": 8}
    assert [r["i"] for r in read_jsonl(killed / "samples.jsonl")] == list(range(12))
