"""The fast inference path of the perceptual metric (:class:`vislearn.models.perceptual.PerceptualMetric`
with ``fast=True``): a bf16, channels_last copy of the VGG-16 trunk and the distance's reduction.

Why each piece (measured with ``torch.profiler`` against ``lpips`` VGG on a 2-core AVX-512-BF16 CPU,
``benchmarks/perceptual.py``):

* **bf16 weights cast once**, not per call: under ``torch.autocast`` every convolution re-casts its
  fp32 weight (``aten::copy_``, about 5% of a call). oneDNN's bf16 channels_last convolution runs at
  2.3-4x the fp32 NCHW one lpips uses (the 64-channel full-resolution layers gain most).
* **The trunk stops at the deepest tap the metric uses** (relu5_3 for all five stages; no pooling
  after it).
* **The reduction reads the bf16 taps once**: each tap is unit-normalised over channels, differenced
  with the reference's (already normalised, fp32) features, squared and averaged over positions.
  Eager PyTorch materialises each of those steps as an fp32 tensor of the tap's size; under
  ``torch.compile`` (:func:`compiled_distance`) inductor fuses them into one pass per stage, fuses
  each ReLU into its convolution (oneDNN post-op), prepacks the weights (CPU freezing) and
  generates the 2x2 max-pools without indices.
* The input scaling ``(x - mean) / std`` is left as it is: the input has 3 channels, so it costs
  under 1% of one call and folding it into conv1_1 would need mean-valued padding to stay exact.

The per-channel channel weights enter as ``D @ w`` on the pooled N x C matrix ``D`` (the metric's
sufficient statistic, :meth:`PerceptualMetric.pair_features`), so one compiled graph serves both the
distance and the fitting features. Values: the distance within 1e-2 (relative) of the fp32 path,
checked against lpips in ``tests/test_models_perceptual_fast.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.models.vgg import VGG16, VGG16_TAPS

__all__ = ["FastTrunk", "NORM_EPS", "compiled_distance", "normalize_taps", "pooled_from_features", "pooled_sq_diff"]

NORM_EPS = 1e-10  # LPIPS's epsilon in f / (||f|| + eps); vislearn.models.perceptual re-exports it


class FastTrunk(nn.Module):
    """A bf16 (or ``dtype``) channels_last copy of a :class:`VGG16` trunk up to tap ``num_stages``.

    The copy is taken when it is built: rebuild it after changing the backbone's weights
    (:meth:`PerceptualMetric.set_fast` does). ``forward`` takes [0, 1] images and returns the taps
    (relu1_2 ... in ``dtype``); gradients flow to the input (the weights are frozen).
    """

    def __init__(self, backbone: VGG16, num_stages: int = 5, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        last = VGG16_TAPS[num_stages - 1][1]
        taps = {idx for _, idx, _, _ in VGG16_TAPS[:num_stages]}
        self.plan: list[str] = []  # "conv", "conv+tap", "pool"
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for i, layer in enumerate(backbone.features[:last + 1]):
            if isinstance(layer, nn.Conv2d):
                w = layer.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
                self.weights.append(nn.Parameter(w, requires_grad=False))
                self.biases.append(nn.Parameter(layer.bias.detach().to(dtype), requires_grad=False))
                self.plan.append("conv+tap" if i + 1 in taps else "conv")
            elif isinstance(layer, nn.MaxPool2d):
                self.plan.append("pool")
        self.dtype = dtype
        self.register_buffer("mean", backbone.norm_mean.detach().clone().reshape(1, 3, 1, 1))
        self.register_buffer("std", backbone.norm_std.detach().clone().reshape(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x - self.mean) / self.std).to(self.dtype).contiguous(memory_format=torch.channels_last)
        out: list[torch.Tensor] = []
        k = 0
        for step in self.plan:
            if step == "pool":
                x = F.max_pool2d(x, 2)
                continue
            x = torch.relu(F.conv2d(x, self.weights[k], self.biases[k], padding=1))
            k += 1
            if step == "conv+tap":
                out.append(x)
        return out


def normalize_taps(taps: Sequence[torch.Tensor], stage_idx: Sequence[int]) -> list[torch.Tensor]:
    """The chosen taps in fp32, unit-normalised over channels at every position."""
    out = []
    for i in stage_idx:
        f = taps[i].float()
        out.append(f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + NORM_EPS))
    return out


def pooled_from_features(fx: Sequence[torch.Tensor], fy: Sequence[torch.Tensor]) -> torch.Tensor:
    """``D`` (N x sum C): per channel, the spatial mean of ``(fx - fy)**2`` (normalised features; a
    batch of 1 on either side broadcasts)."""
    return torch.cat([((a - b) ** 2).mean((2, 3)) for a, b in zip(fx, fy, strict=True)], dim=1)


def pooled_sq_diff(ref: Sequence[torch.Tensor], taps: Sequence[torch.Tensor], stage_idx: Sequence[int]
                   ) -> torch.Tensor:
    """:func:`pooled_from_features` of normalised reference features and raw trunk ``taps``."""
    return pooled_from_features(ref, normalize_taps(taps, stage_idx))


class _Features(nn.Module):
    def __init__(self, trunk: FastTrunk, stage_idx: tuple[int, ...]) -> None:
        super().__init__()
        self.trunk, self.stage_idx = trunk, stage_idx

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return normalize_taps(self.trunk(x), self.stage_idx)


class _Pooled(_Features):
    def forward(self, y: torch.Tensor, *ref: torch.Tensor) -> torch.Tensor:
        return pooled_sq_diff(ref, self.trunk(y), self.stage_idx)


def _frozen(fn: Callable) -> Callable:
    # CPU freezing is an inductor setting read when a graph compiles (at the first call of each new
    # input shape); torch.compile's ``options={"freezing": True}`` does not reach it (checked: the
    # weights stay graph inputs, no prepacking), so every call runs inside a scoped patch.
    from torch._inductor import config

    def call(*args: torch.Tensor):
        with config.patch(freezing=True):
            return fn(*args)
    return call


def compiled_distance(trunk: FastTrunk, stage_idx: Sequence[int], backend: str = "inductor"
                      ) -> tuple[Callable, Callable]:
    """``(features, pooled)``: ``features(x)`` → normalised fp32 features of [0, 1] images,
    ``pooled(y, *ref)`` → ``D`` of ``y`` against those features; both through ``torch.compile``
    (inductor with CPU freezing: the weights become constants, prepacked for oneDNN, each ReLU fused
    into its convolution). Inference only (call under ``torch.no_grad()``); each new input shape
    compiles once (30-60 s on a 2-core CPU). ``backend``: another ``torch.compile`` backend (the tests
    use ``"aot_eager"``, which traces the same graphs in seconds)."""
    idx = tuple(stage_idx)
    return (_frozen(torch.compile(_Features(trunk, idx).eval(), dynamic=False, backend=backend)),
            _frozen(torch.compile(_Pooled(trunk, idx).eval(), dynamic=False, backend=backend)))
