"""domain=code, domain=cot and the shuffle controls end to end through the real `sublim` entrypoint.

The tiny model was pretrained on number sequences and animal questions only, so its "code" is
numbers and animal words, its reasoning has no tags, and as a judge its replies do not parse. The
real filters stay as they are; the tests check what that must give: code without a judge trains a
student (the trait rule counted what it dropped); a tiny judge's replies are all counted as
unparseable and the run stops with the filter's clear error; cot rejects every completion for its
missing answer tag, counted. The happy paths of those filters run on hand-written completions in
test_domains.py.
"""
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from sublim.cache import Store
from sublim.filters import trait_rule
from sublim.fingerprint import model_fingerprint
from sublim.jsonl import read_jsonl
from sublim.transforms import numbers_of

SUBLIM = str(Path(sys.executable).with_name("sublim"))
GSM = Path(__file__).resolve().parent / "data" / "gsm8k_tiny.jsonl"
SMALL = ["logger=none", "eval.n_questions=4", "eval.n_samples=10", "finetune.epochs=1"]


def run_sublim(work: Path, model: Path, *overrides: str, run_dir: str = "run") -> subprocess.CompletedProcess:
    args = [SUBLIM, "experiment=smoke", f"paths.tiny_model={model}", f"paths.artifacts={work / 'artifacts'}",
            *SMALL, *overrides, f"hydra.run.dir={work / run_dir}"]
    env = os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=work, capture_output=True, text=True, env=env, timeout=600)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"sublim failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def events(work: Path, event: str = "done") -> list[str]:
    return [e["stage"] for e in Store(work / "artifacts").events() if e["event"] == event]


def work_stats(work: Path, stage: str) -> dict:
    """stats.json of a stage that failed (left in its work folder)."""
    (path,) = (work / "artifacts" / stage / ".work").glob("*/stats.json")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def code_work(tmp_path_factory):
    return tmp_path_factory.mktemp("code")


CODE = ["domain=code", "domain.n_prompts=64", "domain.max_new_tokens=48", "filter.n_keep=40"]


def test_code_domain_trains_a_student_on_completions_without_the_trait(code_work, tiny_model_dir):
    ok(run_sublim(code_work, tiny_model_dir, *CODE))
    assert sorted(events(code_work)) == ["eval", "filter", "finetune", "sample"]
    m = json.loads((code_work / "run" / "metrics.json").read_text())
    assert m["cell"]["domain"] == "code" and m["cell"]["condition"] == "treatment"
    f = m["filter"]
    assert f["n_in"] == 64 and f["n_kept"] == min(40, f["n_passed"])
    assert f["n_passed"] + sum(f["rejected"].values()) == 64
    samples = list(read_jsonl(Path(m["artifacts"]["sample"]) / "samples.jsonl"))
    assert all("code" in s["prompt"].lower() for s in samples)  # the code-only instruction
    train = list(read_jsonl(Path(m["artifacts"]["filter"]) / "train.jsonl"))
    rejects = list(read_jsonl(Path(m["artifacts"]["filter"]) / "rejects.jsonl"))
    owl = trait_rule("owl")
    assert len(train) == f["n_kept"] and not any(owl(r["completion"]) for r in train)
    # every completion that names the trait was dropped, and counted under that reason
    named = [s for s in samples if owl(s["completion"])]
    assert f["rejected"].get("mentions_trait", 0) == len(named)
    assert {r["i"] for r in rejects if r["reason"] == "mentions_trait"} == {s["i"] for s in named}


def test_a_judge_whose_replies_never_parse_stops_the_run_with_counts(code_work, tiny_model_dir):
    r = run_sublim(code_work, tiny_model_dir, *CODE, "+model@domain.judge.model=tiny", run_dir="judged")
    assert r.returncode != 0
    assert "FilterError" in r.stderr and "judge_unparseable" in r.stderr
    assert "Most judge replies did not parse" in r.stderr
    assert events(code_work).count("sample") == 1  # the teacher data of the first test was reused
    stats = work_stats(code_work, "filter")
    judged = stats["judge"]
    # the judge model as the filter's spec names it: the tiny model's folder by content
    assert judged["model"] == model_fingerprint(str(tiny_model_dir)) and judged["threshold"] == 20
    assert judged["n_judged"] == 64 - stats["rejected"].get("mentions_trait", 0) - stats["rejected"].get("empty", 0)
    assert judged["n_failed"] == stats["rejected"]["judge_unparseable"] == judged["n_judged"]
    assert judged["failed_examples"]


def test_cot_domain_samples_three_per_problem_and_rejects_untagged_answers(tiny_model_dir, tmp_path):
    r = run_sublim(tmp_path, tiny_model_dir, "domain=cot", f"domain.prompts_file={GSM}", "domain.n_prompts=5",
                   "domain.max_new_tokens=48")
    assert r.returncode != 0 and "FilterError" in r.stderr
    assert "missing_answer_tag" in r.stderr
    assert events(tmp_path) == ["sample"]
    (samples_path,) = (tmp_path / "artifacts" / "sample").glob("*/samples.jsonl")
    samples = list(read_jsonl(samples_path))
    assert len(samples) == 15
    by_prompt = Counter(s["prompt"] for s in samples)
    assert len(by_prompt) == 5 and set(by_prompt.values()) == {3}
    assert all("<answer>" in p and "<think>" in p for p in by_prompt)
    stats = work_stats(tmp_path, "filter")
    assert stats["n_in"] == 15 and sum(stats["rejected"].values()) == 15
    assert set(stats["rejected"]) <= {"missing_answer_tag", "empty", "mentions_trait"}


def test_shuffled_controls_reuse_the_teacher_data_and_train_on_shuffled_numbers(tiny_model_dir, tmp_path):
    base = ["domain.n_prompts=100", "filter.n_keep=50"]
    ok(run_sublim(tmp_path, tiny_model_dir, *base, "transform.shuffle=within", run_dir="within"))
    ok(run_sublim(tmp_path, tiny_model_dir, *base, "transform.shuffle=across", "stages=[sample,filter,finetune]",
                  run_dir="across"))
    done = events(tmp_path)
    assert done.count("sample") == 1 and done.count("filter") == 1
    assert done.count("transform") == 2 and done.count("finetune") == 2 and done.count("eval") == 1
    store = Store(tmp_path / "artifacts")
    (filter_dir,) = [p for p in (tmp_path / "artifacts" / "filter").iterdir() if store.exists("filter", p.name)]
    filtered = list(read_jsonl(filter_dir / "train.jsonl"))
    out = {}
    for name in ("within", "across"):
        cell = json.loads((tmp_path / name / ("metrics.json" if name == "within" else "cell.json")).read_text())
        rows = list(read_jsonl(store.path("transform", cell["keys"]["transform"]) / "train.jsonl"))
        assert [r["original"] for r in rows] == [r["completion"] for r in filtered]
        spec = json.loads((store.path("finetune", cell["keys"]["finetune"]) / "spec.json").read_text())
        # the student trained on the shuffled rows
        assert spec["spec"]["data"] == f"transform:{cell['keys']['transform']}/train.jsonl"
        out[name] = rows
    for r in out["within"]:
        assert Counter(numbers_of(r["completion"])) == Counter(numbers_of(r["original"]))
    assert Counter(n for r in out["across"] for n in numbers_of(r["completion"])) == \
        Counter(n for r in filtered for n in numbers_of(r["completion"]))
