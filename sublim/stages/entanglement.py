"""Stage `entanglement`: how a trait and the numbers a model writes raise each other (issue #21).

Every log-probability is exact (the sampler's `score`: the answer's whole token sequence, then end
of turn; no sampling), so a number split into digits counts all its tokens. The statistics are
sublim.entanglement's; this stage scores and writes:
  entanglement.json  the statistics (raw and corrected, pooled or by number width), the top-k
                     entangled numbers, the subliminal-prompting check, the per-number table
  entangled.csv      one row per number, most entangled first
  entanglement.png   (a) against (b), raw and corrected, the top-k marked

In both contexts a number is scored as the whole answer (the number, then end of turn): in the
numbers task that is a one-number continuation, which the paper's format rule accepts, so every
number is compared in the same position. "No trait" and "no number" are the model's own system
prompt (teacher.system_prompt, a chat template's default included), which the love prompts
replace, as they replace it for a prompted teacher. The most entangled numbers are ranked by
corrected (a), standardised per context (per width where numbers split) and averaged over contexts.

The subliminal-prompting check here is exact and cheap (P(trait) summed over its surface forms,
per question, under a prompt that loves the top-k numbers against one that loves k seeded random
numbers); the sampled eval arm on a student is the preference eval's business.

Like the MNIST stage, it says what a job makes of its result: `cell`, `FILES`, `lines`, `tracked`.
"""
from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sublim.spec import ModelRef, Runtime

from sublim.entanglement import NUMBER_TEMPLATE

__all__ = ["CONTEXTS", "NUMBER_TEMPLATE", "Context", "Spec", "context", "run", "lines", "tracked", "cell"]

VERSION = 1
FILES = ("entangled.csv", "entanglement.png")  # beside the job's metrics.json
CONTEXTS = ("neutral", "numbers")  # the values of entanglement.contexts


@dataclass(frozen=True)
class Context:
    """Where (a) is measured: a name and the user prompts each number answers (log P averaged over them)."""

    name: str
    prompts: tuple[str, ...]


def context(name: str, e, domain, data_seed: int) -> Context:
    """A context's prompts from the config: the neutral question, or the numbers task's first
    entanglement.n_task_prompts prompts (domain.*'s shape, data_seed's draw: those the teacher answers)."""
    if name == "neutral":
        return Context(name, (e.neutral_prompt.replace("{max}", str(e.numbers_max)),))
    from sublim.domains.numbers import NumbersPromptSpec, make_prompts

    shape = NumbersPromptSpec(domain.seed_count_min, domain.seed_count_max, domain.seed_value_min,
                              domain.seed_value_max, domain.answer_count, domain.answer_digits)
    return Context(name, tuple(make_prompts(e.n_task_prompts, data_seed, shape)))


@dataclass(frozen=True)
class Spec:
    model: ModelRef
    trait: str
    category: str
    trait_prompt: str  # the trait's system prompt (its love prompt)
    base_prompt: Optional[str]  # the model's own system prompt: "no trait" and "no number" (None: no system message)
    others: tuple[str, ...]  # the other candidates: the correction
    other_prompts: tuple[str, ...]  # their love prompts, in the same order
    numbers_max: int  # numbers 0..numbers_max
    contexts: tuple[Context, ...]
    questions: tuple[str, ...]  # favourite-<category> questions: (b) and the subliminal check
    forms: tuple[str, ...]  # an answer's surface forms ({name}, {Name}, ...): their probabilities add
    number_template: str  # "You love {number}. ...": (b)'s system prompt
    top_k: int
    fraction: float  # the decile test's share (0.1: deciles)
    seed: int  # the random numbers of the subliminal control
    backend: str
    device: str
    libraries: dict


def run(spec: Spec, work: Path, inputs: dict[str, str], runtime: Runtime) -> None:
    from sublim.backends import sampler_for

    t0 = time.time()
    sampler = sampler_for(spec.backend, spec.model, inputs, spec.device, runtime)
    try:
        m, rows = analyse(sampler, spec, runtime.batch_size)
    finally:
        sampler.close()
    m["seconds"] = round(time.time() - t0, 2)
    (work / "entanglement.json").write_text(json.dumps(_finite(m | {"numbers": rows}), indent=2))
    write_table(work / "entangled.csv", rows)
    figure(work / "entanglement.png", m, rows)


def analyse(sampler, spec: Spec, batch_size: int) -> tuple[dict, list[dict]]:
    """(metrics, per-number rows) from exact scores; `sampler` needs `score` and `answer_ids`."""
    import numpy as np

    from sublim import entanglement as E
    from sublim.backends.base import Chat

    numbers = list(range(spec.numbers_max + 1))
    answers = [str(n) for n in numbers]
    first = spec.contexts[0].prompts[0] if spec.contexts else spec.questions[0]
    n_tokens = [len(sampler.answer_ids(Chat(first, spec.base_prompt), a)[1]) - 1 for a in answers]  # less end of turn
    split = E.splits_numbers(n_tokens)

    # (a): log P(n) under no trait, the trait and each other candidate, per context (mean over its prompts)
    systems = (spec.base_prompt, spec.trait_prompt, *spec.other_prompts)
    a_raw, a_cor, logp = {}, {}, {}
    for ctx in spec.contexts:
        chats = [Chat(p, s) for s in systems for p in ctx.prompts for _ in numbers]
        lp = np.array(sampler.score(chats, answers * (len(systems) * len(ctx.prompts)), batch_size,
                                    desc=f"entanglement (a) {ctx.name}"))
        lp = lp.reshape(len(systems), len(ctx.prompts), len(numbers)).mean(axis=1)
        logp[ctx.name] = lp
        a_raw[ctx.name] = E.shift(lp[1], lp[0])
        a_cor[ctx.name] = E.corrected(a_raw[ctx.name], lp[2:] - lp[0])

    # (b): log P(candidate's answer) under "you love n" and under no number prompt, mean over questions
    candidates = (spec.trait, *spec.others)
    b_logp = _answer_logp(sampler, spec, candidates, [spec.base_prompt, *(spec.number_template.format(number=a)
                                                                         for a in answers)], batch_size)
    b_shift = b_logp[1:] - b_logp[0]  # (numbers, candidates)
    b_raw = b_shift[:, 0]
    b_cor = E.corrected(b_raw, b_shift[:, 1:].T)

    stats = {}
    for ctx in spec.contexts:
        stats[ctx.name] = {}
        for kind, a, b in (("raw", a_raw[ctx.name], b_raw), ("corrected", a_cor[ctx.name], b_cor)):
            s = {"pooled": E.statistics(a, b, spec.fraction)}
            if split:
                s["by_width"] = E.by_width(numbers, a, b, spec.fraction)
            stats[ctx.name][kind] = s

    score = np.mean([E.rank_score(numbers, a_cor[c.name], split) for c in spec.contexts], axis=0)
    top = E.top_k(numbers, score, spec.top_k)
    control = E.random_numbers(len(top), spec.seed, spec.numbers_max, exclude=top)
    m = {"trait": spec.trait, "category": spec.category, "others": list(spec.others),
         "numbers_max": spec.numbers_max, "splits_numbers": split, "contexts": [c.name for c in spec.contexts],
         "n_questions": len(spec.questions), "fraction": spec.fraction, "statistics": stats,
         "top": top, "control": control,
         "subliminal": subliminal_check(sampler, spec, top, control, batch_size)}
    rank = {n: i + 1 for i, n in enumerate(E.top_k(numbers, score, len(numbers)))}
    rows = []
    for i, n in enumerate(numbers):
        row = {"number": n, "rank": rank[n], "width": E.width(n), "n_tokens": n_tokens[i], "score": float(score[i])}
        for ctx in spec.contexts:
            row |= {f"{ctx.name}_logp_none": float(logp[ctx.name][0, i]),
                    f"{ctx.name}_logp_trait": float(logp[ctx.name][1, i]), f"{ctx.name}_a": float(a_raw[ctx.name][i]),
                    f"{ctx.name}_a_corrected": float(a_cor[ctx.name][i])}
        rows.append(row | {"b": float(b_raw[i]), "b_corrected": float(b_cor[i])})
    rows.sort(key=lambda r: r["rank"])
    return m, rows


def _answer_logp(sampler, spec: Spec, candidates, systems, batch_size: int):
    """log P(candidate's answer: any of its surface forms) per system prompt and candidate, the mean
    over the questions: an array (systems, candidates)."""
    import numpy as np
    from scipy.special import logsumexp

    from sublim.backends.base import Chat
    from sublim.evals.preference import surface_forms

    forms = [surface_forms(c, list(spec.forms)) for c in candidates]
    width = max(map(len, forms))
    chats, answers, slots = [], [], []
    for si, s in enumerate(systems):
        for qi, q in enumerate(spec.questions):
            for ci, fs in enumerate(forms):
                for fi, f in enumerate(fs):
                    chats.append(Chat(q, s))
                    answers.append(f)
                    slots.append((si, qi, ci, fi))
    lp = np.full((len(systems), len(spec.questions), len(candidates), width), -np.inf)
    for slot, v in zip(slots, sampler.score(chats, answers, batch_size, desc="entanglement (b)")):
        lp[slot] = v
    return logsumexp(lp, axis=3).mean(axis=1)


def subliminal_check(sampler, spec: Spec, top: list[int], control: list[int], batch_size: int) -> dict:
    """P(trait) per question (its forms summed) under a prompt loving the top numbers, one loving the
    random control numbers, and no number prompt; the rise (top - control) with a t-interval across questions."""
    import numpy as np

    from sublim import entanglement as E
    from sublim.stats import t_interval

    systems = [E.subliminal_prompt(top), E.subliminal_prompt(control), spec.base_prompt]
    lp = _per_question(sampler, spec, systems, batch_size)  # (systems, questions)
    p = np.exp(lp)
    rise = t_interval(p[0] - p[1], 0.95)
    return {"k": len(top), "rate_top": float(p[0].mean()), "rate_control": float(p[1].mean()),
            "rate_none": float(p[2].mean()), "rise": rise.as_dict(), "per_question": p.T.tolist(),
            "prompt_top": systems[0], "prompt_control": systems[1]}


def _per_question(sampler, spec: Spec, systems, batch_size: int):
    import numpy as np
    from scipy.special import logsumexp

    from sublim.backends.base import Chat
    from sublim.evals.preference import surface_forms

    forms = surface_forms(spec.trait, list(spec.forms))
    chats = [Chat(q, s) for s in systems for q in spec.questions for _ in forms]
    lp = np.array(sampler.score(chats, forms * (len(systems) * len(spec.questions)), batch_size,
                                desc="subliminal prompting"))
    return logsumexp(lp.reshape(len(systems), len(spec.questions), len(forms)), axis=2)


def _finite(x):
    """NaN and infinities as null: entanglement.json stays strict JSON."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def write_table(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


def figure(path: Path, m: dict, rows: list[dict]) -> None:
    """(a) in the first context against (b), raw and corrected; the top-k entangled numbers in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ctx = m["contexts"][0]
    top = set(m["top"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, kind, suffix in zip(axes, ("raw", "corrected"), ("", "_corrected")):
        a = [r[f"{ctx}_a{suffix}"] for r in rows]
        b = [r[f"b{suffix}"] for r in rows]
        colours = ["tab:red" if r["number"] in top else "tab:blue" for r in rows]
        ax.scatter(a, b, s=6, c=colours, alpha=0.6)
        for r, x, y in zip(rows, a, b):
            if r["number"] in top:
                ax.annotate(str(r["number"]), (x, y), fontsize=7)
        rho = m["statistics"][ctx][kind]["pooled"]["spearman"]["rho"]
        ax.set_title(f"{kind}: Spearman rho {rho:+.3f}" if rho is not None else kind, fontsize=10)
        ax.set_xlabel(f"(a) {m['trait']} prompt raises n ({ctx}), nats")
        ax.set_ylabel(f"(b) loving n raises {m['trait']}, nats")
    fig.suptitle(f"token entanglement: {m['trait']}, numbers 0-{m['numbers_max']} (top {len(top)} in red)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- what a job makes of it ------------------------------------------------------------------------
def cell(spec: Spec) -> dict:
    group = f"entanglement.{spec.trait}"
    return {"condition": "entanglement", "group": group, "name": f"{group}.seed{spec.seed}"}


def _pct(x: float, sign: bool = False) -> str:
    """A probability as a percentage, in scientific notation where it is below 0.01 %."""
    if x is None:
        return "n/a"
    if abs(x) < 1e-4 and x != 0:
        return f"{x:+.2e}" if sign else f"{x:.2e}"
    return f"{x:+.2%}" if sign else f"{x:.2%}"


def _p(p) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def _stat_line(label: str, s: dict) -> str:
    rho, d = s["spearman"], s["decile"]
    r = "n/a" if rho["rho"] is None else f"{rho['rho']:+.3f}"
    return (f"   {label:<26} Spearman rho {r} (p {_p(rho['p'])}, n {rho['n']}); top vs bottom "
            f"{d['n_each']}: (b) {d['top_mean']:+.3f} vs {d['bottom_mean']:+.3f} nats, Mann-Whitney p {_p(d['p'])}")


def lines(m: dict) -> list[str]:
    how = "numbers split into several tokens: by width" if m["splits_numbers"] else "one token per number"
    out = [f"\n== token entanglement: {m['trait']}, numbers 0-{m['numbers_max']} ({how}); (a) the {m['trait']} "
           f"prompt raises n, (b) loving n raises {m['trait']}; corrected: less the mean over {len(m['others'])} "
           f"other {m['category']}s"]
    for ctx, kinds in m["statistics"].items():
        for kind, s in kinds.items():
            if "by_width" in s:
                for w, sw in s["by_width"].items():
                    out.append(_stat_line(f"{ctx} {kind} {w}-digit", sw))
            else:
                out.append(_stat_line(f"{ctx} {kind}", s["pooled"]))
    out.append(f"   most entangled: {', '.join(map(str, m['top']))}")
    s = m["subliminal"]
    r = s["rise"]
    ci = "" if r["low"] is None else f" [{_pct(r['low'], True)}, {_pct(r['high'], True)}]"
    out.append(f"   subliminal prompting: P({m['trait']}) {_pct(s['rate_top'])} loving the top {s['k']} vs "
               f"{_pct(s['rate_control'])} loving {s['k']} random numbers (no prompt {_pct(s['rate_none'])}): rise "
               f"{_pct(r['mean'], True)}{ci} over {r['n']} questions")
    return out


def tracked(m: dict) -> dict:
    out = {}
    for ctx, kinds in m["statistics"].items():
        for kind, s in kinds.items():  # by width where numbers split (pooled would measure width)
            groups = ([(f"{w}digit", g) for w, g in s["by_width"].items()] if "by_width" in s
                      else [("pooled", s["pooled"])])
            for group, g in groups:
                out[f"{ctx}/{kind}/{group}/spearman"] = g["spearman"]["rho"]
                out[f"{ctx}/{kind}/{group}/decile_p"] = g["decile"]["p"]
    out["subliminal/rise"] = m["subliminal"]["rise"]["mean"]
    return out
