"""What every vislearn model shares: input validation and its own input normalisation.

Images at every public boundary are float tensors in [0, 1], RGB, NCHW (DESIGN.md). A model stores
``normalization = (mean, std)`` on that scale and applies it first in ``forward``, so a user never
needs to know a model's input range. The normalisation is kept in non-persistent buffers: state
dicts stay key-compatible with torchvision/timm, and our weight files record it in their metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from vislearn.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # maps [0, 1] to [-1, 1], as Google's released Inception models expect
INCEPTION_STD = (0.5, 0.5, 0.5)

# Tolerance for "in [0, 1]": resampling and bf16 rounding can overshoot by a little, never by 0.5.
RANGE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class FeatureInfo:
    """One stage of ``forward_features``: its name, channel count and stride w.r.t. the input."""

    name: str
    channels: int
    stride: int


def check_images(x: torch.Tensor, in_chans: int | None = 3, min_size: int = 1, where: str = "input") -> None:
    """Raise ``UserError`` unless ``x`` is a float N×C×H×W batch in [0, 1] with the expected channels/size."""
    if not isinstance(x, torch.Tensor):
        raise UserError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise UserError(f"{where}: expected a float tensor in [0, 1], got dtype {x.dtype} (divide uint8 by 255)")
    if x.dim() != 4:
        raise UserError(f"{where}: expected N×C×H×W, got shape {tuple(x.shape)}")
    if in_chans is not None and x.shape[1] != in_chans:
        raise UserError(f"{where}: expected {in_chans} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if min(x.shape[-2:]) < min_size:
        raise UserError(f"{where}: images must be at least {min_size}×{min_size}, got {tuple(x.shape[-2:])}")
    if x.numel():
        lo, hi = torch.aminmax(x.detach())
        lo, hi = float(lo), float(hi)
        if lo != lo or hi != hi:
            raise UserError(f"{where}: contains NaN")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise UserError(
                f"{where}: values must be in [0, 1], got [{lo:.3g}, {hi:.3g}] "
                "(pass images scaled to [0, 1]; the model normalises them itself)"
            )


class VisionModel(nn.Module):
    """Base class: owns ``normalization``, validates input and exposes the backbone interface.

    ``forward_features(x) -> list[Tensor]`` takes [0, 1] images and returns one map per
    ``feature_info`` stage: by default the output of each module of ``self.stages`` in turn;
    families with another layout override it. ``forward`` of a subclass should start with
    ``x = self.prepare_input(x)`` (or call ``forward_features``, which does).
    """

    in_chans: int = 3
    min_input_size: int = 1
    feature_info: list[FeatureInfo] = []

    def __init__(
        self,
        normalization: tuple[Sequence[float], Sequence[float]] | None = (IMAGENET_MEAN, IMAGENET_STD),
        validate_inputs: bool = True,
    ) -> None:
        super().__init__()
        self.validate_inputs = validate_inputs
        self.register_buffer("norm_mean", torch.zeros(0), persistent=False)
        self.register_buffer("norm_std", torch.zeros(0), persistent=False)
        self.normalization = normalization

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
        """``(mean, std)`` on the [0, 1] scale applied first in ``forward``; ``None`` means identity."""
        return self._normalization

    @normalization.setter
    def normalization(self, value: tuple[Sequence[float], Sequence[float]] | None) -> None:
        device = self.norm_mean.device
        if value is None:
            self.norm_mean = torch.zeros(0, device=device)
            self.norm_std = torch.zeros(0, device=device)
            self._normalization = None
            return
        try:
            mean, std = value
            # built on the CPU so the checks below work when the model is built on the meta device
            mean_t = torch.as_tensor(mean, dtype=torch.float32, device="cpu").flatten()
            std_t = torch.as_tensor(std, dtype=torch.float32, device="cpu").flatten()
        except (TypeError, ValueError):
            raise UserError(f"normalization must be (mean, std), got {value!r}") from None
        if mean_t.numel() not in (1, self.in_chans) or std_t.numel() not in (1, self.in_chans):
            raise UserError(f"normalization needs 1 or {self.in_chans} values per part, got {value!r}")
        if (std_t <= 0).any():
            raise UserError(f"normalization std must be positive, got {std!r}")
        mean_t, std_t = mean_t.expand(self.in_chans), std_t.expand(self.in_chans)
        # the Python copy answers the getter without reading (possibly meta or GPU) buffers
        self._normalization = (tuple(mean_t.tolist()), tuple(std_t.tolist()))
        self.norm_mean = mean_t.reshape(1, -1, 1, 1).clone().to(device)
        self.norm_std = std_t.reshape(1, -1, 1, 1).clone().to(device)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[0, 1] images → the output of each module of ``self.stages``, applied in order."""
        x = self.prepare_input(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate a [0, 1] batch (unless ``validate_inputs`` is off) and apply the normalisation."""
        if self.validate_inputs and not torch.jit.is_scripting() and not torch.compiler.is_compiling():
            check_images(x, self.in_chans, self.min_input_size, where=type(self).__name__)
        if self.norm_mean.numel() == 0:
            return x
        return (x - self.norm_mean.to(x.dtype)) / self.norm_std.to(x.dtype)
