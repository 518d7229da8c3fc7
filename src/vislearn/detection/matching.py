"""Assigning ground-truth boxes to predictions or priors: MultiBox bipartite matching and IoU matching.

* :func:`bipartite_match` solves MultiBox's assignment (Erhan et al., CVPR 2014, Sec. 3, eq. 1–3): each
  ground-truth box ``g_j`` gets exactly one prediction ``i`` so that the objective
  ``F = Σ_matched (α/2·‖l_i − g_j‖² − log c_i) − Σ_unmatched log(1 − c_i)`` is minimal, where ``l_i``
  is the predicted box (normalised xyxy corners) and ``c_i = σ(logit_i)`` its confidence. Every
  prediction pays ``−log(1 − c_i)`` unless it is matched, so ``F`` equals the constant
  ``−Σ_i log(1 − c_i)`` plus the per-pair cost ``α/2·‖l_i − g_j‖² − log c_i + log(1 − c_i)
  = α/2·‖l_i − g_j‖² − logit(c_i)`` summed over the matched pairs: that per-pair cost is what the
  assignment minimises. (Dropping the unmatched terms, i.e. ``− log c_i`` alone, picks a worse
  assignment whenever confidences differ.) Without confidences the cost is the L2 term alone,
  which matches priors to ground truth (MultiBox's matching "with priors"). The Hungarian solver is
  scipy's :func:`scipy.optimize.linear_sum_assignment`.
* :func:`iou_match` is the SSD/RPN rule (the torchvision peers): a prior takes the ground truth it
  overlaps most if that IoU reaches ``threshold``; with ``force_best`` each ground truth also claims
  its best prior (so no box is left unmatched). IoU comes from :func:`torchvision.ops.box_iou`.

Both return, per prediction/prior, the index of its ground-truth box or ``-1``. Images with zero
ground-truth boxes give all ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from vislearn.errors import UserError

__all__ = ["bipartite_match", "iou_match", "match_batch", "multibox_cost"]


def multibox_cost(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, logits: torch.Tensor | None = None,
                  alpha: float = 0.3) -> torch.Tensor:
    """``P×G`` MultiBox per-pair assignment cost ``α/2·‖l_i − g_j‖² − logit_i`` (Erhan et al. 2014, eq. 3).

    ``−logit_i = −log c_i + log(1 − c_i)``: the matched pair's confidence term minus the
    ``−log(1 − c_i)`` the prediction would pay unmatched (see the module docstring). The confidence
    term is dropped when ``logits`` is ``None``.
    """
    d2 = (pred_boxes.double()[:, None, :] - gt_boxes.double()[None, :, :]).pow(2).sum(-1)
    cost = 0.5 * alpha * d2
    if logits is not None:
        cost = cost - logits.double().reshape(-1)[:, None]
    return cost


def bipartite_match(pred_boxes: torch.Tensor, gt_boxes: torch.Tensor, logits: torch.Tensor | None = None,
                    alpha: float = 0.3) -> torch.Tensor:
    """Minimum-cost one-to-one assignment of ground truth to predictions → ``P`` long (gt index or -1).

    Every ground-truth box is matched when ``G <= P`` (otherwise ``P`` of them are). Ties are resolved
    by scipy's solver.
    """
    P, G = len(pred_boxes), len(gt_boxes)
    out = torch.full((P,), -1, dtype=torch.long)
    if G == 0 or P == 0:
        return out
    from scipy.optimize import linear_sum_assignment  # imported on first use: scipy.optimize is slow to import

    cost = multibox_cost(pred_boxes, gt_boxes, logits, alpha).cpu().numpy()
    rows, cols = linear_sum_assignment(cost.T)  # rows: gt, cols: predictions
    out[torch.from_numpy(cols.astype(np.int64))] = torch.from_numpy(rows.astype(np.int64))
    return out


def iou_match(priors: torch.Tensor, gt_boxes: torch.Tensor, threshold: float = 0.5,
              force_best: bool = True) -> torch.Tensor:
    """IoU-threshold matching with an optional forced best match per ground truth → ``P`` long.

    A prior is matched to its highest-IoU ground truth when that IoU is ``>= threshold``. With
    ``force_best``, each ground truth's highest-IoU prior is matched to it regardless of the threshold
    (a later ground truth wins if two claim the same prior), the rule of torchvision's ``SSDMatcher``.
    """
    if not 0 <= threshold <= 1:
        raise UserError(f"IoU threshold must be in [0, 1], got {threshold}")
    P, G = len(priors), len(gt_boxes)
    if G == 0 or P == 0:
        return torch.full((P,), -1, dtype=torch.long, device=priors.device)
    iou = box_iou(gt_boxes.float(), priors.float())  # G×P
    vals, idx = iou.max(0)
    idx = torch.where(vals >= threshold, idx, torch.full_like(idx, -1))
    if force_best:
        best = iou.argmax(1)
        idx[best] = torch.arange(G, device=idx.device)
    return idx


def match_batch(priors: torch.Tensor, gt_boxes: Sequence[torch.Tensor], method: str = "bipartite",
                pred_boxes: torch.Tensor | None = None, logits: torch.Tensor | None = None,
                alpha: float = 0.3, iou_threshold: float = 0.5, force_best: bool = True) -> torch.Tensor:
    """Match each image of a batch → ``N×P`` long of gt indices (``-1``: unmatched).

    Args:
        priors: ``P×4`` normalised xyxy priors.
        gt_boxes: per-image ``K_i×4`` normalised xyxy boxes (``K_i`` may be 0).
        method: ``"bipartite"`` (MultiBox) or ``"iou"`` (SSD-style).
        pred_boxes, logits: ``N×P×4`` decoded predictions and ``N×P`` confidence logits; when given,
            bipartite matching uses them (Erhan et al.'s full cost) instead of the priors.
    """
    if method not in ("bipartite", "iou"):
        raise UserError(f"matching method must be 'bipartite' or 'iou', got {method!r}")
    out = []
    for n, gt in enumerate(gt_boxes):
        gt = gt.reshape(-1, 4).to(priors)
        if method == "iou":
            out.append(iou_match(priors, gt, iou_threshold, force_best))
        else:
            boxes = priors if pred_boxes is None else pred_boxes[n].detach()
            lg = None if logits is None else logits[n].detach()
            out.append(bipartite_match(boxes.cpu(), gt.cpu(), None if lg is None else lg.cpu(), alpha))
    if not out:
        return torch.empty(0, len(priors), dtype=torch.long, device=priors.device)
    return torch.stack(out).to(priors.device)
