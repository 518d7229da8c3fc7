"""Recipes ``inception_v4``, ``inception_resnet_v2``, ``inception_resnet_v1`` (Szegedy et al., AAAI 2017).

Each has two presets:

* ``paper`` — the paper's training setup on an ImageNet-layout folder (``--data ROOT`` with
  ``ROOT/train`` and ``ROOT/val``) at 299×299: RMSProp (TensorFlow's, ε inside the square root)
  with decay 0.9 and ε = 1.0, learning rate 0.045 decayed by 0.94 every two epochs, gradient
  clipping and evaluation with a running average of the weights (Sec. 4; PAPERS.md §3).
* ``quick`` — the same optimiser and schedule shape on embedded data that trains in seconds on a CPU:
  ``shapes_classification`` (10 classes) at 75×75, the smallest input the networks accept, with a
  width multiplier of 0.125 and bf16 + channels_last.

Training is the shared :class:`~vislearn.recipes.classification.ClassifierModule` and
:func:`~vislearn.recipes.classification.evaluate_classifier`; this file sets the model, the data and
the hyperparameters. ``decay_every_epochs`` is turned into ``decay_every`` steps from the training
set size, since the paper states its schedule in epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vislearn.errors import UserError
from vislearn.recipes import Recipe, register_recipe
from vislearn.recipes.classification import (
    ClassifierModule,
    ClassifyConfig,
    classification_datasets,
    evaluate_classifier,
)
from vislearn.train.engine import Task

__all__ = ["InceptionV4Config", "InceptionV4Recipe", "InceptionResNetV1Recipe", "InceptionResNetV2Recipe",
           "paper_preset", "quick_preset"]

MODELS = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper")


@dataclass
class InceptionV4Config(ClassifyConfig):
    """Classification settings plus the Inception-v4/-ResNet architecture options."""

    model: str = "inception_v4"
    dataset: str = "shapes"  # shapes | digits (embedded) | imagenet (an ImageFolder tree given with --data)
    image_size: int = 75
    num_classes: int = 10  # embedded shapes only (an ImageFolder tree sets it from its folders)
    width: float = 1.0  # channel multiplier (small CPU variants)
    depths: tuple[int, ...] = ()  # numbers of A, B, C blocks; empty: the architecture's own
    scale_a: float = 0.17  # residual scales (Sec. 3.3; released values); Inception-ResNet only
    scale_b: float = 0.10
    scale_c: float = 0.20
    drop_rate: float = 0.2  # Figs. 9 and 15: dropout with keep probability 0.8 before the classifier
    decay_every_epochs: float = 0.0  # > 0: decay_every = this many epochs of the training set


def paper_preset(model: str) -> InceptionV4Config:
    """The paper's setup (Sec. 4) for ``model`` on ImageNet at 299×299."""
    return InceptionV4Config(
        model=model, dataset="imagenet", image_size=299,  # Figs. 9 and 15: 299×299×3 input
        width=1.0,
        optimizer="rmsprop_tf",  # Sec. 4: "RMSProp with decay of 0.9 and ε = 1.0"
        rmsprop_decay=0.9,
        optimizer_eps=1.0,
        momentum=0.9,  # not stated in the v4 paper; TF-slim's RMSProp momentum for the released models
        lr=0.045,  # Sec. 4: "learning rate of 0.045"
        schedule="staircase", decay_rate=0.94, decay_every_epochs=2.0,  # "decayed every two epochs ... 0.94"
        clip_grad=2.0,  # gradient clipping; threshold 2.0 from Inception-v3 Sec. 8 (v4 paper gives none)
        ema_decay=0.9997,  # Sec. 4: evaluation with "a running average of the parameters"; decay of the
        #                    released Google models (PAPERS.md §2)
        weight_decay=4e-5,  # not stated in the paper; the released models' L2 (PAPERS.md §2)
        batch_size=32,  # 20 asynchronous replicas (Sec. 4), each applying its own batch of 32 (v3 Sec. 8)
        label_smoothing=0.1,  # not stated in the v4 paper; the Inception-v3 recipe it builds on (v3 Sec. 7)
        drop_rate=0.2,  # keep probability 0.8 (Figs. 9, 15)
        steps=4_000_000,  # ~100 epochs at batch 32 (v3 Sec. 8; the v4 paper states no length)
        eval_every=40_000, ckpt_every=10_000, log_every=100, eval_batch_size=128,
        precision="fp32",
    )


def quick_preset(model: str) -> InceptionV4Config:
    """Seconds on a CPU: shapes at 75×75, width 0.125, the paper's optimiser at the paper's lr."""
    p = paper_preset(model)
    return replace(
        p, dataset="shapes", image_size=75, num_classes=10, width=0.125,
        steps=150, batch_size=32, decay_every_epochs=2.0, ema_decay=0.99,  # short run: short EMA horizon
        label_smoothing=0.0, weight_decay=0.0, drop_rate=0.0,
        eval_every=0, ckpt_every=0, log_every=25, eval_batch_size=100,
        precision="bf16", channels_last=True,
    )


class _InceptionV4Family(Recipe):
    """Shared build for the three recipes: the model name is the only thing that differs."""

    Config = InceptionV4Config
    default_model = "inception_v4"

    def build(self, cfg: InceptionV4Config, data: str | None = None) -> Task:
        from vislearn.models import create_model

        if cfg.model not in MODELS:
            raise UserError(f"recipe {self.name!r} trains one of {', '.join(MODELS)}, got model {cfg.model!r}")
        if cfg.image_size < 75:
            raise UserError(f"image_size must be at least 75 for {cfg.model}, got {cfg.image_size}")
        if cfg.dataset == "shapes" and data is None:
            from vislearn.data import embedded

            train = embedded.shapes_classification("train", num_classes=cfg.num_classes, image_size=cfg.image_size,
                                                   seed=cfg.seed)
            test = embedded.shapes_classification("test", num_classes=cfg.num_classes, samples_per_class=30,
                                                  image_size=cfg.image_size, seed=cfg.seed)
        elif cfg.dataset == "digits" and data is None:
            train, test = classification_datasets(cfg, None, channels=3)
        elif cfg.dataset in ("imagenet", "folder") or data is not None:
            if data is None:
                raise UserError(f"dataset {cfg.dataset!r} needs --data ROOT (an ImageFolder tree with train/ and val/)")
            train, test = classification_datasets(replace(cfg, dataset="folder"), data)
        else:
            raise UserError(f"dataset must be shapes, digits or imagenet (with --data), got {cfg.dataset!r}")
        classes = getattr(train, "classes", None)
        num_classes = len(classes) if classes else int(train.targets.max()) + 1
        kwargs: dict = {"width": cfg.width, "drop_rate": cfg.drop_rate}
        if cfg.depths:
            kwargs["depths"] = tuple(cfg.depths)
        if cfg.model != "inception_v4":
            kwargs.update(scale_a=cfg.scale_a, scale_b=cfg.scale_b, scale_c=cfg.scale_c)
        model = create_model(cfg.model, num_classes=num_classes, **kwargs)
        if cfg.decay_every_epochs > 0:
            steps_per_epoch = max(1, len(train) // cfg.batch_size)
            cfg.decay_every = max(1, round(cfg.decay_every_epochs * steps_per_epoch))
        return Task(ClassifierModule(model, cfg.label_smoothing, cfg.aux_weight), train, test,
                    evaluate=evaluate_classifier)


@register_recipe("inception_v4")
class InceptionV4Recipe(_InceptionV4Family):
    """Inception-v4 (Figs. 3-9) with the paper's RMSProp recipe."""

    description = "Inception-v4 (Szegedy et al. 2017): RMSProp ε=1, lr 0.045×0.94/2 epochs, clipping, EMA"
    presets = {"quick": quick_preset("inception_v4"), "paper": paper_preset("inception_v4")}


@register_recipe("inception_resnet_v2")
class InceptionResNetV2Recipe(_InceptionV4Family):
    """Inception-ResNet-v2, released layout by default (``--set model=inception_resnet_v2_paper`` for the paper's)."""

    description = "Inception-ResNet-v2 (Szegedy et al. 2017): residual Inception, scaled residuals"
    presets = {"quick": quick_preset("inception_resnet_v2"), "paper": paper_preset("inception_resnet_v2")}


@register_recipe("inception_resnet_v1")
class InceptionResNetV1Recipe(_InceptionV4Family):
    """Inception-ResNet-v1 in the paper's layout (Figs. 10-15)."""

    description = "Inception-ResNet-v1 (Szegedy et al. 2017): the paper's layout, scaled residuals"
    presets = {"quick": quick_preset("inception_resnet_v1"), "paper": paper_preset("inception_resnet_v1")}
