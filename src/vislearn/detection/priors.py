"""MultiBox priors: k-means box shapes (IoU distance) and the multi-scale grid of priors.

MultiBox (Erhan et al., CVPR 2014, Sec. 3) predicts each box relative to a *prior*, a box obtained by
clustering the training boxes; MSC-MultiBox (Szegedy et al., arXiv 1412.1441, Sec. 3) lays the priors
out on a tree of grids so that convolutional predictors can emit them: each cell of a ``g×g`` grid
holds one prior per aspect ratio. Public re-implementations use the grids 8, 6, 4, 3, 2, 1 with 11
aspect ratios, about 1,420 priors (PAPERS.md §4). Our default reaches exactly 1,420 by giving the
``1×1`` grid a single prior that covers the whole image: ``11·(64+36+16+9+4) + 1 = 1,420``.

All priors are ``xyxy`` boxes in *normalised* image coordinates ([0, 1] on both axes), so they do not
depend on the input resolution. The clustering distance is ``1 − IoU`` of the boxes' shapes placed at a
common centre (the IoU distance of YOLOv2, which ignores position and measures only shape), so a
cluster of large boxes is not favoured the way a Euclidean distance on widths favours it.

This module imports no model (DESIGN.md); :class:`vislearn.models.multibox.MSCMultiBox` stores the
priors it builds as a persistent buffer, so they are saved and loaded with the weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_iou

from vislearn.errors import UserError

__all__ = ["DEFAULT_ASPECT_RATIOS", "DEFAULT_GRIDS", "centered_iou", "grid_prior_counts", "grid_priors",
           "kmeans_aspect_ratios", "kmeans_box_shapes", "num_grid_priors", "prior_match_frequency",
           "rank_priors_by_frequency"]

# MSC-MultiBox's tree of grids (PAPERS.md §4: 8, 6, 4, 3, 2, 1).
DEFAULT_GRIDS: tuple[int, ...] = (8, 6, 4, 3, 2, 1)
# 11 aspect ratios (w/h) spread geometrically over [1/4, 4]; used before k-means has seen data
# (our choice; the recipe replaces them by k-means ratios of the training boxes).
DEFAULT_ASPECT_RATIOS: tuple[float, ...] = tuple(float(2.0 ** (i / 2.5 - 2.0)) for i in range(11))


def centered_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    """IoU of boxes with shapes ``wh1`` (``N×2``) and ``wh2`` (``K×2``) placed at a common centre → ``N×K``."""
    inter = torch.minimum(wh1[:, None, 0], wh2[None, :, 0]) * torch.minimum(wh1[:, None, 1], wh2[None, :, 1])
    a1 = (wh1[:, 0] * wh1[:, 1])[:, None]
    a2 = (wh2[:, 0] * wh2[:, 1])[None, :]
    union = a1 + a2 - inter
    return torch.where(union > 0, inter / union.clamp(min=1e-12), torch.zeros_like(inter))


def _as_wh(boxes_or_wh: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(boxes_or_wh, dtype=torch.float64)
    if t.dim() != 2 or t.shape[1] not in (2, 4):
        raise UserError(f"expected N×4 xyxy boxes or N×2 (w, h) shapes, got shape {tuple(t.shape)}")
    wh = t[:, 2:] - t[:, :2] if t.shape[1] == 4 else t
    ok = torch.isfinite(wh).all(1) & (wh > 0).all(1)
    return wh[ok]


def kmeans_box_shapes(boxes: torch.Tensor, k: int, iters: int = 100, seed: int = 0) -> torch.Tensor:
    """k-means over box shapes with the distance ``1 − IoU`` of centred boxes → ``k×2`` (w, h).

    Args:
        boxes: ``N×4`` xyxy boxes or ``N×2`` (w, h), any unit (normalised coordinates in practice).
            Zero-size and non-finite boxes are ignored.
        k: number of clusters (at most the number of distinct valid boxes).
        iters: maximum Lloyd iterations (stops earlier when assignments no longer change).
        seed: seed of the k-means++ initialisation (with the IoU distance).

    Returns:
        ``k×2`` cluster centres (mean w and h of each cluster), sorted by area. An emptied cluster is
        re-seeded at the box farthest from its centre.
    """
    wh = _as_wh(boxes)
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    if len(wh) < k:
        raise UserError(f"k-means needs at least k={k} valid boxes, got {len(wh)}")
    g = torch.Generator().manual_seed(seed)
    # k-means++ seeding: each next centre drawn with probability ∝ distance² to the nearest centre.
    centres = wh[torch.randint(len(wh), (1,), generator=g)]
    for _ in range(1, k):
        d = (1 - centered_iou(wh, centres)).min(1).values.clamp(min=0) ** 2
        p = d / d.sum() if d.sum() > 0 else torch.full_like(d, 1 / len(d))
        centres = torch.cat([centres, wh[torch.multinomial(p, 1, generator=g)]])
    assign = None
    for _ in range(iters):
        iou = centered_iou(wh, centres)
        new_assign = iou.argmax(1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        counts = torch.bincount(assign, minlength=k).to(wh.dtype)
        sums = torch.zeros(k, 2, dtype=wh.dtype).index_add_(0, assign, wh)
        empty = counts == 0
        centres = torch.where(empty[:, None], centres, sums / counts.clamp(min=1)[:, None])
        if empty.any():
            far = (1 - iou.max(1).values).argsort(descending=True)[: int(empty.sum())]
            centres[empty] = wh[far]
    return centres[(centres[:, 0] * centres[:, 1]).argsort()].float()


def kmeans_aspect_ratios(boxes: torch.Tensor, k: int = 11, seed: int = 0) -> tuple[float, ...]:
    """Aspect ratios ``w/h`` of the :func:`kmeans_box_shapes` centres, sorted ascending."""
    wh = kmeans_box_shapes(boxes, k, seed=seed)
    return tuple(sorted(float(r) for r in (wh[:, 0] / wh[:, 1])))


def grid_prior_counts(grids: Sequence[int], num_aspect_ratios: int,
                      single_prior_grids: Sequence[int] = (1,)) -> list[int]:
    """Priors per cell of each grid: ``num_aspect_ratios``, or 1 for the grids in ``single_prior_grids``."""
    if not grids or any(int(g) < 1 for g in grids):
        raise UserError(f"grids must be positive integers, got {list(grids)}")
    if num_aspect_ratios < 1:
        raise UserError(f"need at least one aspect ratio, got {num_aspect_ratios}")
    return [1 if g in single_prior_grids else num_aspect_ratios for g in grids]


def num_grid_priors(grids: Sequence[int] = DEFAULT_GRIDS, num_aspect_ratios: int = 11,
                    single_prior_grids: Sequence[int] = (1,)) -> int:
    """Number of priors of a grid layout (1,420 for the default)."""
    counts = grid_prior_counts(grids, num_aspect_ratios, single_prior_grids)
    return sum(int(g) ** 2 * a for g, a in zip(grids, counts, strict=True))


def grid_priors(grids: Sequence[int] = DEFAULT_GRIDS,
                aspect_ratios: Sequence[float] = DEFAULT_ASPECT_RATIOS,
                scale: float = 1.0, single_prior_grids: Sequence[int] = (1,), clip: bool = True) -> torch.Tensor:
    """The multi-scale grid priors as ``P×4`` normalised xyxy boxes.

    Order (the order the model's heads emit): grid by grid, then cell row, cell column, aspect ratio.
    A prior of a ``g×g`` grid with aspect ratio ``a`` is centred on its cell and has area
    ``(scale/g)²``: width ``scale/g·√a``, height ``scale/g/√a``. A grid listed in
    ``single_prior_grids`` holds one square prior of side ``scale/g`` per cell. With ``clip`` the
    priors are clipped to the image.
    """
    ratios = torch.as_tensor(list(aspect_ratios), dtype=torch.float64)
    if ratios.numel() == 0 or not (ratios > 0).all() or not torch.isfinite(ratios).all():
        raise UserError(f"aspect ratios must be positive and finite, got {list(aspect_ratios)}")
    if scale <= 0:
        raise UserError(f"prior scale must be positive, got {scale}")
    counts = grid_prior_counts(grids, len(ratios), single_prior_grids)
    out = []
    for g, a in zip(grids, counts, strict=True):
        g = int(g)
        r = ratios if a == len(ratios) else torch.ones(1, dtype=torch.float64)
        c = (torch.arange(g, dtype=torch.float64) + 0.5) / g
        cy, cx = torch.meshgrid(c, c, indexing="ij")
        side = scale / g
        w = side * r.sqrt()
        h = side / r.sqrt()
        cx, cy = cx.reshape(-1, 1), cy.reshape(-1, 1)  # cells × 1, broadcast over ratios
        boxes = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1).reshape(-1, 4)
        out.append(boxes)
    priors = torch.cat(out)
    if clip:
        priors = priors.clamp(0, 1)
    return priors.float()


def prior_match_frequency(priors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """How often each prior is the best-IoU prior of a training box → ``P`` counts (float).

    ``gt_boxes``: per-image ``K×4`` xyxy boxes in the priors' coordinates (normalised). Used to rank
    the priors alone by training frequency (the "priors only" baseline of the reproduction).
    """
    counts = torch.zeros(len(priors), dtype=torch.float64)
    boxes = [b.reshape(-1, 4).float() for b in gt_boxes if b.numel()]
    if boxes:
        allb = torch.cat(boxes)
        best = box_iou(allb, priors.float()).argmax(1)
        counts += torch.bincount(best, minlength=len(priors)).double()
    return counts


def rank_priors_by_frequency(priors: torch.Tensor, gt_boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """Prior indices sorted by :func:`prior_match_frequency`, most frequent first (ties: lower index)."""
    freq = prior_match_frequency(priors, gt_boxes)
    return torch.sort(-freq, stable=True).indices
