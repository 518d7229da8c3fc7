"""A semantic perceptual image metric on VGG-16 (Chinen et al., "Towards a Semantic Perceptual Image
Metric", arXiv 1808.00447), its LPIPS-compatible special case, fitting to human judgments, and the
sensitivity-map / region-ablation tools of the paper's analysis.

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
   weighting: fitting needs the backbone once per pair (:func:`pair_features`), not per step. The
   paper's semantic sensitivity is then carried by the learned channel weights, not by a saliency
   pooling rule we would have to invent.
5. **Stages are summed**: ``d(x, y) = sum_l sum_c w_lc D_lc``.
6. **Rating map**: a monotone logistic ``r = low + (high - low) * sigmoid(exp(s) * (c - d))`` from
   distance to the rating scale of the training data (MOS, DMOS); for a quality scale
   (higher = better) it decreases in ``d``, for a distortion scale ``high < low`` makes it increase.
   It changes no ranking; it is what the MOS objective compares with the ratings.
7. **Objective** (:func:`fit`): for mean-opinion scores, the mean squared error of the logistic-mapped
   distance against the MOS (divided by the MOS variance, so the loss is scale-free); for 2AFC
   triplets, a Bradley-Terry model ``P(B closer) = sigmoid(exp(t) * (d(ref, A) - d(ref, B)))`` with
   binary cross-entropy against the human fraction (LPIPS instead learns a small network on the two
   distances; a single temperature keeps the learned distance the only model). Weights are
   parameterised as ``w = softplus(rho)`` while fitting (non-negative without projection steps), Adam,
   a held-out split **by reference image** (no content seen in training is scored), early stopping on
   the held-out loss with the best weights restored.
8. **Initial weights**: all ones (the unweighted LPIPS "baseline" distance), or LPIPS's released
   linear weights (``init="lpips"``) when available.
9. **Backbone**: frozen, ImageNet normalisation on [0, 1] input; weights from a local torchvision
   ``vgg16`` file (read with ``weights_only=True``), random initialisation otherwise (and then the
   semantic claims mean little: the reproduction says so).

Input contract: float RGB NCHW in [0, 1]. Values below 0 (the [-1, 1] convention LPIPS uses) are an
error, never silently rescaled. ``metric(x, y)`` returns one distance per pair; ``x`` may be a
single reference (batch 1) compared against many distorted images, or a cached
:class:`ReferenceFeatures` from :meth:`PerceptualMetric.reference`; ``spatial=True`` returns a
distance map (each stage's weighted map upsampled bilinearly to the input size, summed, as LPIPS).

Fast mode (``fast=True``): channels_last backbone and bf16 autocast for the convolutions; the
normalisation and the distance are computed in fp32.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.metrics.iqa import krocc, plcc, srocc, two_afc_agreement
from vislearn.models.base import RANGE_TOLERANCE, check_images
from vislearn.models.vgg import VGG16, VGG16_TAPS

__all__ = [
    "FitResult", "HeadFitModule", "IQAEvaluation", "LogisticMap", "PairFeatures", "PerceptualHead", "PerceptualMetric",
    "ReferenceFeatures", "TwoAFCEvaluation", "VGG_STAGES", "create_metric", "fit", "load_lpips_lin_weights",
    "overlay_map", "pair_features", "precompute_judgments", "region_ablation", "sensitivity_map",
    "split_by_group",
]

VGG_STAGES: tuple[str, ...] = tuple(name for name, _, _, _ in VGG16_TAPS)
_CHANNELS = {name: c for name, _, c, _ in VGG16_TAPS}
_STRIDE = {name: s for name, _, _, s in VGG16_TAPS}
NORM_EPS = 1e-10  # LPIPS's epsilon in f / (||f|| + eps)


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
    """

    def __init__(self, layers: Sequence[str] = VGG_STAGES) -> None:
        super().__init__()
        self.layers = tuple(layers)
        self.weights = nn.ParameterList([nn.Parameter(torch.ones(_CHANNELS[n])) for n in self.layers])
        self.logistic = LogisticMap()
        self.model_name = "perceptual_head"
        self.model_kwargs = {"layers": list(self.layers)}

    def flat_weights(self) -> torch.Tensor:
        """All stages' weights concatenated (the order of :func:`pair_features`' columns)."""
        return torch.cat([w for w in self.weights])

    def set_flat_weights(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            i = 0
            for p in self.weights:
                p.copy_(w[i:i + p.numel()])
                i += p.numel()


@dataclass
class ReferenceFeatures:
    """Unit-normalised stage features of reference images, reusable against many distorted images."""

    features: list[torch.Tensor]
    shape: tuple[int, ...]  # N, C, H, W of the images they came from


# ---------------------------------------------------------------------------------------- metric
class PerceptualMetric(nn.Module):
    """Full-reference distance ``d(x, y) = Σ_l Σ_c w_lc · mean_hw (f̂_lc(x) − f̂_lc(y))²`` on VGG-16.

    See the module docstring for every design choice. Build it with :func:`create_metric`.

    Args:
        backbone: a :class:`~vislearn.models.vgg.VGG16` (frozen here; ``features_only`` suffices).
        layers: stage names, a subset of :data:`VGG_STAGES` in order.
        fast: channels_last + bf16 autocast for the backbone.
    """

    def __init__(self, backbone: VGG16, layers: Sequence[str] = VGG_STAGES, fast: bool = False) -> None:
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
        self.fast = False
        if fast:
            self.set_fast(True)

    # ----------------------------------------------------------------------------- configuration
    def set_fast(self, fast: bool = True) -> PerceptualMetric:
        """Fast mode: channels_last backbone + bf16 autocast (distances stay fp32)."""
        self.fast = bool(fast)
        fmt = torch.channels_last if fast else torch.contiguous_format
        self.backbone.to(memory_format=fmt)
        return self

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
        bb = self.backbone
        x = (x - bb.norm_mean.to(x.dtype)) / bb.norm_std.to(x.dtype)
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                taps = bb.taps(x, self.num_stages)
        else:
            taps = bb.taps(x, self.num_stages)
        out = []
        for i in self._stage_idx:
            f = taps[i].float()
            out.append(f / (torch.linalg.vector_norm(f, dim=1, keepdim=True) + NORM_EPS))
        return out

    def reference(self, x: torch.Tensor) -> ReferenceFeatures:
        """Cache a reference batch's normalised features (compare it later with ``metric(ref, y)``)."""
        self.check(x, "reference")
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):
            return ReferenceFeatures(self._stage_features(x), tuple(x.shape))

    def _features_pair(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
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
        if isinstance(x, ReferenceFeatures):
            return x.features, self._stage_features(y)
        if x.shape[0] == y.shape[0]:
            both = self._stage_features(torch.cat([x, y.to(x.dtype)]))  # one backbone call for both
            n = x.shape[0]
            return [f[:n] for f in both], [f[n:] for f in both]
        return self._stage_features(x), self._stage_features(y)  # one reference, many distorted

    # ----------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor, spatial: bool = False) -> torch.Tensor:
        """Distance per pair (shape N), or with ``spatial=True`` a N×1×H×W distance map."""
        fx, fy = self._features_pair(x, y)
        if spatial:
            size = y.shape[-2:]
            total = None
            for w, a, b in zip(self.head.weights, fx, fy, strict=True):
                m = ((a - b) ** 2 * w.view(1, -1, 1, 1)).sum(1, keepdim=True)
                m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                total = m if total is None else total + m
            return total
        return self._pooled(fx, fy) @ self.head.flat_weights()

    @staticmethod
    def _pooled(fx: list[torch.Tensor], fy: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([((a - b) ** 2).mean((2, 3)) for a, b in zip(fx, fy, strict=True)], dim=1)

    def pair_features(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor) -> torch.Tensor:
        """``D``: N × ΣC pooled per-channel squared differences; ``distance = D @ head.flat_weights()``."""
        fx, fy = self._features_pair(x, y)
        return self._pooled(fx, fy)

    def rating(self, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor) -> torch.Tensor:
        """The distance mapped to the fitted rating scale (e.g. a predicted MOS)."""
        return self.head.logistic(self.forward(x, y))

    def to_rating(self, distance: torch.Tensor) -> torch.Tensor:
        return self.head.logistic(distance)


def pair_features(metric: PerceptualMetric, x: torch.Tensor | ReferenceFeatures, y: torch.Tensor) -> torch.Tensor:
    """Module-level alias of :meth:`PerceptualMetric.pair_features` (no gradient)."""
    with torch.no_grad():
        return metric.pair_features(x, y)


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
    from vislearn.models import create_model

    return create_model("vgg16", features_only=True,
                        weights=os.fspath(backbone_weights) if backbone_weights is not None else None)


def create_metric(name: str = "semantic_vgg16", backbone_weights: str | os.PathLike | None = None, *,
                  lin_weights: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
                  layers: Sequence[str] = VGG_STAGES, fast: bool = False,
                  backbone: VGG16 | None = None) -> PerceptualMetric:
    """Build a metric.

    Args:
        name: ``"semantic_vgg16"`` (ours: all-ones weights until fitted, or ``weights``) or
            ``"lpips_vgg"`` (LPIPS v0.1 VGG: ``lin_weights`` required, all five stages).
        backbone_weights: a torchvision ``vgg16`` state-dict file (``features.N.weight`` keys,
            classifier keys ignored); ``None`` leaves the backbone randomly initialised.
        lin_weights: lpips's ``weights/v0.1/vgg.pth``.
        weights: a fitted :class:`PerceptualHead` (``model.safetensors`` from ``vislearn train
            perceptual``); ``init="lpips"`` for ours is ``lin_weights`` with ``semantic_vgg16``.
        layers: stages for ``semantic_vgg16``.
        fast: channels_last + bf16 autocast.
        backbone: an already-built VGG16 to use instead of ``backbone_weights``.
    """
    if name not in ("semantic_vgg16", "lpips_vgg"):
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
    if weights is not None:
        from vislearn.io import load_state_dict_checked, read_state_dict

        sd, meta = read_state_dict(weights)
        if meta.get("vislearn_model") not in (None, "perceptual_head"):
            raise UserError(f"{weights} holds a {meta['vislearn_model']!r} model, not a perceptual-metric head")
        load_state_dict_checked(metric.head, sd, source=os.fspath(weights))
        if any((w < 0).any() for w in metric.head.weights):
            raise UserError(f"{weights}: negative channel weights; a perceptual-metric head has w >= 0")
    metric.model_name = name
    metric.set_fast(fast)
    return metric.eval()


# ------------------------------------------------------------------------------- dataset metrics
class IQAEvaluation:
    """Accumulates distances and human scores over a dataset: SROCC, KROCC, PLCC (torchmetrics-style).

    ``higher_is_better``: the scores are a quality scale (TID2013 MOS, KADID-10k "dmos" which is a
    mean rating), so the distance is negated before rank correlations; SROCC/KROCC are then
    positive for a good metric.
    """

    def __init__(self, metric: PerceptualMetric, higher_is_better: bool = True) -> None:
        self.metric, self.sign = metric, (-1.0 if higher_is_better else 1.0)
        self.reset()

    def reset(self) -> None:
        self._d: list[torch.Tensor] = []
        self._s: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, reference: torch.Tensor | ReferenceFeatures, distorted: torch.Tensor,
               scores: torch.Tensor | Sequence[float]) -> torch.Tensor:
        d = self.metric(reference, distorted).float().cpu()
        s = torch.as_tensor(scores, dtype=torch.float32).reshape(-1)
        if s.numel() != d.numel():
            raise UserError(f"{s.numel()} scores for {d.numel()} pairs")
        self._d.append(d)
        self._s.append(s)
        return d

    def compute(self) -> dict[str, float]:
        if not self._d:
            raise UserError("IQAEvaluation.compute() before any update()")
        d, s = torch.cat(self._d).numpy(), torch.cat(self._s).numpy()
        out = {"n": float(d.size), "srocc": srocc(self.sign * d, s), "krocc": krocc(self.sign * d, s)}
        out["plcc"] = plcc(d, s) if d.size >= 5 else float("nan")
        return out


class TwoAFCEvaluation:
    """Accumulates 2AFC triplets ``(reference, p0, p1, judge)``; ``compute()`` → LPIPS's 2AFC score."""

    def __init__(self, metric: PerceptualMetric) -> None:
        self.metric = metric
        self.reset()

    def reset(self) -> None:
        self._d0: list[torch.Tensor] = []
        self._d1: list[torch.Tensor] = []
        self._h: list[torch.Tensor] = []

    @torch.no_grad()
    def update(self, reference: torch.Tensor, p0: torch.Tensor, p1: torch.Tensor,
               judge: torch.Tensor | Sequence[float]) -> None:
        ref = self.metric.reference(reference)
        self._d0.append(self.metric(ref, p0).float().cpu())
        self._d1.append(self.metric(ref, p1).float().cpu())
        self._h.append(torch.as_tensor(judge, dtype=torch.float32).reshape(-1))

    def compute(self) -> dict[str, float]:
        if not self._d0:
            raise UserError("TwoAFCEvaluation.compute() before any update()")
        d0, d1, h = torch.cat(self._d0), torch.cat(self._d1), torch.cat(self._h)
        return {"n": float(d0.numel()), "2afc": two_afc_agreement(d0, d1, h),
                "human_ceiling": float(torch.maximum(h, 1 - h).mean())}


# ------------------------------------------------------------------------------------------ fit
@dataclass
class PairFeatures:
    """Judgments reduced to pooled per-channel squared differences (the metric's sufficient statistic).

    ``kind="mos"``: ``d0`` is N×ΣC for (reference, distorted), ``target`` the N scores.
    ``kind="2afc"``: ``d0``/``d1`` are N×ΣC for (reference, A) and (reference, B), ``target`` the
    fraction of humans who found B closer. ``groups``: an id of the reference image per row (the
    held-out split keeps each reference on one side).
    """

    kind: str
    d0: torch.Tensor
    target: torch.Tensor
    d1: torch.Tensor | None = None
    groups: list[Any] | None = None
    layers: tuple[str, ...] = VGG_STAGES

    def __post_init__(self) -> None:
        if self.kind not in ("mos", "2afc"):
            raise UserError(f"kind must be 'mos' or '2afc', got {self.kind!r}")
        if (self.kind == "2afc") != (self.d1 is not None):
            raise UserError("2afc judgments need d1; mos judgments must not have it")
        if self.d0.shape[0] != self.target.shape[0]:
            raise UserError(f"{self.d0.shape[0]} feature rows for {self.target.shape[0]} targets")

    def __len__(self) -> int:
        return self.d0.shape[0]

    def subset(self, idx: torch.Tensor | Sequence[int]) -> PairFeatures:
        idx = torch.as_tensor(idx, dtype=torch.long)
        groups = [self.groups[i] for i in idx.tolist()] if self.groups is not None else None
        return PairFeatures(self.kind, self.d0[idx], self.target[idx],
                            self.d1[idx] if self.d1 is not None else None, groups, self.layers)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.d0, self.target) if self.kind == "mos" else (self.d0, self.d1, self.target)


@torch.no_grad()
def precompute_judgments(metric: PerceptualMetric, judgments: Any, batch_size: int = 8,
                         log: Callable[[str], None] | None = None) -> PairFeatures:
    """Run the backbone once per image of a judgment dataset and keep only :class:`PairFeatures`.

    ``judgments`` is a map-style dataset whose items are ``(reference, distorted, score)`` (MOS) or
    ``(reference, a, b, fraction_b_closer)`` (2AFC), images 3×H×W in [0, 1]. If it has
    ``ref_keys`` (one hashable per item, e.g. the reference file name), consecutive items with the
    same reference share one reference forward pass and the split is by reference.
    """
    n = len(judgments)
    if n == 0:
        raise UserError("no judgments to fit")
    keys = list(getattr(judgments, "ref_keys", [None] * n))
    first = judgments[0]
    if len(first) not in (3, 4):
        raise UserError(f"judgment items must be (ref, dist, score) or (ref, a, b, judge), got {len(first)} fields")
    kind = "mos" if len(first) == 3 else "2afc"
    d0s, d1s, ts = [], [], []
    i = 0
    while i < n:
        items, key0 = [judgments[i]], keys[i]
        j = i + 1
        while (j < n and len(items) < batch_size and
               (keys[j] == key0 if key0 is not None else True)):
            item = judgments[j]
            if item[1].shape != items[0][1].shape or (key0 is None and item[0].shape != items[0][0].shape):
                break
            items.append(item)
            j += 1
        if key0 is not None:  # one reference for the run
            ref = metric.reference(items[0][0].unsqueeze(0).to(metric.device))
        else:
            ref = metric.reference(torch.stack([it[0] for it in items]).to(metric.device))
        d0s.append(metric.pair_features(ref, torch.stack([it[1] for it in items]).to(metric.device)).cpu())
        if kind == "2afc":
            d1s.append(metric.pair_features(ref, torch.stack([it[2] for it in items]).to(metric.device)).cpu())
        ts.append(torch.tensor([float(it[-1]) for it in items]))
        i = j
        if log is not None and (i == n or len(ts) % 50 == 0):
            log(f"  features {i}/{n}")
    groups = keys if keys[0] is not None else None
    return PairFeatures(kind, torch.cat(d0s), torch.cat(ts), torch.cat(d1s) if d1s else None, groups,
                        metric.layers)


def split_by_group(pf: PairFeatures, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Train/validation row indices; whole reference groups go to one side when ``groups`` is set."""
    if not 0 < val_fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1), got {val_fraction}")
    g = torch.Generator().manual_seed(seed)
    n = len(pf)
    if pf.groups is not None and len(set(pf.groups)) >= 2:
        uniq = sorted(set(pf.groups), key=str)
        perm = torch.randperm(len(uniq), generator=g).tolist()
        n_val = min(len(uniq) - 1, max(1, round(val_fraction * len(uniq))))
        val_groups = {uniq[k] for k in perm[:n_val]}
        is_val = torch.tensor([grp in val_groups for grp in pf.groups])
    else:
        perm = torch.randperm(n, generator=g)
        is_val = torch.zeros(n, dtype=torch.bool)
        is_val[perm[:max(1, round(val_fraction * n))]] = True
    return torch.nonzero(~is_val).flatten(), torch.nonzero(is_val).flatten()


def _inv_softplus(w: torch.Tensor) -> torch.Tensor:
    w = w.clamp_min(1e-6)
    return w + torch.log(-torch.expm1(-w))


class HeadFitModule(nn.Module):
    """What the engine trains: ``w = softplus(rho)`` and the logistic (MOS) or temperature (2AFC).

    ``forward(batch)`` returns ``{"loss", ...}`` for ``(D, score)`` or ``(D_A, D_B, fraction_B)``
    batches. :meth:`export_head` writes the (best, when tracked) parameters into a
    :class:`PerceptualHead`.
    """

    def __init__(self, head: PerceptualHead, kind: str, train: PairFeatures) -> None:
        super().__init__()
        self.kind, self.layers = kind, head.layers
        self.rho = nn.Parameter(_inv_softplus(head.flat_weights().detach().float().clone()))
        self.logistic = copy.deepcopy(head.logistic).float()
        self.log_temp = nn.Parameter(torch.zeros(()))
        with torch.no_grad():
            d = train.d0 @ F.softplus(self.rho)
            if kind == "mos":
                y = train.target.float()
                self.target_var = float(y.var()) if y.numel() > 1 and float(y.var()) > 0 else 1.0
                decreasing = srocc(d, y) < 0 if y.numel() > 1 else True
                hi, lo = float(y.max()), float(y.min())
                self.logistic.low.fill_(lo if decreasing else hi)
                self.logistic.high.fill_(hi if decreasing else lo)
                self.logistic.center.fill_(float(d.median()))
                self.logistic.log_slope.fill_(math.log(2.0 / max(float(d.std()), 1e-8)))
            else:
                self.target_var = 1.0
                gap = (train.d0 - train.d1) @ F.softplus(self.rho)
                self.log_temp.fill_(math.log(1.0 / max(float(gap.abs().mean()), 1e-8)))
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_loss = float("inf")

    def weights(self) -> torch.Tensor:
        return F.softplus(self.rho)

    def predict(self, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(model output, target): the predicted rating (MOS) or logit of "B closer" (2AFC)."""
        w = self.weights()
        if self.kind == "mos":
            d, y = batch
            return self.logistic(d.float() @ w), y.float()
        d0, d1, h = batch
        return self.log_temp.exp() * ((d0.float() - d1.float()) @ w), h.float()

    def loss_of(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "mos":
            return F.mse_loss(out, target) / self.target_var
        return F.binary_cross_entropy_with_logits(out, target)

    def forward(self, batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        out, target = self.predict(batch)
        return {"loss": self.loss_of(out, target)}

    @torch.no_grad()
    def held_out(self, data: PairFeatures) -> dict[str, float]:
        """Loss and agreement on a held-out :class:`PairFeatures`."""
        dev = self.rho.device
        out, target = self.predict([t.to(dev) for t in data.tensors()])
        res = {"loss": float(self.loss_of(out, target))}
        out, target = out.cpu(), target.cpu()
        if self.kind == "mos":
            res["srocc"] = srocc(out, target) if len(data) > 1 else float("nan")
            res["plcc"] = plcc(out, target, fit=False) if len(data) > 1 else float("nan")
        else:
            # the metric picks B when d(ref,B) < d(ref,A), i.e. when the logit is positive
            res["2afc"] = two_afc_agreement(-out, out, target)
        return res

    def remember_if_best(self, loss: float) -> bool:
        if loss < self.best_loss:
            self.best_loss = loss
            self.best_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
            return True
        return False

    @torch.no_grad()
    def export_head(self, head: PerceptualHead | None = None) -> PerceptualHead:
        state = self.best_state or self.state_dict()
        head = head if head is not None else PerceptualHead(self.layers)
        dev = head.weights[0].device
        head.set_flat_weights(F.softplus(state["rho"]).to(dev))
        if self.kind == "mos":
            for name in ("low", "high", "center", "log_slope"):
                getattr(head.logistic, name).copy_(state[f"logistic.{name}"])
        return head


class _EarlyStop(Exception):
    pass


@dataclass
class FitResult:
    """What :func:`fit` returns: held-out numbers before and after, where it stopped, the history."""

    kind: str
    train_size: int
    val_size: int
    steps: int
    best_step: int
    stopped_early: bool
    val_before: dict[str, float]
    val: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(metric: PerceptualMetric, judgments: Any, *, val_fraction: float = 0.2, steps: int = 3000,
        lr: float = 0.05, batch_size: int = 64, eval_every: int = 20, patience: int = 10,
        weight_decay: float = 0.0, seed: int = 0, device: str = "cpu", feature_batch: int = 8,
        val: Any = None, log: Callable[[str], None] | None = None) -> FitResult:
    """Fit ``metric``'s channel weights (and rating map) to human judgments, in place.

    Args:
        metric: the metric to fit (its head is overwritten with the best held-out weights).
        judgments: a :class:`PairFeatures`, or a dataset of ``(ref, dist, score)`` (MOS) or
            ``(ref, a, b, fraction_b_closer)`` (2AFC) items (see :func:`precompute_judgments`).
        val_fraction: held-out share (of reference images when the data name them).
        steps: maximum optimizer steps; ``eval_every``/``patience``: early stopping on the
            held-out loss, checked every ``eval_every`` steps, stopping after ``patience`` checks
            without improvement; the best weights are restored.
        val: an explicit held-out set (same forms as ``judgments``) instead of a split.

    The optimisation runs on the one training engine (:class:`vislearn.train.Trainer`, Adam) over
    the precomputed :class:`PairFeatures`; a callback checks the held-out loss and stops early.
    """
    from torch.utils.data import TensorDataset

    from vislearn.train.engine import Task, TrainConfig, Trainer

    pf = (judgments if isinstance(judgments, PairFeatures)
          else precompute_judgments(metric, judgments, feature_batch, log))
    if pf.layers != metric.layers:
        raise UserError(f"judgment features were computed for layers {pf.layers}, the metric uses {metric.layers}")
    if val is None:
        tr_idx, va_idx = split_by_group(pf, val_fraction, seed)
        train, held = pf.subset(tr_idx), pf.subset(va_idx)
    else:
        train = pf
        held = val if isinstance(val, PairFeatures) else precompute_judgments(metric, val, feature_batch, log)
    if len(train) < 2:
        raise UserError(f"need at least 2 training judgments, got {len(train)}")
    module = HeadFitModule(metric.head, pf.kind, train)
    before = module.held_out(held)
    module.remember_if_best(before["loss"])
    cfg = TrainConfig(steps=steps, batch_size=min(batch_size, len(train)), lr=lr, optimizer="adam",
                      weight_decay=weight_decay, log_every=eval_every, eval_every=0, seed=seed, device=device)
    state = {"since_best": 0, "best_step": 0, "history": []}

    def check(trainer: Any, step: int) -> None:
        if step % eval_every and step != steps:
            return
        r = module.held_out(held)
        state["history"].append({"step": step, "split": "val", **r})
        if module.remember_if_best(r["loss"]):
            state["since_best"], state["best_step"] = 0, step
        else:
            state["since_best"] += 1
        if log is not None:
            log(f"  step {step}: held-out " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()))
        if state["since_best"] >= patience:
            raise _EarlyStop

    task = Task(module=module, train_set=TensorDataset(*train.tensors()))
    trainer = Trainer(cfg, task, out_dir=None, progress=False, callbacks=[check])
    stopped = False
    try:
        result = trainer.fit()
        history = result.history
    except _EarlyStop:
        stopped = True
        history = trainer.history
    module.to("cpu")
    module.export_head(metric.head)  # the best held-out weights
    final = _held_out_of_head(metric, held)
    return FitResult(pf.kind, len(train), len(held), trainer.step, state["best_step"], stopped, before, final,
                     history + state["history"])


@torch.no_grad()
def _held_out_of_head(metric: PerceptualMetric, held: PairFeatures) -> dict[str, float]:
    """Held-out agreement of the metric's current head (distances from the stored features)."""
    w = metric.head.flat_weights().detach().float().cpu()
    if held.kind == "mos":
        d = held.d0 @ w
        lg = {k: v.detach().float().cpu() for k, v in metric.head.logistic.named_parameters()}
        r = lg["low"] + (lg["high"] - lg["low"]) * torch.sigmoid(lg["log_slope"].exp() * (lg["center"] - d))
        y = held.target
        return {"srocc": srocc(r, y), "plcc": plcc(d, y) if len(held) >= 5 else float("nan"),
                "krocc": krocc(r, y), "rmse": float(((r - y) ** 2).mean().sqrt())}
    d0, d1 = held.d0 @ w, held.d1 @ w
    return {"2afc": two_afc_agreement(d0, d1, held.target),
            "human_ceiling": float(torch.maximum(held.target, 1 - held.target).mean())}


# ----------------------------------------------------------------------- maps and region ablation
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

