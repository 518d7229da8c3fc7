"""Supervised classification: the shared training module and evaluation for classifier recipes.

Used by the ``classify`` recipe (any registry model on any dataset) and by the paper recipes
(BN, Inception-v3/v4) that only change the model, the data and the hyperparameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from vislearn.errors import UserError
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.train.engine import Task, TrainConfig
from vislearn.train.evaluation import ShardedEvaluation
from vislearn.train.rules import Rule, at_least, between


class ClassifierModule(nn.Module):
    """``forward((images, labels))`` → cross-entropy with label smoothing and an optional aux head.

    The model may return logits, or ``(logits, aux_logits)`` in training mode (Inception-v3's
    auxiliary classifier, weighted by ``aux_weight``: 0.4 in TF-slim's trainer).
    """

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0, aux_weight: float = 0.0) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise UserError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.model, self.label_smoothing, self.aux_weight = model, label_smoothing, aux_weight

    def forward(self, batch) -> dict[str, torch.Tensor]:
        x, y = batch
        out = self.model(x)
        aux = None
        if isinstance(out, (tuple, list)):
            out, aux = out
        loss = F.cross_entropy(out.float(), y, label_smoothing=self.label_smoothing)
        logs = {"ce": loss.detach()}
        if aux is not None and self.aux_weight > 0:
            aux_loss = F.cross_entropy(aux.float(), y, label_smoothing=self.label_smoothing)
            loss = loss + self.aux_weight * aux_loss
            logs["aux_ce"] = aux_loss.detach()
        logs["acc"] = (out.detach().argmax(1) == y).float().mean()
        return {"loss": loss, **logs}


def classifier_predictions(model: nn.Module, loader: DataLoader) -> dict[str, torch.Tensor]:
    """Per-sample results: top-1/top-5 hits, cross-entropy, softmax confidence and whether its class is right."""
    device = next(model.parameters()).device
    logits, labels = [], []
    for x, y in loader:
        out = model(x.to(device))
        if isinstance(out, (tuple, list)):
            out = out[0]
        logits.append(out.float().cpu())
        labels.append(y)
    z, y = torch.cat(logits), torch.cat(labels)
    k = min(5, z.shape[1])
    conf, pred = z.softmax(1).max(1)
    return {"top1": (z.argmax(1) == y).float(), f"top{k}": (z.topk(k, 1).indices == y[:, None]).any(1).float(),
            "loss": F.cross_entropy(z, y, reduction="none"), "confidence": conf, "confident_hit": (pred == y).float()}


def classifier_metrics(columns: dict[str, torch.Tensor]) -> dict[str, float]:
    """Top-1/top-5 accuracy, mean cross-entropy and expected calibration error (15 bins) of the whole set."""
    out = {k: float(v.mean()) for k, v in columns.items() if k not in ("confidence", "confident_hit")}
    return {**out, "ece": calibration_error(columns["confidence"], columns["confident_hit"])}


# Top-1/top-5 accuracy, mean cross-entropy and ECE; under torchrun every process scores its share of the set.
evaluate_classifier = ShardedEvaluation(classifier_predictions, classifier_metrics)


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): Σ_b |B_b|/N · |acc_b − conf_b|."""
    conf, pred = logits.softmax(1).max(1)
    return calibration_error(conf, (pred == labels).float(), bins)


def calibration_error(conf: torch.Tensor, correct: torch.Tensor, bins: int = 15) -> float:
    """ECE from per-sample confidences and 0/1 correctness (equal-width bins)."""
    edges = torch.linspace(0, 1, bins + 1)
    idx = torch.bucketize(conf, edges[1:-1], right=True)
    ece = torch.zeros(())
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.float().mean() * (correct[m].mean() - conf[m].mean()).abs()
    return float(ece)


@dataclass
class ClassifyConfig(TrainConfig):
    model: str = "mlp"
    dataset: str = "digits"  # digits | shapes | a folder in ImageFolder layout (--data)
    image_size: int = 8
    label_smoothing: float = 0.0
    aux_weight: float = 0.0
    RULES: ClassVar[dict[str, Rule]] = {
        "image_size": at_least(1),  # dataset: any name other than digits/shapes reads the --data folder
        "label_smoothing": between(0, 1, high_open=True), "aux_weight": at_least(0)}


def num_classes_of(dataset) -> int:
    """Class count of a dataset: its ``classes`` list when it has one, else the largest target + 1."""
    classes = getattr(dataset, "classes", None)
    return len(classes) if classes else int(dataset.targets.max()) + 1


def classification_datasets(cfg: ClassifyConfig, data: str | None, channels: int = 1):
    """Train/eval datasets: embedded digits or shapes, or an ImageFolder tree at ``data``."""
    from vislearn.data import embedded

    if data is None and cfg.dataset == "digits":
        return (embedded.digits("train", size=cfg.image_size, channels=channels),
                embedded.digits("test", size=cfg.image_size, channels=channels))
    if data is None and cfg.dataset == "shapes":
        return (embedded.shapes_classification("train", image_size=cfg.image_size),
                embedded.shapes_classification("test", image_size=cfg.image_size))
    if data is None:
        raise UserError(f"dataset {cfg.dataset!r} needs --data PATH (an ImageFolder tree with train/ and val/)")
    from vislearn.data.formats import image_folder_splits

    return image_folder_splits(data, image_size=cfg.image_size)


@register_recipe("classify")
class ClassifyRecipe(Recipe):
    """Any registry classifier on digits, shapes or an ImageFolder tree."""

    description = "generic classification with any registry model"
    Config = ClassifyConfig
    data_formats = {"imagefolder": "folder"}
    presets = {
        "quick": ClassifyConfig(steps=300, batch_size=60, lr=0.5, log_every=50),
        "paper": ClassifyConfig(steps=300, batch_size=60, lr=0.5, log_every=50, **PAPER_LOADING),
    }

    def build(self, cfg: ClassifyConfig, data: str | None = None) -> Task:
        from vislearn.models import create_model, get_entry

        chans = 3 if data is not None else get_entry(cfg.model).input_size[0]  # a --data folder is RGB
        train, test = classification_datasets(cfg, data, channels=chans)
        num_classes = num_classes_of(train)
        kwargs = {"image_size": cfg.image_size, "in_chans": chans} if cfg.model == "mlp" else {}
        model = create_model(cfg.model, num_classes=num_classes, **kwargs)
        return Task(ClassifierModule(model, cfg.label_smoothing, cfg.aux_weight), train, test,
                    evaluate=evaluate_classifier, model=model)
