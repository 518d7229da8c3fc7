"""fuse_conv_act: packed oneDNN convolutions with fused ReLU / residual sum give the unfused model's
outputs (fp32: 1e-5 relative; bf16: bf16 rounding), on any input size, and refuse misuse."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.inference import optimize
from vislearn.models import create_model
from vislearn.models.inception_v4_blocks import ResidualB
from vislearn.nn import ConvBNAct, fold_batchnorm, is_batchnorm
from vislearn.nn.fuse import FusedConv2d, can_fuse, fuse_conv_act


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if is_batchnorm(m):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float(), b.detach().float()
    return float((a - b).abs().max() / b.abs().max())


def test_oneDNN_is_there():
    assert can_fuse()  # the CPU wheel the project pins ships oneDNN; the fast path depends on it


def test_fused_conv_matches_conv_relu_fp32_and_other_sizes():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, (1, 7), stride=1, padding=(0, 3), bias=True)
    x = torch.randn(2, 8, 11, 13).contiguous(memory_format=torch.channels_last)
    for relu in (True, False):
        f = FusedConv2d(conv, relu=relu, dtype=torch.float32)
        ref = F.conv2d(x, conv.weight, conv.bias, padding=(0, 3))
        ref = F.relu(ref) if relu else ref
        assert _rel(f(x), ref) < 1e-5
        x2 = torch.randn(1, 8, 5, 9)  # another size and plain NCHW after packing for the first
        ref2 = F.conv2d(x2, conv.weight, conv.bias, padding=(0, 3))
        assert _rel(f(x2), F.relu(ref2) if relu else ref2) < 1e-5


def test_residual_fusion_folds_the_scale_fp32():
    torch.manual_seed(1)
    block = _randomize_bn(ResidualB(24, 8, (6, 7, 8), scale=0.1))
    x = torch.randn(2, 24, 9, 9)
    ref = block(x)
    fold_batchnorm(block, inplace=True)
    n = fuse_conv_act(block, dtype=torch.float32)
    assert n == 5 and isinstance(block.up, FusedConv2d) and block.up.residual and block.up.relu
    assert block.up.scale == pytest.approx(0.1)
    assert _rel(block(x), ref) < 1e-5
    assert float(block(x).min()) >= 0  # the ReLU after the sum is there


def test_inception_resnet_v2_bf16_matches_the_autocast_fast_path():
    torch.manual_seed(0)
    model = _randomize_bn(create_model("inception_resnet_v2", width=0.25, depths=(1, 1, 1), num_classes=10))
    x = torch.rand(2, 3, 75, 75)
    fast = optimize(model, precision="bf16", fuse=False)
    ref_fp32, ref_bf16 = model(x), fast(x)
    n = fuse_conv_act(fast.model, dtype=fast.dtype, example_input=x)
    convs = [m for m in fast.model.modules() if type(m) is nn.Conv2d]
    fused = [m for m in fast.model.modules() if isinstance(m, FusedConv2d)]
    assert n == len(fused) == len(convs) and n > 30  # every convolution, incl. each block's 1×1 `up` and final one
    # one A, one B, one C block and the released layout's final Block8 (no ReLU after its sum)
    assert sum(f.residual for f in fused) == 4 and sum(not f.relu for f in fused if f.residual) == 1
    out = fast(x)
    assert out.dtype == torch.float32
    # the same bf16 convolutions as autocast: as close to fp32 as the autocast path is
    assert _rel(out, ref_bf16) < 0.03 and _rel(out, ref_fp32) < 2 * _rel(ref_bf16, ref_fp32) + 0.01
    assert fast(torch.rand(1, 3, 91, 80)).shape == (1, 10)


def test_refuses_misuse():
    block = ConvBNAct(3, 4, 3)
    with pytest.raises(UserError, match="eval mode"):
        fuse_conv_act(block)
    with pytest.raises(UserError, match="float32 or bfloat16"):
        FusedConv2d(nn.Conv2d(3, 4, 1), relu=False, dtype=torch.float16)
    with pytest.raises(UserError, match="zero-padded"):
        FusedConv2d(nn.Conv2d(3, 4, 3, padding="same"), relu=False)
    f = FusedConv2d(nn.Conv2d(3, 4, 1), relu=False, residual=True)
    with pytest.raises(UserError, match="residual"):
        f(torch.randn(1, 3, 4, 4))
    with pytest.raises(UserError, match="inference only"):
        f.train()
    unfolded = fuse_conv_act(ConvBNAct(3, 4, 3).eval())
    assert unfolded == 0  # a BN still in place is not fused over


def test_inception_v4_pool_branch_keeps_its_relu_after_the_pool():
    from vislearn.models.inception_common import PoolProjection

    torch.manual_seed(0)
    model = _randomize_bn(create_model("inception_v4", width=0.25, depths=(1, 1, 1), num_classes=10))
    x = torch.rand(2, 3, 75, 75)
    fast = optimize(model, precision="fp32", fuse=False)
    ref = fast(x)
    fuse_conv_act(fast.model, dtype=None)
    pools = [m for m in fast.model.modules() if isinstance(m, PoolProjection)]
    assert len(pools) == 3  # one per A, B, C block
    for p in pools:  # conv fused without ReLU (the pool runs between them), the ReLU kept as a module
        assert isinstance(p[1].conv, FusedConv2d) and not p[1].conv.relu and isinstance(p[1].act, nn.ReLU)
    assert _rel(fast(x), ref) < 1e-5  # fp32: the same function, reassociated
