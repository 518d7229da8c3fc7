"""Frozen-feature evaluation of self-supervised encoders: weighted k-NN, n-shot logistic regression
and a linear probe (Ruan et al., ICLR 2023, App. B.3; DINO's ``eval_knn.py``).

All three L2-normalise the features first and take plain arrays or tensors ``(N, D)`` with integer
labels ``(N,)``; nothing here trains or runs the encoder.

* :func:`knn_accuracy`: DINO's weighted vote. The ``k`` training samples most cosine-similar to a
  test sample vote for their class with weight ``exp(sim / T)`` (T = 0.07, k = 20: App. B.3 and
  DINO); the class with the largest summed weight is the top-1 prediction. Ties go to the smaller
  class index (DINO sorts and leaves ties unspecified).
* :func:`nshot_accuracy`: ``shots`` training examples per class drawn at random per split
  (``splits`` = 3 in the paper, which uses MSN's fixed ImageNet split files; we draw them with
  ``seed``), a multinomial logistic regression from scikit-learn on the frozen, L2-normalised
  features, and the mean ± std of the test accuracy over the splits.
* :func:`linear_probe_accuracy`: the same classifier on all training features at one L2 strength.
  The paper's linear evaluation is different (SGD with Nesterov momentum for 100 epochs over
  augmented crops, no weight decay): this is a cheaper probe on fixed features, not that protocol.

L2 strength: the paper searches ``{1e-4, 3e-4, 1e-3, …, 3, 10}`` (App. B.3) without saying how it
maps onto scikit-learn's ``C`` nor on what data it chooses. We define λ as the weight of
``½‖W‖²`` against the *mean* training loss, i.e. ``C = 1 / (λ · n_train)`` (the convention of MSN's
cyanure-based ``logistic_eval.py``, which divides its ``lambd`` by N), and choose it per split by a
held-out rule that never sees the test set: another ``min(shots, remaining)`` examples per class
are drawn from the training examples not used for fitting, every λ is fitted on the shots and
scored on them, the best is kept (ties: the larger λ), and that λ is refitted on the shots and
scored on the test set. Pass ``l2=value`` to skip the search. An intercept is fitted
(scikit-learn's default; MSN's code fits none).

The std over splits is the sample standard deviation (``ddof=1``; 0 for one split).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from vislearn.errors import UserError

__all__ = ["PAPER_L2_GRID", "knn_accuracy", "linear_probe_accuracy", "nshot_accuracy", "nshot_split_accuracies"]

PAPER_L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)  # App. B.3


def _features(x: Any, name: str) -> np.ndarray:
    """Float32 ``(N, D)``, L2-normalised rows (float32 halves the memory of ImageNet-sized sets)."""
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise UserError(f"{name} must be a non-empty (N, D) array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise UserError(f"{name} contain NaN or inf")
    norms = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norms, 1e-12)


def _labels(y: Any, n: int, name: str) -> np.ndarray:
    a = y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    if a.ndim != 1 or a.shape[0] != n:
        raise UserError(f"{name} must be a vector of length {n}, got shape {a.shape}")
    if a.dtype.kind == "f":
        if not np.all(a == np.round(a)):
            raise UserError(f"{name} must be integers")
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise UserError(f"{name} must be integers, got dtype {a.dtype}")
    if a.min() < 0:
        raise UserError(f"{name} must be >= 0, got {int(a.min())}")
    return a.astype(np.int64)


def _inputs(train_feats, train_labels, test_feats, test_labels):
    xtr, xte = _features(train_feats, "train_feats"), _features(test_feats, "test_feats")
    if xtr.shape[1] != xte.shape[1]:
        raise UserError(f"train features have {xtr.shape[1]} dims, test features {xte.shape[1]}")
    return xtr, _labels(train_labels, len(xtr), "train_labels"), xte, _labels(test_labels, len(xte), "test_labels")


def knn_accuracy(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any, k: int = 20,
                 temperature: float = 0.07, memory_mb: float = 256.0) -> float:
    """Top-1 accuracy of DINO's temperature-weighted k-NN vote on cosine similarity.

    Test samples are scored in blocks whose similarity matrix fits in about ``memory_mb``.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"k must be an int >= 1, got {k!r}")
    if not isinstance(temperature, (int, float)) or not np.isfinite(temperature) or temperature <= 0:
        raise UserError(f"temperature must be a finite number > 0, got {temperature!r}")
    xtr, ytr, xte, yte = _inputs(train_feats, train_labels, test_feats, test_labels)
    if k > len(xtr):
        raise UserError(f"k={k} exceeds the {len(xtr)} training samples")
    num_classes = int(max(ytr.max(), yte.max())) + 1
    train = torch.from_numpy(xtr)
    train_y = torch.from_numpy(ytr)
    if not memory_mb > 0:
        raise UserError(f"memory_mb must be > 0, got {memory_mb!r}")
    chunk_size = max(1, int(memory_mb * 2**20 // (4 * len(xtr))))
    correct = 0
    for s in range(0, len(xte), chunk_size):
        sim = torch.from_numpy(xte[s:s + chunk_size]) @ train.t()
        top_sim, top_idx = sim.topk(k, dim=1)
        votes = torch.zeros(len(sim), num_classes, dtype=sim.dtype)
        votes.scatter_add_(1, train_y[top_idx], (top_sim / temperature).exp())
        correct += int((votes.argmax(1).numpy() == yte[s:s + chunk_size]).sum())
    return correct / len(xte)


def _c_of(l2: float, n: int) -> float:
    return 1.0 / (l2 * n)


def _fit_score(xtr, ytr, xev, yev, l2: float) -> float:
    clf = LogisticRegression(C=_c_of(l2, len(xtr)), max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr)
    return float((clf.predict(xev) == yev).mean())


def _check_l2(l2: float, name: str = "l2") -> float:
    if isinstance(l2, bool) or not isinstance(l2, (int, float)) or not np.isfinite(l2) or l2 <= 0:
        raise UserError(f"{name} must be a finite number > 0, got {l2!r}")
    return float(l2)


def linear_probe_accuracy(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any,
                          l2: float = 1e-4) -> float:
    """Test accuracy of a multinomial logistic regression on all (L2-normalised) training features."""
    l2 = _check_l2(l2)
    xtr, ytr, xte, yte = _inputs(train_feats, train_labels, test_feats, test_labels)
    if len(np.unique(ytr)) < 2:
        raise UserError("the training labels hold a single class; a classifier needs two or more")
    return _fit_score(xtr, ytr, xte, yte, l2)


def nshot_split_accuracies(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any, shots: int = 1,
                           splits: int = 3, seed: int = 0, l2: float | None = None,
                           l2_grid: Sequence[float] = PAPER_L2_GRID) -> list[float]:
    """The test accuracy of each split (see :func:`nshot_accuracy`)."""
    for name, v in (("shots", shots), ("splits", splits)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UserError(f"{name} must be an int >= 1, got {v!r}")
    grid = [_check_l2(v, "l2_grid value") for v in l2_grid] if l2 is None else [_check_l2(l2)]
    if not grid:
        raise UserError("l2_grid is empty")
    xtr, ytr, xte, yte = _inputs(train_feats, train_labels, test_feats, test_labels)
    classes, counts = np.unique(ytr, return_counts=True)
    if len(classes) < 2:
        raise UserError("the training labels hold a single class; a classifier needs two or more")
    need = shots + (1 if len(grid) > 1 else 0)
    smallest = int(counts.min())
    if smallest < need:
        what = f"shots={shots}" + (" plus one held-out example to choose the L2 strength" if need > shots else "")
        raise UserError(f"{what} needs {need} training examples per class, but class "
                        f"{int(classes[counts.argmin()])} has {smallest}")
    rng = np.random.default_rng(seed)
    accuracies = []
    for _ in range(splits):
        fit_idx, val_idx = [], []
        for c in classes:
            members = rng.permutation(np.flatnonzero(ytr == c))
            fit_idx.extend(members[:shots])
            val_idx.extend(members[shots:2 * shots])
        fit_idx, val_idx = np.array(fit_idx), np.array(val_idx)
        best = grid[0]
        if len(grid) > 1:
            scores = [_fit_score(xtr[fit_idx], ytr[fit_idx], xtr[val_idx], ytr[val_idx], v) for v in grid]
            top = max(scores)
            best = max(v for v, s in zip(grid, scores, strict=True) if s == top)  # ties: stronger L2
        accuracies.append(_fit_score(xtr[fit_idx], ytr[fit_idx], xte, yte, best))
    return accuracies


def nshot_accuracy(train_feats: Any, train_labels: Any, test_feats: Any, test_labels: Any, shots: int = 1,
                   splits: int = 3, seed: int = 0, l2: float | None = None,
                   l2_grid: Sequence[float] = PAPER_L2_GRID) -> tuple[float, float]:
    """``(mean, std)`` over ``splits`` random draws of ``shots`` examples per class of the test accuracy
    of a logistic regression on frozen, L2-normalised features; λ from ``l2_grid`` by the held-out
    rule of the module docstring, or fixed with ``l2``."""
    acc = np.array(nshot_split_accuracies(train_feats, train_labels, test_feats, test_labels, shots=shots,
                                          splits=splits, seed=seed, l2=l2, l2_grid=l2_grid))
    return float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
