"""recipes/classification.py: the classifier training loss (label-smoothed CE + weighted aux CE against
F.cross_entropy and a hand case) and the expected calibration error (hand case, torchmetrics oracle)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_calibration_error

from vislearn.recipes.classification import ClassifierModule, expected_calibration_error


class _TwoHeads(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.main = nn.Linear(6, 5)
        self.aux = nn.Linear(6, 5)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x):
        return (self.main(x), self.aux(x)) if self.training else self.main(x)


def test_loss_is_smoothed_ce_plus_weighted_aux_ce():
    model = _TwoHeads().train()
    x = torch.randn(8, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    out = ClassifierModule(model, label_smoothing=0.1, aux_weight=0.4)((x, y))
    main, aux = model(x)
    ref = F.cross_entropy(main, y, label_smoothing=0.1) + 0.4 * F.cross_entropy(aux, y, label_smoothing=0.1)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-6)
    assert out["aux_ce"].item() == pytest.approx(F.cross_entropy(aux, y, label_smoothing=0.1).item(), rel=1e-6)
    # both terms matter: the value differs from either one alone
    assert abs(out["loss"].item() - F.cross_entropy(main, y, label_smoothing=0.1).item()) > 1e-3
    assert abs(out["loss"].item() - (F.cross_entropy(main, y) + 0.4 * F.cross_entropy(aux, y)).item()) > 1e-4


def test_label_smoothing_by_hand():
    # uniform logits over K = 4 classes: CE = log 4 whatever the smoothing; logits (2, 0, 0, 0) with
    # target 0 and ε = 0.2: q = (1 − ε + ε/K, ε/K, ε/K, ε/K) = (0.85, .05, .05, .05) -> −Σ q log p
    z = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    lse = math.log(math.exp(2) + 3)
    expected = -(0.85 * (2 - lse) + 3 * 0.05 * (0 - lse))

    class Fixed(nn.Module):
        def forward(self, x):
            return z

    out = ClassifierModule(Fixed(), label_smoothing=0.2)((torch.zeros(1, 1), torch.tensor([0])))
    assert out["loss"].item() == pytest.approx(expected, rel=1e-6)


def _logits_with_confidence(conf: float, pred: int, classes: int = 2) -> torch.Tensor:
    # two classes: softmax max = conf when the predicted logit exceeds the other by log(conf/(1-conf))
    z = torch.zeros(classes)
    z[pred] = math.log(conf / (1 - conf))
    return z


def test_ece_hand_computed_two_bins():
    # 4 samples, 2 bins [0, .5), [.5, 1]; all land in the upper bin except none -> one bin in use:
    # confidences 0.9, 0.9, 0.6, 0.6 (mean 0.75), correct 1, 0, 1, 1 (accuracy 0.75) -> ECE 0
    logits = torch.stack([_logits_with_confidence(c, 0) for c in (0.9, 0.9, 0.6, 0.6)])
    labels = torch.tensor([0, 1, 0, 0])
    assert expected_calibration_error(logits, labels, bins=2) == pytest.approx(0.0, abs=1e-6)
    # with 10 bins the two confidences separate: bin 0.9 has acc 0.5 (|0.5-0.9| = 0.4), bin 0.6 has
    # acc 1.0 (|1-0.6| = 0.4); each holds half the samples -> ECE = 0.5·0.4 + 0.5·0.4 = 0.4
    assert expected_calibration_error(logits, labels, bins=10) == pytest.approx(0.4, abs=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_ece_equals_torchmetrics(seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(500, 7, generator=g) * 2
    labels = torch.randint(0, 7, (500,), generator=g)
    ref = multiclass_calibration_error(logits.softmax(1), labels, num_classes=7, n_bins=15, norm="l1")
    assert expected_calibration_error(logits, labels, bins=15) == pytest.approx(float(ref), abs=1e-6)
