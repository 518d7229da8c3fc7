"""``vislearn train perceptual``: fit the semantic perceptual metric (Chinen et al. 2018) to judgments.

The data (``--data PATH``) is a TID2013, KADID-10k or BAPPS-2AFC folder (layouts in
:mod:`vislearn.data.iqa_sets`); without ``--data`` the recipe uses synthetic judgments on the
embedded photos (:func:`synthetic_judgments`: distortions at five levels, MOS from a hidden
weighting of the metric's own features), which is what ``vislearn reproduce perceptual`` checks.

How it uses the one engine: the backbone is frozen and the spatial pooling is a mean, so each
judgment reduces to pooled per-channel squared differences (:func:`~vislearn.metrics.perceptual.
precompute_judgments`, one backbone pass per image, references shared). The engine then trains the
small :class:`~vislearn.metrics.perceptual.HeadFitModule` (softplus channel weights + logistic map,
or + 2AFC temperature) on those rows, with Adam. Its ``evaluate`` scores the held-out split (by
reference image) and keeps the best held-out weights; the exported ``model.safetensors`` holds those
(the :class:`~vislearn.metrics.perceptual.PerceptualHead`: load it with
``create_metric("semantic_vgg16", backbone_weights=..., weights=PATH)``). Early *stopping* needs a
callback, which ``vislearn train`` does not pass: from the command line the run continues to
``steps`` and the export is the early-stopped (best held-out) model; the Python
:func:`~vislearn.metrics.perceptual.fit` stops as soon as ``patience`` checks bring no improvement.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import TensorDataset

from vislearn.errors import UserError
from vislearn.metrics.perceptual import (
    VGG_STAGES,
    HeadFitModule,
    PairFeatures,
    PerceptualMetric,
    create_metric,
    precompute_judgments,
    split_by_group,
)
from vislearn.recipes import Recipe, register_recipe
from vislearn.train.engine import Task, TrainConfig

__all__ = ["PerceptualConfig", "PerceptualRecipe", "VGG_WEIGHTS_ENV", "backbone_weights_path",
           "distorted_photo_features", "hidden_weighting", "judgments_from_features", "synthetic_judgments"]

VGG_WEIGHTS_ENV = "VISLEARN_VGG16_WEIGHTS"  # a torchvision vgg16 state-dict file, used when no path is given


def backbone_weights_path(path: str | None = None) -> str | None:
    """``path``, else ``$VISLEARN_VGG16_WEIGHTS``, else ``None`` (random backbone)."""
    p = path or os.environ.get(VGG_WEIGHTS_ENV) or None
    if p is not None and not os.path.isfile(p):
        raise UserError(f"VGG-16 weights file not found: {p}")
    return p


def hidden_weighting(metric: PerceptualMetric, seed: int = 0, density: float = 0.1) -> torch.Tensor:
    """A random sparse non-negative channel weighting (the ground truth of the synthetic judgments).

    Each channel is kept with probability ``density`` and weighted Exp(1); each stage's weights are
    scaled to sum to a stage importance drawn from a flat Dirichlet (normalised Exp(1) draws), so
    the hidden metric favours some stages, unlike the all-ones initial weighting.
    """
    g = torch.Generator().manual_seed(seed)
    importance = -torch.log(torch.rand(len(metric.head.weights), generator=g))
    importance = importance / importance.sum()
    parts = []
    for w, imp in zip(metric.head.weights, importance, strict=True):
        c = w.numel()
        v = -torch.log(torch.rand(c, generator=g)) * (torch.rand(c, generator=g) < density)
        parts.append(imp * v / v.sum().clamp_min(1e-12))
    return torch.cat(parts)


@torch.no_grad()
def distorted_photo_features(metric: PerceptualMetric, size: int = 128, photo_names: tuple[str, ...] | None = None,
                             regional: bool = True, seed: int = 0, log: Callable[[str], None] | None = None
                             ) -> dict[str, Any]:
    """Pooled features ``D`` of every embedded photo × distortion × level 1-5 against the clean photo.

    Photos have short side ``size``; with ``regional`` each distortion is also applied inside a random
    box of half the height and width (``distort_region``), so content, not only the level, matters.
    Returns ``{"D", "photo", "distortion", "level", "regional"}`` (one row per distorted image).
    """
    from vislearn.data.distortions import DISTORTIONS, distort, distort_region
    from vislearn.data.embedded import photos

    imgs = photos(photo_names, size=size)
    g = torch.Generator().manual_seed(seed)
    rows, meta = [], []
    for pi, (name, img) in enumerate(imgs.items()):
        ref = metric.reference(img.unsqueeze(0).to(metric.device))
        batch, tags = [], []
        _, h, w = img.shape
        for kd in DISTORTIONS:
            for lv in range(1, 6):
                batch.append(distort(img, kd, lv, seed=seed + pi))
                tags.append((name, kd, lv, False))
                if regional:
                    bh, bw = h // 2, w // 2
                    y0 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
                    x0 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
                    batch.append(distort_region(img, kd, lv, (x0, y0, x0 + bw, y0 + bh), seed=seed + pi))
                    tags.append((name, kd, lv, True))
        for s in range(0, len(batch), 16):
            rows.append(metric.pair_features(ref, torch.stack(batch[s:s + 16]).to(metric.device)).float().cpu())
        meta += tags
        if log is not None:
            log(f"  features: {name} {tuple(img.shape[-2:])} ({len(batch)} distorted)")
    return {"D": torch.cat(rows), "photo": [m[0] for m in meta], "distortion": [m[1] for m in meta],
            "level": [m[2] for m in meta], "regional": [m[3] for m in meta], "layers": metric.layers}


def judgments_from_features(feats: dict[str, Any], w_true: torch.Tensor, kind: str = "mos", noise: float = 0.01,
                            seed: int = 0) -> PairFeatures:
    """Synthetic judgments from the hidden distance ``d* = D @ w*``.

    MOS: ``1 + 8 · sigmoid(-(d* - median) / std)`` plus Gaussian noise of ``noise`` × 8 (a quality scale,
    higher is better). 2AFC: every two differently distorted versions of one photo at the same level
    form a triplet; the fraction of "humans" finding B closer is ``sigmoid((d*_A - d*_B) / (0.1 std))``.
    Groups (for the held-out split) are the photos.
    """
    D, photo = feats["D"], feats["photo"]
    d = D @ w_true
    if kind == "mos":
        g = torch.Generator().manual_seed(seed + 1)
        mos = 1 + 8 * torch.sigmoid(-(d - d.median()) / d.std())
        mos = mos + noise * 8 * torch.randn(mos.shape, generator=g)
        return PairFeatures("mos", D, mos, groups=list(photo), layers=feats["layers"])
    if kind != "2afc":
        raise UserError(f"kind must be 'mos' or '2afc', got {kind!r}")
    n = len(photo)
    key = [(photo[i], feats["level"][i]) for i in range(n)]
    a_idx, b_idx = [], []
    for i in range(n):
        for j in range(i + 1, n):
            if key[i] == key[j] and feats["distortion"][i] != feats["distortion"][j]:
                a_idx.append(i)
                b_idx.append(j)
    a, b = torch.tensor(a_idx), torch.tensor(b_idx)
    h = torch.sigmoid((d[a] - d[b]) / (0.1 * d.std()))
    return PairFeatures("2afc", D[a], h, d1=D[b], groups=[photo[i] for i in a_idx], layers=feats["layers"])


def synthetic_judgments(metric: PerceptualMetric, size: int = 128, kind: str = "mos", seed: int = 0,
                        noise: float = 0.01, log: Callable[[str], None] | None = None
                        ) -> tuple[PairFeatures, torch.Tensor, dict[str, Any]]:
    """:func:`distorted_photo_features` + :func:`hidden_weighting` + :func:`judgments_from_features`."""
    feats = distorted_photo_features(metric, size=size, seed=seed, log=log)
    w_true = hidden_weighting(metric, seed)
    return judgments_from_features(feats, w_true, kind, noise, seed), w_true, feats


@dataclass
class PerceptualConfig(TrainConfig):
    backbone_weights: str = ""  # torchvision vgg16 file; "" → $VISLEARN_VGG16_WEIGHTS or a random backbone
    lin_weights: str = ""  # start from LPIPS's linear weights (lpips/weights/v0.1/vgg.pth); "" → all ones
    layers: tuple[str, ...] = VGG_STAGES  # our choice (module docstring of metrics.perceptual, item 1)
    image_size: int = 0  # resize the short side of dataset images (0: as stored)
    limit: int = 0  # use only the first N judgments (0: all)
    val_fraction: float = 0.2  # held-out share of reference images
    feature_batch: int = 8
    synthetic_kind: str = "mos"  # without --data: synthetic "mos" or "2afc" judgments
    synthetic_size: int = 128
    fast: bool = True  # bf16 + channels_last for the one-off feature pass


@register_recipe("perceptual")
class PerceptualRecipe(Recipe):
    """Fit the perceptual metric's channel weights and rating map (Chinen et al. 2018)."""

    description = "fit the semantic perceptual metric (VGG-16) to MOS or 2AFC judgments"
    Config = PerceptualConfig
    presets = {
        # The paper states no optimiser settings; Adam on the small head, held-out checks every 20 steps.
        "quick": PerceptualConfig(steps=1500, batch_size=64, lr=0.05, optimizer="adam", eval_every=20,
                                  log_every=20, synthetic_size=96),
        "paper": PerceptualConfig(steps=5000, batch_size=256, lr=0.01, optimizer="adam", eval_every=100,
                                  log_every=100, fast=False),
    }

    def build(self, cfg: PerceptualConfig, data: str | None = None) -> Task:
        metric = create_metric("semantic_vgg16", backbone_weights_path(cfg.backbone_weights or None),
                               lin_weights=cfg.lin_weights or None, layers=cfg.layers, fast=cfg.fast)
        if data is None:
            pf, _, _ = synthetic_judgments(metric, size=cfg.synthetic_size, kind=cfg.synthetic_kind, seed=cfg.seed)
        else:
            from vislearn.data.iqa_sets import open_judgments

            ds = open_judgments(data, image_size=cfg.image_size or None, limit=cfg.limit)
            pf = precompute_judgments(metric, ds, cfg.feature_batch)
        tr, va = split_by_group(pf, cfg.val_fraction, cfg.seed)
        train, held = pf.subset(tr), pf.subset(va)
        module = HeadFitModule(metric.head, pf.kind, train)
        module.remember_if_best(module.held_out(held)["loss"])

        def evaluate(head: Any, loader: Any) -> dict[str, float]:
            r = module.held_out(held)
            module.remember_if_best(r["loss"])
            module.export_head(head)  # the exported model: the best held-out state so far
            return {**r, "best_loss": module.best_loss}

        return Task(module=module, train_set=TensorDataset(*train.tensors()),
                    eval_set=TensorDataset(*held.tensors()), evaluate=evaluate, model=metric.head)
