"""Fitting the semantic perceptual metric (Chinen et al. 2018) to judgments; ``vislearn train perceptual``.

Objective (ours; the abstract names none): MOS: mean squared error of the logistic-mapped distance
(:class:`~vislearn.models.perceptual.LogisticMap`) against the scores over their variance; 2AFC: a
Bradley-Terry model ``P(B closer) = sigmoid(exp(t) * (d(ref, A) - d(ref, B)))``, binary cross-entropy
against the human fraction (one temperature, where LPIPS learns a small network on the two distances).
``w = softplus(rho)`` (non-negative without projection), Adam, a held-out split by reference image
(:func:`split_by_group`), early stopping on the held-out loss with the best weights restored.

Frozen backbone + mean pooling: a judgment reduces to :class:`PairFeatures` (pooled per-channel squared
differences) and the one engine trains the small :class:`HeadFitModule` on those rows; the recipe exports
the best held-out ``PerceptualHead`` (``create_metric("semantic_vgg16", weights=PATH)``), :func:`fit`
also stops early. Data: TID2013, KADID-10k or BAPPS-2AFC (:mod:`vislearn.data.iqa_sets`), else synthetic
judgments on the embedded photos (:func:`synthetic_judgments`).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vislearn.errors import UserError
from vislearn.metrics.iqa import krocc, plcc, srocc, two_afc_agreement
from vislearn.metrics.perceptual import create_metric
from vislearn.models.perceptual import VGG_STAGES, PerceptualHead, PerceptualMetric
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.train.engine import Task, TrainConfig, Trainer
from vislearn.train.hooks import Hook
from vislearn.train.rules import Rule, at_least, between, one_of

__all__ = ["FitResult", "HeadFitModule", "PairFeatures", "PerceptualConfig", "PerceptualRecipe", "VGG_WEIGHTS_ENV",
           "backbone_weights_path", "distorted_photo_features", "fit", "hidden_weighting", "judgments_from_features",
           "precompute_judgments", "split_by_group", "synthetic_judgments"]

VGG_WEIGHTS_ENV = "VISLEARN_VGG16_WEIGHTS"  # a torchvision vgg16 state-dict file, used when no path is given


def backbone_weights_path(path: str | None = None) -> str | None:
    """``path``, else ``$VISLEARN_VGG16_WEIGHTS``, else ``None`` (random backbone)."""
    p = path or os.environ.get(VGG_WEIGHTS_ENV) or None
    if p is not None and not os.path.isfile(p):
        raise UserError(f"VGG-16 weights file not found: {p}")
    return p


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


class _HeldOutStopping(Hook):
    """Every ``eval_every`` steps: score the held-out judgments, keep the best head, stop after
    ``patience`` checks without improvement (the engine's ``should_stop``: no exception through fit)."""

    def __init__(self, module: HeadFitModule, held: PairFeatures, eval_every: int, steps: int, patience: int,
                 log: Callable[[str], None] | None) -> None:
        self.module, self.held, self.log = module, held, log
        self.eval_every, self.steps, self.patience = eval_every, steps, patience
        self.since_best, self.best_step, self.history = 0, 0, []

    def after_optimizer_step(self, module: nn.Module, step: int) -> None:
        if step % self.eval_every and step != self.steps:
            return
        r = self.module.held_out(self.held)
        self.history.append({"step": step, "split": "val", **r})
        if self.module.remember_if_best(r["loss"]):
            self.since_best, self.best_step = 0, step
        else:
            self.since_best += 1
        if self.log is not None:
            self.log(f"  step {step}: held-out " + ", ".join(f"{k} {v:.4f}" for k, v in r.items()))

    def should_stop(self, step: int, metrics: dict[str, float]) -> bool:
        return self.since_best >= self.patience


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
    the precomputed :class:`PairFeatures`; a hook checks the held-out loss and stops early.
    """
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
    stopper = _HeldOutStopping(module, held, eval_every, steps, patience, log)
    task = Task(module=module, train_set=TensorDataset(*train.tensors()), hooks=[stopper])
    trainer = Trainer(cfg, task, out_dir=None, progress=False)
    result = trainer.fit()
    module.to("cpu")
    module.export_head(metric.head)  # the best held-out weights
    final = _held_out_of_head(metric, held)
    return FitResult(pf.kind, len(train), len(held), result.step, stopper.best_step, result.stopped_early, before,
                     final, result.history + stopper.history)


@torch.no_grad()
def _held_out_of_head(metric: PerceptualMetric, held: PairFeatures) -> dict[str, float]:
    """Held-out agreement of the metric's current head (distances from the stored features)."""
    w = metric.head.flat_weights().detach().float().cpu()
    if held.kind == "mos":
        d = held.d0 @ w
        r = metric.to_rating(d.to(metric.head.weights[0].device)).float().cpu()  # the head's LogisticMap
        y = held.target
        return {"srocc": srocc(r, y), "plcc": plcc(d, y) if len(held) >= 5 else float("nan"),
                "krocc": krocc(r, y), "rmse": float(((r - y) ** 2).mean().sqrt())}
    d0, d1 = held.d0 @ w, held.d1 @ w
    return {"2afc": two_afc_agreement(d0, d1, held.target),
            "human_ceiling": float(torch.maximum(held.target, 1 - held.target).mean())}


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
    layers: tuple[str, ...] = VGG_STAGES  # our choice (module docstring of models.perceptual, item 1)
    image_size: int = 0  # resize the short side of dataset images (0: as stored)
    limit: int = 0  # use only the first N judgments (0: all)
    val_fraction: float = 0.2  # held-out share of reference images
    feature_batch: int = 8
    synthetic_kind: str = "mos"  # without --data: synthetic "mos" or "2afc" judgments
    synthetic_size: int = 128
    fast: bool = True  # bf16 + channels_last for the one-off feature pass
    RULES: ClassVar[dict[str, Rule]] = {
        "image_size": at_least(0), "limit": at_least(0), "val_fraction": between(0, 1, high_open=True),
        "feature_batch": at_least(1), "synthetic_kind": one_of("mos", "2afc"), "synthetic_size": at_least(1)}


@register_recipe("perceptual")
class PerceptualRecipe(Recipe):
    """Fit the perceptual metric's channel weights and rating map (Chinen et al. 2018)."""

    description = "fit the semantic perceptual metric (VGG-16) to MOS or 2AFC judgments"
    Config = PerceptualConfig
    presets = {
        # The paper states no optimiser settings; Adam on the small head, held-out checks every 20 steps.
        "quick": PerceptualConfig(steps=1500, batch_size=64, lr=0.05, optimizer="adam", eval_every=20,
                                  log_every=20, synthetic_size=96),
        "paper": PerceptualConfig(**PAPER_LOADING,
                                  steps=5000, batch_size=256, lr=0.01, optimizer="adam", eval_every=100,
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
