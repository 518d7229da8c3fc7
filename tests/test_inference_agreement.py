"""agreement(): logit distances, cosine, top-1 agreement and accuracy against hand-computed values."""

import math

import pytest
import torch

from vislearn.errors import UserError
from vislearn.inference import agreement


def test_hand_computed_case():
    ref = torch.tensor([[2.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    cand = torch.tensor([[2.0, 1.0, 0.0], [0.0, 4.0, 0.0]])  # row 0 moves by (0, 1, 0): argmax kept
    table = {0: ref, 1: cand}
    out = agreement(lambda x: table[0][x], lambda x: table[1][x], [(torch.tensor([0, 1]), torch.tensor([0, 2]))])
    assert out["n"] == 2
    assert out["max_rel_error"] == pytest.approx(1 / 4)  # max |c - r| = 1 over max |r| = 4
    assert out["mean_cosine"] == pytest.approx((2 / math.sqrt(5) + 1) / 2)
    assert out["min_cosine"] == pytest.approx(2 / math.sqrt(5))
    assert out["top1_agreement"] == 1.0
    assert out["top1_reference"] == 0.5 and out["top1_candidate"] == 0.5 and out["top1_drop_points"] == 0.0


def test_disagreement_and_accuracy_drop_over_batches():
    ref = lambda x: torch.stack([x, -x], 1)  # noqa: E731  class 0 where x > 0
    cand = lambda x: torch.stack([x - 0.5, -x], 1)  # noqa: E731  class 0 only where x > 0.25
    batches = [(torch.tensor([1.0, 0.1]), torch.tensor([0, 0])), (torch.tensor([-1.0, 0.2]), torch.tensor([1, 0]))]
    out = agreement(ref, cand, batches)
    assert out["n"] == 4 and out["top1_agreement"] == 0.5  # 0.1 and 0.2 flip to class 1
    assert out["top1_reference"] == 1.0 and out["top1_candidate"] == 0.5 and out["top1_drop_points"] == 50.0
    assert out["max_rel_error"] == pytest.approx(0.5)  # each batch: |Δ| = 0.5 over max |r| = 1
    unlabelled = agreement(ref, cand, [b[0] for b in batches])
    assert "top1_reference" not in unlabelled and unlabelled["top1_agreement"] == 0.5


def test_errors():
    with pytest.raises(UserError, match="no samples"):
        agreement(lambda x: x, lambda x: x, [])
    with pytest.raises(UserError, match="differ in shape"):
        agreement(lambda x: x, lambda x: x[:, :1], [torch.zeros(2, 3)])
    with pytest.raises(UserError, match="N×C logits"):
        agreement(lambda x: x, lambda x: x, [torch.zeros(2, 3, 4)])
