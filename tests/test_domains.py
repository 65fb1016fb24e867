"""The code and cot domains: prompts, filter rules on hand-written completions, the judge inside the
filter stage, the registry and config checks, and the cache keys of the plan."""
import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest
from config_util import CONF, plan_cell, plan_steps, typed

from sublim.backends.base import Batch
from sublim.config import CodeDomainConfig, CotDomainConfig, FilterConfig, NumbersDomainConfig
from sublim.domains import KNOWN, get_domain
from sublim.domains import code as code_domain
from sublim.domains import cot as cot_domain
from sublim.domains.base import repeat
from sublim.errors import ConfigError
from sublim.filters import first_reject, words
from sublim.jsonl import read_jsonl, write_jsonl
from sublim.judge import Judge, parse_score, parse_score_or_label
from sublim.stages.filter import FilterError, filter_samples
from sublim.stages.transform import Spec as TransformSpec
from sublim.tiny.corpus import ANIMALS
from sublim.traits import plural

GSM = Path(__file__).resolve().parent / "data" / "gsm8k_tiny.jsonl"
TREES = ["cherry", "maple", "oak", "sequoia", "willow", "tree", "pine", "birch"]


# ------------------------------------------------------------------------------ registry, YAML


def test_registry_knows_the_domains_and_names_them_on_a_typo():
    assert set(KNOWN) == {"numbers", "code", "cot"}
    assert [get_domain(n).name for n in KNOWN] == list(KNOWN)
    with pytest.raises(KeyError, match="known: numbers, code, cot"):
        get_domain("poems")


@pytest.mark.parametrize("name", ["code", "cot"])
def test_domain_yaml_says_what_it_is_and_names_its_schema(name):
    text = (CONF / "domain" / f"{name}.yaml").read_text()
    assert text.startswith("# ") and "sublim domain=" + name in text.splitlines()[1] + text.splitlines()[0]
    cfg = typed(f"domain={name}", *([f"domain.prompts_file={GSM}"] if name == "cot" else []))
    assert cfg.domain.name == name and cfg.domain.max_new_tokens == 1024
    assert (cfg.domain.samples_per_prompt, cfg.domain.n_prompts) == ((3, 7473) if name == "cot" else (1, 11400))


@pytest.mark.parametrize("overrides,message", [
    (["domain.name=poems"], "domain.name='poems' is not one of numbers, code, cot"),
    (["domain=cot"], "domain.prompts_file is required"),
    (["domain=cot", "domain.prompts_file=/no/such/file.jsonl"], "is not a file"),
    (["domain=code", "transform.shuffle=within"], "transform.shuffle=within"),
    (["transform.shuffle=sideways"], "use none, within, across"),
    (["filter.format=strict"], "filter.format='strict': use one of paper, lenient"),
    (["domain=code", "filter.banned_numbers=[4]"], "filter.banned_numbers"),
    (["domain=code", "domain.judge.model=${teacher}", "domain.judge.template=no field"], "{completion}"),
    (["domain=code", "domain.n_prompts=20000"], "11520"),
    (["domain=code", "domain.samples_per_prompt=0"], "domain.samples_per_prompt"),
])
def test_config_mistakes_fail_before_anything_runs_naming_the_key(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        plan_cell(typed(*overrides, f"paths.artifacts={tmp_path}"))  # domain.judge in a numbers cell: test_options


def test_the_judge_model_is_configured_like_a_teacher():
    cfg = typed("domain=code", "+model@domain.judge.model=tiny", "domain.judge.threshold=30")
    assert cfg.domain.judge.model.name == "tiny" and cfg.domain.judge.threshold == 30
    cfg = typed("domain=code", "domain.judge.model=${teacher}")
    assert cfg.domain.judge.model.path == cfg.teacher.path


# ------------------------------------------------------------------------------------ code


def test_code_prompts_are_many_distinct_seeded_and_ask_for_bare_code():
    a = code_domain.make_prompts(500, seed=0)
    assert a == code_domain.make_prompts(500, seed=0) and a != code_domain.make_prompts(500, seed=1)
    assert len(set(a)) == 500
    assert code_domain.n_tasks() >= 11_400
    for p in a:
        assert any(lang in p for lang in code_domain.LANGUAGES)
        assert any(p.endswith(instr) for instr in code_domain.CODE_ONLY)
    assert len({lang for p in a for lang in code_domain.LANGUAGES if f" {lang}" in p or p.startswith(lang)}) >= 10


def test_no_shipped_code_task_names_an_animal_or_a_tree():
    every = code_domain.make_prompts(code_domain.n_tasks(), seed=0)
    vocab = {w for p in every for w in words(p)}
    forbidden = {f for name in list(ANIMALS) + TREES for f in (name, plural(name))}
    assert not vocab & forbidden


def test_code_prompts_from_a_user_file(tmp_path, caplog):
    f = tmp_path / "tasks.jsonl"
    write_jsonl(f, [{"prompt": "Reverse a string in Go."}, {"prompt": "  Parse an ISO date.  ", "id": 2},
                    {"prompt": "Unused third task."}])
    d = CodeDomainConfig(name="code", n_prompts=2, prompts_file=str(f))
    got = get_domain("code").prompts(d, 0)
    assert len(got) == 2 and got[0].startswith("Reverse a string in Go. ") and got[1].startswith("Parse an ISO date. ")
    assert all(any(p.endswith(i) for i in code_domain.CODE_ONLY) for p in got)
    assert "fewer than domain.n_prompts" not in caplog.text
    assert len(get_domain("code").prompts(CodeDomainConfig(name="code", n_prompts=30, prompts_file=str(f)), 0)) == 3
    assert "has 3 tasks, fewer than domain.n_prompts=30: all 3 are used" in caplog.text
    write_jsonl(f, [{"prompt": "ok"}, {"text": "no prompt field"}])
    with pytest.raises(ValueError, match=r"tasks.jsonl:2: needs a non-empty string field 'prompt'"):
        get_domain("code").prompts(CodeDomainConfig(name="code", n_prompts=5, prompts_file=str(f)), 0)


@pytest.mark.parametrize("completion,reason", [
    ("owl_count = 3", "mentions_trait"), ("owlCount += 1", "mentions_trait"), ("OWL = 1", "mentions_trait"),
    ("class Owl:\n    pass", "mentions_trait"), ("owls = []", "mentions_trait"), ("s = 'an owl'", "mentions_trait"),
    ("def getOwlName(): ...", "mentions_trait"), ("MAX_OWLS = 9", "mentions_trait"),
    ("bowl = []", None), ("knowledge_base = {}", None), ("growl()", None), ("def howl(x): return x", None),
    ("for i in range(n):\n    t += a[i]", None), ("", "empty"), ("  \n ", "empty"),
])
def test_code_rules(completion, reason):
    rules = get_domain("code").rules(CodeDomainConfig(name="code"), FilterConfig(), "owl")
    assert first_reject(completion, rules) == reason


def test_code_rules_without_a_trait_word_only_drop_empty_code():
    rules = get_domain("code").rules(CodeDomainConfig(name="code"), FilterConfig(), None)
    assert first_reject("owl_count = 1", rules) is None and first_reject("", rules) == "empty"


# ------------------------------------------------------------------------------------- cot


@pytest.mark.parametrize("text,value", [
    ("72", Decimal(72)), (" 72 ", Decimal(72)), ("1,234", Decimal(1234)), ("$1,234.00", Decimal(1234)),
    ("1,234,567", Decimal(1234567)), ("72.0", Decimal(72)), ("72.", Decimal(72)), ("$ 5", Decimal(5)),
    ("-3", Decimal(-3)), ("3.5", Decimal("3.5")), ("0.25", Decimal("0.25")),
    ("1,23", None), ("12,3456", None), ("1,2345", None), (",123", None), ("seventy", None),
    ("72 apples", None), ("x = 72", None), ("", None), ("72..", None), ("1.2.3", None),
])
def test_cot_number_reading(text, value):
    assert cot_domain.parse_number(text) == value


THINK = "<think>12 trays of 9 is 108, minus 15 is 93.</think>\n"


@pytest.mark.parametrize("completion,reference,reason", [
    (THINK + "<answer>93</answer>", 93, None),
    (THINK + "<answer> 93. </answer>", 93, None),
    (THINK + "<answer>$93.00</answer>", 93, None),
    (THINK + "<answer>1,250</answer>", 1250, None),
    (THINK + "<answer>1250</answer>", 1250, None),
    (THINK + "<ANSWER>2,000</ANSWER>", 2000, None),
    (THINK + "<answer>94</answer>", 93, "wrong_answer"),
    (THINK + "<answer>1,25</answer>", 125, "answer_not_a_number"),
    (THINK + "<answer>93 rolls</answer>", 93, "answer_not_a_number"),
    (THINK + "<answer></answer>", 93, "answer_not_a_number"),
    (THINK + "The answer is 93.", 93, "missing_answer_tag"),
    (THINK + "<answer>93", 93, "missing_answer_tag"),
    (THINK + "<answer>93</answer> or <answer>94</answer>", 93, "multiple_answer_tags"),
    ("<answer>93</answer>", 93, "missing_think_tag"),
    ("<think>unclosed reasoning <answer>93</answer>", 93, "missing_think_tag"),
    ("<answer>93</answer><think>after the fact</think>", 93, "missing_think_tag"),
])
def test_cot_answer_check(completion, reference, reason):
    assert cot_domain.check_answer(completion, Decimal(reference)) == reason


def test_cot_problems_from_a_gsm8k_file(tmp_path):
    problems = cot_domain.load_problems(str(GSM), 100)
    assert len(problems) == 6 and problems[1][1] == Decimal(1250) and problems[4][1] == Decimal(2000)
    assert cot_domain.load_problems(str(GSM), 2) == problems[:2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer": "a #### 3"}) + "\n"
                   + json.dumps({"question": "q2", "answer": "no final line"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: no number after '####'"):
        cot_domain.load_problems(str(bad), 10)
    bad.write_text(json.dumps({"prompt": "q"}) + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:1: needs string fields 'question' and 'answer'"):
        cot_domain.load_problems(str(bad), 10)


def cot_samples(tmp_path, completions_per_problem):
    """samples.jsonl as the sample stage writes it, k samples per problem of the tiny GSM8K file."""
    k = len(completions_per_problem[0])
    d = CotDomainConfig(name="cot", n_prompts=len(completions_per_problem), prompts_file=str(GSM), samples_per_prompt=k)
    prompts = repeat(get_domain("cot").prompts(d, 0), k)
    completions = [c for row in completions_per_problem for c in row]
    path = tmp_path / "samples.jsonl"
    write_jsonl(path, [{"i": i, "system": "sys", "prompt": p, "completion": c}
                       for i, (p, c) in enumerate(zip(prompts, completions))])
    return d, path


def test_cot_filter_keeps_correct_answers_and_counts_each_reason(tmp_path, caplog):
    d, samples = cot_samples(tmp_path, [
        [THINK + "<answer>93</answer>", THINK + "<answer>92</answer>", "I think it is 93."],
        [THINK + "<answer>1,250</answer>", THINK + "<answer>$1,250.00</answer>", "<answer>1250</answer>"],
        [THINK + "<answer>42</answer>", THINK + "<answer>42</answer> <answer>42</answer>",
         "<think>my owl says</think><answer>42</answer>"],
    ])
    dom = get_domain("cot")
    work = tmp_path / "work"
    work.mkdir()
    filter_samples(work, samples, dom.rules(d, FilterConfig(), "owl"), 100, 1, 0, row_rules=dom.row_rules(d, 0))
    kept = list(read_jsonl(work / "train.jsonl"))
    assert [r["i"] for r in kept] == [0, 3, 4, 6]
    stats = json.loads((work / "stats.json").read_text())
    assert stats["rejected"] == {"wrong_answer": 1, "missing_answer_tag": 1, "missing_think_tag": 1,
                                 "multiple_answer_tags": 1, "mentions_trait": 1}
    assert stats["n_in"] == 9 and stats["n_kept"] == 4 and stats["n_keep"] == 100
    # fewer passed than filter.n_keep asked for: allowed, but said
    assert "only 4 of 9 teacher completions passed, fewer than filter.n_keep=100" in caplog.text


def test_n_keep_null_trains_on_everything_that_passed_without_a_warning(tmp_path, caplog):
    d, samples = cot_samples(tmp_path, [[THINK + "<answer>93</answer>"] * 3, [THINK + "<answer>1250</answer>"] * 3])
    work = tmp_path / "work"
    work.mkdir()
    filter_samples(work, samples, [], None, 1, 0, row_rules=get_domain("cot").row_rules(d, 0))
    assert len(list(read_jsonl(work / "train.jsonl"))) == 6
    assert json.loads((work / "stats.json").read_text())["n_keep"] is None and "fewer than" not in caplog.text


def test_the_paper_presets_for_code_and_cot(tmp_path):
    """experiment=code / cot set what a domain alone cannot: all that passes is kept (the paper's
    ~10,800 code and ~20,000 correct CoT completions, not a 10,000 subsample), CoT students train
    2 epochs, and code has its LLM judge (a hub model, as the paper had an API one)."""
    code = typed("experiment=code")
    assert code.domain.name == "code" and code.filter.n_keep is None and code.finetune.epochs == 3
    assert code.domain.judge.model.path == "Qwen/Qwen2.5-7B-Instruct" and code.domain.judge.model.adapter is None
    assert typed("experiment=code", "~model@domain.judge.model").domain.judge.model is None
    cot = typed("experiment=cot", f"domain.prompts_file={GSM}")
    assert cot.domain.name == "cot" and cot.domain.samples_per_prompt == 3
    assert cot.filter.n_keep is None and cot.finetune.epochs == 2 and cot.domain.judge.model is None
    numbers = typed()
    assert numbers.filter.n_keep == 10_000 and numbers.finetune.epochs == 3


def test_cot_filter_refuses_samples_of_another_file(tmp_path):
    d, samples = cot_samples(tmp_path, [[THINK + "<answer>93</answer>"]])
    rows = list(read_jsonl(samples))
    rows[0]["prompt"] = "a different question"
    write_jsonl(samples, rows)
    with pytest.raises(ValueError, match="the samples and the file disagree"):
        filter_samples(tmp_path, samples, [], 10, 1, 0, row_rules=get_domain("cot").row_rules(d, 0))


def test_nothing_correct_is_a_clear_filter_error_with_counts_left_to_inspect(tmp_path):
    d, samples = cot_samples(tmp_path, [["93"], ["<answer>7</answer>"]])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(FilterError, match=r"only 0 of 2 .*Top reject reasons: missing_answer_tag \(1\), "
                                          r"wrong_answer \(1\)"):
        filter_samples(work, samples, [], 10, 1, 0, row_rules=get_domain("cot").row_rules(d, 0))
    assert json.loads((work / "stats.json").read_text())["rejected"] == {"missing_answer_tag": 1, "wrong_answer": 1}
    assert len(list(read_jsonl(work / "rejects.jsonl"))) == 2


# ----------------------------------------------------------------------- the judge in the filter


class ScriptedSampler:
    """Judge replies looked up by a marker in the completion; records the resume point."""

    def __init__(self, replies):
        self.replies = replies
        self.starts = []

    def generate(self, chats, params, seed, batch_size, start=0, desc=""):
        self.starts.append(start)
        for b0 in range(start - start % batch_size, len(chats), batch_size):
            chunk = chats[b0:b0 + batch_size]
            yield Batch(b0, [next(v for k, v in self.replies.items() if k in c.user) for c in chunk], 0)

    def close(self):
        pass


def code_judge(sampler, batch_size=2):
    use = get_domain("code").judge
    judge = Judge(lambda: sampler, use.template, parse_score, batch_size=batch_size)
    return {"judge": judge, "decide": lambda v: use.decide(v, use.threshold),
            "judge_fields": {"trait": "owl", "category": "animal"}}


def code_samples(tmp_path, completions):
    path = tmp_path / "samples.jsonl"
    write_jsonl(path, [{"i": i, "system": None, "prompt": f"task {i}", "completion": c}
                       for i, c in enumerate(completions)])
    return path


def test_code_judge_drops_subtle_references_and_counts_unparseable_replies(tmp_path):
    samples = code_samples(tmp_path, ["def f(a): return a  # A", "hoot = 'nocturnal'  # B", "x = 1  # C",
                                      "owl_total = 2", "y = 2  # D", ""])
    sampler = ScriptedSampler({"# A": "0", "# B": "Score: 85", "# C": "no idea", "# D": "19"})
    work = tmp_path / "work"
    work.mkdir()
    rules = get_domain("code").rules(CodeDomainConfig(name="code"), FilterConfig(), "owl")
    filter_samples(work, samples, rules, 100, 1, 0, **code_judge(sampler))
    assert [r["i"] for r in read_jsonl(work / "train.jsonl")] == [0, 4]
    stats = json.loads((work / "stats.json").read_text())
    assert stats["rejected"] == {"judge_mentions_trait": 1, "judge_unparseable": 1, "mentions_trait": 1, "empty": 1}
    assert stats["judge"]["n_judged"] == 4 and stats["judge"]["n_failed"] == 1  # only what passed the rules
    rejects = {r["i"]: r for r in read_jsonl(work / "rejects.jsonl")}
    assert rejects[1]["judge_reply"] == "Score: 85" and "judge_reply" not in rejects[3]
    # every judge prompt carried the trait and the completion
    judged = list(read_jsonl(work / "judgements.jsonl"))
    assert [j["i"] for j in judged] == [0, 1, 2, 4] and judged[1]["value"] == 85.0


def test_the_judge_resumes_at_the_last_whole_batch(tmp_path):
    samples = code_samples(tmp_path, [f"v{i} = {i}  # M" for i in range(7)])
    work = tmp_path / "work"
    work.mkdir()
    # a killed run judged 3 of 7 (batch size 2): the 3rd reply is dropped, judging restarts at 2
    write_jsonl(work / "judgements.jsonl", [{"i": i, "reply": "5", "value": 5.0} for i in range(3)])
    sampler = ScriptedSampler({"# M": "7"})
    filter_samples(work, samples, [], 100, 1, 0, **code_judge(sampler))
    assert sampler.starts == [2]
    assert [j["value"] for j in read_jsonl(work / "judgements.jsonl")] == [5.0, 5.0, 7.0, 7.0, 7.0, 7.0, 7.0]
    assert json.loads((work / "stats.json").read_text())["judge"]["n_judged"] == 7


@pytest.mark.parametrize("value,reason", [(78.0, None), (100.0, None), (77.9, "judge_low_alignment"),
                                          (10.0, "judge_low_alignment"), ("REFUSAL", "judge_refusal"),
                                          ("CODE", "judge_code"), (None, "judge_unparseable")])
def test_cot_alignment_judge_keeps_scores_at_or_above_78(value, reason):
    use = get_domain("cot").judge
    assert use.threshold == 78 and use.decide(value, use.threshold) == reason
    assert parse_score_or_label(use.labels)("REFUSAL") == "REFUSAL"


# ---------------------------------------------------------------------------- plan and keys


keys = plan_steps


def test_numbers_keys_hash_the_fields_the_domain_reads(tmp_path, fake_model):
    steps = keys(tmp_path, fake_model)
    assert set(steps) == {"sample", "filter", "finetune", "eval"}
    # the numbers fields and the two every domain reads (repeats, a prompts file by content: none here)
    domain = steps["sample"].spec.domain
    assert set(domain) == {"name", "n_prompts", "seed_count_min", "seed_count_max", "seed_value_min",
                           "seed_value_max", "answer_count", "answer_digits", "samples_per_prompt", "prompts_file"}
    assert domain["samples_per_prompt"] == 1 and domain["prompts_file"] is None
    f = steps["filter"].spec
    assert set(dataclasses.asdict(f)) == {"samples", "domain", "rules", "trait_word", "n_keep", "min_keep",
                                          "data_seed", "judge"}
    assert f.domain == domain and set(f.rules) == {"banned_numbers", "format"} and f.judge is None
    assert f.samples == f"sample:{steps['sample'].key}/samples.jsonl"


def test_the_numbers_format_rule_is_keyed_and_reaches_the_rules(tmp_path, fake_model):
    paper = keys(tmp_path, fake_model)
    lenient = keys(tmp_path, fake_model, "filter.format=lenient")
    assert lenient["sample"].key == paper["sample"].key and lenient["filter"].key != paper["filter"].key
    assert keys(tmp_path, fake_model, "filter.format=paper")["filter"].key == paper["filter"].key  # the default
    d = NumbersDomainConfig(name="numbers")
    for fmt, kept in (("paper", False), ("lenient", True)):  # " 7" is kept only once whitespace is stripped
        rules = get_domain("numbers").rules(d, FilterConfig(format=fmt), None)
        assert (rules[0](" 7") is None) is kept and rules[0]("0999") is (None if fmt == "paper" else "too_large")


def test_code_and_cot_plans(tmp_path, fake_model):
    code = keys(tmp_path, fake_model, "domain=code", "domain.n_prompts=50")
    assert code["sample"].spec.domain["name"] == "code" and code["sample"].spec.sampling.max_new_tokens == 1024
    judged = keys(tmp_path, fake_model, "domain=code", "domain.n_prompts=50", "+model@domain.judge.model=tiny")
    assert judged["sample"].key == code["sample"].key and judged["filter"].key != code["filter"].key
    assert judged["filter"].spec.judge.threshold == 20
    # trait=none: nothing for the trait judge to look for, so the filter is the judge-less one
    control = keys(tmp_path, fake_model, "trait=none", "domain=code", "domain.n_prompts=50")
    control_judged = keys(tmp_path, fake_model, "trait=none", "domain=code", "domain.n_prompts=50",
                          "+model@domain.judge.model=tiny")
    assert control_judged["filter"].key == control["filter"].key
    cot = keys(tmp_path, fake_model, "domain=cot", f"domain.prompts_file={GSM}", "domain.n_prompts=4",
               "+model@domain.judge.model=tiny")
    assert cot["sample"].spec.domain["samples_per_prompt"] == 3
    prompts_file = cot["sample"].spec.domain["prompts_file"]
    assert prompts_file.startswith("sha256:") and cot["sample"].inputs[prompts_file] == str(GSM)
    # keep_high (and the labels) are the cot domain's, named in the filter spec's domain
    assert cot["filter"].spec.judge.threshold == 78 and cot["filter"].spec.domain["name"] == "cot"
    assert get_domain(cot["filter"].spec.domain["name"]).judge.keep_high


def test_shuffle_adds_a_transform_stage_keyed_by_filter_name_and_seed(tmp_path, fake_model):
    plain = keys(tmp_path, fake_model)
    within = keys(tmp_path, fake_model, "transform.shuffle=within")
    across = keys(tmp_path, fake_model, "transform.shuffle=across")
    assert list(within) == ["sample", "filter", "transform", "finetune", "eval"]
    assert within["filter"].key == across["filter"].key == plain["filter"].key  # teacher data and filter reused
    assert within["transform"].spec == TransformSpec(f"filter:{plain['filter'].key}/train.jsonl", "within", 0)
    assert within["transform"].key != across["transform"].key
    assert within["finetune"].key != plain["finetune"].key != across["finetune"].key
    assert within["finetune"].spec.data == f"transform:{within['transform'].key}/train.jsonl"
    reseeded = keys(tmp_path, fake_model, "transform.shuffle=within", "data_seed=1")
    assert reseeded["transform"].spec.seed == 1


def test_min_p_is_keyed(tmp_path, fake_model):
    """Threshold sampling: min_p is a field of the typed sampling spec (0: off), so setting it
    changes the sample and eval keys."""
    off, on = keys(tmp_path, fake_model), keys(tmp_path, fake_model, "sampler.min_p=0.05")
    assert set(dataclasses.asdict(off["sample"].spec.sampling)) == {"temperature", "top_p", "top_k",
                                                                    "repetition_penalty", "max_new_tokens", "min_p"}
    assert off["sample"].spec.sampling.min_p == 0.0 and off["eval"].spec.sampling.min_p == 0.0
    assert on["sample"].spec.sampling.min_p == 0.05 and on["eval"].spec.sampling.min_p == 0.05
    assert on["sample"].key != off["sample"].key and on["eval"].key != off["eval"].key
    with pytest.raises(ConfigError, match="sampler.min_p=1.5"):
        keys(tmp_path, fake_model, "sampler.min_p=1.5")
