"""fold_batchnorm: exact (1e-5 relative on logits, float32) on every pattern, refuses training mode."""

import warnings

import pytest
import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models import create_model
from vislearn.nn import BatchNorm1d, BatchNorm2d, ConvBNAct, fold_batchnorm, is_batchnorm


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial γ, β and population statistics so that folding has something to get wrong."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if is_batchnorm(m):
                n = m.num_features
                if m.running_mean is not None:
                    m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
                    m.running_var.copy_(torch.rand(n, generator=g) * 2 + 0.1)
                if m.weight is not None:
                    m.weight.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.3)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _check(model: nn.Module, x: torch.Tensor, expect_folded: int, **kw) -> nn.Module:
    model = _randomize_bn(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = [(name, type(m)) for name, m in model.named_modules()]
    with torch.no_grad():
        ref = model(x)
        folded, report = fold_batchnorm(model, return_report=True, **kw)
        out = folded(x)
    assert report.num_folded == expect_folded, report
    assert _rel(out, ref) < 1e-5
    assert sum(is_batchnorm(m) for m in folded.modules()) == report.num_unfolded
    # the original is untouched (a deep copy was folded): the same layers, every weight and statistic
    # bit for bit, and the same outputs
    assert [(name, type(m)) for name, m in model.named_modules()] == layers
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(x), ref)
    return folded


@pytest.mark.parametrize("impl", ["torch", "paper"])
def test_mlp_linear_bn(impl):
    model = create_model("mlp", batch_norm=True, bn_impl=impl)
    _check(model, torch.rand(16, 1, 8, 8), expect_folded=3)


def test_convbnact_and_sequential_neighbours():
    model = nn.Sequential(
        ConvBNAct(3, 8, 3, padding=1),
        ConvBNAct(8, 8, 3, stride=2, padding=1, groups=8),  # depthwise
        nn.Conv2d(8, 6, 1, bias=True), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 6, 3, padding=1, bias=False), BatchNorm2d(6),  # our reference BN
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5), nn.BatchNorm1d(5), BatchNorm1d(5, affine=False),
    )
    folded = _check(model, torch.rand(4, 3, 17, 15), expect_folded=5, warn=False)
    # the second of two stacked BNs has no conv/linear right before it: left in place and counted
    assert folded.bn_fold_report.unfolded == ["11"]


def test_torchvision_blocks():
    import torchvision

    model = torchvision.models.resnet18(num_classes=7)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    folded = _check(model, torch.rand(2, 3, 64, 64), expect_folded=n_bn)
    assert folded.bn_fold_report.num_unfolded == 0


def test_traced_pairs_in_custom_module():
    class Odd(nn.Module):  # names no pattern knows; only a forward pass shows the conv → norm order
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.norm_a = nn.BatchNorm2d(4)
            self.pre = nn.BatchNorm2d(4)  # BN before a conv: not foldable into it
            self.b = nn.Conv2d(4, 4, 1)
            self.act = nn.ReLU(inplace=True)
            self.c = nn.Conv2d(4, 4, 1)
            self.after_inplace_relu = nn.BatchNorm2d(4)  # same tensor object, changed values

        def forward(self, x):
            x = self.norm_a(self.a(x))
            x = self.b(self.pre(x))
            return self.after_inplace_relu(self.act(self.c(x)))

    x = torch.rand(2, 3, 9, 9)
    with pytest.warns(UserWarning, match="left 3 BatchNorm"):
        _check(Odd(), x, expect_folded=0)
    with pytest.warns(UserWarning, match="left 2 BatchNorm"):
        folded = _check(Odd(), x, expect_folded=1, example_input=x)
    assert folded.bn_fold_report.unfolded == ["pre", "after_inplace_relu"]


def test_refuses_training_mode_and_non_module():
    model = create_model("mlp", batch_norm=True)
    with pytest.raises(UserError, match="eval mode"):
        fold_batchnorm(model)
    model.eval()
    model.features[2].train()  # one BN left in training mode is enough to refuse
    with pytest.raises(UserError, match="features.2"):
        fold_batchnorm(model)
    with pytest.raises(UserError, match="nn.Module"):
        fold_batchnorm(lambda x: x)


def test_untracked_bn_left_in_place():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folded, report = fold_batchnorm(model, return_report=True)
    assert report.num_folded == 0 and report.unfolded == ["1"]
    x = torch.randn(5, 4)
    torch.testing.assert_close(folded(x), model(x))


def test_small_registry_models_fold_completely():
    from vislearn.models import list_models

    names = ("small_convnet", "multibox_tiny", "multilabel_net_small")
    assert set(names) <= set(list_models())  # a renamed model must fail here, not silently drop out
    for name in names:
        model = create_model(name)
        size = max(getattr(model, "min_input_size", 32), 32)
        x = torch.rand(2, 3, size, size)
        with torch.no_grad():
            model(x)  # training-mode pass: non-trivial running statistics
        model.eval()
        with torch.no_grad():
            ref = model(x)
            folded, report = fold_batchnorm(model, return_report=True)
            out = folded(x)
        ref, out = (ref[0], out[0]) if isinstance(ref, (tuple, list)) else (ref, out)
        if isinstance(ref, dict):
            ref, out = next(iter(ref.values())), next(iter(out.values()))
        assert report.num_folded > 0 and report.num_unfolded == 0, name
        assert _rel(out, ref) < 1e-5, name
