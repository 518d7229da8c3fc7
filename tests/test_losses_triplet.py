"""Triplet loss: semi-hard mining against a per-triplet loop, all/hard against pytorch-metric-learning."""

import pytest
import torch
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.losses import TripletLoss


def _brute_semihard(x, y, margin, squared=True):
    x = F.normalize(x, dim=1)
    n = len(y)
    losses = []
    for a in range(n):
        for p in range(n):
            if a == p or y[a] != y[p]:
                continue
            negs = [j for j in range(n) if y[j] != y[a]]
            if not negs:
                continue
            dist = lambda i, j: ((x[i] - x[j]) ** 2).sum() if squared else (x[i] - x[j]).norm()  # noqa: E731
            dap = dist(a, p)
            dans = torch.stack([dist(a, j) for j in negs])
            farther = dans[dans > dap]
            dan = farther.min() if len(farther) else dans.max()
            losses.append(torch.relu(dap - dan + margin))
    return torch.stack(losses).mean()


@pytest.mark.parametrize("squared", [True, False])
def test_semihard_matches_loop(squared):
    torch.manual_seed(3)
    x = torch.randn(24, 6)
    y = torch.randint(0, 5, (24,))
    ref = _brute_semihard(x, y, 0.2, squared)
    got = TripletLoss(margin=0.2, mining="semihard", squared=squared)(x, y)
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


def test_semihard_gradient_matches_loop():
    torch.manual_seed(4)
    x = torch.randn(12, 4, requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    g1, = torch.autograd.grad(TripletLoss(0.5)(x, y), x)
    g2, = torch.autograd.grad(_brute_semihard(x, y, 0.5), x)
    assert torch.allclose(g1, g2, atol=1e-5)


@pytest.mark.parametrize("kind", ["all", "hard"])
def test_all_and_hard_match_pml(kind):
    from pytorch_metric_learning.losses import TripletMarginLoss
    from pytorch_metric_learning.miners import TripletMarginMiner

    torch.manual_seed(5)
    x = torch.randn(32, 8)
    y = torch.randint(0, 6, (32,))
    miner = TripletMarginMiner(margin=0.3, type_of_triplets=kind)
    pml = TripletMarginLoss(margin=0.3)(x, y, miner(x, y))
    ours = TripletLoss(margin=0.3, mining=kind, squared=False)(x, y)
    assert ours.item() == pytest.approx(pml.item(), abs=1e-5)


def test_no_positive_pairs_gives_connected_zero():
    x = torch.randn(4, 3, requires_grad=True)
    loss = TripletLoss()(x, torch.tensor([0, 1, 2, 3]))
    assert loss.item() == 0.0
    loss.backward()
    assert x.grad is not None and (x.grad == 0).all()


def test_bad_input():
    with pytest.raises(UserError, match="mining"):
        TripletLoss(mining="easy")
    with pytest.raises(UserError, match="margin"):
        TripletLoss(margin=-1.0)
    loss = TripletLoss(embedding_dim=3)
    with pytest.raises(UserError, match="label 2"):
        loss(torch.randn(4, 3), torch.full((4,), 2))
    with pytest.raises(UserError, match="NaN"):
        loss(torch.tensor([[0.0, float("nan"), 1.0], [1.0, 0.0, 0.0]]), torch.tensor([0, 1]))
    with pytest.raises(UserError, match="B×3"):
        loss(torch.randn(4, 5), torch.tensor([0, 1, 0, 1]))
    with pytest.raises(UserError, match="4 embeddings but 3"):
        loss(torch.randn(4, 3), torch.tensor([0, 1, 0]))
