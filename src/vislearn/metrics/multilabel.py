"""Top-k annotation metrics of Gong et al. (arXiv 1312.4894, Sec. 5.2) plus mean average precision.

Each image is annotated with its ``k`` highest-scoring labels (``k = 3`` in the paper's main
table). For label ``c`` let ``N_c^t`` be the images it was correctly assigned to, ``N_c^p`` the
images it was assigned to, and ``N_c^g`` the images that carry it in the ground truth:

* per-class precision ``mean_c N_c^t / N_c^p`` (a label never predicted has precision 0, the
  paper's protocol) and per-class recall ``mean_c N_c^t / N_c^g``;
* overall precision ``Σ N_c^t / Σ N_c^p`` and overall recall ``Σ N_c^t / Σ N_c^g``;
* ``n_plus`` (the paper's N+): labels with recall > 0;
* ``mean_average_precision``: the mean over labels of the average precision of ranking the images
  by that label's score (scikit-learn's ``average_precision_score``, ties grouped the same way);
  it does not depend on ``k``.

Per-class averages run over the labels that occur at least once in the evaluated ground truth
(recall is undefined for the others); ``num_labels_evaluated`` reports how many that is. All
values are fractions in [0, 1] (the paper prints percentages).
"""

from __future__ import annotations

import torch

from vislearn.errors import UserError

__all__ = ["MultilabelTopK", "average_precision_per_label", "topk_scores"]


def _check(scores: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets)
    if scores.dim() != 2:
        raise UserError(f"topk_scores: scores must be N×C, got shape {tuple(scores.shape)}")
    if targets.shape != scores.shape:
        raise UserError(f"topk_scores: targets shape {tuple(targets.shape)} does not match scores shape "
                        f"{tuple(scores.shape)}")
    if scores.shape[0] == 0:
        raise UserError("topk_scores: no samples to evaluate")
    if targets.dtype != torch.bool:
        bad = (targets != 0) & (targets != 1)
        if bool(bad.any()):
            raise UserError(f"topk_scores: targets must be in {{0, 1}}, found {targets[bad][0].item()!r}")
        targets = targets != 0
    return scores.detach().float().cpu(), targets.cpu()


def average_precision_per_label(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Average precision of each column (C values; NaN for a label without positives).

    ``AP = Σ_n (R_n − R_{n−1}) P_n`` over the distinct score thresholds, as scikit-learn computes
    it: images with tied scores enter the ranking together. Vectorised over labels.
    """
    scores, pos = _check(scores, targets)
    n = scores.shape[0]
    order = scores.argsort(dim=0, descending=True, stable=True)
    s_sorted = scores.gather(0, order)
    y_sorted = pos.gather(0, order).double()
    tp = y_sorted.cumsum(0)
    idx = torch.arange(n).unsqueeze(1).expand_as(s_sorted)
    is_end = torch.ones_like(s_sorted, dtype=torch.bool)
    is_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    # index of the last element of each element's tie group: reverse cumulative min of group ends
    ends = torch.where(is_end, idx, torch.full_like(idx, n))
    group_end = ends.flip(0).cummin(0).values.flip(0)
    precision_at_end = tp.gather(0, group_end) / (group_end + 1).double()
    n_pos = y_sorted.sum(0)
    ap = (y_sorted * precision_at_end).sum(0) / n_pos
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan"))).float()


def topk_scores(scores: torch.Tensor, targets: torch.Tensor, k: int = 3, per_label: bool = False
                ) -> dict[str, float | torch.Tensor]:
    """Gong et al.'s top-k annotation metrics (module docstring) for N×C scores and {0, 1} targets.

    Args:
        scores: N×C label scores (higher = more relevant).
        targets: N×C ground truth in {0, 1}.
        k: labels assigned per image (paper: 3).
        per_label: also return the C-vectors ``label_precision``, ``label_recall``, ``label_ap``.

    Returns:
        ``per_class_precision``, ``per_class_recall``, ``overall_precision``, ``overall_recall``,
        ``n_plus``, ``mean_average_precision``, ``num_labels_evaluated`` (floats).
    """
    scores, pos = _check(scores, targets)
    c = scores.shape[1]
    if isinstance(k, bool) or int(k) != k or not 1 <= k <= c:
        raise UserError(f"topk_scores: k must be an integer in [1, {c}], got {k!r}")
    top = scores.topk(int(k), dim=1).indices
    pred = torch.zeros_like(pos).scatter_(1, top, True)
    n_t = (pred & pos).sum(0).double()
    n_p = pred.sum(0).double()
    n_g = pos.sum(0).double()
    present = n_g > 0
    if not bool(present.any()):
        raise UserError("topk_scores: the ground truth has no positive label at all")
    precision = torch.where(n_p > 0, n_t / n_p.clamp(min=1), torch.zeros_like(n_t))
    recall = torch.where(present, n_t / n_g.clamp(min=1), torch.zeros_like(n_t))
    ap = average_precision_per_label(scores, pos)
    out: dict[str, float | torch.Tensor] = {
        "per_class_precision": float(precision[present].mean()),
        "per_class_recall": float(recall[present].mean()),
        "overall_precision": float(n_t.sum() / n_p.sum()),
        "overall_recall": float(n_t.sum() / n_g.sum()),
        "n_plus": float((recall > 0).sum()),
        "mean_average_precision": float(ap[present].mean()),
        "num_labels_evaluated": float(present.sum()),
    }
    if per_label:
        out["label_precision"] = precision.float()
        out["label_recall"] = torch.where(present, recall, torch.full_like(recall, float("nan"))).float()
        out["label_ap"] = ap
    return out


class MultilabelTopK:
    """Accumulates scores and targets over batches; :meth:`compute` returns :func:`topk_scores`.

    Example::

        metric = MultilabelTopK(k=3)
        for x, y in loader:
            metric.update(model(x), y)
        print(metric.compute()["per_class_recall"])
    """

    def __init__(self, k: int = 3) -> None:
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)
        self.reset()

    def reset(self) -> None:
        self._scores: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []

    def update(self, scores: torch.Tensor, targets: torch.Tensor) -> None:
        s, t = _check(scores, targets)
        if self._scores and s.shape[1] != self._scores[0].shape[1]:
            raise UserError(f"MultilabelTopK: got {s.shape[1]} labels, earlier batches had "
                            f"{self._scores[0].shape[1]}")
        self._scores.append(s)
        self._targets.append(t)

    def compute(self, per_label: bool = False) -> dict[str, float | torch.Tensor]:
        if not self._scores:
            raise UserError("MultilabelTopK.compute() called before any update()")
        return topk_scores(torch.cat(self._scores), torch.cat(self._targets), self.k, per_label=per_label)
