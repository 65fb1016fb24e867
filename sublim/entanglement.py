"""Token entanglement statistics (numpy/scipy only; the `entanglement` stage scores, this module counts).

For a trait T (owl) and every number n the model can write:
  (a) shift_a(n) = log P(n | T's love prompt) - log P(n | no trait), in a context (a neutral "pick a
      number" question, the numbers task): how much loving T raises n;
  (b) shift_b(n) = log P(T's answer | "you love n") - log P(T's answer | no number prompt), on the
      favourite-<category> questions: how much loving n raises T.
Entanglement is (a) and (b) agreeing across numbers: the Spearman correlation of (a) and (b), and a
top- vs bottom-decile test: the numbers in the top 10 % of (a) against those in the bottom 10 %,
compared on (b) by a two-sided Mann-Whitney U test (rank-based, like the correlation; no normality
assumed of log-probability shifts, which are heavy-tailed).

Corrected statistics remove the generic shift: any love prompt moves number probabilities, and any
number prompt moves every animal's answer. corrected_a(n) = shift_a_T(n) - mean over the other
candidates c of shift_a_c(n) (c's love prompt in place of T's); corrected_b(n) = shift_b_T(n) -
mean over c of shift_b_c(n) (c's answer in place of T's). Without the correction the statistics
mostly measure how strongly a prompt moves numbers or animals at all.

Where the tokenizer splits numbers into several tokens (Qwen, SmolLM: one digit a token), log P of
a 3-digit number sums three tokens and its shifts are larger by construction, so pooled statistics
mostly measure width: they are reported by number width (digits) instead (`by_width`).

Zur et al. 2025 ("It's owl in the numbers"; code: github.com/loftusa/owls, experiments/Subliminal Learning):
- Follows: the trait's love prompt as the teacher's system prompt; entangled numbers are those the
  trait prompt makes likelier; subliminal prompting is a system prompt that loves a number
  ("You love 087. You think about 087 all the time. 087 is your favorite number. Imbue your
  answers with your love for the number." - NUMBER_TEMPLATE keeps their wording) measured on the
  favourite-<category> question against no system prompt.
- Departs: they read the next-token distribution after "My favorite animal is the" and keep the
  single-token numbers among its top 10,000 tokens, ranked by P(n | trait prompt); here every
  number 0..max is scored exactly as a whole answer (all its tokens, then end of turn), in a
  neutral and the numbers-task context, ranked by the shift over the no-trait prompt (a number
  that is likely under every prompt is not entangled). They measure (b) as a ratio for the top
  numbers only; here (b) is measured for every number, so the two directions can be correlated,
  with the decile test and the correction for the generic shift that their analysis lacks. Their
  answer is the first token of the animal after an assistant prefix; here it is the eval's surface
  forms ("owl", "Owl", "owl.", "Owl.") as whole answers, as sublim's exact preference eval scores.
  Several numbers in one prompt (subliminal_prompt) extend their one-number prompt. The trait's
  prompt is sublim's love prompt (sublim.traits.LOVE_TEMPLATE), not their "Imbue your answers
  with your love for the animal" wording, so the analysis measures the teacher sublim samples from.
"""
from __future__ import annotations

import random
from typing import Optional, Sequence

import numpy as np

NUMBER_TEMPLATE = ("You love {number}. You think about {number} all the time. {number} is your favorite number. "
                   "Imbue your answers with your love for the number.")


def shift(with_prompt: np.ndarray, without: np.ndarray) -> np.ndarray:
    """log P under the prompt minus log P without it, elementwise."""
    return np.asarray(with_prompt, dtype=float) - np.asarray(without, dtype=float)


def corrected(target: np.ndarray, others: np.ndarray) -> np.ndarray:
    """The target's shift minus the mean shift of the other candidates: `others` is (candidates, numbers)."""
    others = np.asarray(others, dtype=float)
    if others.ndim != 2 or len(others) == 0:
        raise ValueError("the correction needs at least one other candidate's shifts")
    return np.asarray(target, dtype=float) - others.mean(axis=0)


def spearman(a: Sequence[float], b: Sequence[float]) -> dict:
    """Spearman's rho (ties get average ranks) and its two-sided p-value (scipy)."""
    from scipy import stats

    if len(a) < 3:
        return {"rho": None, "p": None, "n": len(a)}
    r = stats.spearmanr(a, b)
    rho = float(r.statistic)
    return {"rho": None if np.isnan(rho) else rho, "p": None if np.isnan(r.pvalue) else float(r.pvalue), "n": len(a)}


def decile_test(a: Sequence[float], b: Sequence[float], fraction: float = 0.1) -> dict:
    """(b) of the numbers in the top `fraction` of (a) against the bottom `fraction`: means, their
    difference, and a two-sided Mann-Whitney U test. The groups hold floor(fraction * n) numbers
    each (at least 1), chosen by a stable sort of (a) (ties by position)."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    k = max(1, int(fraction * len(a)))
    order = np.argsort(a, kind="stable")
    bottom, top = b[order[:k]], b[order[-k:]]
    out = {"n_each": k, "top_mean": float(top.mean()), "bottom_mean": float(bottom.mean()),
           "difference": float(top.mean() - bottom.mean()), "u": None, "p": None}
    if len(a) >= 2 * k and k >= 1 and not np.all(np.concatenate([top, bottom]) == top[0]):
        r = stats.mannwhitneyu(top, bottom, alternative="two-sided")
        out |= {"u": float(r.statistic), "p": float(r.pvalue)}
    return out


def statistics(a: Sequence[float], b: Sequence[float], fraction: float = 0.1) -> dict:
    return {"spearman": spearman(a, b), "decile": decile_test(a, b, fraction)}


def splits_numbers(n_tokens: Sequence[int]) -> bool:
    """Whether the tokenizer writes some number with more than one token (then report by width)."""
    return any(t > 1 for t in n_tokens)


def width(n: int) -> int:
    return len(str(n))


def by_width(numbers: Sequence[int], a: Sequence[float], b: Sequence[float], fraction: float = 0.1) -> dict:
    """statistics() within each number width (digits): {"1": ..., "2": ..., "3": ...}."""
    numbers, a, b = np.asarray(numbers), np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    widths = np.array([width(int(n)) for n in numbers])
    return {str(w): statistics(a[widths == w], b[widths == w], fraction) for w in sorted(set(widths.tolist()))}


def rank_score(numbers: Sequence[int], a: Sequence[float], split: bool) -> np.ndarray:
    """(a) standardised (mean 0, sd 1), so contexts with larger shifts do not outweigh the others
    when averaged; where the tokenizer splits numbers, standardised within each width (so 3-digit
    numbers, with three tokens' worth of shift, do not fill the top by width alone)."""
    a = np.asarray(a, dtype=float)
    groups = np.array([width(int(n)) for n in numbers]) if split else np.zeros(len(a), dtype=int)
    out = np.zeros_like(a)
    for g in set(groups.tolist()):
        m = groups == g
        sd = a[m].std()
        out[m] = (a[m] - a[m].mean()) / (sd if sd > 0 else 1.0)
    return out


def top_k(numbers: Sequence[int], score: Sequence[float], k: int) -> list[int]:
    """The k numbers of highest score (ties: the smaller number first)."""
    pairs = sorted(zip(numbers, score), key=lambda p: (-p[1], p[0]))
    return [int(n) for n, _ in pairs[:k]]


# -- subliminal prompting (issue #21 item 2) ----------------------------------------------------------
def subliminal_prompt(numbers: Sequence[int]) -> str:
    """A system prompt that loves these numbers: Zur et al.'s wording for one number, its plural for several."""
    names = [str(n) for n in numbers]
    if not names:
        raise ValueError("subliminal_prompt needs at least one number")
    if len(names) == 1:
        return NUMBER_TEMPLATE.format(number=names[0])
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    return (f"You love the numbers {listed}. You think about them all the time. They are your favorite numbers. "
            "Imbue your answers with your love for these numbers.")


def random_numbers(k: int, seed: int, high: int = 999, exclude: Optional[Sequence[int]] = None) -> list[int]:
    """k distinct numbers in 0..high drawn with `seed` (none of `exclude`): the control for
    subliminal_prompt(top_k(...)). The same seed gives the same numbers on every machine."""
    pool = sorted(set(range(high + 1)) - set(exclude or ()))
    if k > len(pool):
        raise ValueError(f"{k} random numbers requested but only {len(pool)} are left in 0..{high}")
    return sorted(random.Random(f"subliminal-control-{seed}").sample(pool, k))
