"""What the ``dino`` and ``msn`` recipes share: the student/teacher module, its per-step hook, the data
and the k-NN evaluation (Ruan et al., "Weighted Ensemble Self-Supervised Learning", ICLR 2023).

The training module (:class:`SSLModule`) holds

* the **student**: one backbone (a registered model: :mod:`vislearn.models.vit` or a convnet through
  ``create_model``) and ``heads`` independently initialised (projection head, codebook) pairs
  (:class:`~vislearn.models.ssl_heads.MultiHead`) on its representation: a ViT's [CLS] token, a
  convnet's globally averaged last map. The backbone is never ensembled (Sec. 3.1);
* the **teacher**: a :class:`~vislearn.train.ema.ModelEMA` of the whole student (backbone, heads and
  codebooks: Alg. 2 averages all of them), momentum from 0.996 to 1 on a cosine over the run (DINO
  Sec. 3.1; the paper's App. B.1); momentum ``m(i)`` at the ``i``-th update, counted from 0 as
  DINO's ``momentum_schedule[it]``. It sees the global views only, with its stochastic depth off
  (eval mode: DINO builds its teacher without drop-path; a convnet teacher's batch norms then use
  their averaged statistics);
* the **loss**: :class:`~vislearn.losses.dino.DINOLoss` or :class:`~vislearn.losses.msn.MSNLoss`, whose
  heads combine through :class:`~vislearn.losses.ensemble.WeightedEnsembleLoss` (``scheme``, γ
  decayed linearly from ``gamma_start`` to ``gamma`` over ``gamma_epochs`` epochs, both in ``log c``
  units; PROB keeps γ = 1; UNIF has none).

Once per OPTIMIZER step (:class:`SSLHook`, a :class:`~vislearn.train.hooks.Hook`, never per
micro-batch) the teacher takes one EMA step, DINO's center takes its one momentum update from the
all-reduced mean over the step's micro-batches (``center_update="step"``), and the step counter that
drives every schedule advances. Schedules of epochs (teacher temperature, γ) read the fractional
epoch ``steps_done / steps_per_epoch``; the counter is a buffer of the module, so it is checkpointed.

Views: embedded (in-memory) data get the batched :class:`~vislearn.data.multicrop.TensorMultiCrop`
(one call per DataLoader batch), folder data the per-sample torchvision :class:`MultiCrop`;
``num_local=0`` trains DINO on the two global views alone (two cross-view pairs).

Under ``torchrun`` the run equals one process at the same global batch: the views of a sample are
seeded by (seed, epoch, index) (:class:`~vislearn.data.multicrop.MultiCropDataset`), the ViT has no
batch statistics, and DINO's center and Sinkhorn-Knopp sum over all processes. Under gradient
accumulation, centering equals the large batch too; Sinkhorn-Knopp and MSN's mean-entropy term
normalise over each micro-batch (what one process with a smaller batch would do), so those equal
the large batch only without accumulation. MSN's patch masks are drawn from each process's own
generator.

Evaluation and export use the **backbone only** (``Task.model``): the teacher's backbone by default,
the paper's protocol ("frozen teacher-encoder features", App. B.3), or the student's with
``eval_teacher=false``; the heads cost nothing at test time. The score is DINO's weighted k-NN
(:func:`~vislearn.metrics.fewshot.knn_accuracy`, k = 20, T = 0.07) of held-out images against the
un-augmented training images, on their class labels (which training never sees).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from vislearn.data.multicrop import (
    EpochClock,
    MultiCrop,
    MultiCropDataset,
    TensorMultiCrop,
    collate_views,
    random_patch_mask,
)
from vislearn.errors import UserError
from vislearn.losses.ensemble import WeightedEnsembleLoss, check_positive, check_scheme, gamma_schedule
from vislearn.metrics.fewshot import knn_accuracy
from vislearn.metrics.frozen import backbone_features as frozen_features
from vislearn.models.embedding import _HEAD_NAMES
from vislearn.models.ssl_heads import MultiHead
from vislearn.train import schedules
from vislearn.train.config import TrainConfig, resolve_config
from vislearn.train.ema import ModelEMA
from vislearn.train.hooks import Hook
from vislearn.train.task import Task

__all__ = ["SSLConfig", "SSLHook", "SSLModule", "SSLStudent", "backbone_features", "build_ssl_task",
           "check_ssl_config", "ensemble_of", "evaluate_knn", "knn_features", "ssl_backbone"]

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 train split, for the paper presets' epoch arithmetic


@dataclass
class SSLConfig(TrainConfig):
    """Settings shared by ``dino`` and ``msn``."""

    backbone: str = "vit_tiny_p4"  # any registered model with forward_features (vit_*, small_convnet, ...)
    # ViT backbones only (ignored for a convnet): sizes (0 keeps the registered model's) and stochastic depth
    vit_dim: int = 0
    vit_depth: int = 0
    vit_heads: int = 0
    drop_path: float = 0.0  # paper: 0.1
    heads: int = 1  # (projection head, codebook) pairs
    scheme: str = "ent"  # unif | prob | ent | ent_st
    gamma: float = 0.05  # final γ of ent/ent_st, in log c units
    gamma_start: float = 0.5  # γ at epoch 0, in log c units
    gamma_epochs: int = 30  # γ's linear decay length
    codes: int = 1024  # codebook size c per head
    head_hidden: int = 1024
    head_dim: int = 256
    head_layers: int = 3
    student_temp: float = 0.1
    teacher_temp: float = 0.025
    warmup_teacher_temp: float = 0.05
    warmup_teacher_temp_epochs: int = 30
    sinkhorn_iterations: int = 3
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    global_size: int = 32
    local_size: int = 16
    global_scale: tuple[float, float] = (0.25, 1.0)
    local_scale: tuple[float, float] = (0.08, 0.25)
    num_local: int = 10
    dataset: str = "shapes"  # shapes | photos | digits (embedded) | folder (--data ROOT with train/ and val/)
    image_size: int = 32  # embedded images and evaluation crops
    num_classes: int = 10  # shapes: classes (k-NN labels only)
    samples_per_class: int = 100  # shapes: images per class and split
    num_crops: int = 1000  # photos: crops per split
    knn_k: int = 20
    knn_temperature: float = 0.07
    eval_teacher: bool = True  # evaluate and export the teacher's backbone (the paper's protocol)


def _positive_int(name: str, value: int, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"{name} must be an int >= {low}, got {value!r}")


def check_ssl_config(cfg: SSLConfig) -> None:
    """One clear UserError for a bad setting, before anything is built."""
    _positive_int("heads", cfg.heads)
    _positive_int("codes", cfg.codes, 2)
    check_scheme(cfg.scheme)
    for name in ("gamma", "gamma_start", "student_temp", "teacher_temp", "warmup_teacher_temp", "knn_temperature"):
        check_positive(name, getattr(cfg, name))
    for name in ("head_hidden", "head_dim", "head_layers", "global_size", "local_size", "knn_k", "image_size"):
        _positive_int(name, getattr(cfg, name))
    _positive_int("num_local", cfg.num_local, 0)
    if not 0 <= cfg.momentum_start <= cfg.momentum_end <= 1:
        raise UserError(f"teacher momentum must satisfy 0 <= momentum_start <= momentum_end <= 1, got "
                        f"{cfg.momentum_start} -> {cfg.momentum_end}")


def ensemble_of(cfg: SSLConfig) -> WeightedEnsembleLoss:
    """The head weighting of ``cfg.scheme``: γ's schedule for ent/ent_st, γ = 1 for prob, none for unif."""
    if cfg.scheme in ("ent", "ent_st"):
        schedule = partial(gamma_schedule, num_codes=cfg.codes, final=cfg.gamma, start=cfg.gamma_start,
                           ramp_epochs=cfg.gamma_epochs)
        schedule(0.0)  # validates the values now, not at the first step
        return WeightedEnsembleLoss(cfg.scheme, schedule=schedule)
    return WeightedEnsembleLoss(cfg.scheme)


def ssl_backbone(cfg: SSLConfig) -> nn.Module:
    """The registered backbone with its classifier removed (the representation feeds the heads)."""
    from vislearn.models import create_model, get_entry
    from vislearn.models.vit import ViT

    get_entry(cfg.backbone)  # an unknown name: the registry's error with the closest names
    if cfg.backbone.startswith("vit"):
        sizes = {"embed_dim": cfg.vit_dim, "depth": cfg.vit_depth, "num_heads": cfg.vit_heads}
        kwargs: dict[str, Any] = {k: v for k, v in sizes.items() if v}
        model = create_model(cfg.backbone, num_classes=0, drop_path_rate=cfg.drop_path, **kwargs)
    else:  # the ViT-only settings (vit_*, drop_path) do not apply
        model = create_model(cfg.backbone)
        for name in _HEAD_NAMES:  # unused by the representation: no gradient, and not part of the export
            if isinstance(getattr(model, name, None), nn.Module):
                setattr(model, name, nn.Identity())
    if not isinstance(model, ViT) and not getattr(model, "feature_info", None):
        raise UserError(f"backbone {cfg.backbone!r} has no forward_features/feature_info")
    return model


def backbone_features(backbone: nn.Module, x: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The representation ``(N, D)`` (:func:`vislearn.metrics.frozen.backbone_features`: a ViT's [CLS]
    token, else the average of the last feature map); with ``patch_mask``, a ViT's masked [CLS] token."""
    if patch_mask is None:
        return frozen_features(backbone, x)
    if not hasattr(backbone, "embed"):
        raise UserError("patch masking (mask_ratio > 0) needs a ViT backbone")
    return backbone.embed(x, patch_mask)


class SSLStudent(nn.Module):
    """Backbone + :class:`MultiHead`: a list of views -> a list of ``(batch, heads, codes)`` cosine logits.

    Consecutive views of one size (and masking) go through the backbone as one batch (DINO's
    multi-resolution forward).
    """

    def __init__(self, backbone: nn.Module, heads: MultiHead) -> None:
        super().__init__()
        self.backbone, self.heads = backbone, heads

    def forward(self, views: list[torch.Tensor], masks: list[torch.Tensor | None] | None = None) -> list[torch.Tensor]:
        masks = masks if masks is not None else [None] * len(views)
        out: list[torch.Tensor] = []
        i = 0
        while i < len(views):
            j = i + 1
            while j < len(views) and views[j].shape == views[i].shape and (masks[j] is None) == (masks[i] is None):
                j += 1
            x = torch.cat(views[i:j])
            m = None if masks[i] is None else torch.cat(masks[i:j])
            logits = self.heads(backbone_features(self.backbone, x, m))
            out.extend(logits.split(views[i].shape[0]))
            i = j
        return out


class SSLModule(nn.Module):
    """Student, EMA teacher and loss (module docstring); ``forward((views, labels)) -> {"loss", ...}``.

    Args:
        student: the :class:`SSLStudent`.
        loss: a ``DINOLoss`` (``method="dino"``) or ``MSNLoss`` (``"msn"``).
        num_global: the first ``num_global`` views are global (the teacher's).
        steps_per_epoch: optimizer steps per epoch (schedules of epochs read ``steps_done / this``).
        total_steps: the run's optimizer steps (the momentum cosine's length).
        momentum: ``(start, end)`` of the teacher momentum.
        clock: the :class:`~vislearn.data.multicrop.EpochClock` of the training views.
        mask_ratio: MSN: share of patches dropped from the student's global views.
    """

    def __init__(self, student: SSLStudent, loss: nn.Module, method: str, num_global: int, steps_per_epoch: int,
                 total_steps: int, momentum: tuple[float, float] = (0.996, 1.0), clock: EpochClock | None = None,
                 mask_ratio: float = 0.0) -> None:
        super().__init__()
        if method not in ("dino", "msn"):
            raise UserError(f"method must be 'dino' or 'msn', got {method!r}")
        self.student, self.loss, self.method = student, loss, method
        decay = partial(schedules.cosine, total_steps=max(1, total_steps), start=momentum[0], end=momentum[1])
        self.teacher = ModelEMA(student, decay=decay, copy_first=False)
        self.num_global, self.steps_per_epoch, self.mask_ratio = num_global, max(1, steps_per_epoch), mask_ratio
        self.clock = clock if clock is not None else EpochClock()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))
        self._steps = 0  # host copy of steps_done (no device sync per step)

    @property
    def epoch(self) -> float:
        """The fractional epoch of the step being taken."""
        return self._steps / self.steps_per_epoch

    def _set_steps(self, steps: int) -> None:
        self._steps = int(steps)
        self.clock.epoch = self._steps // self.steps_per_epoch

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "steps_done" in state_dict:  # a resumed run: schedules and views continue where they were
            self._set_steps(int(state_dict[prefix + "steps_done"]))

    def _masks(self, views: list[torch.Tensor]) -> list[torch.Tensor | None] | None:
        if self.mask_ratio <= 0:
            return None
        patch = getattr(self.student.backbone, "patch_size", None)
        if patch is None:
            raise UserError("patch masking (mask_ratio > 0) needs a ViT backbone")
        masks: list[torch.Tensor | None] = []
        for i, v in enumerate(views):
            grid = (math.ceil(v.shape[-2] / patch), math.ceil(v.shape[-1] / patch))
            masks.append(random_patch_mask(grid, self.mask_ratio, v.shape[0], device=v.device)
                         if i < self.num_global else None)
        return masks

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        views = batch[0] if isinstance(batch, tuple) else batch
        need = self.num_global  # DINO's two global views alone give two cross-view pairs
        if not isinstance(views, list) or len(views) < need:
            raise UserError(f"{self.method} needs at least {need} views per sample, got "
                            f"{len(views) if isinstance(views, list) else type(views).__name__}")
        epoch = self.epoch
        with torch.no_grad():
            self.teacher.module.eval()  # no stochastic depth in the teacher
            teacher_out = self.teacher.module(views[:self.num_global])
        student_out = self.student(views, self._masks(views))
        if self.method == "dino":
            loss = self.loss(teacher_out, student_out, epoch=epoch)
        else:
            loss = self.loss(student_out, teacher_out, epoch=epoch)
        out = {"loss": loss, "teacher_temp": torch.tensor(self.loss.teacher_temperature(epoch)),
               "momentum": torch.tensor(self.teacher.decay_at(self._steps))}
        gamma = self.loss.ensemble.gamma_at(epoch) if self.loss.ensemble.schedule is not None else None
        if gamma is not None:
            out["gamma"] = torch.tensor(gamma)
        return out

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """The once-per-optimizer-step updates: teacher EMA (momentum m(step - 1)), DINO center, counters."""
        self.teacher.update(self.student, step=step - 1)
        if hasattr(self.loss, "step_center"):
            self.loss.step_center()
        self.steps_done.fill_(step)
        self._set_steps(step)


class SSLHook(Hook):
    """Calls :meth:`SSLModule.after_optimizer_step` once per optimizer step."""

    def after_optimizer_step(self, module: nn.Module, step: int) -> None:
        module.after_optimizer_step(step)


class _KnnSet(Dataset):
    """The un-augmented training images (the k-NN bank, flag 0) followed by the held-out ones (flag 1)."""

    def __init__(self, bank: Dataset, queries: Dataset) -> None:
        self.bank, self.queries = bank, queries

    def __len__(self) -> int:
        return len(self.bank) + len(self.queries)

    def __getitem__(self, i: int):
        nb = len(self.bank)
        image, label = self.bank[i] if i < nb else self.queries[i - nb]
        return image, int(label), int(i >= nb)


@torch.no_grad()
def knn_features(backbone: nn.Module, loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Representations, labels and bank/query flags of every item of a ``(image, label, flag)`` loader."""
    device = next(backbone.parameters()).device
    feats, labels, flags = [], [], []
    for x, y, f in loader:
        feats.append(backbone_features(backbone, x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
        flags.append(torch.as_tensor(f))
    return torch.cat(feats), torch.cat(labels), torch.cat(flags).bool()


def evaluate_knn(backbone: nn.Module, loader: DataLoader, k: int = 20, temperature: float = 0.07) -> dict[str, float]:
    """``{"knn_top1"}``: DINO's weighted k-NN of the held-out images against the training bank."""
    x, y, query = knn_features(backbone, loader)
    return {"knn_top1": knn_accuracy(x[~query], y[~query], x[query], y[query], k=k, temperature=temperature)}


def _datasets(cfg: SSLConfig, data: str | None) -> tuple[Dataset, Dataset]:
    """``(training images, held-out images)``, both ``(image, label)`` with images at full size."""
    if cfg.dataset == "folder":
        if data is None:
            raise UserError("dataset 'folder' needs --data ROOT (ROOT/train/CLASS/* and ROOT/val/CLASS/*)")
        from torchvision.transforms import v2

        from vislearn.data.formats import image_folder_splits

        train, held_out = image_folder_splits(data, cfg.image_size, train_tf=v2.Identity())
        train.float_output = False  # the multi-crop views crop the uint8 image and convert to float last
        return train, held_out
    if data is not None:
        raise UserError(f"dataset {cfg.dataset!r} is embedded; drop --data or set dataset=folder")
    from vislearn.data import embedded

    if cfg.dataset == "shapes":
        kw = dict(num_classes=cfg.num_classes, samples_per_class=cfg.samples_per_class, image_size=cfg.image_size)
        return embedded.shapes_classification("train", **kw), embedded.shapes_classification("test", **kw)
    if cfg.dataset == "photos":
        return (embedded.photo_crops(cfg.num_crops, cfg.image_size, seed=0),
                embedded.photo_crops(cfg.num_crops, cfg.image_size, seed=1))
    if cfg.dataset == "digits":  # scikit-learn's 8x8 digits, upscaled, grey repeated to RGB; its stratified split
        kw = dict(size=cfg.image_size, channels=3)
        return embedded.digits("train", **kw), embedded.digits("test", **kw)
    raise UserError(f"unknown dataset {cfg.dataset!r}; choose shapes, photos, digits or folder")


def _eval_bank(cfg: SSLConfig, train: Dataset, data: str | None) -> Dataset:
    if cfg.dataset != "folder":
        return train  # embedded images are already image_size tensors
    from vislearn.data.formats import ImageFolderDataset
    from vislearn.data.shards import ShardDataset
    from vislearn.data.transforms import eval_transform

    if isinstance(train, ShardDataset):
        return train.with_transform(eval_transform(cfg.image_size))
    return ImageFolderDataset(train.root, eval_transform(cfg.image_size), classes=train.classes)


def _param_groups(module: SSLModule) -> list[dict[str, Any]]:
    """DINO's groups: weight decay on weights, none on biases and norm scales (1-d parameters)."""
    decay, no_decay = [], []
    for p in module.student.parameters():
        if p.requires_grad:
            (no_decay if p.dim() <= 1 else decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_ssl_task(cfg: SSLConfig, data: str | None, method: str, make_loss) -> Task:
    """The :class:`Task` of ``method``; ``make_loss(cfg, ensemble) -> loss module``."""
    import os

    check_ssl_config(cfg)
    train, held_out = _datasets(cfg, data)
    clock = EpochClock()
    crop_args = (cfg.global_size, cfg.local_size, cfg.global_scale, cfg.local_scale, 2, cfg.num_local)
    # in-memory images: the batched views (a DataLoader batch in one call); folder data: per-sample torchvision
    crops = MultiCrop(*crop_args) if cfg.dataset == "folder" else TensorMultiCrop(*crop_args)
    train_views = MultiCropDataset(train, crops, seed=cfg.seed, clock=clock)
    resolved = resolve_config(cfg, len(train_views), int(os.environ.get("WORLD_SIZE", "1")))
    steps_per_epoch = max(1, len(train_views) // max(1, resolved.batch_size))
    backbone = ssl_backbone(cfg)
    in_dim = getattr(backbone, "num_features", None) or backbone.feature_info[-1].channels
    heads = MultiHead(cfg.heads, in_dim, hidden_dim=cfg.head_hidden, out_dim=cfg.head_dim, num_codes=cfg.codes,
                      num_layers=cfg.head_layers)
    module = SSLModule(SSLStudent(backbone, heads), make_loss(cfg, ensemble_of(cfg)), method, num_global=2,
                       steps_per_epoch=steps_per_epoch, total_steps=resolved.steps,
                       momentum=(cfg.momentum_start, cfg.momentum_end), clock=clock,
                       mask_ratio=getattr(cfg, "mask_ratio", 0.0))
    model = module.teacher.module.backbone if cfg.eval_teacher else module.student.backbone
    k, t = cfg.knn_k, cfg.knn_temperature

    def evaluate(m: nn.Module, loader: DataLoader) -> dict[str, float]:
        return evaluate_knn(m, loader, k=k, temperature=t)

    return Task(module, train_views, _KnnSet(_eval_bank(cfg, train, data), held_out), evaluate=evaluate,
                param_groups=_param_groups(module), collate_fn=_collate, model=model, hooks=[SSLHook()])


def _collate(batch):
    """Training batches are multi-crop samples; evaluation batches ``(image, label, flag)`` triples."""
    if isinstance(batch[0][0], list):
        return collate_views(batch)
    return torch.utils.data.default_collate(batch)
