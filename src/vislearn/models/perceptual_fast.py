"""The fast inference path of the perceptual metric (:class:`vislearn.models.perceptual.PerceptualMetric`
with ``fast=True``): a bf16, channels_last copy of the VGG-16 trunk that propagates the *difference*
between the distorted image and its reference, and the distance's reduction.

Why each piece (measured with ``torch.profiler`` against ``lpips`` VGG on a 2-core AVX-512-BF16 CPU,
``benchmarks/perceptual.py``):

* **bf16 weights cast once**, not per call: under ``torch.autocast`` every convolution re-casts its
  fp32 weight (``aten::copy_``, about 5% of a call). oneDNN's bf16 channels_last convolution runs at
  2.2-4x the fp32 NCHW one lpips uses (the 64-channel full-resolution layers gain most).
* **Difference propagation** (why bf16 keeps the fp32 distance): run independently in bf16, the two
  images' activations are each rounded to 8 significant bits, and a mild distortion changes them by
  about as little (the distance of a 0.75 contrast change came out 2-6% off lpips fp32, for lpips's
  own bf16 autocast too). Instead the reference's pre-activations ``z`` of every convolution are kept
  (:meth:`FastTrunk.reference_state`, computed once per reference) and the distorted image runs as
  ``Δ`` (:meth:`FastTrunk.delta_taps`): a convolution is linear, so ``conv(x + Δ) = z + conv(Δ)``
  (zero padding included, no bias on ``Δ``); a ReLU gives ``relu(z + c) - relu(z)`` and a max-pool
  ``pool(a + Δ) - pool(a)``, both in fp32. The rounding then scales with ``Δ``, not with the
  activation, and the convolutions do exactly the MACs of the plain trunk.
* **The trunk stops at the deepest tap the metric uses** (relu5_3 for all five stages; no pooling
  after it).
* **One pass per stage for the reduction** under ``torch.compile`` (:func:`compiled_distance`,
  inductor with CPU freezing): the unit-normalisation, difference, square and spatial mean fuse,
  each ``Δ`` update fuses into one elementwise kernel after its convolution, the weights are
  prepacked for oneDNN and the 2x2 max-pools are generated without indices. Eager PyTorch
  materialises each of those steps as an fp32 tensor.
* The input scaling ``(x - mean) / std`` is left as it is: the input has 3 channels, so it costs
  under 1% of one call; folding it into conv1_1 would need mean-valued padding to stay exact.

Eager PyTorch pays for the difference path's fp32 elementwise updates (about 2x slower than the
plain bf16 trunk, measured at 256²), so the metric uses it only when compiled (and for the eager
fallback of a compiled metric when a gradient is wanted); ``fast=True`` without ``compile`` runs the
plain bf16 trunk (:meth:`FastTrunk.forward`) with bf16's accuracy.

The per-channel weights enter as ``D @ w`` on the pooled N x C matrix ``D`` (the metric's sufficient
statistic, :meth:`PerceptualMetric.pair_features`), so one compiled graph serves both the distance and
the fitting features. Values: checked against lpips fp32 on photos in ``tests/test_models_perceptual_fast.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.models.vgg import VGG16, VGG16_TAPS

__all__ = ["FastTrunk", "NORM_EPS", "compiled_distance", "delta_pooled", "normalize_taps", "pooled_from_features",
           "pooled_sq_diff", "state_features"]

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
        self.acc = torch.promote_types(dtype, torch.float32)  # the difference updates' precision
        self.register_buffer("mean", backbone.norm_mean.detach().clone().reshape(1, 3, 1, 1))
        self.register_buffer("std", backbone.norm_std.detach().clone().reshape(1, 3, 1, 1))

    @property
    def tap_convs(self) -> list[int]:
        """Indices (in convolution order) of the convolutions whose ReLU is a tap."""
        return [k for k, step in enumerate(s for s in self.plan if s != "pool") if step == "conv+tap"]

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The taps of [0, 1] images, in ``dtype`` (each image on its own, no difference propagation)."""
        x = self._input(x).to(self.dtype).contiguous(memory_format=torch.channels_last)
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

    def reference_state(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[normalised input (fp32), z_1, ..., z_K]``: what :meth:`delta_taps` needs of a reference
        batch, the pre-activation of every convolution in ``dtype``."""
        xn = self._input(x)
        a = xn.to(self.dtype).contiguous(memory_format=torch.channels_last)
        state, k = [xn], 0
        for step in self.plan:
            if step == "pool":
                a = F.max_pool2d(a, 2)
                continue
            z = F.conv2d(a, self.weights[k], self.biases[k], padding=1)
            k += 1
            state.append(z)
            a = torch.relu(z)
        return state

    def delta_taps(self, y: torch.Tensor, state: Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per tap, ``(a, Δ)`` in fp32 (``acc``): the reference's activation and the distorted image's minus it.
        ``state`` (batch 1 or N) from :meth:`reference_state`; ``y`` N images."""
        xn, zs = state[0], state[1:]
        d = (self._input(y) - xn).to(self.dtype).contiguous(memory_format=torch.channels_last)
        out: list[tuple[torch.Tensor, torch.Tensor]] = []
        k = 0
        for step in self.plan:
            if step == "pool":
                a = torch.relu(zs[k - 1]).to(self.acc)
                d = (F.max_pool2d(a + d.to(self.acc), 2) - F.max_pool2d(a, 2)).to(self.dtype)
                continue
            z = zs[k].to(self.acc)
            dz = torch.relu(z + F.conv2d(d, self.weights[k], None, padding=1).to(self.acc)) - torch.relu(z)
            k += 1
            if step == "conv+tap":
                out.append((torch.relu(z), dz))
            d = dz.to(self.dtype)
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


def state_features(trunk: FastTrunk, state: Sequence[torch.Tensor], stage_idx: Sequence[int]) -> list[torch.Tensor]:
    """The normalised fp32 stage features of a reference from its :meth:`FastTrunk.reference_state`."""
    zs, taps = state[1:], trunk.tap_convs
    return normalize_taps([torch.relu(zs[k]) for k in taps], stage_idx)


def delta_pooled(trunk: FastTrunk, y: torch.Tensor, state: Sequence[torch.Tensor], stage_idx: Sequence[int]
                 ) -> torch.Tensor:
    """``D`` (N x sum C) of distorted images ``y`` against a reference's state, by difference propagation."""
    pairs = trunk.delta_taps(y, state)
    cols = []
    for i in stage_idx:
        a, dz = pairs[i]
        b = a + dz
        fa = a / (torch.linalg.vector_norm(a, dim=1, keepdim=True) + NORM_EPS)
        fb = b / (torch.linalg.vector_norm(b, dim=1, keepdim=True) + NORM_EPS)
        cols.append(((fa - fb) ** 2).mean((2, 3)))
    return torch.cat(cols, dim=1)


class _Reference(nn.Module):
    def __init__(self, trunk: FastTrunk, stage_idx: tuple[int, ...]) -> None:
        super().__init__()
        self.trunk, self.stage_idx = trunk, stage_idx

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.reference_state(x)


class _Pooled(_Reference):
    def forward(self, y: torch.Tensor, *state: torch.Tensor) -> torch.Tensor:
        return delta_pooled(self.trunk, y, state, self.stage_idx)


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
    """``(reference_state, pooled)`` through ``torch.compile``: ``reference_state(x)`` →
    :meth:`FastTrunk.reference_state`, ``pooled(y, *state)`` → :func:`delta_pooled` (inductor with CPU
    freezing: the weights become constants, prepacked for oneDNN). Inference only (call under
    ``torch.no_grad()``); each new input shape compiles once (30-90 s on a 2-core CPU). ``backend``:
    another ``torch.compile`` backend (the tests use ``"aot_eager"``, which traces the same graphs in
    seconds)."""
    idx = tuple(stage_idx)
    return (_frozen(torch.compile(_Reference(trunk, idx).eval(), dynamic=False, backend=backend)),
            _frozen(torch.compile(_Pooled(trunk, idx).eval(), dynamic=False, backend=backend)))
