"""The semantic perceptual image metric (Chinen et al., arXiv 1808.00447) as a metric: the factory
:func:`create_metric` and the dataset accumulators :class:`IQAEvaluation` (SROCC/KROCC/PLCC against
MOS) and :class:`TwoAFCEvaluation` (LPIPS's 2AFC score).

Where the parts live (one job per module):

* the network, its head and every design choice: :mod:`vislearn.models.perceptual`
  (``create_model("semantic_vgg16")``, ``create_model("lpips_vgg")``);
* sensitivity maps and region ablation: :mod:`vislearn.metrics.perceptual_maps`;
* fitting to human judgments (``fit``, ``HeadFitModule``, ``PairFeatures``, ``precompute_judgments``,
  ``split_by_group``): :mod:`vislearn.recipes.perceptual`.

The network and map names are re-exported here, so ``from vislearn.metrics.perceptual import
PerceptualMetric, sensitivity_map`` keeps working.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from vislearn.errors import UserError
from vislearn.metrics.iqa import krocc, plcc, srocc, two_afc_agreement
from vislearn.metrics.perceptual_maps import overlay_map, region_ablation, sensitivity_map
from vislearn.models.perceptual import (
    NORM_EPS,
    PERCEPTUAL_MODELS,
    VGG_STAGES,
    LogisticMap,
    PerceptualHead,
    PerceptualMetric,
    ReferenceFeatures,
    load_lpips_lin_weights,
)
from vislearn.models.registry import create_model
from vislearn.models.vgg import VGG16

__all__ = [
    "IQAEvaluation", "LogisticMap", "NORM_EPS", "PerceptualHead", "PerceptualMetric", "ReferenceFeatures",
    "TwoAFCEvaluation", "VGG_STAGES", "create_metric", "load_lpips_lin_weights", "overlay_map", "region_ablation",
    "sensitivity_map",
]


def create_metric(name: str = "semantic_vgg16", backbone_weights: str | os.PathLike | None = None, *,
                  lin_weights: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
                  layers: Sequence[str] = VGG_STAGES, fast: bool = False, compile: bool = False,
                  backbone: VGG16 | None = None) -> PerceptualMetric:
    """Build a metric (the registered model of the same name, :mod:`vislearn.models.perceptual`).

    Args:
        name: ``"semantic_vgg16"`` (ours: all-ones weights until fitted, or ``weights``) or
            ``"lpips_vgg"`` (LPIPS v0.1 VGG: ``lin_weights`` required, all five stages).
        backbone_weights: a torchvision ``vgg16`` state-dict file (``features.N.weight`` keys,
            classifier keys ignored); ``None`` leaves the backbone randomly initialised.
        lin_weights: lpips's ``weights/v0.1/vgg.pth``.
        weights: a fitted :class:`PerceptualHead` (``model.safetensors`` from ``vislearn train
            perceptual``); ``init="lpips"`` for ours is ``lin_weights`` with ``semantic_vgg16``.
        layers: stages for ``semantic_vgg16``.
        fast: a bf16 channels_last copy of the backbone runs the convolutions (distances in fp32; bf16's
            accuracy: a few percent off fp32 on mild distortions).
        compile: with ``fast``, inference through ``torch.compile`` (inductor, CPU freezing) on the
            distorted-minus-reference difference: the fastest path and within 1e-2 (relative) of fp32;
            each new input shape compiles once (1-2 min on a 2-core CPU).
        backbone: an already-built VGG16 to use instead of ``backbone_weights``.
    """
    if name not in PERCEPTUAL_MODELS:
        raise UserError(f"unknown metric {name!r}; choose semantic_vgg16 or lpips_vgg")
    return create_model(name, backbone_weights=backbone_weights, lin_weights=lin_weights, head_weights=weights,
                        layers=layers, fast=fast, compile=compile,
                        backbone=backbone)


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

