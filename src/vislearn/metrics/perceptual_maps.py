"""Where the perceptual metric looks: sensitivity maps, region ablation and map overlays.

The analysis tools of Chinen et al. (arXiv 1808.00447): the abstract reports strong responses to
faces and text "using a visualization technique and ablation experiments"; the paper's exact
procedure is not in the abstract, so these are ours (documented per function). Each works with any
:class:`~vislearn.models.perceptual.PerceptualMetric`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.models.perceptual import PerceptualMetric

__all__ = ["overlay_map", "region_ablation", "sensitivity_map"]


def _box_mask(h: int, w: int, box: Sequence[float]) -> torch.Tensor:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise UserError(f"box {tuple(box)} (x0, y0, x1, y1 in pixels) is not inside a {w}×{h} image")
    m = torch.zeros(h, w)
    m[y0:y1, x0:x1] = 1
    return m


def _as_mask(region: Any, h: int, w: int) -> torch.Tensor:
    if isinstance(region, torch.Tensor) and region.dim() >= 2:
        m = region.float().reshape(region.shape[-2:]) if region.dim() > 2 else region.float()
        if tuple(m.shape) != (h, w):
            raise UserError(f"mask of shape {tuple(m.shape)} for a {h}×{w} image")
        return (m > 0.5).float()
    return _box_mask(h, w, region)


@torch.no_grad()
def sensitivity_map(metric: PerceptualMetric, image: torch.Tensor, kind: str = "noise", level: int = 3,
                    patch: int | None = None, stride: int | None = None, batch_size: int = 16,
                    seed: int = 0) -> torch.Tensor:
    """The metric's response to a small local distortion moved over the image (H×W map).

    The image is distorted once as a whole (``vislearn.data.distortions.distort``), and for each
    position of a ``patch``×``patch`` window (step ``stride``) only the window is pasted from the
    distorted copy; the metric compares each with the clean image (the reference features are
    computed once). Each pixel gets the mean response of the windows that cover it.
    """
    from vislearn.data.distortions import distort

    metric.check(image.unsqueeze(0) if image.dim() == 3 else image, "image")
    img = image if image.dim() == 3 else image[0]
    _, h, w = img.shape
    patch = patch or max(8, min(h, w) // 8)
    stride = stride or max(1, patch // 2)
    if patch > min(h, w):
        raise UserError(f"patch {patch} is larger than the {h}×{w} image")
    dev = metric.device
    img = img.to(dev)
    full = distort(img.cpu(), kind, level, seed=seed).to(dev)
    ys = list(range(0, h - patch + 1, stride))
    xs = list(range(0, w - patch + 1, stride))
    if ys[-1] != h - patch:
        ys.append(h - patch)
    if xs[-1] != w - patch:
        xs.append(w - patch)
    ref = metric.reference(img.unsqueeze(0))
    boxes = [(y, x) for y in ys for x in xs]
    resp = torch.empty(len(boxes))
    for s in range(0, len(boxes), batch_size):
        chunk = boxes[s:s + batch_size]
        batch = img.unsqueeze(0).repeat(len(chunk), 1, 1, 1)
        for k, (y, x) in enumerate(chunk):
            batch[k, :, y:y + patch, x:x + patch] = full[:, y:y + patch, x:x + patch]
        resp[s:s + len(chunk)] = metric(ref, batch).float().cpu()
    acc, cnt = torch.zeros(h, w), torch.zeros(h, w)
    for r, (y, x) in zip(resp.tolist(), boxes, strict=True):
        acc[y:y + patch, x:x + patch] += r
        cnt[y:y + patch, x:x + patch] += 1
    return acc / cnt.clamp_min(1)


@torch.no_grad()
def region_ablation(metric: PerceptualMetric, image: torch.Tensor, region: Any, kind: str = "noise",
                    level: int = 3, num_outside: int = 8, outside: str = "boxes", seed: int = 0) -> dict[str, float]:
    """Response to a distortion inside a region vs the same distortion outside it (the paper's ablation).

    ``region``: an (x0, y0, x1, y1) box in pixels or an H×W mask. ``outside="boxes"``: up to
    ``num_outside`` boxes of the region's bounding-box size that do not overlap it, drawn at random;
    ``"complement"``: everything outside the region (when no such box fits, e.g. a text block that
    spans the page). The distortion is applied with ``vislearn.data.distortions.distort_region``.
    Pixel MSE is reported for both as a control (a distortion changes a flat region less, and the
    areas can differ): ``semantic_ratio = (d_in / d_out) / (mse_in / mse_out)`` > 1 means the metric
    weighs the region more than its pixel change alone explains.
    """
    from vislearn.data.distortions import distort_region

    img = image if image.dim() == 3 else image[0]
    metric.check(img.unsqueeze(0), "image")
    if outside not in ("boxes", "complement"):
        raise UserError(f"outside must be 'boxes' or 'complement', got {outside!r}")
    _, h, w = img.shape
    img = img.detach().float().cpu()
    mask = _as_mask(region, h, w)
    if mask.sum() == 0 or mask.sum() == mask.numel():
        raise UserError("the region must cover some but not all of the image")
    masks = []
    if outside == "complement":
        masks.append(1 - mask)
    else:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        bh, bw = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        g = torch.Generator().manual_seed(seed)
        for _ in range(200 * num_outside):
            if len(masks) == num_outside:
                break
            y = int(torch.randint(0, h - bh + 1, (1,), generator=g))
            x = int(torch.randint(0, w - bw + 1, (1,), generator=g))
            if mask[y:y + bh, x:x + bw].sum() == 0:
                m = torch.zeros(h, w)
                m[y:y + bh, x:x + bw] = 1
                masks.append(m)
        if not masks:
            raise UserError(f"no {bw}×{bh} box outside the region fits in the {w}×{h} image; "
                            "use outside='complement'")
    all_masks = torch.stack([mask] + masks)  # K×H×W
    batch = distort_region(img.unsqueeze(0).repeat(len(all_masks), 1, 1, 1).contiguous(), kind, level,
                           all_masks, seed=seed)
    dev = metric.device
    d = metric(img.unsqueeze(0).to(dev), batch.to(dev)).float().cpu()
    mse = ((batch - img) ** 2).mean((1, 2, 3))
    d_in, d_out = float(d[0]), float(d[1:].mean())
    m_in, m_out = float(mse[0]), float(mse[1:].mean())
    ratio = d_in / max(d_out, 1e-12)
    mse_ratio = m_in / max(m_out, 1e-12)
    return {"d_inside": d_in, "d_outside": d_out, "ratio": ratio, "mse_inside": m_in, "mse_outside": m_out,
            "mse_ratio": mse_ratio, "semantic_ratio": ratio / max(mse_ratio, 1e-12),
            "region_fraction": float(mask.mean()), "num_outside": float(len(masks))}


def overlay_map(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """An H×W×3 float array: the image (greyed) with the map in colour on top, scaled to its range."""
    import matplotlib

    img = (image if image.dim() == 3 else image[0]).detach().float().cpu()
    hm = heat.detach().float().cpu().reshape(heat.shape[-2:])
    if tuple(hm.shape) != tuple(img.shape[-2:]):
        hm = F.interpolate(hm[None, None], size=img.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    lo, hi = float(hm.min()), float(hm.max())
    hm = (hm - lo) / (hi - lo) if hi > lo else torch.zeros_like(hm)
    colour = matplotlib.colormaps[cmap](hm.numpy())[..., :3]
    grey = img.mean(0, keepdim=True).expand(3, -1, -1).permute(1, 2, 0).numpy()
    return np.clip((1 - alpha) * grey + alpha * colour, 0, 1)

