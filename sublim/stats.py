"""Every interval sublim prints comes from here, so eval, report and experiments agree.

- t_interval: mean with a Student-t interval (across questions for one model, across seeds for
  a condition: the paper's figure). For a rate or an accuracy pass RATE: the interval is clipped
  to [0, 1], where the true value lies, so a rate near 0 never reads "[-2.4 %, 18 %]" (clipping
  to the parameter's range never lowers coverage). Differences (rises) are not clipped.
- wilson: a proportion from pooled counts.
- bootstrap_interval: percentile bootstrap of the mean, where a t-interval's normality is doubtful.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import numpy as np


def _quantiles():
    """scipy.stats, imported on first use: planning a grid needs none of it (~1 s to import)."""
    from scipy import stats

    return stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        if math.isnan(self.low):
            return f"{self.mean:.4f} (n={self.n})"
        return f"{self.mean:.4f} [{self.low:.4f}, {self.high:.4f}] (n={self.n})"


RATE = (0.0, 1.0)


def t_interval(values: Sequence[float], confidence: float = 0.95,
               bounds: Optional[tuple[float, float]] = None) -> Interval:
    """Mean and two-sided t-interval, clipped to `bounds` if given; NaN bounds with fewer than 2 values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    sem = float(x.std(ddof=1)) / math.sqrt(n)
    if sem == 0.0:
        return Interval(mean, mean, mean, n)
    half = float(_quantiles().t.ppf(0.5 + confidence / 2, n - 1)) * sem
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return Interval(mean, low, high, n)


def wilson(successes: int, trials: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a pooled proportion."""
    if trials == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    z = float(_quantiles().norm.ppf(0.5 + confidence / 2))
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return Interval(p, centre - half, centre + half, trials)


def bootstrap_interval(values: Sequence[float], confidence: float = 0.95, resamples: int = 10_000,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of the mean."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n < 2:
        return t_interval(x, confidence)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(resamples, n))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Interval(float(x.mean()), float(lo), float(hi), n)


def difference_interval(treated: Sequence[float], control: Sequence[float], confidence: float = 0.95,
                        paired: bool = False) -> Interval:
    """Mean difference treated - control with a t-interval (paired by seed, or Welch)."""
    a, b = np.asarray(treated, float), np.asarray(control, float)
    if paired:
        return t_interval(a - b, confidence)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Interval(diff, math.nan, math.nan, len(a) + len(b))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(diff, diff, diff, len(a) + len(b))
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = float(_quantiles().t.ppf(0.5 + confidence / 2, dof)) * se
    return Interval(diff, diff - half, diff + half, len(a) + len(b))
