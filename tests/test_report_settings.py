"""The report splits cells that share a name but not a setting (a LoRA-rank sweep), never
pooling them as seeds, and compares each with the control of its own setting."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from sublim.report import cli
from sublim.report.collect import collect
from sublim.report.summarise import summary

CANDS = ["owl", "cat", "dog"]


def write_cell(root: Path, job: int, trait: str, seed: int, config: dict, owl: float) -> None:
    """One job folder as a sublim job leaves it: metrics.json and Hydra's unresolved config."""
    cond = "treatment" if trait != "none" else "control"
    group = f"{trait}.numbers.qwen.qwen.lora"
    rates = {"owl": owl, "cat": 0.1, "dog": 0.1, "none": 1 - owl - 0.2}
    m = {"cell": {"condition": cond, "group": group, "name": f"{group}.seed{seed}", "trait": trait,
                  "domain": "numbers", "teacher": "qwen", "student": "qwen", "finetune": "lora", "seed": seed,
                  "data_seed": 0, "experiment": "test"},
         "keys": {"eval": f"ev{job}"}, "target": trait if cond == "treatment" else None,
         "rates": {c: {"mean": r, "ci_low": r, "ci_high": r} for c, r in rates.items()},
         "per_question": [rates], "n_questions": 1, "n_answers": 100, "confidence": 0.95, "unmatched_top": {}}
    if cond == "treatment":
        m["target_rate"] = m["rates"]["owl"]
    d = root / str(job)
    (d / ".hydra").mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(m))
    (d / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))


def config(trait: str, seed: int, rank: int, **extra) -> dict:
    return {"seed": seed, "trait": {"name": trait}, "paths": {"artifacts": f"/scratch/{seed}"},
            "student": {"name": "qwen", "reference": {"seed": "${seed}"}},  # seed-derived: reads alike
            "finetune": {"method": "lora", "lora_r": rank, "micro_batch_size": 11 + seed},  # speed only
            "eval": {"prefix_numbers": 0}, **extra}


OWL = {("owl", 2): [0.50, 0.52, 0.54], ("owl", 8): [0.20, 0.22, 0.24],
       ("none", 2): [0.04, 0.05, 0.06], ("none", 8): [0.09, 0.10, 0.11]}


def rank_sweep(root: Path, ranks=(2, 8), control_ranks=(2, 8)) -> None:
    job = 0
    for (trait, rank), owls in OWL.items():
        if rank not in (ranks if trait == "owl" else control_ranks):
            continue
        for seed, owl in enumerate(owls):
            write_cell(root, job, trait, seed, config(trait, seed, rank), owl)
            job += 1


def test_a_rank_sweep_is_one_row_per_rank_each_against_its_own_control(tmp_path):
    rank_sweep(tmp_path)
    col = collect([tmp_path])
    assert set(col.cells["setting"]) == {"finetune.lora_r=2", "finetune.lora_r=8"}
    owl = summary(col, ["owl"]).set_index(["condition", "setting"])
    for rank in (2, 8):
        t, c = owl.loc[("treatment", f"finetune.lora_r={rank}")], owl.loc[("control", f"finetune.lora_r={rank}")]
        assert t["n_seeds"] == c["n_seeds"] == 3  # never 6 "seeds" pooled over ranks
        assert t["mean"] == pytest.approx(np.mean(OWL[("owl", rank)]))
        assert t["baseline"] == "control"
        assert t["rise"] == pytest.approx(np.mean(OWL[("owl", rank)]) - np.mean(OWL[("none", rank)]))


def test_one_treated_rank_is_compared_with_the_control_of_that_rank_only(tmp_path):
    rank_sweep(tmp_path, ranks=(2,))
    col = collect([tmp_path])
    treated = summary(col, ["owl"]).query("condition == 'treatment'")
    assert len(treated) == 1 and treated["setting"].iloc[0] == "finetune.lora_r=2"
    assert treated["rise"].iloc[0] == pytest.approx(np.mean(OWL[("owl", 2)]) - np.mean(OWL[("none", 2)]))


def test_seeds_paths_and_speed_settings_do_not_split_a_condition(tmp_path):
    rank_sweep(tmp_path, ranks=(8,), control_ranks=(8,))
    col = collect([tmp_path])
    assert set(col.cells["setting"]) == {""}
    owl = summary(col, ["owl"]).set_index("condition")
    assert owl.loc["treatment", "n_seeds"] == 3 and owl.loc["treatment", "baseline"] == "control"


def test_two_runs_differing_in_an_eval_option_are_two_rows_and_the_report_names_it(tmp_path):
    for seed in (0, 1):
        write_cell(tmp_path / "a", seed, "owl", seed, config("owl", seed, 8), 0.3)
        write_cell(tmp_path / "b", 10 + seed, "owl", seed, config("owl", seed, 8, eval={"prefix_numbers": 3}), 0.4)
    col = collect([tmp_path / "a", tmp_path / "b"])
    assert sorted(set(col.cells["setting"])) == ["eval.prefix_numbers=0", "eval.prefix_numbers=3"]
    rows = summary(col, ["owl"])
    assert sorted(rows["n_seeds"]) == [2, 2] and sorted(rows["mean"]) == pytest.approx([0.3, 0.4])
    out = tmp_path / "report"
    assert cli.main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--no-wandb"]) == 0
    text = (out / "summary.md").read_text()
    assert " setting |" in text and "| eval.prefix_numbers=3 |" in text
