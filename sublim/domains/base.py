"""What a data domain provides to the pipeline, and the numbers domain in that shape.

A Domain turns the `domain` config into prompts (the `sample` stage) and into the rules its
completions must pass (the `filter` stage): text rules (completion -> reject reason or None),
row rules (the whole sample row: cot compares with the problem's reference answer), and an
optional LLM judge (`JudgeUse`: its default template, threshold and how a verdict decides).
`fields` and `filter_fields` name exactly the config fields a domain reads: `spec` puts those (and
nothing else) in the sample and filter specs, so a field one domain ignores never changes another
domain's cache keys.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

from sublim.domains.numbers import NumbersPromptSpec, make_prompts
from sublim.filters import Rule, banned_numbers_rule, numbers_format_rule, trait_rule

RowRule = Callable[[dict], Optional[str]]


@dataclass(frozen=True)
class JudgeUse:
    """How a domain's filter uses a judge: the default template and threshold, and the decision.

    keep_high: a completion is kept when its score >= threshold (an alignment score), else dropped
    when its score >= threshold (how strongly it refers to the trait). An unparseable reply drops
    the completion (`judge_unparseable`): it was not checked. A label reply (CODE, REFUSAL) drops it
    as `judge_<label>`. needs_trait: nothing to look for under trait=none, so the judge is skipped.
    """

    template: str
    threshold: float
    keep_high: bool
    reject_reason: str
    needs_trait: bool = False
    labels: tuple[str, ...] = ()

    def decide(self, value: Any, threshold: float) -> Optional[str]:
        if value is None:
            return "judge_unparseable"
        if isinstance(value, str):
            return f"judge_{value.lower()}"
        if self.keep_high:
            return None if value >= threshold else self.reject_reason
        return self.reject_reason if value >= threshold else None


class Domain:
    """The interface; subclasses override what they use."""

    name = "domain"
    judge: Optional[JudgeUse] = None
    # the DomainConfig fields this domain reads (the sample key hashes these and nothing else)
    fields: tuple[str, ...] = ("name", "n_prompts")
    # the FilterConfig fields its rules read (the filter key hashes these)
    filter_fields: tuple[str, ...] = ()

    def spec(self, d) -> dict:
        """Every DomainConfig field this domain reads, as a stage spec holds it (a file by content)."""
        out = {f: getattr(d, f) for f in self.fields} | {"name": self.name, "samples_per_prompt": d.samples_per_prompt}
        prompts_file = getattr(d, "prompts_file", None)  # only domains that read prompts have the field
        out["prompts_file"] = file_digest(prompts_file) if prompts_file else None
        return out

    def view(self, spec: dict, inputs: dict[str, str]) -> SimpleNamespace:
        """The spec as the domain's methods read it (attributes), its file refs located through inputs."""
        fields = dict(spec)
        if fields.get("prompts_file"):
            fields["prompts_file"] = inputs[fields["prompts_file"]]
        return SimpleNamespace(**fields)

    def check(self, d) -> list[str]:
        """Problems with the config, each naming its key."""
        problems = []
        if d.samples_per_prompt < 1:
            problems.append(f"domain.samples_per_prompt={d.samples_per_prompt} must be at least 1")
        prompts_file = getattr(d, "prompts_file", None)
        if prompts_file and not Path(prompts_file).is_file():
            problems.append(f"domain.prompts_file={prompts_file!r} is not a file")
        return problems

    def prompts(self, d, seed: int) -> list[str]:
        """One prompt per task (before `samples_per_prompt` repeats them)."""
        raise NotImplementedError

    def rules(self, d, filt, trait_word: Optional[str]) -> list[Rule]:
        return [trait_rule(trait_word)] if trait_word else []

    def row_rules(self, d, seed: int) -> list[RowRule]:
        return []


def warn_if_short(d, prompts: list[str]) -> list[str]:
    """`prompts`, saying so when domain.prompts_file held fewer tasks than domain.n_prompts asked for."""
    if len(prompts) < d.n_prompts:
        logging.getLogger("sublim.domains").warning(
            "domain.prompts_file=%s has %d tasks, fewer than domain.n_prompts=%d: all %d are used",
            d.prompts_file, len(prompts), d.n_prompts, len(prompts))
    return prompts


def repeat(prompts: list[str], k: int) -> list[str]:
    """Each prompt k times in a row: sample i answers task i // k."""
    return [p for p in prompts for _ in range(k)]


def file_digest(path: str) -> str:
    """Content hash of a data file (the key follows the content, not the path)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(2**20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()[:24]


class NumbersDomain(Domain):
    """The paper's number sequences (sublim.domains.numbers); rules: format (`filter.format`: paper |
    lenient), trait word, banned numbers."""

    name = "numbers"
    filter_fields = ("banned_numbers", "format")
    fields = ("name", "n_prompts", "seed_count_min", "seed_count_max", "seed_value_min", "seed_value_max",
              "answer_count", "answer_digits")

    def prompts(self, d, seed: int) -> list[str]:
        spec = NumbersPromptSpec(d.seed_count_min, d.seed_count_max, d.seed_value_min, d.seed_value_max,
                                 d.answer_count, d.answer_digits)
        return make_prompts(d.n_prompts, seed, spec)

    def rules(self, d, filt, trait_word: Optional[str]) -> list[Rule]:
        rules = [numbers_format_rule(d.answer_count, 10 ** d.answer_digits - 1, d.answer_digits, filt.format)]
        rules += [trait_rule(trait_word)] if trait_word else []
        rules += [banned_numbers_rule(filt.banned_numbers)] if filt.banned_numbers else []
        return rules


NUMBERS = NumbersDomain()
