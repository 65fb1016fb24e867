"""Every interval sublim prints comes from here, so eval, report and experiments agree.

- t_interval: mean with a Student-t interval (across questions for one model, across seeds for
  a condition: the paper's figure). For a rate or an accuracy pass RATE: the interval is clipped
  to [0, 1], where the true value lies, so a rate near 0 never reads "[-2.4 %, 18 %]" (clipping
  to the parameter's range never lowers coverage). Differences (rises) are not clipped.
- wilson: a proportion from pooled counts.
- bootstrap_interval: percentile bootstrap of the mean, where a t-interval's normality is doubtful.
- ratio_bootstrap: a ratio of two means over the same seeds (a defence's remaining effect), with a
  paired percentile bootstrap: seeds are resampled jointly, so what a seed shares across arms
  (the student's initialisation, its data order) cancels as it does in the point estimate.
- one_sided_paired_p, holm: "is this difference > 0" per arm, then Holm's step-down adjustment
  for testing several arms at once (family-wise error at most alpha, no independence assumed).
- min_detectable_effect: the smallest true difference a t-test on these seeds finds with the
  given power, so a null result is read as "smaller than this", not as "zero".
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


def ratio_bootstrap(num: Sequence[float], den: Sequence[float], confidence: float = 0.95,
                    resamples: int = 10_000, seed: int = 0) -> Interval:
    """mean(num) / mean(den) with a paired percentile bootstrap interval.

    num[i] and den[i] belong to the same seed i. Each resample draws n seed indices with
    replacement (one `rng.integers(0, n, (resamples, n))` draw from `default_rng(seed)`) and takes
    the ratio of the two means over the same indices. Resamples whose mean(den) is 0 have no ratio
    and are left out. NaN bounds with fewer than 2 seeds; NaN throughout when mean(den) is 0."""
    a, b = np.asarray(num, float), np.asarray(den, float)
    if len(a) != len(b):
        raise ValueError(f"paired values: {len(a)} numerators, {len(b)} denominators")
    n = len(a)
    if n == 0 or b.mean() == 0:
        return Interval(math.nan, math.nan, math.nan, n)
    ratio = float(a.mean() / b.mean())
    if n < 2:
        return Interval(ratio, math.nan, math.nan, n)
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)
    ok = mb != 0
    if not ok.any():
        return Interval(ratio, math.nan, math.nan, n)
    lo, hi = np.quantile(ma[ok] / mb[ok], [0.5 - confidence / 2, 0.5 + confidence / 2])
    return Interval(ratio, float(lo), float(hi), n)


def one_sided_paired_p(diffs: Sequence[float]) -> float:
    """p-value of a one-sided one-sample t-test of mean(diffs) > 0 (paired differences, one per
    seed). NaN with fewer than 2 differences or when they do not vary (the t statistic is undefined)."""
    x = np.asarray(diffs, float)
    if len(x) < 2 or float(x.std(ddof=1)) == 0.0:
        return math.nan
    t = float(x.mean()) / (float(x.std(ddof=1)) / math.sqrt(len(x)))
    return float(_quantiles().t.sf(t, len(x) - 1))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input's order. Sorted ascending p_(1) <= ... <=
    p_(m): adjusted p_(i) = max over j <= i of min(1, (m - j + 1) * p_(j)). NaN p-values (no test)
    stay NaN and do not count in m."""
    p = np.asarray(pvalues, float)
    out = np.full(len(p), math.nan)
    finite = np.flatnonzero(~np.isnan(p))
    m = len(finite)
    running = 0.0
    for rank, i in enumerate(finite[np.argsort(p[finite], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * float(p[i])))
        out[i] = running
    return out.tolist()


def min_detectable_effect(se: float, df: float, confidence: float = 0.95, power: float = 0.8) -> float:
    """Smallest true difference a two-sided t-test at alpha = 1 - confidence detects with `power`:
    MDE = (t_{1 - alpha/2, df} + t_{power, df}) * se, the usual approximation (it ignores the
    chance of rejecting in the wrong direction, negligible at this power). NaN when df < 1 or se
    is not finite."""
    if not (math.isfinite(se) and math.isfinite(df)) or df < 1:
        return math.nan
    t = _quantiles().t
    return float((t.ppf(0.5 + confidence / 2, df) + t.ppf(power, df)) * se)


def paired_se(diffs: Sequence[float]) -> tuple[float, float]:
    """(standard error of the mean, degrees of freedom) of paired differences or of one sample;
    (NaN, NaN) with fewer than 2 values."""
    x = np.asarray(diffs, float)
    if len(x) < 2:
        return math.nan, math.nan
    return float(x.std(ddof=1)) / math.sqrt(len(x)), float(len(x) - 1)


def welch_se(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """(standard error, Welch-Satterthwaite degrees of freedom) of mean(a) - mean(b), unpaired;
    (NaN, NaN) with fewer than 2 values on a side."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return 0.0, float(len(a) + len(b) - 2)
    return math.sqrt(va + vb), float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))
