"""A completion cut off at the token budget never trains a student: the samplers record it and the
filter rejects it as `truncated`, before the format rule (which would keep a cut-off number list)."""
from __future__ import annotations

import json

import pytest

from config_util import plan_cell, typed
from sublim.cache import Store
from sublim.pipeline import execute
from sublim.stages.filter import FilterError, filter_samples


def test_truncated_rows_are_rejected_and_counted(tmp_path):
    rows = [{"i": 0, "prompt": "p", "completion": "1, 2, 3", "truncated": True},
            {"i": 1, "prompt": "p", "completion": "4, 5, 6", "truncated": False},
            {"i": 2, "prompt": "p", "completion": "7, 8, 9"}]  # written before samplers recorded it
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    filter_samples(tmp_path, tmp_path / "samples.jsonl", [], None, 1, 0)
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["rejected"] == {"truncated": 1} and stats["n_kept"] == 2


def test_a_one_token_budget_passes_nothing(tmp_path, tiny_model_dir):
    cfg = typed("experiment=smoke", f"paths.tiny_model={tiny_model_dir}", f"paths.artifacts={tmp_path / 'a'}",
                "sampler.max_new_tokens=1", "domain.n_prompts=16", "stages=[sample,filter]")
    with pytest.raises(FilterError, match=r"only 0 of 16 .* Top reject reasons: truncated \(16\)"):
        execute(plan_cell(cfg), Store(tmp_path / "a"))
