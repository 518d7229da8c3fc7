"""From MultiBox outputs to ranked proposals: decode, rank by confidence, NMS, top-k; plus baselines.

MultiBox's inference (Erhan et al. 2014, Sec. 3; Szegedy et al., arXiv 1412.1441, Sec. 3) decodes each
prior's offsets into a box, ranks the boxes by their objectness score and removes near-duplicates
with non-maximum suppression before the top boxes are post-classified. NMS is torchvision's
:func:`~torchvision.ops.batched_nms`, run once for a whole batch (the image index is the NMS group),
so selection is vectorised over images.

:func:`sliding_window_proposals` is the classic baseline (a fixed set of windows at several
scales/aspect ratios, evenly spread over the image), used by ``vislearn reproduce multibox``.
This module imports no model (DESIGN.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torchvision.ops import batched_nms

from vislearn.detection.coding import BoxCoder
from vislearn.errors import UserError

__all__ = ["decode_boxes", "select_proposals", "shaped_window_proposals", "sliding_window_proposals"]


def decode_boxes(loc: torch.Tensor, priors: torch.Tensor, coder: BoxCoder,
                 image_size: tuple[int, int] | None = None, clip: bool = True) -> torch.Tensor:
    """Whitened offsets ``N×P×4`` → xyxy boxes; in pixels of ``image_size=(H, W)`` when given
    (normalised coordinates otherwise), clipped to the image with ``clip``."""
    boxes = coder.decode(loc.float(), priors[None].float())
    if clip:
        boxes = boxes.clamp(0, 1)
    if image_size is not None:
        h, w = image_size
        boxes = boxes * torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
    return boxes


def select_proposals(boxes: torch.Tensor, scores: torch.Tensor, top_k: int = 100, nms_iou: float | None = 0.5,
                     pre_nms_top_k: int | None = None, score_threshold: float | None = None,
                     min_size: float = 0.0) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Rank, suppress and keep the top proposals of each image.

    Args:
        boxes: ``N×P×4`` xyxy. scores: ``N×P`` (probabilities or logits; only the order matters).
        top_k: proposals kept per image after NMS.
        nms_iou: NMS IoU threshold (``None`` disables NMS: pure ranking).
        pre_nms_top_k: keep only the best this many per image before NMS (speed; ``None``: all).
        score_threshold: drop boxes scoring below it first.
        min_size: drop boxes narrower or lower than this.

    Returns:
        Per image: boxes ``k×4``, scores ``k`` and the indices ``k`` of the chosen priors, sorted by
        decreasing score (``k <= top_k``).
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.shape != boxes.shape[:2]:
        raise UserError(f"expected boxes N×P×4 and scores N×P, got {tuple(boxes.shape)} and {tuple(scores.shape)}")
    if top_k < 1:
        raise UserError(f"top_k must be >= 1, got {top_k}")
    if nms_iou is not None and not 0 < nms_iou <= 1:
        raise UserError(f"nms_iou must be in (0, 1], got {nms_iou}")
    N, P = scores.shape
    scores = scores.float()
    idx = torch.arange(P, device=boxes.device).expand(N, P)
    if pre_nms_top_k is not None and pre_nms_top_k < P:
        scores, idx = scores.topk(pre_nms_top_k, dim=1)
        boxes = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
    img = torch.arange(N, device=boxes.device)[:, None].expand_as(idx)
    b, s, i, n = boxes.reshape(-1, 4).float(), scores.reshape(-1), idx.reshape(-1), img.reshape(-1)
    keep = torch.ones_like(s, dtype=torch.bool)
    if score_threshold is not None:
        keep &= s >= score_threshold
    if min_size > 0:
        keep &= ((b[:, 2] - b[:, 0]) >= min_size) & ((b[:, 3] - b[:, 1]) >= min_size)
    b, s, i, n = b[keep], s[keep], i[keep], n[keep]
    if nms_iou is not None and len(s):
        k = batched_nms(b, s, n, nms_iou)  # sorted by decreasing score
    else:
        k = torch.sort(s, descending=True, stable=True).indices
    b, s, i, n = b[k], s[k], i[k], n[k]
    order = torch.sort(n, stable=True).indices  # group by image, keeping the score order
    b, s, i, n = b[order], s[order], i[order], n[order]
    counts = torch.bincount(n, minlength=N).tolist()
    out_b, out_s, out_i = [], [], []
    for bb, ss, ii in zip(b.split(counts), s.split(counts), i.split(counts), strict=True):
        out_b.append(bb[:top_k]), out_s.append(ss[:top_k]), out_i.append(ii[:top_k])
    return out_b, out_s, out_i


def _window_grid(count: int, bw: float, bh: float, w: int, h: int) -> torch.Tensor:
    """``count`` windows of size ``bw×bh`` on a regular grid of centres covering a ``w×h`` image
    (rows and columns chosen so the grid is as square as the count allows) → ``count×4`` xyxy."""
    cols = max(1, round(math.sqrt(count * w / h)))
    rows = math.ceil(count / cols)
    xs = torch.linspace(bw / 2, w - bw / 2, cols) if cols > 1 else torch.tensor([w / 2])
    ys = torch.linspace(bh / 2, h - bh / 2, rows) if rows > 1 else torch.tensor([h / 2])
    cy, cx = torch.meshgrid(ys, xs, indexing="ij")
    ctr = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1)[:count]
    half = torch.tensor([bw / 2, bh / 2])
    return torch.cat([ctr - half, ctr + half], 1)


def sliding_window_proposals(num: int, image_size: tuple[int, int],
                             scales: Sequence[float] = (0.15, 0.3, 0.5, 0.8),
                             aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0)) -> torch.Tensor:
    """``num`` sliding windows spread evenly over scales, aspect ratios and positions → ``num×4`` pixels.

    The windows are split as evenly as possible among the ``scales × aspect_ratios`` shapes (side
    ``scale·√(H·W)``, ratio ``w/h``); each shape's share of windows is laid out on a regular grid of
    centres covering the image (rows and columns chosen so the grid is as square as the count
    allows). The order is shape by shape, coarse scales first, and has no image-dependent ranking.
    """
    if num < 1:
        raise UserError(f"number of windows must be >= 1, got {num}")
    h, w = image_size
    shapes = [(s, a) for s in sorted(scales, reverse=True) for a in aspect_ratios]
    base, extra = divmod(num, len(shapes))
    out = []
    side0 = math.sqrt(h * w)
    for k, (s, a) in enumerate(shapes):
        c = base + (1 if k < extra else 0)
        if c == 0:
            continue
        bw, bh = min(w, s * side0 * math.sqrt(a)), min(h, s * side0 / math.sqrt(a))
        out.append(_window_grid(c, bw, bh, w, h))
    return torch.cat(out).float()


def shaped_window_proposals(num: int, image_size: tuple[int, int], shapes_wh: torch.Tensor) -> torch.Tensor:
    """``num`` windows of the given shapes (``K×2`` normalised (w, h), e.g. k-means centres of the
    training boxes) spread evenly over positions → ``num×4`` pixels.

    The data-adapted version of :func:`sliding_window_proposals`: the windows take the sizes and
    aspect ratios objects actually have, but still ignore the image (no ranking, no learning). The
    windows are split as evenly as possible among the shapes, largest first, each share on a grid.
    """
    if num < 1:
        raise UserError(f"number of windows must be >= 1, got {num}")
    shapes_wh = torch.as_tensor(shapes_wh, dtype=torch.float32).reshape(-1, 2)
    if len(shapes_wh) == 0 or not bool(((shapes_wh > 0) & torch.isfinite(shapes_wh)).all()):
        raise UserError("shapes_wh must be a non-empty K×2 tensor of positive (w, h)")
    h, w = image_size
    order = (shapes_wh[:, 0] * shapes_wh[:, 1]).argsort(descending=True)
    base, extra = divmod(num, len(shapes_wh))
    out = []
    for k, i in enumerate(order.tolist()):
        c = base + (1 if k < extra else 0)
        if c == 0:
            continue
        bw, bh = min(w, float(shapes_wh[i, 0]) * w), min(h, float(shapes_wh[i, 1]) * h)
        out.append(_window_grid(c, bw, bh, w, h))
    return torch.cat(out).float()

