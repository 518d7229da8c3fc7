"""Box validation shared by the detection modules: clear errors or counted clean-ups for bad boxes.

Boxes are ``K×4`` float tensors in ``xyxy`` order (torchvision's convention). Box arithmetic itself
(IoU, NMS, format conversion) comes from :mod:`torchvision.ops`; this module only decides what to do
with degenerate input: a box of zero or negative width/height, a non-finite coordinate, or a box that
lies (partly) outside the image.
"""

from __future__ import annotations

import torch

from vislearn.errors import UserError

__all__ = ["check_boxes", "sanitize_boxes"]


def check_boxes(boxes: torch.Tensor, where: str = "boxes") -> torch.Tensor:
    """Return ``boxes`` as a float ``K×4`` tensor or raise ``UserError`` naming the problem.

    Accepts an empty tensor of any shape with zero elements (an image without objects).
    Non-finite values and boxes with ``x2 < x1`` or ``y2 < y1`` are errors; zero-size boxes are
    allowed here (metrics give them IoU 0) and removed by :func:`sanitize_boxes`.
    """
    if not isinstance(boxes, torch.Tensor):
        raise UserError(f"{where}: expected a tensor of xyxy boxes, got {type(boxes).__name__}")
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).float()
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise UserError(f"{where}: expected K×4 xyxy boxes, got shape {tuple(boxes.shape)}")
    if not torch.is_floating_point(boxes):
        boxes = boxes.float()
    if not torch.isfinite(boxes).all():
        raise UserError(f"{where}: contains NaN or infinite coordinates")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(bad.nonzero()[0])
        raise UserError(f"{where}: box {i} has negative size {boxes[i].tolist()} (expected x1<=x2, y1<=y2 "
                        "in xyxy order; convert xywh with torchvision.ops.box_convert)")
    return boxes


def sanitize_boxes(boxes: torch.Tensor, image_size: tuple[int, int] | None = None,
                   min_size: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    """Clip boxes to the image and drop degenerate ones; returns ``(boxes, keep, counts)``.

    Args:
        boxes: ``K×4`` xyxy (negative-size or non-finite boxes are dropped, not raised).
        image_size: ``(H, W)``; when given, boxes are clipped to ``[0, W]×[0, H]`` and boxes lying
            entirely outside the image become degenerate and are dropped.
        min_size: boxes narrower or lower than this (after clipping) are dropped.

    Returns:
        The kept boxes, the boolean mask of kept input rows, and counts of what was done
        (``{"clipped": n, "dropped_degenerate": n, "dropped_nonfinite": n}``) so callers can report them.
    """
    boxes = boxes.reshape(-1, 4).float()
    finite = torch.isfinite(boxes).all(1)
    out = torch.where(finite[:, None], boxes, torch.zeros_like(boxes))
    clipped = torch.zeros(len(boxes), dtype=torch.bool)
    if image_size is not None:
        h, w = image_size
        lim = torch.tensor([w, h, w, h], dtype=out.dtype)
        new = torch.minimum(out.clamp(min=0), lim)
        clipped = (new != out).any(1) & finite
        out = new
    size_ok = ((out[:, 2] - out[:, 0]) >= min_size) & ((out[:, 3] - out[:, 1]) >= min_size)
    keep = finite & size_ok
    counts = {"clipped": int((clipped & keep).sum()), "dropped_degenerate": int((finite & ~size_ok).sum()),
              "dropped_nonfinite": int((~finite).sum())}
    return out[keep], keep, counts
