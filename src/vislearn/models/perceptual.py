"""The network of the semantic perceptual image metric on VGG-16 (Chinen et al., "Towards a Semantic
Perceptual Image Metric", arXiv 1808.00447) and its LPIPS-compatible special case.

What the paper's abstract fixes: a full-reference metric "based on VGG-16, an artificial neural
network trained on object classification", fitted to human ratings (140k images, minimally
instructed raters), evaluated on TID2013, showing strong responses to faces and text "using a
visualization technique and ablation experiments". Layer choice, pooling and the objective are not
in the abstract; PAPERS.md section 7 asks us to design and document them. Our choices:

1. **Layers** (``layers``): the five ReLU taps before each VGG-16 pool, relu1_2, relu2_2, relu3_3,
   relu4_3, relu5_3 (strides 1-16). All five: the semantic claim needs the deep, object-level taps
   (relu4_3/relu5_3 respond to faces and text), the early ones keep sensitivity to noise and blur.
   These are LPIPS's taps too, so LPIPS-VGG is a special case with the same backbone.
2. **Feature normalisation**: each tap is unit-normalised over channels at every position,
   ``f / (||f||_2 + eps)`` with ``eps = 1e-10`` (LPIPS's constant), so no layer dominates by scale.
3. **Per-stage distance**: the squared difference of normalised features weighted by non-negative
   per-channel weights, ``sum_c w_lc (f_lc(x) - f_lc(y))^2``. Non-negativity makes the metric a
   (squared, weighted) distance: zero for identical images, never negative, monotone in each
   channel's discrepancy.
4. **Spatial pooling**: the mean over positions. Because the mean is linear, the pooled per-channel
   squared differences ``D_lc = mean_hw (f_lc(x) - f_lc(y))^2`` are a sufficient statistic for any
   weighting: fitting needs the backbone once per pair (:meth:`PerceptualMetric.pair_features`), not
   per step. The paper's semantic sensitivity is then carried by the learned channel weights, not by
   a saliency pooling rule we would have to invent.
5. **Stages are summed**: ``d(x, y) = sum_l sum_c w_lc D_lc``.
6. **Rating map** (:class:`LogisticMap`): a monotone logistic
   ``r = low + (high - low) * sigmoid(exp(s) * (c - d))`` from distance to the rating scale of the
   training data (MOS, DMOS); for a quality scale (higher = better) it decreases in ``d``, for a
   distortion scale ``high < low`` makes it increase. It changes no ranking.
7. **Objective**: fitting lives in :mod:`vislearn.recipes.perceptual` (``fit``, ``HeadFitModule``).
8. **Initial weights**: all ones (the unweighted LPIPS "baseline" distance), or LPIPS's released
   linear weights (``lin_weights``) when available.
9. **Backbone**: frozen, ImageNet normalisation on [0, 1] input; weights from a local torchvision
   ``vgg16`` file (read with ``weights_only=True``), random initialisation otherwise (and then the
   semantic claims mean little: the reproduction says so).

Input contract: float RGB NCHW in [0, 1]. Values below 0 (the [-1, 1] convention LPIPS uses) are an
error, never silently rescaled. ``metric(x, y)`` returns one distance per pair; ``x`` may be a
single reference (batch 1) compared against many distorted images, or a cached
:class:`ReferenceFeatures` from :meth:`PerceptualMetric.reference`; ``spatial=True`` returns a
distance map (each stage's weighted map upsampled bilinearly to the input size, summed, as LPIPS).

Fast mode (``fast=True``): a bf16 channels_last copy of the trunk (weights cast once) runs the
convolutions on each image; the normalisation and the distance are computed in fp32. Its accuracy is
bf16's: on mild distortions (small distances) up to a few percent off fp32, like lpips under bf16
autocast. ``compile=True`` (with ``fast``) runs inference through ``torch.compile`` (inductor, CPU
freezing) on the distorted-minus-reference *difference* (the reference's pre-activations kept), which
keeps the distance within 1e-2 (relative) of fp32 and is the fastest path; a call that needs a
gradient runs the same difference path eagerly. See :mod:`vislearn.models.perceptual_fast` for what
each piece buys. Many distorted images against one
reference: compute the reference's features once with :meth:`PerceptualMetric.reference` and pass
them instead of the image.

Registered models: ``create_model("semantic_vgg16", backbone_weights=..., head_weights=...)`` and
``create_model("lpips_vgg", backbone_weights=..., lin_weights=...)``; the metric-level entry point
``vislearn.metrics.perceptual.create_metric`` builds the same.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.models.base import RANGE_TOLERANCE, check_images
from vislearn.models.perceptual_fast import (
    NORM_EPS,
    FastTrunk,
    compiled_distance,
    delta_pooled,
    normalize_taps,
    pooled_from_features,
    pooled_sq_diff,
    state_features,
)
from vislearn.models.registry import create_model, register_model
from vislearn.models.vgg import VGG16, VGG16_TAPS

__all__ = ["LogisticMap", "NORM_EPS", "PERCEPTUAL_MODELS", "PerceptualHead", "PerceptualMetric", "ReferenceFeatures",
           "VGG_STAGES", "build_perceptual_metric", "load_lpips_lin_weights", "lpips_vgg", "semantic_vgg16"]

PAPER = "Chinen et al. 2018, Towards a Semantic Perceptual Image Metric (arXiv 1808.00447)"
PERCEPTUAL_MODELS: tuple[str, ...] = ("semantic_vgg16", "lpips_vgg")

VGG_STAGES: tuple[str, ...] = tuple(name for name, _, _, _ in VGG16_TAPS)
_CHANNELS = {name: c for name, _, c, _ in VGG16_TAPS}
_STRIDE = {name: s for name, _, _, s in VGG16_TAPS}


# ------------------------------------------------------------------------------------------ head
class LogisticMap(nn.Module):
    """Monotone map from distance to the rating scale: ``low + (high-low)·σ(e^s·(center − d))``."""

    def __init__(self, low: float = 0.0, high: float = 1.0, center: float = 0.0, log_slope: float = 0.0) -> None:
        super().__init__()
        self.low = nn.Parameter(torch.tensor(float(low)))
        self.high = nn.Parameter(torch.tensor(float(high)))
        self.center = nn.Parameter(torch.tensor(float(center)))
        self.log_slope = nn.Parameter(torch.tensor(float(log_slope)))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * torch.sigmoid(self.log_slope.exp() * (self.center - d))


class PerceptualHead(nn.Module):
    """The learned part of the metric: per-stage non-negative channel weights and the rating map.

    ``weights.{i}`` holds stage ``layers[i]``'s weights (shape ``C``); ``vislearn train perceptual``
    saves this module as ``model.safetensors`` (load it with ``create_metric(..., weights=PATH)``).
    Built by every :class:`PerceptualMetric`; fitted by :mod:`vislearn.recipes.perceptual`.
    """

    def __init__(self, layers: Sequence[str] = VGG_STAGES) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.weights = nn.ParameterList([nn.Parameter(torch.ones(_CHANNELS[n])) for n in self.layers])
        self.logistic = LogisticMap()
        self.model_name = "perceptual_head"
        self.model_kwargs = {"layers": list(self.layers)}

    def flat_weights(self) -> torch.Tensor:
        """All stages' weights concatenated (the order of :meth:`PerceptualMetric.pair_features`' columns)."""
        return torch.cat([w for w in self.weights])

    def set_flat_weights(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            i = 0
            for p in self.weights:
                p.copy_(w[i:i + p.numel()])
                i += p.numel()


@dataclass
class ReferenceFeatures:
    """A reference batch computed once, reusable against many distorted images.

    ``features``: the unit-normalised fp32 stage features (the fp32 path). ``state``: what the fast path
    keeps instead (:meth:`~vislearn.models.perceptual_fast.FastTrunk.reference_state`: the normalised
    input and every convolution's bf16 pre-activation, about 2.2× the bytes of ``features``); the
    features are derived from it when needed (:meth:`PerceptualMetric.reference_features`)."""

    features: list[torch.Tensor] | None
    shape: tuple[int, ...]  # N, C, H, W of the images they came from
    state: list[torch.Tensor] | None = None


# ---------------------------------------------------------------------------------------- metric
class PerceptualMetric(nn.Module):
    """Full-reference distance ``d(x, y) = Σ_l Σ_c w_lc · mean_hw (f̂_lc(x) − f̂_lc(y))²`` on VGG-16.

    See the module docstring for every design choice. Build it with ``create_model("semantic_vgg16", ...)``
    or :func:`vislearn.metrics.perceptual.create_metric`.

    Args:
        backbone: a :class:`~vislearn.models.vgg.VGG16` (frozen here; ``features_only`` suffices).
        layers: stage names, a subset of :data:`VGG_STAGES` in order.
        fast: a bf16 channels_last copy of the backbone runs the convolutions.
        compile: with ``fast``, inference through ``torch.compile`` on the difference path (within 1e-2
            of fp32; each input shape compiles once).
    """

    def __init__(self, backbone: VGG16, layers: Sequence[str] = VGG_STAGES, fast: bool = False,
                 compile: bool = False) -> None:
        super().__init__()
        layers = tuple(layers)
        bad = [n for n in layers if n not in VGG_STAGES]
        if not layers or bad or list(layers) != sorted(layers, key=VGG_STAGES.index) or len(set(layers)) != len(layers):
            raise UserError(f"layers must be distinct names from {VGG_STAGES} in order, got {layers}")
        if not isinstance(backbone, VGG16):
            raise UserError(f"backbone must be a vislearn VGG16, got {type(backbone).__name__}")
        self.backbone = backbone.eval().requires_grad_(False)
        self.layers = layers
        self._stage_idx = [VGG_STAGES.index(n) for n in layers]
        self.num_stages = max(self._stage_idx) + 1
        self.min_input_size = _STRIDE[layers[-1]]  # the deepest stage needs one position
        self.head = PerceptualHead(layers)
        self.fast = self.compiled = False
        self.compile_backend = "inductor"  # torch.compile backend of the compiled path
        self._drop_fast()
        if fast or compile:
            self.set_fast(fast, compile=compile)

    # ----------------------------------------------------------------------------- configuration
    def set_fast(self, fast: bool = True, compile: bool = False) -> PerceptualMetric:
        """Fast mode: a bf16 channels_last copy of the backbone (distances stay fp32); ``compile``: run
        inference through ``torch.compile`` (needs ``fast``). The copy is taken at the next call: call
        ``set_fast`` again after changing the backbone's weights in place."""
        if compile and not fast:
            raise UserError("compile=True needs fast=True (it compiles the bf16 fast path)")
        self.fast, self.compiled = bool(fast), bool(compile)
        self._drop_fast()
        return self

    def _drop_fast(self) -> None:
        # kept out of the module tree on purpose: the copy is derived state, not part of state_dict()
        self.__dict__["_fast_parts"] = None

    def _apply(self, fn, recurse: bool = True):
        self._drop_fast()  # .to(device/dtype) invalidates the bf16 copy
        return super()._apply(fn, recurse)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._drop_fast()
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _fast(self) -> dict:
        parts = self.__dict__["_fast_parts"]
        if parts is None:
            trunk = FastTrunk(self.backbone, self.num_stages).eval()
            parts = {"trunk": trunk, "state": trunk.reference_state,
                     "pooled": lambda y, *state: delta_pooled(trunk, y, state, self._stage_idx)}
            if self.compiled:
                parts["compiled"] = compiled_distance(trunk, self._stage_idx, self.compile_backend)
            self.__dict__["_fast_parts"] = parts
        return parts

    def _run(self, name: str, *inputs: torch.Tensor):
        """Fast-path function ``name`` ("state" or "pooled"), compiled unless a gradient is wanted."""
        parts = self._fast()
        if self.compiled and not (torch.is_grad_enabled() and any(t.requires_grad for t in inputs)):
            with torch.no_grad():
                return parts["compiled"][0 if name == "state" else 1](*inputs)
        return parts[name](*inputs)

    def train(self, mode: bool = True) -> PerceptualMetric:
        super().train(mode)
        self.backbone.eval()  # the backbone is frozen: never in training mode
        return self

    @property
    def device(self) -> torch.device:
        return self.backbone.features[0].weight.device

    # ------------------------------------------------------------------------------------ checks
    def check(self, x: torch.Tensor, where: str = "input") -> None:
        """Raise ``UserError`` for anything but float RGB NCHW in [0, 1] at least ``min_input_size``."""
        if isinstance(x, torch.Tensor) and torch.is_floating_point(x) and x.numel():
            lo = float(x.detach().amin())
            if lo < -RANGE_TOLERANCE:
                raise UserError(
                    f"{where}: values must be in [0, 1], got a minimum of {lo:.3g}; the metric takes "
                    "[0, 1] images (if yours are in [-1, 1], LPIPS's convention, pass (x + 1) / 2)")
        check_images(x, 3, 1, where=where)
        if min(x.shape[-2:]) < self.min_input_size:
            raise UserError(
                f"{where}: images are {tuple(x.shape[-2:])}, smaller than the {self.min_input_size}×"
                f"{self.min_input_size} that stage {self.layers[-1]} (stride {self.min_input_size}) needs")

    # ---------------------------------------------------------------------------------- features
    def _stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.compiled:
            return state_features(self._fast()["trunk"], self._run("state", x), self._stage_idx)
        if self.fast:
            return normalize_taps(self._fast()["trunk"](x), self._stage_idx)
        bb = self.backbone
        x = (x - bb.norm_mean.to(x.dtype)) / bb.norm_std.to(x.dtype)
        return normalize_taps(bb.taps(x, self.num_stages), self._stage_idx)

    def reference(self, x: torch.Tensor) -> ReferenceFeatures:
        """Compute a reference batch once (compare it later with ``metric(ref, y)``: the trunk then runs
        on the distorted images only)."""
        self.check(x, "reference")
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            if self.compiled:
                return ReferenceFeatures(None, tuple(x.shape), list(self._run("state", x)))
            return ReferenceFeatures(self._stage_features(x), tuple(x.shape))

    def reference_features(self, ref: ReferenceFeatures) -> list[torch.Tensor]:
        """The normalised fp32 stage features of a :meth:`reference` (derived from a fast path's state)."""
        if ref.features is not None:
            return ref.features
        return state_features(self._fast()["trunk"], ref.state, self._stage_idx)

    def _check_pair(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor) -> None:
        self.check(y, "distorted")
        if isinstance(x, ReferenceFeatures):
            ref_shape = x.shape
        else:
            self.check(x, "reference")
            ref_shape = tuple(x.shape)
        if tuple(ref_shape[1:]) != tuple(y.shape[1:]):
            raise UserError(f"reference and distorted images differ in shape: {tuple(ref_shape)} vs {tuple(y.shape)}")
        if ref_shape[0] not in (1, y.shape[0]):
            raise UserError(f"batch sizes differ: {ref_shape[0]} references for {y.shape[0]} distorted images "
                            "(use one reference to compare with many, or equal batches)")

    def _features_pair(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self._check_pair(x, y)
        if isinstance(x, ReferenceFeatures):
            return self.reference_features(x), self._stage_features(y)
        if x.shape[0] == y.shape[0]:
            both = self._stage_features(torch.cat([x, y.to(x.dtype)]))  # one backbone call for both
            n = x.shape[0]
            return [f[:n] for f in both], [f[n:] for f in both]
        return self._stage_features(x), self._stage_features(y)  # one reference, many distorted

    # ----------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        """Distance per pair (shape N), or with ``spatial=True`` a N×1×H×W distance map."""
        if spatial:
            fx, fy = self._features_pair(x, y)
            size = y.shape[-2:]
            total = None
            for w, a, b in zip(self.head.weights, fx, fy, strict=True):
                m = ((a - b) ** 2 * w.view(1, -1, 1, 1)).sum(1, keepdim=True)
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                total = m if total is None else total + m
            return total
        return self.pair_features(x, y) @ self.head.flat_weights()

    def pair_features(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor) -> torch.Tensor:
        """``D``: N × ΣC pooled per-channel squared differences; ``distance = D @ head.flat_weights()``."""
        if not self.compiled:
            return pooled_from_features(*self._features_pair(x, y))
        self._check_pair(x, y)
        if isinstance(x, ReferenceFeatures) and x.state is None:  # features from an fp32 metric
            return pooled_sq_diff(x.features, self._fast()["trunk"](y), self._stage_idx)
        state = x.state if isinstance(x, ReferenceFeatures) else self._run("state", x)
        return self._run("pooled", y, *state)

    def rating(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor) -> torch.Tensor:
        """The distance mapped to the fitted rating scale (e.g. a predicted MOS)."""
        return self.head.logistic(self.forward(x, y))

    def to_rating(self, distance: torch.Tensor) -> torch.Tensor:
        return self.head.logistic(distance)


# --------------------------------------------------------------------------------------- factory
def load_lpips_lin_weights(path: str | os.PathLike) -> list[torch.Tensor]:
    """The five per-channel weight vectors of an ``lpips`` VGG linear-layer file (``vgg.pth``).

    Accepts ``lin{k}.model.1.weight`` (lpips with dropout, the released files) or
    ``lin{k}.model.0.weight``, each of shape 1×C×1×1. Anything else is a ``UserError``.
    """
    from vislearn.io import read_state_dict

    sd, _ = read_state_dict(path)
    out = []
    for k, name in enumerate(VGG_STAGES):
        key = next((f"lin{k}.model.{j}.weight" for j in (1, 0) if f"lin{k}.model.{j}.weight" in sd), None)
        if key is None:
            raise UserError(f"{path} is not an lpips VGG linear-weights file: no lin{k}.model.1.weight "
                            f"(keys: {', '.join(list(sd)[:5])}...)")
        w = sd[key]
        if tuple(w.shape) != (1, _CHANNELS[name], 1, 1):
            raise UserError(f"{path}: {key} has shape {tuple(w.shape)}, expected (1, {_CHANNELS[name]}, 1, 1) "
                            "(is it lpips's vgg.pth, not alex/squeeze?)")
        if (w < 0).any():
            raise UserError(f"{path}: {key} has negative weights; LPIPS weights are non-negative")
        out.append(w.reshape(-1).float().clone())
    return out


def _load_backbone(backbone_weights: str | os.PathLike | None) -> VGG16:
    return create_model("vgg16", features_only=True,
                        weights=os.fspath(backbone_weights) if backbone_weights is not None else None)


def build_perceptual_metric(name: str = "semantic_vgg16", backbone_weights: str | os.PathLike | None = None, *,
                            lin_weights: str | os.PathLike | None = None,
                            head_weights: str | os.PathLike | None = None, layers: Sequence[str] = VGG_STAGES,
                            fast: bool = False, compile: bool = False,
                            backbone: VGG16 | None = None) -> PerceptualMetric:
    """Build ``semantic_vgg16`` or ``lpips_vgg`` (the arguments of
    :func:`vislearn.metrics.perceptual.create_metric`; ``head_weights`` is its ``weights``)."""
    if name not in PERCEPTUAL_MODELS:
        raise UserError(f"unknown metric {name!r}; choose semantic_vgg16 or lpips_vgg")
    if name == "lpips_vgg":
        if lin_weights is None:
            raise UserError("lpips_vgg needs lin_weights=PATH (lpips/weights/v0.1/vgg.pth from the lpips package)")
        if tuple(layers) != VGG_STAGES:
            raise UserError("lpips_vgg uses all five VGG stages; do not pass layers")
    bb = backbone if backbone is not None else _load_backbone(backbone_weights)
    metric = PerceptualMetric(bb, layers)
    if lin_weights is not None:
        lin = load_lpips_lin_weights(lin_weights)
        metric.head.set_flat_weights(torch.cat([lin[VGG_STAGES.index(n)] for n in metric.layers]))
    if head_weights is not None:
        from vislearn.io import load_state_dict_checked, read_state_dict

        sd, meta = read_state_dict(head_weights)
        if meta.get("vislearn_model") not in (None, "perceptual_head"):
            raise UserError(f"{head_weights} holds a {meta['vislearn_model']!r} model, not a perceptual-metric head")
        load_state_dict_checked(metric.head, sd, source=os.fspath(head_weights))
        if any((w < 0).any() for w in metric.head.weights):
            raise UserError(f"{head_weights}: negative channel weights; a perceptual-metric head has w >= 0")
    metric.model_name = name
    metric.set_fast(fast, compile=compile)
    return metric.eval()


@register_model("semantic_vgg16", input_size=(3, 224, 224), paper=PAPER + " (ours: fitted channel weights)")
def semantic_vgg16(**kwargs) -> PerceptualMetric:
    return build_perceptual_metric("semantic_vgg16", **kwargs)


@register_model("lpips_vgg", input_size=(3, 224, 224), paper="Zhang et al. 2018, LPIPS v0.1 VGG (arXiv 1801.03924)")
def lpips_vgg(**kwargs) -> PerceptualMetric:
    return build_perceptual_metric("lpips_vgg", **kwargs)
