"""Expected calibration error: a hand-computed case and torchmetrics' multiclass ECE as the oracle."""

import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from vislearn.recipes.classification import expected_calibration_error


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
