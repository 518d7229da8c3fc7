"""Recipe ``inception_v3``: the training setup of "Rethinking the Inception Architecture" (Sec. 8).

``paper`` preset (every value is the paper's or, where the paper is silent, Google's released
training setup; PAPERS.md §2), on an ImageNet-layout folder (``--data ROOT`` with ``ROOT/train``
and ``ROOT/val``) at 299×299:

* TensorFlow-style RMSProp (:class:`vislearn.train.optim.RMSpropTF`), decay 0.9, ε = 1.0 inside
  the square root, learning rate 0.045 decayed by 0.94 every two epochs (staircase; the step count
  of two epochs is computed from the training-set size and the global batch), gradient clipping at
  2.0 (Sec. 8);
* label smoothing ε = 0.1 with a uniform prior (Sec. 7); auxiliary classifier loss weight 0.4
  (TF-slim's trainer; the paper does not give one);
* batch 32 per replica and lr 0.045 per replica: the global batch is 32 × W and the learning rate
  0.045 × W for W ``torchrun`` processes (``batch_per_replica``, ``lr_per_replica``, ``epochs`` and
  ``decay_epochs`` are engine settings, resolved by :func:`vislearn.train.config.resolve_config`
  where the dataset length and the world size are known; the recipe never rewrites its config).
  See "Asynchronous replicas" below for why;
* evaluation with a running average of the weights (Sec. 8). Two different decays must not be
  confused: the exponential moving average of the *weights* used for evaluation is 0.9999
  (``MOVING_AVERAGE_DECAY`` of Google's Inception trainer), while 0.9997 is the *batch-norm
  moving-average* decay of the released models (PAPERS.md §2), set here as ``bn_decay`` and passed
  to the model builder as ``bn_momentum = 1 − bn_decay``;
* weight decay 4e-5 on convolution/linear weights only (released models), BN ε = 0.001.

Asynchronous replicas → synchronous processes (Sec. 8). The paper trains "using 50 replicas running
each on a NVidia Kepler GPU with batch size 32 for 100 epochs" in Google's distributed TensorFlow; it
does not say how the replicas combine, and Google's parameter-server training of the time applied
each replica's update asynchronously. Seen from the parameter server that is one stream of updates,
each the gradient of 32 images applied at lr 0.045 (on parameters up to ~49 updates stale), N/32
updates per epoch of N images, with the lr decayed by 0.94 every two epochs of that stream. Our engine
is synchronous (DDP: one update averages the gradients of W processes). The equivalence we chose keeps
what each BN layer sees and what each image contributes to the parameters:

* per process, batch 32: BN normalises over 32 images, as on each of the paper's replicas;
* per image, step 0.045 / 32: one synchronous update over 32 × W images at lr 0.045 × W moves the
  parameters as the W batch-32 updates it replaces would, to first order and without their staleness
  (the linear scaling rule, Goyal et al. 2017, arXiv 1706.02677, Sec. 2.1). The rule is derived for
  SGD; it carries over because TF-style RMSProp with ε = 1.0 inside the square root is close to SGD
  with momentum here: with the global gradient norm clipped to 2.0 (Sec. 8) the squared gradients
  sum to at most 4 over all parameters, and so do their moving averages ``ms`` once the initial 1.0
  has decayed (decay 0.9: ~10 steps); the denominator √(ms + 1) then lies in [1, √5] for every
  parameter and within 1e-6 of 1 for all but at most 4 / 2e-6 = 2M of the 24M parameters;
* per epoch, the schedule: ``epochs=100`` and ``decay_epochs=2`` count images seen, so at any W the
  run lasts the paper's 100 epochs and the lr decays by 0.94 every two of them.

At W = 1 this is the paper's update sequence without the asynchrony (batch 32, lr 0.045, N/32
updates per epoch). At W = 50 it is batch 1600 at lr 2.25; Goyal et al. need a gradual warm-up
(their Sec. 2.2) for large batches, the paper used none, and we have not trained the paper preset at
that scale (``results/`` holds no such run), so treat large W as untested. Two departures remain at
W > 1: clipping at 2.0 acts on the mean gradient of 32 × W images rather than on each batch of 32 (it
clips less often), and the staleness of asynchronous updates, which acts like extra momentum
(Mitliagkas et al. 2016, arXiv 1605.09774), is absent. To keep the paper's per-update learning rate
at any W instead, pass ``--set lr=0.045`` (a global ``lr`` turns ``lr_per_replica`` off).

``quick`` preset: the paper's network (full width) on scikit-learn's digits upscaled to 75×75 (the
smallest input) as RGB, the same optimiser and loss, bf16 + channels_last, a few minutes on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch.nn as nn

from vislearn.errors import UserError
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.recipes.classification import (
    ClassifierModule,
    ClassifyConfig,
    classification_datasets,
    evaluate_classifier,
    num_classes_of,
)
from vislearn.train.engine import Task
from vislearn.train.rules import Rule, at_least, between, one_of

__all__ = ["InceptionConfig", "InceptionV3Recipe", "inception_v3_paper", "inception_v3_quick",
           "inception_param_groups", "inception_datasets", "inception_task", "check_bn_decay"]


@dataclass
class InceptionConfig(ClassifyConfig):
    """Classification settings plus the Inception networks' options (epochs and the per-replica batch
    are :class:`~vislearn.train.engine.TrainConfig` fields)."""

    model: str = "inception_v3"
    dataset: str = "digits"  # digits | shapes (embedded) | imagenet (an ImageFolder tree given with --data)
    image_size: int = 75
    num_classes: int = 10  # embedded shapes only
    aux_logits: bool = True
    drop_rate: float = 0.2
    width: float = 1.0  # channel multiplier (1.0: the paper's network)
    tf_avg_pool: bool = True  # TF "SAME" average pooling, as the paper's implementation
    bn_decay: float = 0.9  # BN moving-average decay (the model's bn_momentum = 1 - bn_decay)
    RULES: ClassVar[dict[str, Rule]] = {
        "dataset": one_of("digits", "shapes", "imagenet"), "num_classes": at_least(2),
        "drop_rate": between(0, 1, high_open=True), "width": Rule(lambda v: v > 0, "> 0"),
        "bn_decay": between(0, 1, high_open=True)}


def inception_v3_paper() -> InceptionConfig:
    """Sec. 8 of the paper on ImageNet at 299×299 (see the module docstring for sources)."""
    return InceptionConfig(
        **PAPER_LOADING,
        model="inception_v3", dataset="imagenet", image_size=299,  # Table 1: 299×299×3 input
        optimizer="rmsprop_tf", rmsprop_decay=0.9, optimizer_eps=1.0,  # Sec. 8: "RMSProp with decay 0.9 and ε = 1.0"
        momentum=0.9,  # not in the paper; TF-slim's RMSProp momentum for the released models
        # Sec. 8: "learning rate of 0.045" for each batch-32 update of the 50 asynchronous replicas; here
        # 0.045 × W on the synchronous global batch 32 × W (the linear scaling rule; module docstring)
        lr=0.045, lr_per_replica=0.045,
        schedule="staircase", decay_rate=0.94, decay_epochs=2.0,  # Sec. 8: "decayed every two epochs ... 0.94"
        clip_grad=2.0,  # Sec. 8: "gradient clipping with threshold 2.0"
        ema_decay=0.9999,  # Sec. 8: "running average of the parameters"; Google's MOVING_AVERAGE_DECAY
        bn_decay=0.9997,  # released models' BN moving-average decay (PAPERS.md §2), not the weight EMA
        label_smoothing=0.1,  # Sec. 7: ε = 0.1, uniform prior
        aux_weight=0.4,  # Sec. 4 aux head; weight 0.4 from TF-slim's trainer (not in the paper)
        aux_logits=True, drop_rate=0.2,  # TF-slim: dropout keep probability 0.8
        weight_decay=4e-5,  # released models' L2 (PAPERS.md §2)
        # Sec. 8: "batch size 32" per replica (50 replicas in the paper): BN sees 32 images per process
        batch_per_replica=32, batch_size=32,
        epochs=100.0, steps=0,  # Sec. 8: 100 epochs, counted in images seen (any W)
        tf_avg_pool=True, width=1.0,
        eval_every=40_000, ckpt_every=10_000, log_every=100, eval_batch_size=128, precision="fp32",
    )


def inception_v3_quick() -> InceptionConfig:
    """Minutes on a CPU: digits at 75×75 RGB, the paper's optimiser and losses, bf16 + channels_last."""
    return replace(
        inception_v3_paper(), dataset="digits", image_size=75, num_classes=10,
        epochs=0.0, steps=120, batch_per_replica=0, batch_size=32,
        lr=0.045, lr_per_replica=0.0, decay_epochs=2.0,  # one global batch and lr at any world size
        ema_decay=0.99,  # a 120-step run needs a short averaging horizon (0.9999 would average the init)
        bn_decay=0.9,  # likewise for BN statistics
        weight_decay=4e-5, eval_every=0, ckpt_every=0, log_every=20, eval_batch_size=150,
        num_workers=0, persistent_workers=False,  # embedded in-memory data: no loader processes
        precision="bf16", channels_last=True,
    )


def inception_datasets(cfg: InceptionConfig, data: str | None):
    """``(train, test)`` for an Inception recipe: embedded digits (RGB) or shapes, or an ImageFolder tree."""
    if cfg.image_size < 75:
        raise UserError(f"image_size must be at least 75 for {cfg.model}, got {cfg.image_size}")
    if data is None and cfg.dataset == "shapes":
        from vislearn.data import embedded

        return (embedded.shapes_classification("train", num_classes=cfg.num_classes, image_size=cfg.image_size),
                embedded.shapes_classification("test", num_classes=cfg.num_classes, image_size=cfg.image_size))
    if data is None and cfg.dataset == "digits":
        return classification_datasets(cfg, None, channels=3)
    if data is None:
        raise UserError(f"dataset {cfg.dataset!r} needs --data ROOT (an ImageFolder tree with train/ and val/); "
                        "or use dataset=digits|shapes")
    return classification_datasets(replace(cfg, dataset="folder"), data)


def inception_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on convolution and linear weights only (TF-slim regularises ``weights``, not BN
    β/γ or biases)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@register_recipe("inception_v3")
class InceptionV3Recipe(Recipe):
    """Inception-v3 (Szegedy et al. 2016) with the paper's RMSProp / label-smoothing / aux-head recipe."""

    description = "Inception-v3: RMSProp(TF) ε=1, lr 0.045×0.94/2 epochs, clip 2, label smoothing 0.1, aux 0.4"
    Config = InceptionConfig
    data_formats = {"imagefolder": "imagenet"}
    presets = {"quick": inception_v3_quick(), "paper": inception_v3_paper()}

    def build(self, cfg: InceptionConfig, data: str | None = None) -> Task:
        from vislearn.models import create_model

        check_bn_decay(cfg)
        train, test = inception_datasets(cfg, data)
        model = create_model(cfg.model, num_classes=num_classes_of(train), aux_logits=cfg.aux_logits,
                             drop_rate=cfg.drop_rate, width=cfg.width, tf_avg_pool=cfg.tf_avg_pool,
                             bn_momentum=1.0 - cfg.bn_decay)
        return inception_task(cfg, model, train, test, aux_weight=cfg.aux_weight if cfg.aux_logits else 0.0)


def check_bn_decay(cfg: InceptionConfig) -> None:
    if not 0 < cfg.bn_decay < 1:
        raise UserError(f"bn_decay must be in (0, 1), got {cfg.bn_decay}")


def inception_task(cfg: InceptionConfig, model: nn.Module, train, test, aux_weight: float) -> Task:
    """The classification module (label smoothing, aux weight) and TF-slim's weight-decay groups."""
    module = ClassifierModule(model, cfg.label_smoothing, aux_weight)
    return Task(module, train, test, evaluate=evaluate_classifier, model=model,
                param_groups=inception_param_groups(module, cfg.weight_decay))
