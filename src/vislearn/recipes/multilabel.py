"""Recipe ``multilabel``: Gong et al.'s multilabel annotation with a softmax, pairwise or WARP loss.

``vislearn train multilabel --set loss=softmax|pairwise|warp`` trains a 5 conv + 3 FC network
(:mod:`vislearn.models.multilabel_net`) whose C outputs are label scores, and evaluates the
top-k annotation metrics of :func:`vislearn.metrics.multilabel.topk_scores` (k = 3).

Presets:

* ``quick``: the embedded Zipf-skewed ``shapes`` scenes (:func:`vislearn.data.embedded.shapes_multilabel`,
  20 labels, 32 px), the narrow small-image network with BN, 300 Adam steps on a CPU.
* ``features``: the ``multilabel`` reproduction's fair-test setting (:mod:`vislearn.recipes.multilabel_features`):
  81-label shapes scenes with a heavy tail (Zipf 1.2), FIXED random-conv features and a linear head
  (``dataset=shapes_features``), Adam at a constant lr, early stopping on a 20% validation split of
  the training images (``val_fraction``, ``val_every``, ``patience``), the best validation head scored
  on the test scenes. Its weights are a head on those features, not an image model (``vislearn tag``
  cannot use them).
* ``paper``: arXiv 1312.4894 Sec. 4–5: the full-width network (Krizhevsky's 5 conv + 3 FC) trained
  from scratch on NUS-WIDE's 81 concepts (``--data`` = the unpacked NUS-WIDE folder, see
  :mod:`vislearn.data.nuswide`), WARP loss with margin 1, evaluated at k = 3. The paper does not
  state its optimiser settings; the defaults below are Krizhevsky et al.'s (marked unverified).

``--data`` may also be a folder holding ``train.csv`` and ``val.csv`` (or ``test.csv``) in the
``path,label|label|...`` format of :class:`vislearn.data.formats.MultilabelCSV`, paths relative to
that folder. Label names travel with the saved weights (the model's ``label_names`` option), so
``vislearn tag --weights OUT/model.safetensors IMAGE`` names its predictions.

WARP draws its negatives from torch's global generator here: the engine seeds it and stores it in
checkpoints, so a resumed run samples exactly as an uninterrupted one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from vislearn.errors import UserError
from vislearn.losses.multilabel import MultilabelSoftmaxLoss, PairwiseRankingLoss, WARPLoss
from vislearn.metrics.multilabel import MultilabelTopK
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.recipes.multilabel_features import FeatureHead, ValidationStopping, split_validation
from vislearn.train.engine import Task, TrainConfig
from vislearn.train.rules import Rule, at_least, between, one_of

__all__ = ["LOSSES", "MultilabelConfig", "MultilabelModule", "MultilabelRecipe", "build_multilabel_loss",
           "evaluate_multilabel"]

LOSSES = ("softmax", "pairwise", "warp")


@dataclass
class MultilabelConfig(TrainConfig):
    model: str = "multilabel_net_small"
    loss: str = "warp"  # softmax | pairwise | warp (Gong et al. Sec. 3)
    margin: float = 1.0  # hinge margin of the pairwise and WARP losses (paper: 1)
    max_trials: int = 0  # WARP draws per positive; 0: up to all the image's negatives
    warp_form: str = "paper"  # paper: L(r_j)·Σ_k hinge (Gong et al. Sec. 3.3) | sampled_pair: WSABIE's one violator
    width: float = 0.125  # channel/FC width multiplier of the network (paper: 1.0)
    norm: str = "bn"  # lrn (paper) | bn | none
    dropout: float = 0.5
    image_size: int = 32
    k: int = 3  # labels assigned per image at evaluation (paper: 3)
    dataset: str = "shapes"  # shapes (embedded) | shapes_features (fixed random-conv features of them) | nuswide, csv
    num_labels: int = 20  # embedded shapes scenes only
    num_samples: int = 2000
    test_samples: int = 0  # embedded test images (0: num_samples)
    feature_width: int = 32  # shapes_features: channels of the frozen random conv net's first layer
    feature_seed: int = 0  # shapes_features: the frozen net's weights
    val_fraction: float = 0.0  # > 0: hold out this share of the training images for early stopping
    val_every: int = 50  # validation check period (steps)
    patience: int = 6  # stop after this many checks without a better validation per-class recall@k
    zipf_exponent: float = 1.0
    max_labels: int = 4
    data_seed: int = 0
    flip: bool = True  # random horizontal flips during training
    RULES: ClassVar[dict[str, Rule]] = {
        "loss": one_of("softmax", "pairwise", "warp"), "margin": at_least(0), "max_trials": at_least(0),
        "warp_form": one_of("paper", "sampled_pair"), "width": Rule(lambda v: v > 0, "> 0"),
        "norm": one_of("lrn", "bn", "none"), "dropout": between(0, 1, high_open=True), "image_size": at_least(1),
        "k": at_least(1), "dataset": one_of("shapes", "shapes_features", "nuswide", "csv"),
        "num_labels": at_least(1), "num_samples": at_least(1), "test_samples": at_least(0),
        "feature_width": at_least(1), "zipf_exponent": at_least(0), "max_labels": at_least(1),
        "val_fraction": between(0, 1, high_open=True), "val_every": at_least(1), "patience": at_least(1)}


class MultilabelModule(nn.Module):
    """``forward((images, targets))`` → the chosen multilabel loss on the model's label scores."""

    def __init__(self, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        scores = self.model(x).float()
        loss = self.loss(scores, y)
        stats = self.loss.last_stats
        out = {"loss": loss, "skipped_rows": stats["skipped_rows"].float()}
        if "pairs" in stats:
            out["violated_frac"] = stats["violated_pairs"].float() / stats["pairs"].clamp(min=1).float()
        return out


def build_multilabel_loss(name: str, num_labels: int, margin: float = 1.0, max_trials: int | None = None,
                          generator: torch.Generator | None = None, warp_form: str = "paper") -> nn.Module:
    """``softmax`` | ``pairwise`` | ``warp`` → the loss module (Gong et al. Sec. 3.1–3.3)."""
    if name == "softmax":
        return MultilabelSoftmaxLoss()
    if name == "pairwise":
        return PairwiseRankingLoss(margin=margin)
    if name == "warp":
        return WARPLoss(num_labels, margin=margin, max_trials=max_trials or None, generator=generator,
                        form=warp_form)
    raise UserError(f"unknown multilabel loss {name!r}; choose one of {', '.join(LOSSES)}")


def evaluate_multilabel(model: nn.Module, loader: DataLoader, k: int = 3) -> dict[str, float]:
    """Top-k annotation metrics (per-class/overall precision and recall, N+, mAP) over ``loader``."""
    device = next(model.parameters()).device
    metric = MultilabelTopK(k)
    for x, y in loader:
        metric.update(model(x.to(device)).float(), y)
    return {key: float(v) for key, v in metric.compute().items()}


class _RandomHFlip:
    """Flip a C×H×W tensor left-right with probability 1/2 (torch's global generator: seeded, resumable)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1) if bool(torch.rand(()) < 0.5) else x


def multilabel_datasets(cfg: MultilabelConfig, data: str | None):
    """(train, eval) datasets with ``.classes``: embedded shapes scenes, NUS-WIDE, or CSV files."""
    if data is None:
        kw = dict(num_labels=cfg.num_labels, num_samples=cfg.num_samples, image_size=cfg.image_size,
                  zipf_exponent=cfg.zipf_exponent, max_labels=cfg.max_labels, seed=cfg.data_seed)
        if cfg.dataset == "shapes_features":
            from vislearn.recipes.multilabel_features import cached_feature_sets

            return cached_feature_sets(tuple(sorted(kw.items())), cfg.test_samples or cfg.num_samples,
                                       cfg.feature_width, cfg.feature_seed)
        if cfg.dataset != "shapes":
            raise UserError(f"dataset {cfg.dataset!r} needs --data PATH (the NUS-WIDE folder, or a folder "
                            "with train.csv and val.csv)")
        from vislearn.data.embedded import shapes_multilabel

        return (shapes_multilabel("train", transform=_RandomHFlip() if cfg.flip else None, **kw),
                shapes_multilabel("test", **{**kw, "num_samples": cfg.test_samples or cfg.num_samples}))
    from vislearn.data import transforms
    from vislearn.data.shards import is_packed, packed_splits, read_index

    train_tf = transforms.train_transform(cfg.image_size, scale=(0.5, 1.0), flip=cfg.flip)
    eval_tf = transforms.eval_transform(cfg.image_size, resize=cfg.image_size)  # as `vislearn tag` does
    if is_packed(data):  # `vislearn data pack --format csv|nuswide` shards
        index = read_index(data)[0]
        if index["format"] not in ("csv", "nuswide"):
            raise UserError(f"--data {data} is a packed {index['format']} dataset; multilabel reads csv or nuswide")
        held_out = next((s for s in ("val", "test") if s in index["splits"]), "val")
        return packed_splits(data, "train", held_out, train_tf, eval_tf)
    root = Path(data)
    if not root.is_dir():
        raise UserError(f"--data must be a folder (NUS-WIDE, or train.csv + val.csv), got {data}")
    if (root / "Concepts81.txt").exists() or (root / "ConceptsList" / "Concepts81.txt").exists():
        from vislearn.data.nuswide import NUSWIDE

        return NUSWIDE(root, "train", train_tf), NUSWIDE(root, "test", eval_tf)
    val = next((root / n for n in ("val.csv", "test.csv") if (root / n).is_file()), None)
    if not (root / "train.csv").is_file() or val is None:
        raise UserError(f"{root} is neither a NUS-WIDE folder (Concepts81.txt, ImageList/, Groundtruth/) nor "
                        "a folder with train.csv and val.csv")
    from vislearn.data.formats import MultilabelCSV

    train = MultilabelCSV(root / "train.csv", root, transform=train_tf)
    return train, MultilabelCSV(val, root, classes=train.classes, transform=eval_tf)


@register_recipe("multilabel")
class MultilabelRecipe(Recipe):
    """Multilabel annotation (Gong et al. 2013): softmax, pairwise or WARP loss, top-k metrics."""

    description = "multilabel annotation with softmax, pairwise or WARP ranking losses (Gong et al. 2013)"
    Config = MultilabelConfig
    data_formats = {"nuswide": "nuswide", "multilabel_csv": "csv"}
    presets = {
        # quick: Adam (its step is invariant to the loss's scale, so the three losses, whose gradients
        # differ by an order of magnitude, share one learning rate), no dropout for a 300-step budget
        "quick": MultilabelConfig(steps=300, batch_size=64, lr=1e-3, optimizer="adam", dropout=0.0,
                                  schedule="cosine", warmup_steps=20, log_every=50),
        # features: the reproduction's fair-test setting (recipes/multilabel_features.py): a linear head on
        # fixed random-conv features of 81-label scenes with a heavy tail (most/least frequent label ~200x),
        # trained to convergence: early stopping on a 20% validation split of the training images
        "features": MultilabelConfig(dataset="shapes_features", num_labels=81, zipf_exponent=1.2, num_samples=6000,
                                     test_samples=3000, image_size=32, feature_width=32, optimizer="adam", lr=1e-3,
                                     schedule="constant", warmup_steps=0, batch_size=128, steps=4000,
                                     val_fraction=0.2, val_every=50, patience=6, dropout=0.0, log_every=0),
        "paper": MultilabelConfig(
            **PAPER_LOADING,
            model="multilabel_net", width=1.0, norm="lrn",  # Sec. 4: 5 conv + 3 FC, from scratch
            loss="warp", margin=1.0,  # Sec. 3.3 and Sec. 5: WARP with a margin of 1
            k=3,  # Sec. 5.2: metrics at top-3 annotations
            dataset="nuswide",  # Sec. 5.1: NUS-WIDE, 81 concepts
            image_size=224, dropout=0.5, batch_size=128,  # Krizhevsky et al. 2012 (unverified for this paper)
            optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4,  # Krizhevsky et al. (unverified)
            schedule="staircase", decay_every=30_000, decay_rate=0.1, steps=100_000,  # (unverified)
            eval_every=10_000, ckpt_every=5_000, log_every=100),
    }

    def build(self, cfg: MultilabelConfig, data: str | None = None) -> Task:
        from vislearn.models import create_model

        if cfg.loss not in LOSSES:
            raise UserError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
        if cfg.max_trials < 0:
            raise UserError(f"max_trials must be >= 0 (0: no cap), got {cfg.max_trials}")
        if cfg.val_fraction > 0 and data is not None:
            raise UserError("val_fraction needs the embedded data (shapes or shapes_features), not --data")
        train, test = multilabel_datasets(cfg, data)
        classes = list(train.classes)
        if not 1 <= cfg.k <= len(classes):
            raise UserError(f"k must be in [1, {len(classes)}], got {cfg.k}")
        if cfg.dataset == "shapes_features" and data is None:
            model: nn.Module = FeatureHead(train.images.shape[1], len(classes), label_names=classes)
        else:
            model = create_model(cfg.model, num_classes=len(classes), label_names=classes,
                                 image_size=cfg.image_size, width=cfg.width, norm=cfg.norm, dropout=cfg.dropout)
        hooks = []
        if cfg.val_fraction > 0:
            train, val = split_validation(train, cfg.val_fraction, cfg.data_seed)
            hooks.append(ValidationStopping(model, val, cfg.k, cfg.val_every, cfg.steps, cfg.patience))
        loss = build_multilabel_loss(cfg.loss, len(classes), cfg.margin, cfg.max_trials or None,
                                     warp_form=cfg.warp_form)
        return Task(MultilabelModule(model, loss), train, test, model=model, hooks=hooks,
                    evaluate=functools.partial(evaluate_multilabel, k=cfg.k))
