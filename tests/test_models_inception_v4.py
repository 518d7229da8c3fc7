"""Inception-v4 / Inception-ResNet: exact equivalence with timm on random weights, counts, blocks, errors."""

from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models import create_model
from vislearn.models.base import IMAGENET_MEAN, IMAGENET_STD
from vislearn.models.convert import load_weights
from vislearn.models.inception_v4_blocks import InceptionA, ResidualA, ResidualB, ResidualC

PARAMS = {"inception_v4": 42_679_816, "inception_resnet_v2": 55_843_464}  # PAPERS.md §3 (1000 classes)


def _randomize(model: nn.Module, g: torch.Generator) -> None:
    """He-normal convs (so the input still matters after ~100 layers), random BN statistics/affines,
    conv biases and a classifier giving O(1) logits."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
            elif isinstance(m, nn.Conv2d):
                m.weight.normal_(0, math.sqrt(2 / m.weight[0].numel()), generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1, generator=g)
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0, 1 / math.sqrt(m.in_features), generator=g)


def _macs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc, torch.no_grad():
        out = model(x)
    return out, fc.get_total_flops() / 2


@pytest.fixture(scope="module", params=["inception_v4", "inception_resnet_v2"])
def pair(request, tmp_path_factory):
    """(name, timm model, ours loaded from timm's state dict file through the converter), eval mode."""
    name = request.param
    g = torch.Generator().manual_seed(0)
    peer = timm.create_model(name, pretrained=False).eval()
    _randomize(peer, g)
    path = tmp_path_factory.mktemp(name) / "timm.pth"
    torch.save(peer.state_dict(), path)
    ours = create_model(name, weights=str(path)).eval()
    return name, peer, ours, path


def test_parameter_counts(pair):
    name, peer, ours, _ = pair
    n_ours = sum(p.numel() for p in ours.parameters())
    assert n_ours == sum(p.numel() for p in peer.parameters()) == PARAMS[name]


def test_logits_match_timm_at_299(pair):
    name, peer, ours, _ = pair
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(1))
    ref, macs_peer = _macs(peer, (x - 0.5) / 0.5)  # timm expects IMAGENET_INCEPTION mean/std inputs
    out, macs_ours = _macs(ours, x)  # ours takes [0, 1] and normalises itself
    assert ref.std() > 0.3  # non-degenerate logits
    assert (out - ref).abs().max().item() <= 1e-4
    assert macs_ours == macs_peer  # conv + linear multiply-adds, same graph
    assert macs_ours / 1e9 == pytest.approx({"inception_v4": 12.254, "inception_resnet_v2": 13.156}[name],
                                           abs=2e-3)


def test_features_and_logits_match_timm_at_smallest_size(pair):
    name, peer, ours, _ = pair
    x = torch.rand(2, 3, 75, 75, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_last, ref_feats = peer.forward_intermediates((x - 0.5) / 0.5)
        feats = ours.forward_features(x)
        out, ref = ours(x), peer((x - 0.5) / 0.5)
    assert [f.shape[1] for f in feats] == [i.channels for i in ours.feature_info] == \
        [i["num_chs"] for i in peer.feature_info]
    for a, b in zip(feats, ref_feats, strict=True):
        assert a.shape == b.shape and (a - b).abs().max().item() <= 1e-4
    assert (out - ref).abs().max().item() <= 1e-4
    assert (out[0] - out[1]).abs().max() > 1e-3  # the two images give different logits


def test_converter_sets_timm_normalization(pair):
    name, _, ours, path = pair
    ours.normalization = (IMAGENET_MEAN, IMAGENET_STD)
    try:
        load_weights(ours, path, model_name=name)  # recognised by keys, converted, normalisation set
        assert ours.normalization == ((0.5,) * 3, (0.5,) * 3)  # timm's IMAGENET_INCEPTION_MEAN/STD
    finally:
        ours.normalization = ((0.5,) * 3, (0.5,) * 3)


def test_tf_average_pool_excludes_padding():
    # A constant map through InceptionA's pool branch: TF SAME pooling keeps the constant at the
    # border (padding excluded); count_include_pad=True would give 4/9 of it in the corners.
    blk = InceptionA(4, lambda c: 2)
    pool = blk.branch3[0]
    y = pool(torch.full((1, 4, 5, 5), 3.0))
    assert torch.equal(y, torch.full_like(y, 3.0))


def test_residual_block_is_scaled_linear_expansion_without_bn():
    torch.manual_seed(0)
    blk = ResidualA(8, 2, (2, 3), (2, 3, 4), scale=0.25).eval()
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        branches = torch.cat([blk.branch0(x), blk.branch1(x), blk.branch2(x)], 1)
        up = nn.functional.conv2d(branches, blk.up.weight, blk.up.bias)  # linear: no BN, no activation
        expected = torch.relu(x + 0.25 * up)
        assert torch.allclose(blk(x), expected, atol=1e-6)
    assert blk.up.bias is not None and not any(isinstance(m, nn.BatchNorm2d) for m in [blk.up, blk.act])
    last = ResidualC(8, 2, (2, 2, 3), scale=1.0, activate=False).eval()
    with torch.no_grad():
        assert (last(-torch.ones(1, 8, 3, 3) * 10) < 0).any()  # no ReLU after the final sum


def test_scales_are_constructor_arguments():
    m = create_model("inception_resnet_v2", width=0.05, scale_a=0.3, scale_b=0.2, scale_c=0.1, num_classes=3)
    s2, s3, s4 = m.stages[2], m.stages[3], m.stages[4]
    assert {b.scale for n, b in s2.named_children() if n.startswith("block")} == {0.3}
    assert {b.scale for n, b in s3.named_children() if n.startswith("block")} == {0.2}
    assert {b.scale for n, b in s4.named_children() if n.startswith("block") and n != "block_final"} == {0.1}
    assert s4.block_final.scale == 1.0 and isinstance(s4.block_final.act, nn.Identity)
    default = create_model("inception_resnet_v2", width=0.05)
    assert [default.stages[i].block0.scale for i in (2, 3, 4)] == [0.17, 0.10, 0.20]


LAYOUTS = {
    "inception_resnet_v1": ([64, 192, 256, 896, 1792], (5, 10, 5), False),  # Fig. 14/15, Table 1
    "inception_resnet_v2_paper": ([64, 160, 384, 1152, 2144], (5, 10, 5), False),  # resolved 1152/2144
    "inception_resnet_v2": ([64, 192, 320, 1088, 1536], (10, 20, 9), True),  # TF-slim release
    "inception_v4": ([64, 160, 384, 1024, 1536], (4, 7, 3), False),  # Figs. 3-9
}


def _check_layout(m: nn.Module, name: str) -> None:
    channels, blocks, final = LAYOUTS[name]
    assert [i.channels for i in m.feature_info] == channels
    assert [i.stride for i in m.feature_info] == [2, 4, 8, 16, 32]
    counts = tuple(sum(k.startswith("block") and k != "block_final" for k, _ in m.stages[i].named_children())
                   for i in (2, 3, 4))
    assert counts == blocks
    assert hasattr(m.stages[4], "block_final") == final
    # every residual expansion returns to its input width (the figures' 1154/2048 would not)
    for blk in m.modules():
        if isinstance(blk, (ResidualA, ResidualB, ResidualC)):
            assert blk.up.out_channels == blk.out_chans


def test_released_layouts(pair):
    _check_layout(pair[2], pair[0])


@pytest.mark.parametrize("name", ["inception_resnet_v1", "inception_resnet_v2_paper"])
def test_paper_layouts(name):
    _check_layout(create_model(name), name)


def test_width_multiplier_small_variant_runs():
    for name in ("inception_v4", "inception_resnet_v1", "inception_resnet_v2", "inception_resnet_v2_paper"):
        m = create_model(name, width=0.1, num_classes=7).eval()
        assert sum(p.numel() for p in m.parameters()) < 600_000
        with torch.no_grad():
            out = m(torch.rand(2, 3, 75, 75))
        assert out.shape == (2, 7) and torch.isfinite(out).all()
        half = create_model(name, width=0.5)
        assert half.feature_info[-1].channels in (768, 896, 1072)


def test_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="width"):
        create_model("inception_v4", width=0)
    with pytest.raises(UserError, match="scale"):
        create_model("inception_resnet_v1", width=0.05, scale_a=-1.0)
    with pytest.raises(UserError, match="depths"):
        create_model("inception_v4", width=0.05, depths=(1, 2))
    m = create_model("inception_resnet_v1", width=0.05)
    with pytest.raises(UserError, match="at least 75"):
        m(torch.rand(1, 3, 74, 74))
    with pytest.raises(UserError, match="does not fit"):
        peer = timm.create_model("inception_v4", pretrained=False)
        from vislearn.io import load_state_dict_checked
        from vislearn.models.convert import _CONVERTERS

        conv = next(c for c in _CONVERTERS.values() if c.model_prefix == "inception_v4")
        small = create_model("inception_v4", width=0.5)
        load_state_dict_checked(small, conv.convert(peer.state_dict(), small))


def test_ported_checkpoint_without_batch_counters_loads(pair, tmp_path):
    name, peer, ours, _ = pair
    sd = {k: v for k, v in peer.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "ported.pth"
    torch.save(sd, path)
    load_weights(ours, path, model_name=name)
    assert torch.equal(ours.fc.weight, sd["last_linear.weight" if name == "inception_v4" else "classif.weight"])
