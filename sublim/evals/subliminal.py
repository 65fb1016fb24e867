"""Subliminal prompting as a preference eval (eval.subliminal_prompt; issue #21 item 2).

The untouched student answers the favourite-<category> questions under a system prompt that loves
the trait's k most entangled numbers (`top`: sublim.entanglement.subliminal_prompt), or as many
seeded random numbers (`random`: the control); the trait rate's rise of top over random is Zur et
al.'s subliminal prompting, sampled on the student instead of scored on the teacher (the
entanglement stage's own check). Which numbers are entangled is known only once the entanglement
stage has run on the student's model, so the eval's spec holds a ref to that entanglement.json and
the prompt is built when the eval runs (and recorded in its metrics.json).

- top: the k best-ranked numbers of entanglement.json (its per-number ranks, whatever the stage's
  own top_k, as the remove defence reads them), so another k reuses the same analysis.
- random: E.random_numbers(k, the cell's seed, 0..numbers_max, none of the top k), the stage's own
  `control` draw: with k = entanglement.top_k they are exactly its `control` numbers.
- Cells (sublim.cell): `top` is a treatment of the trait, `random` its control (trait "none", as
  every control); both read finetune `subliminal_<trait><k>`, so the report pairs them by seed and
  a grid over traits keeps each trait's control apart.
- The trait whose numbers are used is eval.subliminal_trait, else the cell's trait; a control cell
  (trait=none) must name it. Its love prompt is the trait's (trait.system_prompt where it is the
  cell's own), as the teacher's, however the teacher got the trait: the entanglement stage measures
  a trait given by prompt.

This module imports no eval kind: preference.py plans and runs it (its SubliminalSpec).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from sublim.errors import ConfigError

CHOICES = ("none", "top", "random")


@dataclass(frozen=True)
class SubliminalPrompt:
    """Which numbers the eval's system prompt loves: `numbers` (top | random) of the entanglement
    stage's ranking (`entanglement`: the ref of its entanglement.json), k of them; `seed` draws random."""

    entanglement: str
    numbers: str
    k: int
    seed: int


def numbers_trait(cfg: Any) -> str:
    """Whose entangled numbers the prompt uses: eval.subliminal_trait, else the cell's trait."""
    e, t = cfg.eval, cfg.trait
    name = e.subliminal_trait or t.name
    if name == "none":
        raise ConfigError(f"eval.subliminal_prompt={e.subliminal_prompt} in a control cell (trait=none) needs "
                          "eval.subliminal_trait=<the trait whose entangled numbers are used>, e.g. eval.subliminal_trait=owl")
    if t.name != "none" and name != t.name:
        raise ConfigError(f"eval.subliminal_trait={name} but trait={t.name}: a trait cell uses its own trait's numbers; "
                          f"set eval.subliminal_trait={t.name} or null")
    return name


def check(cfg: Any) -> bool:
    """Whether the subliminal prompt is on; its settings refused where they would change nothing."""
    e = cfg.eval
    on = getattr(e, "subliminal_prompt", "none")
    if on not in CHOICES:
        raise ConfigError(f"eval.subliminal_prompt={on!r}: use {', '.join(CHOICES)}")
    if on == "none":
        default = type(e)()
        for name in ("subliminal_k", "subliminal_trait"):
            if getattr(e, name) != getattr(default, name):
                raise ConfigError(f"eval.{name}={getattr(e, name)} changes nothing with eval.subliminal_prompt=none: "
                                  "set eval.subliminal_prompt=top or random, or drop it")
        return False
    why = ("finetune.method=" + cfg.finetune.method if cfg.finetune.method != "none" else
           "eval.subject=teacher" if e.subject == "teacher" else
           f"eval.in_context={e.in_context}" if e.in_context > 0 else None)
    if why:
        raise ConfigError(f"eval.subliminal_prompt={on} measures the untouched student under the prompt, not with "
                          f"{why}: use finetune=none eval.subject=student eval.in_context=0 (arm=subliminal_{on})")
    numbers_max = cfg.entanglement.numbers_max
    if 2 * e.subliminal_k > numbers_max + 1:
        raise ConfigError(f"eval.subliminal_k={e.subliminal_k}: top and random need {2 * e.subliminal_k} distinct "
                          f"numbers of 0..{numbers_max}; lower it or raise entanglement.numbers_max")
    return True


def plan(b: Any) -> Optional[tuple[SubliminalPrompt, dict[str, str]]]:
    """(the eval spec's SubliminalPrompt, inputs), None when off: the `entanglement` step for the
    numbers' trait on the student's model (by prompt; the same key in the top and random cells)."""
    cfg = b.cfg
    if not check(cfg):
        return None
    e, t = cfg.eval, cfg.trait
    name = numbers_trait(cfg)
    trait = dataclasses.replace(t, name=name, method="prompt", system_prompt=t.system_prompt if name == t.name else None)
    variant = dataclasses.replace(cfg, teacher=cfg.student, trait=trait)  # Builder.entanglement measures `teacher`
    try:
        key = b._with(variant).entanglement()
    except ConfigError as err:
        raise ConfigError(f"eval.subliminal_prompt={e.subliminal_prompt} ranks numbers with the entanglement stage "
                          f"on the student's model (its errors say teacher): {err}") from None
    ref, inputs = b.artifact("entanglement", key, "entanglement.json")
    return SubliminalPrompt(ref, e.subliminal_prompt, e.subliminal_k, cfg.seed), inputs


def numbers(s: SubliminalPrompt, entanglement: dict) -> tuple[list[int], list[int]]:
    """(the numbers the prompt loves, the k most entangled) from an entanglement.json."""
    from sublim import entanglement as E

    top = [int(r["number"]) for r in sorted(entanglement["numbers"], key=lambda r: r["rank"])[: s.k]]
    if s.numbers == "top":
        return top, top
    return E.random_numbers(s.k, s.seed, entanglement["numbers_max"], exclude=top), top


def system_prompt(s: SubliminalPrompt, inputs: dict[str, str]) -> tuple[str, dict]:
    """(the system prompt, what metrics.json records of it)."""
    from sublim import entanglement as E

    m = json.loads(Path(inputs[s.entanglement]).read_text())
    loved, top = numbers(s, m)
    prompt = E.subliminal_prompt(loved)
    return prompt, {"numbers": s.numbers, "k": s.k, "trait": m["trait"], "loved": loved, "top": top,
                    "prompt": prompt, "entanglement": s.entanglement}


def record(metrics: Path, rec: dict) -> None:
    """Add the prompt's record to the eval's metrics.json."""
    m = json.loads(metrics.read_text())
    metrics.write_text(json.dumps(m | {"subliminal": rec}, indent=2))


def line(rec: dict) -> str:
    what = f"{rec['trait']}'s {rec['k']} most entangled numbers" if rec["numbers"] == "top" else \
        f"{rec['k']} random numbers (control for {rec['trait']})"
    return f"   subliminal prompt: loves {what}: {', '.join(map(str, rec['loved']))}"


def cell(cfg: Any) -> Optional[dict]:
    """The cell's condition, trait and method label when the prompt is on (see the module doc), else None."""
    e = cfg.eval
    on = getattr(e, "subliminal_prompt", "none")
    if on == "none":
        return None
    name = e.subliminal_trait or cfg.trait.name
    return {"condition": "treatment" if on == "top" else "control", "trait": name if on == "top" else "none",
            "finetune": f"subliminal_{name}{e.subliminal_k}", "target": name if on == "top" else None}
