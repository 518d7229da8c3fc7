"""Image-quality-assessment agreement statistics: SROCC, PLCC (after a logistic fit), KROCC, 2AFC.

The numbers IQA papers report when they compare a metric with human opinion (TID2013, KADID-10k,
Chinen et al. 2018's "competitive performance on TID 2013"; LPIPS's BAPPS 2AFC score):

* :func:`srocc` Spearman rank-order correlation (average ranks for ties, as ``scipy.stats.spearmanr``);
* :func:`krocc` Kendall's tau-b (``scipy.stats.kendalltau``'s default variant);
* :func:`plcc` Pearson linear correlation after the VQEG 4-parameter logistic
  ``q(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` fitted with ``scipy.optimize.curve_fit``
  (Sheikh et al. 2006's 5-parameter form without the linear term, the variant most FR-IQA code uses);
* :func:`two_afc_agreement` LPIPS's 2AFC score: a metric choosing patch 1 earns the fraction of humans
  who chose patch 1 (Zhang et al. 2018, Sec. 3.1), ties earn one half.

Inputs are 1-D tensors, arrays or lists of equal length; results are plain floats.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from vislearn.errors import UserError

__all__ = ["krocc", "logistic4", "plcc", "rank_average", "srocc", "two_afc_agreement"]

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


def _vec(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    v = np.asarray(a, dtype=np.float64)
    if v.ndim > 1 and v.size == max(v.shape):  # a column or row vector
        v = v.reshape(-1)
    if v.ndim != 1:
        raise UserError(f"{name}: expected a 1-D sequence, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise UserError(f"{name}: contains NaN or infinity")
    return v


def _pair(a: ArrayLike, b: ArrayLike, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vec(a, "prediction"), _vec(b, "target")
    if x.shape != y.shape:
        raise UserError(f"prediction and target differ in length: {x.size} vs {y.size}")
    if x.size < min_n:
        raise UserError(f"need at least {min_n} values, got {x.size}")
    return x, y


def rank_average(a: ArrayLike) -> np.ndarray:
    """Ranks 1..n with tied values sharing the mean of their ranks."""
    v = _vec(a, "values")
    n = v.size
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])  # first index of each run
    ends = np.r_[starts[1:], n]  # one past the last index of each run
    run_rank = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1 .. ends
    run_of_sorted = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(n)
    ranks[order] = run_rank[run_of_sorted]
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    den = np.sqrt((xc * xc).sum() * (yc * yc).sum())
    return float((xc * yc).sum() / den) if den > 0 else float("nan")


def srocc(prediction: ArrayLike, target: ArrayLike) -> float:
    """Spearman rank-order correlation (NaN when one side is constant)."""
    x, y = _pair(prediction, target)
    return _pearson(rank_average(x), rank_average(y))


def krocc(prediction: ArrayLike, target: ArrayLike, chunk: int = 1024) -> float:
    """Kendall's tau-b: (concordant − discordant) / sqrt((n0 − ties_x)(n0 − ties_y)).

    Vectorised over blocks of ``chunk`` rows of the pair matrix (O(n²) work, O(chunk·n) memory).
    """
    x, y = _pair(prediction, target)
    n = x.size
    s = 0.0
    for i in range(0, n, chunk):
        sx = np.sign(x[i:i + chunk, None] - x[None, :])
        sy = np.sign(y[i:i + chunk, None] - y[None, :])
        s += float((sx * sy).sum())
    s /= 2.0  # every unordered pair was counted twice
    n0 = n * (n - 1) / 2.0

    def tied_pairs(v: np.ndarray) -> float:
        _, counts = np.unique(v, return_counts=True)
        return float((counts * (counts - 1) / 2.0).sum())

    den = np.sqrt((n0 - tied_pairs(x)) * (n0 - tied_pairs(y)))
    return float(s / den) if den > 0 else float("nan")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The VQEG 4-parameter logistic ``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``."""
    z = np.clip(-(x - b3) / (np.abs(b4) + 1e-12), -60.0, 60.0)
    return (b1 - b2) / (1.0 + np.exp(z)) + b2


def plcc(prediction: ArrayLike, target: ArrayLike, fit: bool = True) -> float:
    """Pearson correlation of ``target`` with the logistic-mapped ``prediction`` (``fit=False``: raw).

    The logistic starts at ``b1 = max(target)``, ``b2 = min(target)`` (swapped for a decreasing
    relation, e.g. a distance against a quality MOS), ``b3 = mean(prediction)``,
    ``b4 = std(prediction)``. If ``curve_fit`` does not converge a warning is issued and the
    correlation of the raw values is returned.
    """
    x, y = _pair(prediction, target, min_n=5 if fit else 2)
    if not fit:
        return _pearson(x, y)
    from scipy.optimize import curve_fit

    increasing = srocc(x, y) >= 0
    hi, lo = float(y.max()), float(y.min())
    p0 = [hi, lo, float(x.mean()), float(x.std()) or 1.0]
    if not increasing:
        p0[0], p0[1] = lo, hi
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = curve_fit(logistic4, x, y, p0=p0, maxfev=20000)
    except (RuntimeError, ValueError) as e:
        warnings.warn(f"plcc: logistic fit failed ({e}); returning the linear correlation", stacklevel=2)
        return _pearson(x, y)
    return _pearson(logistic4(x, *popt), y)


def two_afc_agreement(d0: ArrayLike, d1: ArrayLike, judge: ArrayLike) -> float:
    """Mean 2AFC score: ``judge`` is the fraction of humans who found patch 1 closer to the reference.

    A metric that calls patch 1 closer (``d1 < d0``) earns ``judge``, patch 0 earns ``1 - judge``,
    a tie earns 0.5. Humans agreeing with themselves score ``mean(max(judge, 1 - judge))``.
    """
    a, b = _pair(d0, d1, min_n=1)
    h = _vec(judge, "judge")
    if h.shape != a.shape:
        raise UserError(f"judge has {h.size} values for {a.size} triplets")
    if (h < 0).any() or (h > 1).any():
        raise UserError(f"judge must be fractions in [0, 1], got range [{h.min():.3g}, {h.max():.3g}]")
    score = np.where(b < a, h, np.where(a < b, 1.0 - h, 0.5))
    return float(score.mean())
