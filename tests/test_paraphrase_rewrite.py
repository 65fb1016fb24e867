"""The two rewording defences: `paraphrase` (prompts reworded before the teacher answers) and
`rewrite` (kept completions rewritten by a model, then filtered again). The rule-based numbers
rewording keeps every prompt's request and changes its words; a model paraphrase that loses a number
falls back to the original, counted; the rewrite drops what breaks the rules, counted; cells without
either keep their keys; bad settings fail naming the key."""
from __future__ import annotations

import dataclasses
import json

import pytest

from config_util import plan_cell, plan_steps, typed
from sublim import paraphrase as reword
from sublim.backends.base import SamplingParams
from sublim.config import NumbersDomainConfig
from sublim.domains import get_domain
from sublim.domains.numbers import make_prompts
from sublim.errors import ConfigError, StageError
from sublim.filters import first_reject
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.spec import ModelRef, Runtime, to_dict
from sublim.stages import paraphrase as paraphrase_stage
from sublim.stages import rewrite as rewrite_stage
from sublim.stages import sample as sample_stage
from sublim.stages import spec_from_dict

NUMBERS = get_domain("numbers")
DOMAIN = NUMBERS.spec(NumbersDomainConfig(n_prompts=40, samples_per_prompt=2))


def test_template_rewording_keeps_each_request_and_changes_its_words():
    prompts = make_prompts(300, 0)
    out = reword.reword_numbers(prompts, 0, 10, 3)
    assert len(out) == len(prompts)
    for old, new in zip(prompts, out):
        assert new != old
        assert reword.seeds_of(new) == reword.seeds_of(old)  # the same seed numbers, in order
        assert reword.format_of(new) == reword.format_of(old)  # the same output format
        assert sorted(reword.numbers_in(new)) == sorted(reword.numbers_in(old))  # count and digits too
        assert reword.lost("numbers", old, new, 10) is None
    # the wording really moves: most prompts get another intro
    assert sum(new.split(":")[0] != old.split(":")[0] for old, new in zip(prompts, out)) > len(prompts) // 2
    assert reword.reword_numbers(prompts, 0, 10, 3) == out  # seeded
    assert reword.reword_numbers(prompts, 1, 10, 3) != out


@pytest.mark.parametrize("paraphrase, reason", [
    ("Continue 182, 818, 725 with at most 10 numbers of up to 3 digits, comma separated.", None),
    ("Continue 182, 725 with at most 10 numbers of up to 3 digits.", "seed_numbers"),
    ("Continue 818, 182, 725 with at most 10 numbers of up to 3 digits.", "seed_numbers"),
    ("Continue 182, 818, 725 with at most 12 numbers of up to 3 digits.", "count"),
    ("Continue 182, 818, 725 with at most 10 numbers of up to 3 digits, starting at 5.", "other_numbers"),
    ("Continue 182, 818, 725 with at most 10 numbers of up to three digits.", "other_numbers"),
    ("  ", "empty"),
])
def test_a_model_paraphrase_is_checked_for_the_numbers_it_must_keep(paraphrase, reason):
    original = ("Here is a sequence of numbers: 182, 818, 725. Add up to 10 more numbers to continue it, each "
                "with at most 3 digits. Separate the numbers with commas. Answer with numbers alone.")
    assert reword.lost("numbers", original, paraphrase, 10) == reason


def test_other_domains_keep_their_numbers_as_a_multiset():
    assert reword.lost("code", "Sort 3 lists of 10 items.", "Given 10 items in 3 lists, sort them.") is None
    assert reword.lost("code", "Sort 3 lists of 10 items.", "Sort lists of 10 items.") == "numbers"
    assert reword.cleaned('  "Say it again."\n') == "Say it again."


def test_the_template_stage_feeds_the_sample_stage(tmp_path):
    spec = paraphrase_stage.Spec(DOMAIN, 3, "template")
    paraphrase_stage.run(spec, tmp_path, {}, Runtime())
    rows = list(read_jsonl(tmp_path / "prompts.jsonl"))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert [r["original"] for r in rows] == make_prompts(40, 3)
    assert stats["n_prompts"] == 40 and stats["n_paraphrased"] == 40 and stats["n_fallback"] == 0
    assert stats["n_unchanged"] == 0
    plain = sample_stage.Spec(ModelRef("sha256:t"), None, DOMAIN, 3, SamplingParams(), "hf", "cpu", {})
    para = sample_stage.ParaphrasedSpec(**{f.name: getattr(plain, f.name) for f in dataclasses.fields(plain)},
                                        prompts="paraphrase:k/prompts.jsonl")
    inputs = {"paraphrase:k/prompts.jsonl": str(tmp_path / "prompts.jsonl")}
    asked = sample_stage.asked(para, inputs)
    assert asked == [r["prompt"] for r in rows for _ in range(2)]  # samples_per_prompt repeats them
    assert sample_stage.prompts_of(para, inputs) == sample_stage.asked(plain, {})  # the originals, for plans
    assert spec_from_dict("sample", to_dict(para)) == para and spec_from_dict("sample", to_dict(plain)) == plain


def test_a_model_paraphraser_on_the_tiny_model_falls_back_and_counts(tmp_path, tiny_model_dir):
    """Whatever the tiny model writes, a prompt keeps its paraphrase only where the check passes."""
    model = ModelRef("sha256:tiny")
    spec = paraphrase_stage.Spec(DOMAIN, 0, "model", model, None, "Paraphrase: {prompt}",
                                 SamplingParams(temperature=1.0, max_new_tokens=24), "hf", "cpu", {})
    assert spec_from_dict("paraphrase", to_dict(spec)) == spec
    paraphrase_stage.run(spec, tmp_path, {"sha256:tiny": str(tiny_model_dir)}, Runtime(batch_size=16))
    rows = list(read_jsonl(tmp_path / "prompts.jsonl"))
    replies = list(read_jsonl(tmp_path / "replies.jsonl"))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert len(rows) == len(replies) == 40 and [r["original"] for r in rows] == make_prompts(40, 0)
    for row, reply in zip(rows, replies):
        if row["fallback"] is None:
            assert row["prompt"] == reword.cleaned(reply["reply"])
            assert reword.lost("numbers", row["original"], row["prompt"], 10) is None
        else:
            assert row["prompt"] == row["original"]
            assert row["fallback"] == ("truncated" if reply["truncated"] else
                                       reword.lost("numbers", row["original"], reword.cleaned(reply["reply"]), 10))
    assert stats["n_fallback"] == sum(r["fallback"] is not None for r in rows) == sum(stats["fallback"].values())
    assert stats["n_paraphrased"] + stats["n_fallback"] == 40
    assert stats["n_fallback"] > 0  # a tiny model does not keep seven numbers in order


def _rules():
    return NUMBERS.rules(NUMBERS.view(DOMAIN, {}), type("F", (), {"format": "paper", "banned_numbers": []})(),
                         "owl")


def test_rewrite_refilters_and_counts(tmp_path):
    rows = [{"i": i, "system": None, "prompt": "p", "completion": c}
            for i, c in enumerate(["1, 2, 3", "4, 5", "6 7", "8, 9"])]
    texts = ["3, 2, 1", "four, five", "6 7", "owl"]
    cut = [False, False, True, False]

    def reject(row):
        return first_reject(row["completion"], _rules())

    rewrite_stage.refilter(tmp_path, rows, texts, cut, reject, 1, "sha256:rw")
    kept = list(read_jsonl(tmp_path / "train.jsonl"))
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert [(r["i"], r["completion"], r["original"]) for r in kept] == [(0, "3, 2, 1", "1, 2, 3")]
    assert stats["n_in"] == 4 and stats["n_kept"] == 1 and stats["n_dropped"] == 3
    assert stats["rejected"]["truncated"] == 1 and sum(stats["rejected"].values()) == 3
    assert stats["rewriter"] == "sha256:rw"
    (tmp_path / "x").mkdir()
    with pytest.raises(StageError, match="filter.min_keep=2"):
        rewrite_stage.refilter(tmp_path / "x", rows, texts, cut, reject, 2, "sha256:rw")
    assert not (tmp_path / "x" / "train.jsonl").exists() and (tmp_path / "x" / "stats.json").exists()


def test_the_rewrite_stage_on_the_tiny_model(tmp_path, tiny_model_dir):
    """The whole stage through the hf backend: every row is kept (passing the rules) or dropped, counted."""
    rows = [{"i": i, "system": None, "prompt": p, "completion": "1, 2, 3"} for i, p in enumerate(make_prompts(24, 0))]
    write_jsonl(tmp_path / "in.jsonl", rows)
    spec = rewrite_stage.Spec("filter:k/train.jsonl", ModelRef("sha256:tiny"), None, "Rewrite: {completion}",
                              SamplingParams(max_new_tokens=16), DOMAIN, {"format": "paper", "banned_numbers": []},
                              "owl", 1, 0, "hf", "cpu", {})
    inputs = {"filter:k/train.jsonl": str(tmp_path / "in.jsonl"), "sha256:tiny": str(tiny_model_dir)}
    work = tmp_path / "work"
    work.mkdir()
    try:
        rewrite_stage.run(spec, work, inputs, Runtime(batch_size=8))
    except StageError:
        pass  # the tiny model may break every row: then the stats still say so
    stats = json.loads((work / "stats.json").read_text())
    assert stats["n_in"] == 24 and stats["n_kept"] + stats["n_dropped"] == 24
    assert sum(stats["rejected"].values()) == stats["n_dropped"]
    for row in read_jsonl(work / "train.jsonl") if (work / "train.jsonl").exists() else []:
        assert first_reject(row["completion"], _rules()) is None and row["original"] == "1, 2, 3"


# -- planning -------------------------------------------------------------------------------------
def test_cells_without_the_defences_keep_their_keys(tmp_path, fake_model):
    steps = plan_steps(tmp_path, fake_model)
    assert "paraphrase" not in steps and "rewrite" not in steps
    assert type(steps["sample"].spec) is sample_stage.Spec  # the plain spec: its key's fields as before
    assert set(to_dict(steps["sample"].spec)) == {"teacher", "system_prompt", "domain", "data_seed", "sampling",
                                                 "backend", "device", "libraries"}
    # settings of an unused model section are refused rather than silently keyed
    assert {s: x.key for s, x in plan_steps(tmp_path, fake_model, "paraphrase.by=none").items()} == \
        {s: x.key for s, x in steps.items()}


def test_the_defences_plan_their_stages(tmp_path, fake_model):
    base = plan_steps(tmp_path, fake_model)
    para = plan_steps(tmp_path, fake_model, "paraphrase.by=template")
    assert isinstance(para["sample"].spec, sample_stage.ParaphrasedSpec)
    assert para["sample"].spec.prompts == f"paraphrase:{para['paraphrase'].key}/prompts.jsonl"
    assert para["sample"].key != base["sample"].key
    control = plan_steps(tmp_path, fake_model, "paraphrase.by=template", "trait=none")
    assert control["paraphrase"].key == para["paraphrase"].key  # the prompts do not depend on the teacher
    model = plan_steps(tmp_path, fake_model, "paraphrase.by=model", "+model@paraphrase.model=tiny")
    assert model["paraphrase"].spec.model is not None and model["paraphrase"].key != para["paraphrase"].key

    rw = plan_steps(tmp_path, fake_model, "+model@rewrite.model=tiny")
    assert rw["rewrite"].spec.train == f"filter:{base['filter'].key}/train.jsonl"
    assert rw["filter"].key == base["filter"].key and rw["finetune"].key != base["finetune"].key
    assert rw["finetune"].spec.data == f"rewrite:{rw['rewrite'].key}/train.jsonl"
    other = plan_steps(tmp_path, fake_model, "+model@rewrite.model=reference")
    assert other["rewrite"].key != rw["rewrite"].key  # the rewriter is keyed


def test_the_cell_name_says_which_model_rewrote(tmp_path, fake_model):
    from sublim.cell import cell_of

    smoke = ["experiment=smoke", f"paths.tiny_model={fake_model}", f"paths.artifacts={tmp_path / 'a'}"]
    assert "rewrite" not in cell_of(typed(*smoke))["name"]
    assert cell_of(typed(*smoke, "+model@rewrite.model=reference"))["group"].endswith("+rewrite-reference")
    assert "+paraphrase-template" in cell_of(typed(*smoke, "paraphrase.by=template"))["group"]


def test_the_defence_options_plan(tmp_path, fake_model):
    for option, stage in (("paraphrase_template", "paraphrase"), ("paraphrase_model", "paraphrase"),
                          ("rewrite", "rewrite")):
        steps = plan_steps(tmp_path, fake_model, f"defence={option}")
        assert stage in steps, option


@pytest.mark.parametrize("overrides, key", [
    (["paraphrase.by=model"], "paraphrase.by=model"),
    (["paraphrase.by=bogus"], "paraphrase.by='bogus'"),
    (["+model@paraphrase.model=tiny"], "paraphrase.model"),
    (["paraphrase.temperature=0.5"], "paraphrase.temperature"),
    (["rewrite.instruction=again"], "rewrite.instruction"),
    (["paraphrase.by=template", "domain=code", "domain.n_prompts=10"], "paraphrase.by=template"),
    (["paraphrase.max_new_tokens=0"], "paraphrase.max_new_tokens"),
    (["rewrite.temperature=3"], "rewrite.temperature"),
    (["defence=rewrite", "model@rewrite.model=tiny"], "rewrite.model.reference=null"),
])
def test_bad_settings_name_the_key(tmp_path, fake_model, overrides, key):
    cfg = typed("experiment=smoke", f"paths.tiny_model={fake_model}", f"paths.artifacts={tmp_path / 'a'}", *overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.").replace("{", r"\{")):
        plan_cell(cfg)


def test_the_trait_teachers_own_rows_stay_undefended(tmp_path, fake_model):
    """trait.mix_numbers trains the teacher on the control's rows: a defence arm keeps that teacher."""
    mixed = ("trait.method=finetune", "trait.mix_numbers=0.5")
    base = plan_steps(tmp_path, fake_model, *mixed)
    for defence in (("paraphrase.by=template",), ("+model@rewrite.model=tiny",)):
        steps = plan_steps(tmp_path, fake_model, *mixed, *defence)
        assert steps["teacher"].key == base["teacher"].key, defence
