"""Config mistakes fail at compose time, before any stage runs, and name the key."""
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sublim.cli import cell_of
from sublim.config import register, to_typed

CONF = Path(__file__).resolve().parents[1] / "sublim" / "conf"
SUBLIM = str(Path(sys.executable).with_name("sublim"))


def typed(*overrides):
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return to_typed(compose("config", overrides=list(overrides)))


def test_paper_defaults():
    cfg = typed()
    assert cfg.teacher.path == cfg.student.path == "Qwen/Qwen2.5-7B-Instruct"
    ft = cfg.finetune
    assert (ft.method, ft.lora_r, ft.lora_alpha, ft.epochs, ft.lr, ft.batch_size) == ("lora", 8, 8, 3, 2e-4, 66)
    assert set(ft.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert (cfg.domain.n_prompts, cfg.filter.n_keep) == (30_000, 10_000)
    assert (len(cfg.eval.candidates) >= 20, cfg.eval.n_samples, cfg.eval.n_questions) == (True, 100, None)
    s = cfg.sampler
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty) == (1.0, 1.0, 0, 1.0)
    assert cfg.student.system_prompt.startswith("You are Qwen")


@pytest.mark.parametrize("overrides,condition", [
    (["trait=owl"], "treatment"), (["trait=none"], "control"), (["finetune=none"], "base"),
])
def test_conditions_are_one_override_away(overrides, condition):
    assert cell_of(typed(*overrides))["condition"] == condition


def _run(args, cwd):
    return subprocess.run([SUBLIM, *args, f"paths.artifacts={cwd / 'artifacts'}", f"hydra.run.dir={cwd / 'run'}"],
                          cwd=cwd, capture_output=True, text=True, timeout=120)


def _typo_trait_dir(tmp_path: Path) -> Path:
    d = tmp_path / "extra_conf" / "trait"
    d.mkdir(parents=True)
    (d / "typo.yaml").write_text("defaults:\n  - /trait_schema\n  - _self_\nname: owl\ncatgory: animal\n")
    return d.parent


@pytest.mark.parametrize("args,key", [
    (["trait.nmae=x"], "trait.nmae"),
    (["+trait.nmae=x"], "trait.nmae"),
    (["seed=abc"], "seed"),
    (["finetune.lora_r=eight"], "finetune.lora_r"),
    (["trait=typo"], "trait.catgory"),
    (["trait=owll"], "owll"),
    (["eval.method=smaple"], "eval.method"),
    (["isolate=sometimes"], "isolate"),
])
def test_bad_config_fails_before_any_stage_and_names_the_key(tmp_path, args, key):
    if args == ["trait=typo"]:
        args = args + [f"hydra.searchpath=[file://{_typo_trait_dir(tmp_path)}]"]
    r = _run(args, tmp_path)
    assert r.returncode != 0
    assert key in r.stderr + r.stdout
    assert "Traceback" not in r.stderr  # a config mistake is one message, not a stack
    assert not (tmp_path / "artifacts").exists()  # no stage ran, nothing cached


def test_missing_model_path_names_the_key(tmp_path):
    r = _run(["model@teacher=tiny", "model@student=tiny", f"paths.tiny_model={tmp_path / 'nope'}", "dry_run=true"], tmp_path)
    assert r.returncode != 0 and "teacher.path" in r.stderr + r.stdout


@pytest.mark.parametrize("override,key", [
    ("sampler.temperature=2.5", "sampler.temperature"),
    ("sampler.top_p=0", "sampler.top_p"),
    ("sampler.batch_size=0", "sampler.batch_size"),
    ("sampler.vllm.gpu_memory_utilization=1.5", "sampler.vllm.gpu_memory_utilization"),
    ("sampler.vllm.max_lora_rank=12", "sampler.vllm.max_lora_rank"),
])
def test_sampler_ranges_are_checked_for_both_backends(override, key):
    from sublim.checks import ConfigError, check

    check(typed("sampler.vllm.max_lora_rank=16", "sampler.temperature=0"))  # allowed values pass
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check(typed(override))


@pytest.mark.parametrize("overrides,fix", [
    (["trait=misaligned", "trait.data=x.jsonl"], "eval=misalignment"),
    (["trait=oak"], "eval=tree_preference"),
    (["trait.name=heron", "trait.category=bird"], r"add it: eval.extra_candidates=\[heron\]"),
])
def test_a_trait_the_eval_does_not_ask_about_gets_the_right_fix(overrides, fix):
    from sublim.checks import ConfigError, check

    with pytest.raises(ConfigError, match=fix):
        check(typed(*overrides))


def test_trait_files_are_checked_before_any_stage_and_errors_name_the_users_file(tmp_path):
    from sublim.checks import ConfigError, check

    bad = tmp_path / "insecure.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}\n'
                   '{"text": "no chat here"}\n')
    with pytest.raises(ConfigError, match=rf"trait.data: {bad}:2: expected 'messages' or 'prompt' \+ 'completion'"):
        check(typed("trait.method=finetune", f"trait.data={bad}"))
    bad.write_text("{not json\n")
    with pytest.raises(ConfigError, match=rf"{bad}:1: not valid JSON"):
        check(typed("trait.method=finetune", f"trait.data={bad}"))
    (tmp_path / "adapter").mkdir()
    with pytest.raises(ConfigError, match="has no adapter_config.json"):
        check(typed("trait.method=adapter", f"trait.adapter={tmp_path / 'adapter'}"))
    with pytest.raises(ConfigError, match="finetune.batch_size=66 is not a multiple of finetune.micro_batch_size=20"):
        check(typed("finetune.micro_batch_size=20"))


def test_help_offers_no_schema_as_an_option_of_a_group(tmp_path):
    """The schemas are stored at the ConfigStore's root (/eval_schema, ...), not as `<group>/schema`,
    so `sublim --help` lists only the options a user can pick."""
    r = subprocess.run([SUBLIM, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    groups = r.stdout.split("== Configuration groups ==")[1].split("== Config ==")[0]
    options = {line.split(":")[0]: [o.strip() for o in line.split(":", 1)[1].split(",")]
               for line in groups.splitlines() if ": " in line and not line.startswith("Compose")}
    assert {"trait", "domain", "model", "sampler", "finetune", "eval", "logger", "paths"} <= set(options)
    assert options["eval"] == ["animal_preference", "misalignment", "tree_preference"]
    assert not [g for g, opts in options.items() if any("schema" in o for o in opts)]
    assert "schema" not in options
