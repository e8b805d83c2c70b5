"""Uncertainty for reported figures: t-intervals of means and clip-level bootstrap intervals (host side, NumPy).

Every figure in an evaluation report carries its sample count and a 95% interval, so two runs can be compared
without over-reading a difference that is noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import stats


def mean_ci(values_N: Sequence[float] | np.ndarray, confidence: float = 0.95) -> dict:
    """Mean of N samples with a Student-t confidence interval (None when N < 2): {mean, ci, std, n}."""
    x = np.asarray(values_N, np.float64).reshape(-1)
    if x.size == 0:
        return {"mean": float("nan"), "ci": None, "std": None, "n": 0}
    mean = float(x.mean())
    if x.size < 2:
        return {"mean": mean, "ci": None, "std": None, "n": 1}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1) * std / np.sqrt(x.size))
    return {"mean": mean, "ci": [mean - half, mean + half], "std": std, "n": int(x.size)}


def bootstrap_ci(num_groups: int, statistic: Callable[[np.ndarray], float], *, resamples: int = 200,
                 confidence: float = 0.95, seed: int = 0, method: str = "percentile") -> dict:
    """A statistic of N groups (e.g. clips) with a bootstrap interval over the groups.

    ``statistic(indices)`` computes the figure from the groups at ``indices`` (with repeats); resampling whole
    groups keeps the correlation inside a clip (neighbouring transitions) out of the interval's width.
    ``method="normal"`` gives value +- z * (standard deviation of the resampled values): use it for statistics
    that repeated samples bias (FVD grows when a set holds duplicates, so percentile intervals sit above it).
    Returns {mean: statistic of all groups, ci, n: groups, resamples}.
    """
    if method not in ("percentile", "normal"):
        raise ValueError(f"unknown bootstrap method {method!r}: use 'percentile' or 'normal'")
    value = float(statistic(np.arange(num_groups)))
    if num_groups < 2 or resamples < 1:
        return {"mean": value, "ci": None, "n": int(num_groups), "resamples": 0}
    rng = np.random.default_rng(seed)
    draws = np.array([statistic(rng.integers(0, num_groups, num_groups)) for _ in range(resamples)], np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return {"mean": value, "ci": None, "n": int(num_groups), "resamples": resamples}
    alpha = (1 - confidence) / 2
    if method == "normal":
        half = float(stats.norm.ppf(1 - alpha) * draws.std(ddof=1)) if draws.size > 1 else 0.0
        return {"mean": value, "ci": [value - half, value + half], "n": int(num_groups), "resamples": resamples}
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    return {"mean": value, "ci": [float(lo), float(hi)], "n": int(num_groups), "resamples": resamples}
