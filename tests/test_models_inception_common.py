"""pool_then_project: pooling after the 1×1 projection is the same function as before it (both pooling
styles, with and without the folded bias, forward and gradients), and the order is kept where it is not."""

import pytest
import torch
import torch.nn as nn

from vislearn.models.inception_common import PoolProjection, avg_pool_3x3, pool_then_project
from vislearn.nn import ConvBNAct, fold_batchnorm


def _proj(cin: int, cout: int, seed: int = 0) -> ConvBNAct:
    torch.manual_seed(seed)
    p = ConvBNAct(cin, cout, 1)
    with torch.no_grad():
        p.bn.running_mean.uniform_(-0.3, 0.3)
        p.bn.running_var.uniform_(0.5, 2.0)
        p.bn.weight.uniform_(0.5, 1.5)
        p.bn.bias.uniform_(-0.2, 0.2)
    return p


@pytest.mark.parametrize("tf_style", [False, True])
def test_same_function_as_pool_first_in_training_with_gradients(tf_style):
    pool, proj = avg_pool_3x3(tf_style), _proj(12, 4)
    x = torch.randn(2, 12, 7, 9, requires_grad=True)
    ref = proj(pool(x))  # train mode: batch statistics, as in a training step
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    out = pool_then_project(pool, proj, x)
    (g,) = torch.autograd.grad(out.square().sum(), x)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-5)


def test_folded_bias_commutes_with_tf_pooling_only():
    x = torch.randn(2, 12, 6, 6)
    for tf_style in (True, False):
        block = PoolProjection(avg_pool_3x3(tf_style), _proj(12, 4)).eval()
        ref = block[1](block[0](x))
        fold_batchnorm(block, inplace=True)  # the conv now has a bias
        assert block[1].conv.bias is not None
        torch.testing.assert_close(block(x), ref, rtol=1e-5, atol=1e-5)
        # padding-counting pool: pool(conv(x)) + b would differ at the borders, so the order is kept
        if not tf_style:
            assert torch.equal(block(x), block[1](block[0](x)))


def test_order_kept_when_not_narrowing():
    pool, proj = avg_pool_3x3(True), _proj(4, 8).eval()
    x = torch.randn(1, 4, 5, 5)
    assert torch.equal(pool_then_project(pool, proj, x), proj(pool(x)))
    assert isinstance(PoolProjection(pool, proj), nn.Sequential)
    assert set(PoolProjection(pool, proj).state_dict()) == {f"1.{k}" for k in proj.state_dict()}
