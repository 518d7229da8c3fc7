"""Box coding relative to priors with per-coordinate mean/std whitening (MultiBox).

MultiBox regresses each box as an offset from its prior (Erhan et al. 2014, Sec. 3: "priors"), and
whitens the regression targets with the per-coordinate mean and standard deviation of the offsets on
the training set, so each output is roughly zero-mean and unit-variance (PAPERS.md §4: "boxes coded
relative to priors, per-coordinate mean/std").

Two offset parameterisations are available:

* ``"corner"`` (default, MultiBox): raw offset ``g − p`` of the four xyxy corners, in normalised
  image coordinates.
* ``"center"`` (the Faster R-CNN/SSD parameterisation, for comparison): ``(dx/w_p, dy/h_p,
  log(w_g/w_p), log(h_g/h_p))``.

Either way ``code = (offset − mean) / std`` and :meth:`BoxCoder.decode` is the exact inverse of
:meth:`BoxCoder.encode` (up to floating-point rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vislearn.errors import UserError

__all__ = ["BoxCoder", "box_offsets", "fit_coder_stats", "offsets_to_boxes"]

_MODES = ("corner", "center")


def _wh_ctr(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w = b[..., 2] - b[..., 0]
    h = b[..., 3] - b[..., 1]
    return w, h, b[..., 0] + 0.5 * w, b[..., 1] + 0.5 * h


def box_offsets(boxes: torch.Tensor, priors: torch.Tensor, mode: str = "corner") -> torch.Tensor:
    """Unwhitened offsets of xyxy ``boxes`` from ``priors`` (same shape ``...×4``, broadcastable)."""
    if mode == "corner":
        return boxes - priors
    if mode == "center":
        gw, gh, gx, gy = _wh_ctr(boxes)
        pw, ph, px, py = _wh_ctr(priors)
        eps = torch.finfo(boxes.dtype).tiny
        return torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw.clamp(min=eps) / pw),
                            torch.log(gh.clamp(min=eps) / ph)], -1)
    raise UserError(f"box coding mode must be one of {_MODES}, got {mode!r}")


def offsets_to_boxes(offsets: torch.Tensor, priors: torch.Tensor, mode: str = "corner") -> torch.Tensor:
    """Inverse of :func:`box_offsets`: xyxy boxes from offsets and priors."""
    if mode == "corner":
        return priors + offsets
    if mode == "center":
        pw, ph, px, py = _wh_ctr(priors)
        cx = px + offsets[..., 0] * pw
        cy = py + offsets[..., 1] * ph
        w = pw * torch.exp(offsets[..., 2].clamp(max=20.0))
        h = ph * torch.exp(offsets[..., 3].clamp(max=20.0))
        return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], -1)
    raise UserError(f"box coding mode must be one of {_MODES}, got {mode!r}")


class BoxCoder:
    """Encode/decode boxes relative to priors with per-coordinate whitening.

    Args:
        mean, std: 4 values each (the offsets' mean and standard deviation, as fitted on training
            matches by :func:`fit_coder_stats`); defaults 0 and 1 (no whitening).
        mode: ``"corner"`` (MultiBox) or ``"center"``.

    Example::

        coder = BoxCoder(*fit_coder_stats(gt, priors))
        code = coder.encode(gt, priors)        # N×4 targets for the regressor
        assert torch.allclose(coder.decode(code, priors), gt, atol=1e-6)
    """

    def __init__(self, mean: Sequence[float] | torch.Tensor = (0.0, 0.0, 0.0, 0.0),
                 std: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0, 1.0), mode: str = "corner") -> None:
        if mode not in _MODES:
            raise UserError(f"box coding mode must be one of {_MODES}, got {mode!r}")
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(4)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(4)
        if not (self.std > 0).all() or not torch.isfinite(self.std).all():
            raise UserError(f"coder std must be positive and finite, got {self.std.tolist()}")
        self.mode = mode

    def encode(self, boxes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """Whitened offsets of ``boxes`` (``...×4`` xyxy, normalised) from ``priors``."""
        off = box_offsets(boxes, priors, self.mode)
        return (off - self.mean.to(off)) / self.std.to(off)

    def decode(self, codes: torch.Tensor, priors: torch.Tensor) -> torch.Tensor:
        """xyxy boxes from whitened offsets: the inverse of :meth:`encode`."""
        off = codes * self.std.to(codes) + self.mean.to(codes)
        return offsets_to_boxes(off, priors.to(codes.dtype), self.mode)


def fit_coder_stats(boxes: torch.Tensor, priors: torch.Tensor, mode: str = "corner",
                    min_std: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and std of the offsets of matched ``boxes`` from their ``priors`` (``M×4`` each).

    With no matches the identity coder ``(0, 1)`` is returned; stds are floored at ``min_std``.
    """
    if boxes.numel() == 0:
        return torch.zeros(4), torch.ones(4)
    off = box_offsets(boxes.double(), priors.double(), mode)
    mean = off.mean(0)
    std = off.std(0, unbiased=False) if len(off) > 1 else torch.ones(4, dtype=off.dtype)
    return mean.float(), std.clamp(min=min_std).float()
