"""Recipes ``inception_v4``, ``inception_resnet_v2``, ``inception_resnet_v1`` (Szegedy et al., AAAI 2017).

The v4 paper trains with the Inception-v3 recipe (Sec. 4: "RMSProp with decay of 0.9 and ε = 1.0 ...
learning rate of 0.045, decayed every two epochs using an exponential rate of 0.94 ... evaluations are
performed using a running average of the parameters"), so these recipes reuse
:mod:`vislearn.recipes.inception` by composition (its config, :func:`inception_datasets`,
:func:`inception_task` with the weight-decay groups) and change only the model and its options. Each has two presets:

* ``paper`` — Inception-v3's ``paper`` preset (TF RMSProp, lr 0.045 × 0.94 every 2 epochs, gradient
  clipping 2.0, weight EMA for evaluation, label smoothing 0.1, weight decay 4e-5, batch 32 and lr
  0.045 per replica, the v3 recipe's rule for the papers' asynchronous replicas)
  with the v4-paper networks at 299×299 on an ImageNet-layout folder (``--data ROOT``). Differences
  from v3: no auxiliary head (Figs. 9 and 15 show none; timm's models have none either). Label
  smoothing is not mentioned in the v4 paper; it is kept from the v3 recipe the paper builds on.
* ``quick`` — Inception-v3's ``quick`` preset (bf16 + channels_last, short EMA horizon) on the
  embedded ``shapes_classification`` data (10 classes) at 75×75, the smallest valid input, width 0.125.

``--set width=... depths=4,7,3 scale_a=... scale_b=... scale_c=...`` reach the architecture options;
``model=inception_resnet_v2_paper`` selects the paper's Inception-ResNet-v2 layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from vislearn.errors import UserError
from vislearn.recipes import Recipe, register_recipe
from vislearn.recipes.classification import num_classes_of
from vislearn.recipes.inception import (
    InceptionConfig,
    check_bn_decay,
    inception_datasets,
    inception_task,
    inception_v3_paper,
    inception_v3_quick,
)
from vislearn.train.engine import Task

__all__ = ["InceptionV4Config", "InceptionV4Recipe", "InceptionResNetV1Recipe", "InceptionResNetV2Recipe",
           "paper_preset", "quick_preset", "build_inception_v4_family"]

MODELS = ("inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper")


@dataclass
class InceptionV4Config(InceptionConfig):
    """The Inception recipe's settings plus the Inception-v4/-ResNet architecture options."""

    model: str = "inception_v4"
    dataset: str = "shapes"
    aux_logits: bool = False  # Figs. 9 and 15: no auxiliary classifier
    depths: tuple[int, ...] = ()  # numbers of A, B, C blocks; empty: the architecture's own
    scale_a: float = 0.17  # residual scales (Sec. 3.3; released values); Inception-ResNet only
    scale_b: float = 0.10
    scale_c: float = 0.20


def paper_preset(model: str) -> InceptionV4Config:
    """The paper's setup (Sec. 4, the Inception-v3 recipe) for ``model`` on ImageNet at 299×299."""
    return InceptionV4Config(**{**vars(inception_v3_paper()), "model": model, "dataset": "imagenet",
                                "aux_logits": False, "aux_weight": 0.0})  # no aux head in the v4 paper


def quick_preset(model: str) -> InceptionV4Config:
    """Seconds on a CPU: shapes at 75×75, width 0.125, the paper's optimiser at the paper's lr."""
    return InceptionV4Config(**{**vars(inception_v3_quick()), "model": model, "dataset": "shapes",
                                "width": 0.125, "aux_logits": False, "aux_weight": 0.0, "steps": 150,
                                "log_every": 25})


def build_inception_v4_family(recipe: str, cfg: InceptionV4Config, data: str | None = None) -> Task:
    """The Inception-v3 recipe's datasets and task with a v4-paper network: only the model differs."""
    from vislearn.models import create_model

    if cfg.model not in MODELS:
        raise UserError(f"recipe {recipe!r} trains one of {', '.join(MODELS)}, got model {cfg.model!r}")
    if cfg.aux_logits:
        raise UserError(f"{cfg.model} has no auxiliary classifier (Figs. 9 and 15); set aux_logits=false")
    if not cfg.tf_avg_pool:
        raise UserError(f"{cfg.model} always uses TF 'SAME' average pooling (as TF-slim and timm do); "
                        "tf_avg_pool=false is not available")
    check_bn_decay(cfg)
    train, test = inception_datasets(cfg, data)
    kwargs: dict = {"width": cfg.width, "drop_rate": cfg.drop_rate, "bn_momentum": 1.0 - cfg.bn_decay}
    if cfg.depths:
        kwargs["depths"] = tuple(cfg.depths)
    if cfg.model != "inception_v4":
        kwargs.update(scale_a=cfg.scale_a, scale_b=cfg.scale_b, scale_c=cfg.scale_c)
    model = create_model(cfg.model, num_classes=num_classes_of(train), **kwargs)
    return inception_task(cfg, model, train, test, aux_weight=0.0)


@register_recipe("inception_v4")
class InceptionV4Recipe(Recipe):
    """Inception-v4 (Figs. 3-9) with the paper's RMSProp recipe."""

    description = "Inception-v4 (Szegedy et al. 2017): RMSProp ε=1, lr 0.045×0.94/2 epochs, clipping, EMA"
    Config = InceptionV4Config
    data_formats = {"imagefolder": "imagenet"}
    presets = {"quick": quick_preset("inception_v4"), "paper": paper_preset("inception_v4")}

    def build(self, cfg: InceptionV4Config, data: str | None = None) -> Task:
        return build_inception_v4_family(self.name, cfg, data)


@register_recipe("inception_resnet_v2")
class InceptionResNetV2Recipe(Recipe):
    """Inception-ResNet-v2, released layout by default (``--set model=inception_resnet_v2_paper`` for the paper's)."""

    description = "Inception-ResNet-v2 (Szegedy et al. 2017): residual Inception, scaled residuals"
    Config = InceptionV4Config
    data_formats = {"imagefolder": "imagenet"}
    presets = {"quick": quick_preset("inception_resnet_v2"), "paper": paper_preset("inception_resnet_v2")}

    def build(self, cfg: InceptionV4Config, data: str | None = None) -> Task:
        return build_inception_v4_family(self.name, cfg, data)


@register_recipe("inception_resnet_v1")
class InceptionResNetV1Recipe(Recipe):
    """Inception-ResNet-v1 in the paper's layout (Figs. 10-15)."""

    description = "Inception-ResNet-v1 (Szegedy et al. 2017): the paper's layout, scaled residuals"
    Config = InceptionV4Config
    data_formats = {"imagefolder": "imagenet"}
    presets = {"quick": quick_preset("inception_resnet_v1"), "paper": paper_preset("inception_resnet_v1")}

    def build(self, cfg: InceptionV4Config, data: str | None = None) -> Task:
        return build_inception_v4_family(self.name, cfg, data)
