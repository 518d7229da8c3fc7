"""Fixed-feature training for the ``multilabel`` recipe: a frozen random conv net, a linear head, early stopping.

Gong et al. (arXiv 1312.4894, Sec. 4) train a whole CNN with each loss. At CPU scale a fair test of
the LOSSES needs many runs (every loss × learning rate × seed, each to convergence), so the
``features`` preset trains only the top layer: every image of the embedded ``shapes`` scenes goes
once through a small conv net with fixed, seeded random weights (three 3×3 conv + ReLU layers, max
pooled; random conv features are a known non-trivial representation, Jarrett et al. 2009, Saxe et al.
2011), the features are standardised with the training statistics, and a linear layer on them
(the label scores) is trained with the chosen loss. Every loss sees the same features, so the
comparison is of how each loss shapes a linear scoring layer; what the paper's end-to-end training
would add is not tested (the paper is silent on a head-only variant; this is our stand-in).

:func:`split_validation` holds out part of the training images, and :class:`ValidationStopping` (an
engine hook) scores them every ``val_every`` steps, keeps the best head by a validation metric and
stops after ``patience`` checks without improvement, restoring the best weights before the final
(test) evaluation.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.data.embedded import TensorImageDataset
from vislearn.errors import UserError
from vislearn.metrics.multilabel import MultilabelTopK
from vislearn.train.hooks import Hook

__all__ = ["FeatureHead", "ValidationStopping", "random_conv_features", "split_validation"]


def _random_conv_net(width: int, seed: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    c = (width, 2 * width, 4 * width)
    layers: list[nn.Module] = []
    cin = 3
    for i, cout in enumerate(c):
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        with torch.no_grad():  # He-normal weights from the run's own generator (not the global stream)
            conv.weight.normal_(0.0, (2.0 / (cin * 9)) ** 0.5, generator=g)
            conv.bias.zero_()
        layers += [conv, nn.ReLU()] + ([nn.MaxPool2d(2)] if i < len(c) - 1 else [])
        cin = cout
    return nn.Sequential(*layers).eval()


@torch.no_grad()
def random_conv_features(images: torch.Tensor, width: int = 32, seed: int = 0, batch: int = 500) -> torch.Tensor:
    """N×(4w·5) features of N×3×H×W images: a fixed random conv net (3 layers, w/2w/4w channels), its
    last map max-pooled on a 2×2 grid (the scenes' object cells) and average-pooled globally."""
    if width < 1:
        raise UserError(f"feature width must be >= 1, got {width}")
    net = _random_conv_net(width, seed)
    x = (images - 0.5) / 0.25
    out = []
    for i in range(0, len(x), batch):
        f = net(x[i:i + batch])
        out.append(torch.cat([F.adaptive_max_pool2d(f, 2).flatten(1), f.mean((2, 3))], 1))
    return torch.cat(out)


@functools.lru_cache(maxsize=4)
def cached_feature_sets(kw: tuple[tuple[str, Any], ...], test_samples: int, width: int, seed: int
                        ) -> tuple[TensorImageDataset, TensorImageDataset]:
    """(train, test) feature datasets of the embedded shapes scenes ``kw``, standardised with the training
    mean/std (cached in-process: every arm of a sweep reuses them)."""
    from vislearn.data.embedded import shapes_multilabel

    args = dict(kw)
    train = shapes_multilabel("train", **args)
    test = shapes_multilabel("test", **{**args, "num_samples": test_samples})
    f_train = random_conv_features(train.images, width, seed)
    f_test = random_conv_features(test.images, width, seed)
    mean, std = f_train.mean(0), f_train.std(0).clamp(min=1e-6)
    return (TensorImageDataset((f_train - mean) / std, train.targets, classes=train.classes),
            TensorImageDataset((f_test - mean) / std, test.targets, classes=test.classes))


def split_validation(ds: TensorImageDataset, fraction: float, seed: int
                     ) -> tuple[TensorImageDataset, TensorImageDataset]:
    """(train, validation): a fixed random ``fraction`` of ``ds`` held out (``seed``: the split's)."""
    if not 0 < fraction < 1:
        raise UserError(f"val_fraction must be in (0, 1), got {fraction}")
    n = len(ds)
    n_val = int(round(n * fraction))
    if not 1 <= n_val < n:
        raise UserError(f"val_fraction {fraction} of {n} samples leaves an empty split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, va = order[n_val:], order[:n_val]
    return (TensorImageDataset(ds.images[tr], ds.targets[tr], ds.transform, classes=ds.classes),
            TensorImageDataset(ds.images[va], ds.targets[va], classes=ds.classes))


class FeatureHead(nn.Module):
    """A linear layer from fixed features to label scores (``label_names`` travel with it)."""

    def __init__(self, in_features: int, num_classes: int, label_names: list[str] | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes)
        self.label_names = label_names

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class ValidationStopping(Hook):
    """Early stopping on a validation split (the engine's ``should_stop``; no exception through fit).

    Every ``val_every`` steps (and at ``steps``, the last) scores ``model`` on ``val`` at top-``k``,
    keeps a copy of the weights with the best ``metric`` (higher is better), stops once ``patience``
    checks in a row did not improve it, and puts the best weights back in ``model`` before training
    ends, so the final evaluation scores them. ``best_step``, ``best`` and ``history`` say what it saw.
    """

    def __init__(self, model: nn.Module, val: TensorImageDataset, k: int, val_every: int, steps: int,
                 patience: int, metric: str = "per_class_recall") -> None:
        if val_every < 1 or patience < 1:
            raise UserError(f"val_every and patience must be >= 1, got {val_every} and {patience}")
        self.model, self.val, self.k, self.metric = model, val, k, metric
        self.val_every, self.steps, self.patience = val_every, steps, patience
        self.best, self.best_step, self.since_best = float("-inf"), 0, 0
        self.best_state: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []

    @torch.no_grad()
    def _score(self) -> dict[str, float]:
        was = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            m = MultilabelTopK(self.k)
            m.update(self.model(self.val.images.to(device)).float(), self.val.targets)
            return {key: float(v) for key, v in m.compute().items()}
        finally:
            self.model.train(was)

    def after_optimizer_step(self, module: nn.Module, step: int) -> None:
        if step % self.val_every and step != self.steps:
            return
        r = self._score()
        self.history.append({"step": step, **r})
        if r[self.metric] > self.best:
            self.best, self.best_step, self.since_best = r[self.metric], step, 0
            self.best_state = {n: t.detach().clone() for n, t in self.model.state_dict().items()}
        else:
            self.since_best += 1
        if step == self.steps:
            self.restore()

    def restore(self) -> None:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)

    def should_stop(self, step: int, metrics: dict[str, float]) -> bool:
        if self.since_best >= self.patience:
            self.restore()
            return True
        return False
