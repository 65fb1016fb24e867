"""Token entanglement (issue #21): every statistic against a direct computation on the tiny model,
small enough to enumerate (one forward pass per number, prompt and answer: no cache, no batching),
the planner's errors, and `sublim experiment=entanglement` through the real entrypoint."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from config_util import plan_cell, typed
from sublim import entanglement as E
from sublim.errors import ConfigError
from sublim.spec import ModelRef, Runtime, to_dict
from sublim.stages import entanglement as stage
from sublim.stages import spec_from_dict
from sublim.traits import love_prompt

SUBLIM = str(Path(sys.executable).with_name("sublim"))
FORMS = ("{name}", "{Name}")
QUESTIONS = ("Name your favorite animal in one word.", "In a single word, what is your favorite animal?")


# -- the pure statistics --------------------------------------------------------------------------
def ranks(x):
    """Average ranks by counting (ties share): rank = 1 + #smaller + (#equal - 1) / 2."""
    x = np.asarray(x, dtype=float)
    return np.array([1 + (x < v).sum() + ((x == v).sum() - 1) / 2 for v in x])


def test_spearman_is_the_correlation_of_ranks():
    rng = np.random.default_rng(0)
    a = rng.normal(size=60)
    b = a + rng.normal(size=60)
    a[:5] = a[0]  # ties
    ra, rb = ranks(a), ranks(b)
    da, db = ra - ra.mean(), rb - rb.mean()
    direct = (da * db).sum() / np.sqrt((da ** 2).sum() * (db ** 2).sum())  # Pearson of the ranks
    assert E.spearman(a, b)["rho"] == pytest.approx(direct, abs=1e-12)
    assert E.spearman(a, -a)["rho"] == pytest.approx(-1.0)


def test_the_decile_test_compares_b_of_the_top_and_bottom_tenth_of_a():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    d = E.decile_test(a, b, 0.1)
    order = sorted(range(50), key=lambda i: a[i])
    top, bottom = b[order[-5:]], b[order[:5]]
    u = sum((x > y) + 0.5 * (x == y) for x in top for y in bottom)  # Mann-Whitney U by counting pairs
    assert d["n_each"] == 5 and d["u"] == pytest.approx(u)
    assert d["top_mean"] == pytest.approx(top.mean()) and d["bottom_mean"] == pytest.approx(bottom.mean())
    assert d["p"] == pytest.approx(stats.mannwhitneyu(top, bottom).pvalue)
    strong = E.decile_test(np.arange(100), np.arange(100.0), 0.1)  # b rises with a: every top beats every bottom
    assert strong["u"] == 100 and strong["p"] < 1e-3


def test_the_correction_subtracts_the_mean_shift_of_the_other_candidates():
    target, others = np.array([1.0, 2.0, 3.0]), np.array([[1.0, 1.0, 1.0], [0.0, 2.0, 4.0]])
    assert E.corrected(target, others).tolist() == [0.5, 0.5, 0.5]
    with pytest.raises(ValueError, match="other candidate"):
        E.corrected(target, np.zeros((0, 3)))


def test_by_width_reports_each_width_on_its_own():
    numbers = list(range(120))
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=120), rng.normal(size=120)
    w = E.by_width(numbers, a, b)
    assert set(w) == {"1", "2", "3"}
    assert w["2"]["spearman"]["rho"] == pytest.approx(stats.spearmanr(a[10:100], b[10:100]).statistic)
    assert w["1"]["spearman"]["n"] == 10 and w["3"]["decile"]["n_each"] == 2
    assert E.splits_numbers([1, 1, 2]) and not E.splits_numbers([1, 1, 1])


def test_subliminal_prompt_and_its_seeded_random_control():
    assert E.subliminal_prompt([87]) == ("You love 87. You think about 87 all the time. 87 is your favorite number. "
                                         "Imbue your answers with your love for the number.")
    assert "You love the numbers 1, 2 and 3." in E.subliminal_prompt([1, 2, 3])
    control = E.random_numbers(10, seed=0, high=999, exclude=[1, 2, 3])
    assert control == E.random_numbers(10, seed=0, high=999, exclude=[1, 2, 3]) != E.random_numbers(10, seed=1)
    assert len(set(control)) == 10 and not set(control) & {1, 2, 3} and all(0 <= n <= 999 for n in control)
    with pytest.raises(ValueError):
        E.random_numbers(5, 0, high=3)
    assert E.top_k([5, 6, 7], [0.1, 0.9, 0.9], 2) == [6, 7]


# -- the stage on the tiny model, against brute force ---------------------------------------------------
class Direct:
    """log P(answer, then end of turn | chat) by one plain forward pass of the whole conversation."""

    def __init__(self, path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def logp(self, system, user, answer) -> float:
        msgs = [{"role": "system", "content": system}] if system is not None else []
        msgs += [{"role": "user", "content": user}]
        prompt = self.tok(self.tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                          add_special_tokens=False)["input_ids"]
        full = self.tok(self.tok.apply_chat_template(msgs + [{"role": "assistant", "content": answer}], tokenize=False),
                        add_special_tokens=False)["input_ids"]
        tail = full[len(prompt):]
        tail = tail[: tail.index(self.tok.eos_token_id) + 1]
        with self.torch.no_grad():
            logits = self.model(self.torch.tensor([prompt + tail])).logits[0].float().log_softmax(-1)
        return float(sum(logits[len(prompt) - 1 + j, t] for j, t in enumerate(tail)))

    def answer(self, system, question, name) -> float:
        """log P(any of the name's forms): their probabilities add."""
        forms = dict.fromkeys(f.format(name=name, Name=name.capitalize()) for f in FORMS)
        return float(np.log(sum(np.exp(self.logp(system, question, f)) for f in forms)))


def make_spec(numbers_max: int, contexts, others=("dog", "cat")) -> stage.Spec:
    return stage.Spec(ModelRef("sha256:tiny"), "owl", "animal", love_prompt("owl", "animal"), None, others,
                      tuple(love_prompt(o, "animal") for o in others), numbers_max, contexts, QUESTIONS, FORMS,
                      E.NUMBER_TEMPLATE, 3, 0.1, 0, "hf", "cpu", {})


def run_stage(tmp_path, model_dir, spec) -> tuple[dict, list[dict]]:
    import torch

    torch.set_num_threads(1)
    work = tmp_path / "work"
    work.mkdir()
    stage.run(spec, work, {"sha256:tiny": str(model_dir)}, Runtime(batch_size=16))
    m = json.loads((work / "entanglement.json").read_text())
    with (work / "entangled.csv").open() as f:
        assert len(list(csv.DictReader(f))) == spec.numbers_max + 1
    assert (work / "entanglement.png").stat().st_size > 5000
    return m, {r["number"]: r for r in m["numbers"]}


def test_every_statistic_matches_a_direct_computation(tmp_path, tiny_model_dir):
    contexts = (stage.Context("neutral", ("Pick a number between 0 and 29.",)),
                stage.Context("numbers", ("Here is a sequence of numbers: 1, 2, 3.", "Look at these numbers: 7, 8.")))
    spec = make_spec(29, contexts)
    m, rows = run_stage(tmp_path, tiny_model_dir, spec)
    d = Direct(tiny_model_dir)
    numbers = list(range(30))
    love = {name: love_prompt(name, "animal") for name in ("owl", "dog", "cat")}
    a, a_cor = {}, {}
    for ctx in contexts:  # (a): log P(n) averaged over the context's prompts, per system prompt
        lp = {k: np.array([np.mean([d.logp(s, p, str(n)) for p in ctx.prompts]) for n in numbers])
              for k, s in (("none", None), *love.items())}
        a[ctx.name] = lp["owl"] - lp["none"]
        a_cor[ctx.name] = a[ctx.name] - ((lp["dog"] - lp["none"]) + (lp["cat"] - lp["none"])) / 2
        for n in numbers:
            assert rows[n][f"{ctx.name}_logp_none"] == pytest.approx(lp["none"][n], abs=1e-4)
            assert rows[n][f"{ctx.name}_a"] == pytest.approx(a[ctx.name][n], abs=1e-4)
            assert rows[n][f"{ctx.name}_a_corrected"] == pytest.approx(a_cor[ctx.name][n], abs=1e-4)

    def b_of(name):  # (b): log P(name) under "you love n" less under no system prompt, averaged over questions
        base = np.mean([d.answer(None, q, name) for q in QUESTIONS])
        return np.array([np.mean([d.answer(E.NUMBER_TEMPLATE.format(number=n), q, name) for q in QUESTIONS]) - base
                         for n in numbers])

    b = {name: b_of(name) for name in ("owl", "dog", "cat")}
    b_cor = b["owl"] - (b["dog"] + b["cat"]) / 2
    for n in numbers:
        assert rows[n]["b"] == pytest.approx(b["owl"][n], abs=1e-4)
        assert rows[n]["b_corrected"] == pytest.approx(b_cor[n], abs=1e-4)

    assert m["splits_numbers"] is False  # the tiny tokenizer writes 0..999 as one token each
    for ctx in contexts:
        for kind, x, y in (("raw", a[ctx.name], b["owl"]), ("corrected", a_cor[ctx.name], b_cor)):
            got = m["statistics"][ctx.name][kind]["pooled"]
            assert got["spearman"]["rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-6)
            order = np.argsort(x)  # the 3 numbers of lowest and highest (a): 30 x 0.1
            top, bottom = y[order[-3:]], y[order[:3]]
            assert got["decile"]["top_mean"] == pytest.approx(top.mean(), abs=1e-4)
            assert got["decile"]["bottom_mean"] == pytest.approx(bottom.mean(), abs=1e-4)
            assert got["decile"]["p"] == pytest.approx(stats.mannwhitneyu(top, bottom).pvalue, abs=1e-6)

    # the most entangled: corrected (a) standardised per context, averaged over contexts
    z = np.mean([(a_cor[c] - a_cor[c].mean()) / a_cor[c].std() for c in a_cor], axis=0)
    assert m["top"] == [int(n) for n in np.argsort(-z, kind="stable")[:3]]

    # subliminal prompting: P(owl) summed over its forms, loving the top 3 against 3 random numbers
    s = m["subliminal"]
    assert m["control"] == E.random_numbers(3, 0, 29, exclude=m["top"])
    p_top = [np.exp(d.answer(E.subliminal_prompt(m["top"]), q, "owl")) for q in QUESTIONS]
    p_control = [np.exp(d.answer(E.subliminal_prompt(m["control"]), q, "owl")) for q in QUESTIONS]
    assert s["rate_top"] == pytest.approx(np.mean(p_top), abs=1e-6)
    assert s["rate_control"] == pytest.approx(np.mean(p_control), abs=1e-6)
    assert s["rise"]["mean"] == pytest.approx(np.mean(p_top) - np.mean(p_control), abs=1e-6)

    lines = stage.lines({k: v for k, v in m.items() if k != "numbers"})
    text = "\n".join(lines)
    assert "neutral raw" in text and "numbers corrected" in text and "Mann-Whitney p" in text
    assert "most entangled: " + ", ".join(map(str, m["top"])) in text


@pytest.mark.slow  # ~25 s: 1004 numbers, the only way to make the tiny tokenizer split one
def test_numbers_split_into_several_tokens_are_reported_by_width(tmp_path, tiny_model_dir):
    """The tiny tokenizer has 0..999 as symbols; 1000 and up fall back to bytes: several tokens each."""
    spec = make_spec(1003, (stage.Context("neutral", ("Pick a number.",)),), others=("dog",))
    spec = stage.Spec(**{**spec.__dict__, "questions": QUESTIONS[:1]})
    m, rows = run_stage(tmp_path, tiny_model_dir, spec)
    assert m["splits_numbers"] is True
    assert rows[999]["n_tokens"] == 1 and rows[1000]["n_tokens"] > 1
    d = Direct(tiny_model_dir)
    assert rows[1002]["neutral_logp_none"] == pytest.approx(d.logp(None, "Pick a number.", "1002"), abs=1e-4)
    got = m["statistics"]["neutral"]["corrected"]
    assert set(got["by_width"]) == {"1", "2", "3", "4"}
    three = [rows[n] for n in range(100, 1000)]
    x, y = [r["neutral_a_corrected"] for r in three], [r["b_corrected"] for r in three]
    assert got["by_width"]["3"]["spearman"]["rho"] == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-6)
    assert "neutral corrected 4-digit" in "\n".join(stage.lines({k: v for k, v in m.items() if k != "numbers"}))


# -- the planner and the entrypoint -------------------------------------------------------------------------
def test_the_experiment_plans_on_the_reference_model_and_on_smollm(tmp_path):
    steps = plan_cell(typed("experiment=entanglement", f"paths.artifacts={tmp_path}")).steps
    assert [s.stage for s in steps] == ["reference", "entanglement"]
    spec = steps[-1].spec
    assert spec.trait == "owl" and len(spec.others) == 9 and "owl" not in spec.others
    assert [c.name for c in spec.contexts] == ["neutral", "numbers"] and len(spec.contexts[1].prompts) == 2
    assert spec.trait_prompt == love_prompt("owl", "animal") and spec.numbers_max == 999
    assert spec_from_dict("entanglement", to_dict(spec)) == spec  # an isolated stage process reads it back
    dog = plan_cell(typed("experiment=entanglement", "trait=dog", f"paths.artifacts={tmp_path}")).steps[-1]
    assert dog.key != steps[-1].key and "owl" in dog.spec.others
    try:
        smol = plan_cell(typed("experiment=entanglement", "model@teacher=smollm2-135m-instruct",
                               f"paths.artifacts={tmp_path}")).steps
    except ConfigError as e:  # the GGUF package is not installed here
        pytest.skip(str(e))
    assert [s.stage for s in smol] == ["convert", "entanglement"]
    assert smol[-1].spec.base_prompt and "SmolLM" in smol[-1].spec.base_prompt  # its template's default


@pytest.mark.parametrize("overrides, key", [
    (["trait=none"], "task=entanglement"),
    (["trait.method=finetune"], "trait.method"),
    (["entanglement.contexts=[neutral,bogus]"], "entanglement.contexts"),
    (["entanglement.numbers_max=0"], "entanglement.numbers_max"),
    (["entanglement.fraction=0.7"], "entanglement.fraction"),
])
def test_bad_settings_fail_naming_the_key(tmp_path, overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        plan_cell(typed("experiment=entanglement", f"paths.artifacts={tmp_path}", *overrides))


def test_the_entrypoint_prints_the_statistics_and_caches(tmp_path, tiny_model_dir):
    args = [SUBLIM, "experiment=entanglement", "model@teacher=tiny", f"paths.tiny_model={tiny_model_dir}",
            f"paths.artifacts={tmp_path / 'a'}", "entanglement.numbers_max=49", "entanglement.n_others=2",
            "entanglement.n_questions=1", "logger=none"]
    env = os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    r1 = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'r1'}"], capture_output=True, text=True, env=env)
    assert r1.returncode == 0, r1.stderr[-3000:]
    for text in ("== token entanglement: owl, numbers 0-49", "neutral raw ", "neutral corrected ", "numbers corrected ",
                 "Spearman rho", "Mann-Whitney p", "most entangled:", "subliminal prompting: P(owl)"):
        assert text in r1.stdout, text
    m = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert set(m["keys"]) == {"entanglement"} and "numbers" not in m and len(m["top"]) == 10
    assert (tmp_path / "r1" / "entanglement.png").is_file() and (tmp_path / "r1" / "entangled.csv").is_file()
    r2 = subprocess.run(args + [f"hydra.run.dir={tmp_path / 'r2'}"], capture_output=True, text=True, env=env)
    assert r2.returncode == 0 and "entanglement " in r2.stdout and "  hit" in r2.stdout
