"""The classifier training loss: label-smoothed cross-entropy plus the weighted auxiliary term,
against F.cross_entropy on a fixed tiny model and a hand-computed smoothing case."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.recipes.classification import ClassifierModule


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
