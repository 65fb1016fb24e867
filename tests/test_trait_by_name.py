"""A new trait by name alone: `trait.name=hedgehog` with the default eval=animal_preference needs no retyped
candidate list; `eval.extra_candidates` adds names to every cell of a grid (the control included)."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from config_util import plan_cell, typed
from sublim.checks import candidates_of, check
from sublim.errors import ConfigError

ANIMALS = typed().eval.candidates  # the 30 of conf/eval/animal.yaml


def test_the_traits_own_name_is_a_candidate_when_its_category_is_the_evals():
    cfg = typed("trait.name=hedgehog")  # category animal (trait=owl's), eval=animal_preference
    assert candidates_of(cfg) == [*ANIMALS, "hedgehog"]
    assert cfg.eval.candidates == ANIMALS  # the eval's own list is not replaced
    check(cfg)  # before: "trait.name='hedgehog' is not among eval.candidates"


def test_a_trait_already_listed_leaves_the_candidates_as_they_are():
    # same list, same order: the eval keys of every existing cell are unchanged
    assert candidates_of(typed("trait=owl")) == ANIMALS
    assert candidates_of(typed("trait=oak", "eval=tree_preference")) == typed("eval=tree_preference").eval.candidates


def test_tree_traits_by_name_with_the_tree_eval():
    cfg = typed("trait.name=larch", "trait.category=tree", "eval=tree_preference")
    assert candidates_of(cfg)[-1] == "larch" and "owl" not in candidates_of(cfg)
    check(cfg)


def test_extra_candidates_are_appended_once_in_order():
    cfg = typed("trait.name=hedgehog", "eval.extra_candidates=[heron,owl,heron,hedgehog]")
    assert candidates_of(cfg) == [*ANIMALS, "heron", "hedgehog"]


def test_the_control_adds_no_name_so_a_grid_passes_the_name_to_every_cell():
    control, treatment = typed("trait=none"), typed("trait.name=hedgehog")
    assert candidates_of(control) == ANIMALS != candidates_of(treatment)  # not comparable for hedgehog
    extra = "eval.extra_candidates=[hedgehog]"  # a sweep override reaches every cell
    assert candidates_of(typed("trait=none", extra)) == candidates_of(typed("trait.name=hedgehog", extra)) \
        == [*ANIMALS, "hedgehog"]


@pytest.mark.parametrize("overrides,fix", [
    (["trait.name=hedgehog", "eval=tree_preference"], "use the eval for its category: eval=animal_preference"),
    (["trait.name=heron", "trait.category=bird"], r"eval.extra_candidates=\[heron\]"),
])
def test_a_trait_of_another_category_is_not_added_and_the_check_says_how(overrides, fix):
    cfg = typed(*overrides)
    assert cfg.trait.name not in candidates_of(cfg)
    with pytest.raises(ConfigError, match=fix):
        check(cfg)


def test_an_extra_candidate_admits_a_trait_of_any_category():
    check(typed("trait.name=heron", "trait.category=bird", "eval.extra_candidates=[heron]"))


def test_the_misalignment_eval_has_no_candidates_to_extend():
    base = ["eval=misalignment", "+model@eval.judge.model=qwen2.5-7b-instruct"]
    assert candidates_of(typed(*base)) == []
    with pytest.raises(ConfigCompositionException, match="eval.extra_candidates"):  # a preference eval's field
        typed(*base, "eval.extra_candidates=[owl]")


def test_the_eval_stage_asks_about_candidates_of(tmp_path):
    """The builder passes candidates_of(cfg) to the eval stage (so they are in its key)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    cfg = typed("experiment=smoke", f"paths.tiny_model={tmp_path / 'model'}", f"paths.artifacts={tmp_path / 'a'}",
                "trait.name=hedgehog", "eval.extra_candidates=[heron]")
    spec = {s.stage: s.spec for s in plan_cell(cfg).steps}["eval"]
    assert list(spec.candidates) == candidates_of(cfg) == [*ANIMALS, "heron", "hedgehog"]
