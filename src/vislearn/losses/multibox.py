"""The MultiBox objective: matched-box L2 localisation plus logistic confidence on every prediction.

For one image (Erhan et al., CVPR 2014, Sec. 3, eq. 1–3), with ``x_ij = 1`` when prediction ``i`` is
assigned ground truth ``j``::

    F = α · Σ_ij x_ij · ½‖l_i − g_j‖²  −  Σ_i [ y_i · log c_i + (1 − y_i) · log(1 − c_i) ],  y_i = Σ_j x_ij

where ``l_i`` are the predicted (whitened) offsets from prior ``i``, ``g_j`` the ground truth coded
against the same prior (:class:`vislearn.detection.BoxCoder`) and ``c_i = σ(logit_i)``. The loss of a
batch is the mean of ``F`` over its images (images may have any number of boxes, including zero:
then every prediction is a negative). Matching is MultiBox's bipartite assignment
(:func:`vislearn.detection.bipartite_match`; ``match_on="priors"`` matches priors to ground truth,
``"predictions"`` uses the decoded predictions and their confidences, Erhan et al.'s full cost) or, as
an option, the SSD IoU rule with forced best match (:func:`vislearn.detection.iou_match`).

Robustness to missing labels (MSC-MultiBox, Szegedy et al., arXiv 1412.1441, the training-objective part
of Sec. 3 — section number from our reading, not checked offline — motivated by ILSVRC detection data
in which many objects are unlabelled; PAPERS.md §4 "a loss robust to missing labels"). What
we implement, exactly: an unmatched prediction whose *decoded* box has IoU ``<= missing_label_iou``
with every labelled box of its image (it "overlaps nothing labelled", so it may sit on an
unlabelled object) has its negative logistic term multiplied by ``missing_label_weight``; all
other terms keep weight 1. ``missing_label_weight=1`` (the default) is plain MultiBox. The weights
are computed without gradient. The specific threshold and weight are our parameters; the paper's
text names the idea, not these values.

Example::

    loss_fn = MultiBoxLoss(alpha=0.3)
    out = loss_fn(loc, logits, priors, [gt_boxes_img0, gt_boxes_img1], coder)
    out["loss"].backward()
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import box_iou

from vislearn.detection.coding import BoxCoder
from vislearn.detection.matching import match_batch
from vislearn.errors import UserError

__all__ = ["MultiBoxLoss", "multibox_loss"]


def _pad_boxes(gt_boxes: Sequence[torch.Tensor], device, dtype) -> torch.Tensor:
    g = max([len(b) for b in gt_boxes] + [1])
    out = torch.zeros(len(gt_boxes), g, 4, device=device, dtype=dtype)
    for n, b in enumerate(gt_boxes):
        if len(b):
            out[n, : len(b)] = b.to(device=device, dtype=dtype)
    return out


def multibox_loss(loc: torch.Tensor, logits: torch.Tensor, priors: torch.Tensor,
                  gt_boxes: Sequence[torch.Tensor], matches: torch.Tensor, coder: BoxCoder,
                  alpha: float = 0.3, negative_weights: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """MultiBox loss for given matches (stateless): ``{"loss", "loc", "conf", "matched"}``.

    Args:
        loc: ``N×P×4`` predicted whitened offsets. logits: ``N×P`` confidence logits.
        priors: ``P×4`` normalised xyxy. gt_boxes: per-image ``K_i×4`` normalised xyxy.
        matches: ``N×P`` gt index per prediction or -1.
        negative_weights: ``N×P`` weights of the negative logistic terms (default 1).

    ``loss = mean_n [α·Σ_i∈matched ½‖loc_i − code_i‖² + Σ_i w_i·BCE(logit_i, y_i)]``; ``loc`` and
    ``conf`` are the two summands averaged over images (``loc`` without α).
    """
    N = loc.shape[0]
    pos = matches >= 0
    target = torch.zeros_like(loc)
    if pos.any():
        padded = _pad_boxes(gt_boxes, loc.device, torch.float32)
        idx = matches.clamp(min=0)
        gt = torch.gather(padded, 1, idx[..., None].expand(-1, -1, 4))  # N×P×4
        target = coder.encode(gt, priors[None].to(gt)).to(loc.dtype)
    sq = 0.5 * (loc.float() - target.float()).pow(2).sum(-1)
    loc_term = (sq * pos).sum() / max(N, 1)
    y = pos.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")
    if negative_weights is not None:
        bce = torch.where(pos, bce, bce * negative_weights.to(bce))
    conf_term = bce.sum() / max(N, 1)
    return {"loss": alpha * loc_term + conf_term, "loc": loc_term.detach(), "conf": conf_term.detach(),
            "matched": pos.sum().float()}


class MultiBoxLoss(nn.Module):
    """MultiBox loss with bipartite (or IoU) matching and the missing-label option.

    Args:
        alpha: weight α of the localisation term (0.3: the value we read in Erhan et al. 2014, Sec. 3;
            PAPERS.md does not state it).
        matching: ``"bipartite"`` (MultiBox) or ``"iou"`` (SSD rule, see ``iou_threshold``).
        match_on: for bipartite matching, ``"priors"`` (cost ``α/2‖p − g‖²``) or ``"predictions"``
            (decoded predictions and their confidences; the full objective's per-pair cost
            ``α/2‖l − g‖² − log c + log(1 − c) = α/2‖l − g‖² − logit(c)``).
        iou_threshold, force_best: the IoU rule's parameters.
        missing_label_weight: weight in [0, 1] of the negative term of unmatched predictions that
            overlap nothing labelled (1 disables the option; see the module docstring).
        missing_label_iou: "overlaps nothing" means IoU ``<=`` this with every labelled box.
    """

    def __init__(self, alpha: float = 0.3, matching: str = "bipartite", match_on: str = "priors",
                 iou_threshold: float = 0.5, force_best: bool = True, missing_label_weight: float = 1.0,
                 missing_label_iou: float = 0.0) -> None:
        super().__init__()
        if not alpha >= 0:
            raise UserError(f"alpha must be >= 0, got {alpha}")
        if matching not in ("bipartite", "iou"):
            raise UserError(f"matching must be 'bipartite' or 'iou', got {matching!r}")
        if match_on not in ("priors", "predictions"):
            raise UserError(f"match_on must be 'priors' or 'predictions', got {match_on!r}")
        if not 0 <= iou_threshold <= 1:
            raise UserError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
        if not 0 <= missing_label_weight <= 1:
            raise UserError(f"missing_label_weight must be in [0, 1], got {missing_label_weight}")
        if not 0 <= missing_label_iou < 1:
            raise UserError(f"missing_label_iou must be in [0, 1), got {missing_label_iou}")
        self.alpha, self.matching, self.match_on = alpha, matching, match_on
        self.iou_threshold, self.force_best = iou_threshold, force_best
        self.missing_label_weight, self.missing_label_iou = missing_label_weight, missing_label_iou

    def forward(self, loc: torch.Tensor, logits: torch.Tensor, priors: torch.Tensor,
                gt_boxes: Sequence[torch.Tensor], coder: BoxCoder) -> dict[str, torch.Tensor]:
        """``loc`` ``N×P×4``, ``logits`` ``N×P``, ``priors`` ``P×4``, ``gt_boxes`` per-image normalised xyxy."""
        if loc.dim() != 3 or loc.shape[-1] != 4 or logits.shape != loc.shape[:2]:
            raise UserError(f"expected loc N×P×4 and logits N×P, got {tuple(loc.shape)} and {tuple(logits.shape)}")
        if len(gt_boxes) != loc.shape[0]:
            raise UserError(f"{loc.shape[0]} images in the batch but {len(gt_boxes)} box lists")
        if priors.shape != (loc.shape[1], 4):
            raise UserError(f"priors must be {loc.shape[1]}×4, got {tuple(priors.shape)}")
        gts = [g.reshape(-1, 4).to(priors.device, torch.float32) for g in gt_boxes]
        decoded = None
        with torch.no_grad():
            if self.match_on == "predictions" or self.missing_label_weight < 1:
                decoded = coder.decode(loc.detach().float(), priors[None].float())
            matches = match_batch(priors.float(), gts, self.matching,
                                  pred_boxes=decoded if self.match_on == "predictions" else None,
                                  logits=logits.detach().float() if self.match_on == "predictions" else None,
                                  alpha=self.alpha, iou_threshold=self.iou_threshold, force_best=self.force_best)
            weights = None
            if self.missing_label_weight < 1:
                weights = torch.ones_like(logits, dtype=torch.float32)
                for n, g in enumerate(gts):
                    lonely = torch.ones(len(priors), dtype=torch.bool, device=logits.device)
                    if len(g):
                        lonely = box_iou(decoded[n], g).max(1).values <= self.missing_label_iou
                    weights[n, lonely & (matches[n] < 0)] = self.missing_label_weight
        return multibox_loss(loc, logits, priors, gts, matches, coder, self.alpha, weights)
