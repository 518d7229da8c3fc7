"""The paper's BN (Alg. 1/2) against torch.nn.BatchNorm, gradcheck, bad input, population statistics."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.nn import BatchNorm1d, BatchNorm2d, batch_norm_train, recompute_population_statistics


def _pair(ours_cls, torch_cls, n, dtype=torch.float64, **kw):
    ours, ref = ours_cls(n, **kw).to(dtype), torch_cls(n, **kw).to(dtype)
    if ours.weight is not None:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.normal_()
            ref.weight.copy_(ours.weight)
            ref.bias.copy_(ours.bias)
    return ours, ref


@pytest.mark.parametrize("shape,cls,tcls", [
    ((7, 5), BatchNorm1d, nn.BatchNorm1d),
    ((3, 5, 11), BatchNorm1d, nn.BatchNorm1d),
    ((2, 5, 7, 9), BatchNorm2d, nn.BatchNorm2d),
    ((3, 5, 1, 13), BatchNorm2d, nn.BatchNorm2d),
])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_torch_forward_backward_and_running_stats(shape, cls, tcls, affine, momentum):
    ours, ref = _pair(cls, tcls, shape[1], affine=affine, momentum=momentum, eps=1e-3)
    for step in range(3):
        x = (torch.randn(*shape, dtype=torch.float64) * 3 + step).requires_grad_()
        g = torch.randn(*shape, dtype=torch.float64)
        y1, y2 = ours(x), ref(x)
        torch.testing.assert_close(y1, y2, rtol=1e-10, atol=1e-10)
        params1 = [x] + ([ours.weight, ours.bias] if affine else [])
        params2 = [x] + ([ref.weight, ref.bias] if affine else [])
        for a, b in zip(torch.autograd.grad(y1, params1, g), torch.autograd.grad(y2, params2, g), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(ours.running_mean, ref.running_mean)
        torch.testing.assert_close(ours.running_var, ref.running_var)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    ours.eval(), ref.eval()
    x = torch.randn(*shape, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)
    # state dicts interchange with torch's
    ref.load_state_dict(ours.state_dict())


def test_float32_matches_torch():
    ours, ref = _pair(BatchNorm2d, nn.BatchNorm2d, 6, dtype=torch.float32)
    x = torch.randn(4, 6, 5, 3, requires_grad=True)
    y1, y2 = ours(x), ref(x)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    g1 = torch.autograd.grad(y1.square().sum(), x)[0]
    g2 = torch.autograd.grad(y2.square().sum(), x)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-4, atol=1e-4)


def test_gradcheck_paper_backward():
    x = torch.randn(4, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    w = torch.rand(3, dtype=torch.float64).add(0.5).requires_grad_()
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: batch_norm_train(x, w, b, 1e-3)[0], (x, w, b))
    x1 = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: batch_norm_train(x, None, None, 1e-5)[0], (x1,))
    layer = BatchNorm1d(4).double()
    assert torch.autograd.gradcheck(layer, (x1,))


def test_hand_computed_case():
    # two samples, one feature: μ = 2, σ² = 1 (biased), x̂ = ∓1/√(1+ε); γ = 2, β = 1
    layer = BatchNorm1d(1, eps=0.0 + 1e-12, momentum=1.0).double()
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(1.0)
    y = layer(torch.tensor([[1.0], [3.0]], dtype=torch.float64))
    torch.testing.assert_close(y, torch.tensor([[-1.0], [3.0]], dtype=torch.float64))
    # momentum 1: running = this batch; unbiased variance m/(m−1)·σ² = 2
    assert float(layer.running_mean) == 2.0 and float(layer.running_var) == pytest.approx(2.0)


def test_bad_input():
    layer = BatchNorm1d(3)
    with pytest.raises(UserError, match="more than 1 value per channel"):
        layer(torch.randn(1, 3))
    with pytest.raises(ValueError):  # torch raises the same type for the same mistake
        nn.BatchNorm1d(3)(torch.randn(1, 3))
    layer.eval()
    assert layer(torch.randn(1, 3)).shape == (1, 3)  # eval mode uses population statistics: fine
    layer.train()
    x = torch.randn(4, 3)
    x[2, 1] = float("nan")
    before = layer.running_mean.clone(), layer.running_var.clone(), int(layer.num_batches_tracked)
    with pytest.raises(UserError, match="NaN/inf"):
        layer(x)
    x[2, 1] = float("inf")
    with pytest.raises(UserError, match="NaN/inf"):
        layer(x)
    assert torch.equal(layer.running_mean, before[0]) and torch.equal(layer.running_var, before[1])
    assert int(layer.num_batches_tracked) == before[2]
    with pytest.raises(UserError, match="expected 4D"):
        BatchNorm2d(3)(torch.randn(2, 3))
    with pytest.raises(UserError, match="channels"):
        BatchNorm2d(3)(torch.randn(2, 4, 3, 3))
    with pytest.raises(UserError, match="num_features"):
        BatchNorm2d(0)


def test_bf16_input_keeps_dtype_and_float32_statistics():
    layer = BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5)
    y = layer(x.bfloat16())
    assert y.dtype == torch.bfloat16 and layer.running_mean.dtype == torch.float32
    torch.testing.assert_close(y.float(), nn.BatchNorm2d(4)(x), atol=0.05, rtol=0.02)


def _net(bn_cls):
    return nn.Sequential(nn.Conv2d(2, 4, 3), bn_cls(4), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3), BatchNorm1d(3) if bn_cls is BatchNorm2d else nn.BatchNorm1d(3))


@pytest.mark.parametrize("bn_cls", [BatchNorm2d, nn.BatchNorm2d])
def test_population_statistics_is_the_papers_estimator(bn_cls):
    torch.manual_seed(1)
    batches = [(torch.randn(5, 2, 6, 6) + i, torch.zeros(5)) for i in range(4)]
    model = _net(bn_cls)
    model[0].train(False)  # a mixed mode to restore
    modes = [m.training for m in model.modules()]
    info = recompute_population_statistics(model, iter(batches), num_batches=3)
    assert info == {"layers": 2, "batches": 3}
    assert [m.training for m in model.modules()] == modes
    assert int(model[1].num_batches_tracked) == 0
    # oracle: E_B[μ_B] and E_B[m/(m−1)·σ²_B] computed directly on the conv output
    with torch.no_grad():
        z = [model[0](x) for x, _ in batches[:3]]
        mu = torch.stack([t.mean((0, 2, 3)) for t in z]).mean(0)
        var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in z]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[1].running_var, var, rtol=1e-5, atol=1e-6)


def test_population_statistics_matches_torch_cumulative_average():
    # torch's momentum=None keeps the cumulative average of μ_B and unbiased σ²_B: the same estimator
    torch.manual_seed(2)
    data = [torch.randn(8, 3, 4, 4) * 2 + 1 for _ in range(5)]
    ref = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, momentum=None))
    ours = nn.Sequential(nn.Conv2d(3, 3, 1), BatchNorm2d(3))
    ours.load_state_dict(ref.state_dict())
    with torch.no_grad():
        for x in data:
            ref(x)
    recompute_population_statistics(ours, data, num_batches=10)  # the loader ends first: 5 batches
    torch.testing.assert_close(ours[1].running_mean, ref[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[1].running_var, ref[1].running_var, rtol=1e-5, atol=1e-6)


def test_population_statistics_errors_leave_statistics_unchanged():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    before = model[1].running_mean.clone()
    bad = torch.randn(4, 3)
    bad[0, 0] = float("nan")
    with pytest.raises(UserError, match="NaN/inf"):
        recompute_population_statistics(model, [torch.randn(4, 3), bad], num_batches=2)
    assert torch.equal(model[1].running_mean, before) and model.training
    with pytest.raises(UserError, match="no batches"):
        recompute_population_statistics(model, [], num_batches=2)
    with pytest.raises(UserError, match="num_batches"):
        recompute_population_statistics(model, [bad], num_batches=0)
    with pytest.raises(UserError, match="no BatchNorm"):
        recompute_population_statistics(nn.Linear(2, 2), [bad], num_batches=1)


def test_population_statistics_every_layer_against_a_manual_pass():
    # Three BN layers with dropout after the first: each BN must see the activations of the layers
    # before it normalised with *batch* statistics and without dropout noise (the training network
    # N^tr_BN, dropout off). Oracle: a hand-written pass with F.batch_norm(training=True), no dropout.
    # A stale running statistic used anywhere, or dropout left on, changes a later layer's numbers.
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5),
                          nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5), nn.ReLU(),
                          nn.Conv2d(5, 3, 1), BatchNorm2d(3))
    bns = [model[1], model[5], model[8]]
    with torch.no_grad():
        for bn in bns:
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
            bn.running_mean.fill_(3.0)  # stale statistics: using them anywhere changes the result
            bn.running_var.fill_(9.0)
    batches = [(torch.randn(6, 3, 7, 7) * 1.5 + 0.5, None) for _ in range(4)]
    recompute_population_statistics(model, iter(batches), num_batches=4)
    stats: list[list[tuple[torch.Tensor, torch.Tensor]]] = [[], [], []]

    def bn_train(bn, h, i):
        stats[i].append((h.double().mean((0, 2, 3)), h.double().var((0, 2, 3), unbiased=True)))
        return F.batch_norm(h, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)

    with torch.no_grad():
        for x, _ in batches:
            h = F.relu(bn_train(model[1], model[0](x), 0))  # no dropout
            h = F.relu(bn_train(model[5], model[4](h), 1))
            bn_train(model[8], model[7](h), 2)
    for bn, layer_stats in zip(bns, stats, strict=True):
        mu = torch.stack([m for m, _ in layer_stats]).mean(0)
        var = torch.stack([v for _, v in layer_stats]).mean(0)
        torch.testing.assert_close(bn.running_mean.double(), mu, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)


# --- edges found by mutation testing (tests/MUTANTS.md, `make mutants`) ---

def test_argument_validation_boundaries():
    # eps must be > 0; momentum in [0, 1] (both ends allowed) or None; num_features a positive int
    with pytest.raises(UserError, match="eps"):
        BatchNorm1d(3, eps=0.0)
    for bad in (-0.5, 1.5):
        with pytest.raises(UserError, match="momentum"):
            BatchNorm1d(3, momentum=bad)
    for ok in (0.0, 1.0, None):
        assert BatchNorm1d(3, momentum=ok).momentum == ok
    with pytest.raises(UserError, match="num_features"):
        BatchNorm1d(2.0)
    assert BatchNorm1d(1).num_features == 1


def test_momentum_zero_keeps_the_initial_running_statistics():
    layer = BatchNorm1d(2, momentum=0.0).double()
    layer(torch.randn(5, 2, dtype=torch.float64) * 4 + 3)
    assert torch.equal(layer.running_mean, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(layer.running_var, torch.ones(2, dtype=torch.float64))
    assert int(layer.num_batches_tracked) == 1


@pytest.mark.parametrize("training", [True, False])
def test_without_running_statistics_matches_torch_in_train_and_eval(training):
    # track_running_stats=False: both modes normalise with the batch statistics, nothing is stored
    ours, ref = _pair(BatchNorm2d, nn.BatchNorm2d, 3, track_running_stats=False)
    ours.train(training), ref.train(training)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 2 + 1
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-10, atol=1e-10)
    assert ours.running_mean is None and ours.num_batches_tracked is None
    ours.reset_running_stats()  # nothing to reset: no error


def test_reset_running_stats():
    layer = BatchNorm1d(3)
    for _ in range(2):
        layer(torch.randn(6, 3) * 3 + 2)
    layer.reset_running_stats()
    assert torch.equal(layer.running_mean, torch.zeros(3)) and torch.equal(layer.running_var, torch.ones(3))
    assert int(layer.num_batches_tracked) == 0


def test_overflowing_variance_is_rejected_even_with_a_finite_mean():
    # channel 0 holds ±3e20 (float32): its mean is 0 but its variance 9e40 overflows to inf
    layer = BatchNorm1d(2)
    x = torch.tensor([[3e20, 1.0], [-3e20, 2.0], [3e20, 3.0], [-3e20, 4.0]])
    with pytest.raises(UserError, match="NaN/inf values in 1 of 2"):
        layer(x)
    assert int(layer.num_batches_tracked) == 0


class _LinearBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin, self.bn, self.unused = nn.Linear(3, 2), BatchNorm1d(2), nn.BatchNorm1d(2)

    def forward(self, x):
        return self.bn(self.lin(x))


def test_population_statistics_loader_items_and_one_value_batches():
    torch.manual_seed(3)
    model = _LinearBN()
    batches = [torch.randn(2, 3) for _ in range(3)]  # m = 2 values per channel: the smallest allowed
    info = recompute_population_statistics(model, [{"image": b} for b in batches], num_batches=3)
    assert info == {"layers": 1, "batches": 3}
    with torch.no_grad():
        z = [model.lin(b) for b in batches]
    torch.testing.assert_close(model.bn.running_mean, torch.stack([t.mean(0) for t in z]).mean(0))
    torch.testing.assert_close(model.bn.running_var, torch.stack([t.var(0) for t in z]).mean(0))
    assert torch.equal(model.unused.running_mean, torch.zeros(2))  # the unused layer keeps its statistics
    before = model.bn.running_mean.clone()
    with pytest.raises(UserError, match="1 value per channel"):
        recompute_population_statistics(model, [torch.randn(1, 3)], num_batches=1)
    assert torch.equal(model.bn.running_mean, before)
    for bad in (["not a tensor"], [("a", "b")], [()]):
        with pytest.raises(UserError, match="input tensors"):
            recompute_population_statistics(model, bad, num_batches=1)
    no_stats = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(UserError, match="no BatchNorm"):
        recompute_population_statistics(no_stats, batches, num_batches=1)


def test_population_statistics_rejects_overflowing_variance_in_double():
    model = nn.Sequential(nn.BatchNorm1d(2)).double()
    x = torch.tensor([[1e200, 1.0], [-1e200, 2.0], [1e200, 3.0]], dtype=torch.float64)
    with pytest.raises(UserError, match="NaN/inf"):
        recompute_population_statistics(model, [x], num_batches=1)


def test_repr_and_errors_name_the_layer():
    # torch's layout of the arguments (torch 2.14 also prints its own `bias=` option, which ours lacks)
    assert repr(BatchNorm2d(4)) == "BatchNorm2d(4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(BatchNorm1d(3, eps=1e-3, momentum=None, affine=False, track_running_stats=False)) == (
        "BatchNorm1d(3, eps=0.001, momentum=None, affine=False, track_running_stats=False)")
    with pytest.raises(UserError, match=r"at BatchNorm1d \(input shape"):  # the model is the layer: its type
        recompute_population_statistics(BatchNorm1d(2), [torch.randn(1, 2)], num_batches=1)
    with pytest.raises(UserError, match=r"at bn \(input shape"):  # a named layer: its name
        recompute_population_statistics(_LinearBN(), [torch.randn(1, 3)], num_batches=1)
