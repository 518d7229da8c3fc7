"""BN-Inception (Fig. 5): widths, parameter counts from a closed form, backbone interface, folding."""

import pytest
import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.inference import optimize
from vislearn.models import create_model
from vislearn.nn import BatchNorm2d, fold_batchnorm

# Fig. 5 written out independently of the model file: (1×1, 3×3r, 3×3, d3r, d3, proj, stride)
FIG5 = [(64, 64, 64, 64, 96, 32, 1), (64, 64, 96, 64, 96, 64, 1), (0, 128, 160, 64, 96, 0, 2),
        (224, 64, 96, 96, 128, 128, 1), (192, 96, 128, 96, 128, 128, 1), (160, 128, 160, 128, 160, None, 1),
        (96, 128, 192, 160, 192, None, 1), (0, 128, 192, 192, 256, 0, 2), (352, 192, 320, 160, 224, 128, 1),
        (352, 192, 320, 192, 224, 128, 1)]


def _closed_form_params(proj_4cd: int, separable: bool, num_classes: int = 1000) -> int:
    def cbr(cin, cout, k):  # conv without bias + BN γ, β
        return cin * cout * k * k + 2 * cout

    n = (3 * 8 * 49 + cbr(24, 64, 1)) if separable else cbr(3, 64, 7)
    n += cbr(64, 64, 1) + cbr(64, 192, 3)
    c = 192
    for c1, c3r, c3, d3r, d3, proj, _ in FIG5:
        proj = proj_4cd if proj is None else proj
        n += (cbr(c, c1, 1) if c1 else 0) + cbr(c, c3r, 1) + cbr(c3r, c3, 3)
        n += cbr(c, d3r, 1) + cbr(d3r, d3, 3) + cbr(d3, d3, 3) + (cbr(c, proj, 1) if proj else 0)
        c = c1 + c3 + d3 + (proj if proj else c)
    return n + c * num_classes + num_classes


@pytest.mark.parametrize("out_4cd,proj,separable,expected", [
    (576, 96, True, 11_188_288), (608, 128, True, 11_278_528),
    (576, 96, False, 11_194_984), (608, 128, False, 11_285_224)])
def test_parameter_counts(out_4cd, proj, separable, expected):
    model = create_model("bn_inception", out_4cd=out_4cd, separable_stem=separable)
    n = sum(p.numel() for p in model.parameters())
    assert n == _closed_form_params(proj, separable) == expected
    # the paper states 13.6M; Fig. 5's widths give ≈11.2M either way (TF-slim ≈11.19M, Caffe port ≈11.30M)
    assert abs(n - 11.19e6) < 0.1e6


@pytest.mark.parametrize("out_4cd", [576, 608])
def test_shapes_and_feature_info_at_224(out_4cd):
    model = create_model("bn_inception", num_classes=7, out_4cd=out_4cd).eval()
    with torch.no_grad():
        feats = model.forward_features(torch.rand(1, 3, 224, 224))
        logits = model.forward_head(feats[-1])
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 112, 112), (192, 56, 56), (320, 28, 28),
                                                   (out_4cd, 14, 14), (1024, 7, 7)]
    # the 608 variant's feature_info (the contract test builds the default 576 one)
    assert [i.channels for i in model.feature_info] == [64, 192, 320, out_4cd, 1024]
    assert logits.shape == (1, 7)
    # module widths of Fig. 5: 3c passes 320 through (576), 4e passes 4d's output through
    assert model.inception4[0].out_chans == 576
    assert model.inception5[0].out_chans == 192 + 256 + out_4cd
    assert model.conv1[0].groups == 3 and model.conv1[0].out_channels == 24  # depth multiplier 8


def test_options_and_errors():
    with pytest.raises(UserError, match="576"):
        create_model("bn_inception", out_4cd=600)
    with pytest.raises(UserError, match="bn_impl"):
        create_model("bn_inception", bn_impl="fast")
    model = create_model("bn_inception")
    assert model.normalization == ((0.5,) * 3, (0.5,) * 3)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())  # no dropout (Sec. 4.2.1)
    with pytest.raises(UserError, match="\\[0, 1\\]"):
        model(torch.rand(2, 3, 64, 64) * 255)


def test_reference_bn_matches_torch_bn_in_training():
    torch.manual_seed(0)
    fast = create_model("bn_inception", num_classes=5)
    ref = create_model("bn_inception", num_classes=5, bn_impl="paper")
    assert sum(isinstance(m, BatchNorm2d) for m in ref.modules()) == 69
    ref.load_state_dict(fast.state_dict())
    fast, ref = fast.double(), ref.double()  # float64: 69 stacked BNs on tiny maps amplify rounding
    x = torch.rand(2, 3, 48, 48, dtype=torch.float64)
    y1, y2 = fast(x), ref(x)
    torch.testing.assert_close(y1, y2, rtol=1e-8, atol=1e-8)
    g1 = torch.autograd.grad(y1.square().sum(), [fast.fc.weight, fast.conv1[0].weight])
    g2 = torch.autograd.grad(y2.square().sum(), [ref.fc.weight, ref.conv1[0].weight])
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


def test_fold_and_optimize_exact():
    torch.manual_seed(0)
    model = create_model("bn_inception", num_classes=10)
    with torch.no_grad():  # population statistics from a few batches, so BN is not the identity
        for _ in range(2):
            model(torch.rand(4, 3, 48, 48))
    model.eval()
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        ref = model(x)
        folded, report = fold_batchnorm(model, return_report=True)
        out = folded(x)
    assert report.num_folded == 69 and report.num_unfolded == 0
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
    # against float64, folding adds no more error than float32 arithmetic itself makes
    import copy

    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(x.double())
    err_eager = float((ref.double() - ref64).abs().max() / ref64.abs().max())
    err_folded = float((out.double() - ref64).abs().max() / ref64.abs().max())
    assert err_folded <= 2 * err_eager + 1e-7
    fast = optimize(model, precision="fp32")
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)
    assert [f.shape for f in fast.forward_features(x)] == [f.shape for f in model.forward_features(x)]
