"""Retrieval metrics for metric learning: Recall@K, MAP@R, R-precision and NMI.

The zero-shot protocol of Proxy-NCA (Movshovitz-Attias et al. 2017, Sec. 5) evaluates the test
classes by retrieval within the test set: every sample is a query against all *other* samples
(its own embedding is excluded), with Euclidean distance on the embeddings as given (L2-normalise
them first for a cosine ranking). "A Metric Learning Reality Check" (Musgrave et al., ECCV 2020)
adds MAP@R and R-precision, reported beside Recall@K.

* ``recall_at_k``: share of queries with at least one same-label sample among the k nearest.
* ``r_precision``: with R = number of *other* samples of the query's label, the share of the R
  nearest that share the label.
* ``map_at_r``: mean over queries of ``(1/R) Σ_{i<=R} P(i)·rel(i)`` over the R nearest.
* ``nmi``: k-means (scikit-learn) with k = number of labels, then normalised mutual information.

Queries whose label has no other sample ("lone" queries) can never succeed and are left out of
every retrieval metric, as pytorch-metric-learning's ``AccuracyCalculator`` does (NaN when no query
is left). With distinct distances the values equal ``AccuracyCalculator``'s ``precision_at_1``,
``mean_average_precision_at_r`` and ``r_precision`` (a test checks it); ties between distances are
broken by ``torch.topk``'s order.

Memory: queries are processed in blocks against the full set and only the ``k`` nearest of each
query are kept, with ``k = max(max(ks), largest R)``; a block holds ``rows × N`` distances, sized by
``memory_mb``. 100k × 512 embeddings evaluate within a few hundred MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vislearn.errors import UserError

__all__ = ["RetrievalEvaluator", "knn", "map_at_r", "nmi", "r_precision", "recall_at_k", "retrieval_metrics"]


def _as_tensors(embeddings: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(embeddings)
    y = torch.as_tensor(labels)
    if x.dim() != 2:
        raise UserError(f"embeddings must be N×D, got shape {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        x = x.float()
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise UserError(f"labels must be a vector of length {x.shape[0]}, got shape {tuple(y.shape)}")
    if y.dtype.is_floating_point:
        if not bool((y == y.round()).all()):
            raise UserError("labels must be integers")
        y = y.long()
    if x.shape[0] < 2:
        raise UserError(f"retrieval needs at least 2 samples, got {x.shape[0]}")
    if not bool(torch.isfinite(x).all()):
        raise UserError("embeddings contain NaN or inf")
    return x, y


def knn(embeddings: torch.Tensor, k: int, chunk_size: int | None = None, memory_mb: float = 256.0,
        exclude_self: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared Euclidean distances and indices of each row's ``k`` nearest rows (self excluded), in blocks.

    Returns ``(distances N×k, indices N×k)`` sorted by increasing distance.
    """
    x = embeddings
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x) or x.dim() != 2:
        raise UserError(f"knn: embeddings must be a real floating N×D tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)} shape {tuple(getattr(x, 'shape', ()))}")
    n = x.shape[0]
    k = min(k, n - 1 if exclude_self else n)
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    rows = chunk_size or max(1, int(memory_mb * 2**20 // (n * x.element_size() * 2)))
    sq = x.pow(2).sum(1)
    out_d = torch.empty(n, k, dtype=x.dtype, device=x.device)
    out_i = torch.empty(n, k, dtype=torch.long, device=x.device)
    for s in range(0, n, rows):
        e = min(n, s + rows)
        # |q|² is constant per row and does not change the ranking: add it back only to the kept k.
        block = torch.addmm(sq.unsqueeze(0), x[s:e], x.t(), beta=1.0, alpha=-2.0)
        if exclude_self:
            r = torch.arange(s, e, device=x.device)
            block[r - s, r] = float("inf")
        d, i = torch.topk(block, k, dim=1, largest=False, sorted=True)
        out_d[s:e] = (d + sq[s:e].unsqueeze(1)).clamp_min_(0)
        out_i[s:e] = i
    return out_d, out_i


def retrieval_metrics(embeddings: Any, labels: Any, ks: Sequence[int] = (1, 2, 4, 8), *,
                      map_r: bool = True, with_nmi: bool = False, chunk_size: int | None = None,
                      memory_mb: float = 256.0, seed: int = 0) -> dict[str, float]:
    """All retrieval metrics from one blocked k-NN pass.

    Returns ``{"recall@1": ..., "recall@2": ..., "map@r": ..., "r_precision": ..., "nmi": ...}``
    (``map@r``/``r_precision`` when ``map_r``, ``nmi`` when ``with_nmi``).
    """
    x, y = _as_tensors(embeddings, labels)
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise UserError(f"ks must be positive, got {ks}")
    _, inverse, counts = torch.unique(y, return_inverse=True, return_counts=True)
    r = counts[inverse] - 1  # other samples of each query's label
    keep = r > 0
    k_max = max(ks) if ks else 1
    if map_r:
        k_max = max(k_max, int(r.max()))
    k_max = min(k_max, x.shape[0] - 1)
    _, idx = knn(x, k_max, chunk_size=chunk_size, memory_mb=memory_mb)
    rel = y[idx] == y.unsqueeze(1)  # N × k, sorted by distance
    out: dict[str, float] = {}
    n_keep = int(keep.sum())
    for k in ks:
        hit = rel[:, :min(k, k_max)].any(1)
        out[f"recall@{k}"] = float(hit[keep].float().mean()) if n_keep else float("nan")
    if map_r:
        cols = torch.arange(k_max, device=x.device)
        in_r = cols.unsqueeze(0) < r.unsqueeze(1)  # the first R positions of each query
        relr = rel & in_r
        hits = relr.cumsum(1, dtype=torch.float64)
        prec = hits / (cols + 1).to(torch.float64)
        denom = r.clamp_min(1).to(torch.float64)
        ap = (prec * relr).sum(1) / denom
        rp = relr.sum(1).to(torch.float64) / denom
        out["map@r"] = float(ap[keep].mean()) if n_keep else float("nan")
        out["r_precision"] = float(rp[keep].mean()) if n_keep else float("nan")
    if with_nmi:
        out["nmi"] = nmi(x, y, seed=seed)
    return out


def recall_at_k(embeddings: Any, labels: Any, ks: Sequence[int] = (1, 2, 4, 8), *, chunk_size: int | None = None,
                memory_mb: float = 256.0) -> dict[int, float]:
    """``{k: Recall@k}``: share of (non-lone) queries whose k nearest other samples include its label."""
    m = retrieval_metrics(embeddings, labels, ks, map_r=False, chunk_size=chunk_size, memory_mb=memory_mb)
    return {int(k): m[f"recall@{k}"] for k in ks}


def map_at_r(embeddings: Any, labels: Any, *, chunk_size: int | None = None, memory_mb: float = 256.0) -> float:
    """Mean average precision at R (Musgrave et al. 2020, Sec. 3.2)."""
    return retrieval_metrics(embeddings, labels, (), chunk_size=chunk_size, memory_mb=memory_mb)["map@r"]


def r_precision(embeddings: Any, labels: Any, *, chunk_size: int | None = None, memory_mb: float = 256.0) -> float:
    """R-precision: share of same-label samples among each query's R nearest (R = its label's other samples)."""
    return retrieval_metrics(embeddings, labels, (), chunk_size=chunk_size, memory_mb=memory_mb)["r_precision"]


def nmi(embeddings: Any, labels: Any, num_clusters: int | None = None, seed: int = 0,
        cluster_labels: Any = None) -> float:
    """Normalised mutual information between the labels and a k-means clustering of the embeddings.

    k-means is scikit-learn's ``KMeans`` with ``num_clusters`` (default: the number of distinct labels)
    and ``random_state=seed``; pass ``cluster_labels`` to score a clustering you already have.
    """
    from sklearn.metrics import normalized_mutual_info_score

    x, y = _as_tensors(embeddings, labels)
    y_np = y.cpu().numpy()
    if cluster_labels is None:
        from sklearn.cluster import KMeans

        k = num_clusters or len(np.unique(y_np))
        if not 1 <= k <= len(y_np):
            raise UserError(f"num_clusters must be in [1, {len(y_np)}], got {k}")
        cluster_labels = KMeans(n_clusters=k, n_init=1, random_state=seed).fit_predict(
            x.detach().cpu().double().numpy())
    return float(normalized_mutual_info_score(y_np, np.asarray(cluster_labels)))


class RetrievalEvaluator:
    """Accumulates embeddings and labels batch by batch (``update``), then ``compute()`` the metrics."""

    def __init__(self, ks: Sequence[int] = (1, 2, 4, 8), with_nmi: bool = True, normalize: bool = False,
                 seed: int = 0) -> None:
        self.ks, self.with_nmi, self.normalize, self.seed = tuple(ks), with_nmi, normalize, seed
        self.reset()

    def reset(self) -> None:
        self._x: list[torch.Tensor] = []
        self._y: list[torch.Tensor] = []

    def update(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        x = embeddings.detach().float().cpu()
        if self.normalize:
            x = torch.nn.functional.normalize(x, dim=1)
        self._x.append(x)
        self._y.append(torch.as_tensor(labels).detach().cpu())

    def compute(self) -> dict[str, float]:
        if not self._x:
            raise UserError("RetrievalEvaluator.compute() called before any update()")
        return retrieval_metrics(torch.cat(self._x), torch.cat(self._y), self.ks, with_nmi=self.with_nmi,
                                 seed=self.seed)
