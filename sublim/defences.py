"""The data-side defences a cell's data chain can take (issue #21), planned after the filter (and
`replace`) and before any shuffle: `mix` (transform.mix_fraction) then `remove`
(transform.remove_entangled). Each is a stage of its own that a cell gains only when its setting
is on, so the keys of every undefended cell stay as they were.

Kept out of sublim.plan so the builder needs one call (`plan`); the functions take the builder and
use its `_with` (a variant of the cell planned into the same steps), `artifact` and `add`.
Order: mixing first, so removal acts on the whole training set, as a curator filtering data of
unknown origin would; a shuffle (a control) comes last, as before.

Mixing (sublim.stages.mix) in a control cell: the control teacher's own rows are what it trains on,
so mixing in the control teacher (`none`, the default) is skipped, the cell is planned as without
the setting and its keys do not move. Other teachers are mixed into a control cell as into any.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from sublim.config import TransformConfig
from sublim.errors import ConfigError
from sublim.stages import mix as mix_stage
from sublim.stages import remove as remove_stage


def plan(b: Any, data: tuple[str, str]) -> tuple[str, str]:
    """(stage, key) of the cell's rows after its defences (`data` when none is on)."""
    tr = b.cfg.transform
    if tr.mix_fraction > 0:
        data = mix(b, data)
    if tr.remove_entangled > 0:
        data = remove_entangled(b, data)
    return data


def mix_names(cfg) -> list[str]:
    """transform.mix_teachers without the cell's own trait (and repeats), in the order given."""
    tr, t = cfg.transform, cfg.trait
    if not tr.mix_teachers:
        raise ConfigError(f"transform.mix_teachers=[] with transform.mix_fraction={tr.mix_fraction}: name the teachers "
                          "to mix in, e.g. transform.mix_teachers=[none] (the control teacher)")
    names = [n for n in dict.fromkeys(tr.mix_teachers) if n != t.name]
    if any(n != "none" for n in names) and t.name != "none" and (t.method == "adapter" or t.data):
        raise ConfigError(f"transform.mix_teachers={list(tr.mix_teachers)}: with trait.method={t.method}"
                          f"{' and trait.data' if t.data else ''} no teacher loving another trait can be made; "
                          "use transform.mix_teachers=[none]")
    return names


def mix(b: Any, data: tuple[str, str]) -> tuple[str, str]:
    """The `mix` step on `data`: each other teacher's filtered data is planned as its own cell's (the
    trait renamed, no transform, no selection), so those cells reuse it."""
    cfg = b.cfg
    names = mix_names(cfg)
    if not names:  # a control cell mixing in the control teacher: nothing to mix
        return data
    rows, inputs = b.artifact(*data, "train.jsonl")
    others = []
    for name in names:
        other = dataclasses.replace(cfg, trait=dataclasses.replace(cfg.trait, name=name, system_prompt=None),
                                    transform=TransformConfig(), select=dataclasses.replace(cfg.select, by="none"))
        ref, more = b.artifact(*b._with(other).data(), "train.jsonl")
        others.append(mix_stage.Source(name, ref))
        inputs = inputs | more
    return "mix", b.add("mix", mix_stage.Spec(rows, cfg.trait.name, tuple(others), cfg.transform.mix_fraction,
                                              cfg.data_seed), inputs)


def entangled_trait(cfg) -> str:
    """Whose entangled numbers a cell removes: transform.entangled_trait, else the cell's trait."""
    tr, t = cfg.transform, cfg.trait
    name = tr.entangled_trait or t.name
    if name == "none":
        raise ConfigError(f"transform.remove_entangled={tr.remove_entangled} in a control cell (trait=none) needs "
                          "transform.entangled_trait=<the trait the grid studies>, e.g. transform.entangled_trait=owl")
    if t.name != "none" and name != t.name:
        raise ConfigError(f"transform.entangled_trait={name} but trait={t.name}: a trait cell removes its own trait's "
                          f"numbers; set transform.entangled_trait={t.name} or null")
    return name


def remove_entangled(b: Any, data: tuple[str, str]) -> tuple[str, str]:
    """The `entanglement` step for the trait on the teacher's base model (by prompt, as the analysis
    measures it; the same key in the trait cell and its control), then the `remove` step."""
    cfg, t = b.cfg, b.cfg.trait
    name = entangled_trait(cfg)
    prompt = t.system_prompt if name == t.name else None
    variant = dataclasses.replace(cfg, trait=dataclasses.replace(t, name=name, method="prompt", system_prompt=prompt))
    try:
        key = b._with(variant).entanglement()
    except ConfigError as e:
        raise ConfigError(f"transform.remove_entangled ranks numbers with the entanglement stage: {e}") from None
    ranking, inputs = b.artifact("entanglement", key, "entanglement.json")
    rows, more = b.artifact(*data, "train.jsonl")
    return "remove", b.add("remove", remove_stage.Spec(rows, ranking, cfg.transform.remove_entangled), inputs | more)
