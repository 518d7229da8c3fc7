"""Two gloo processes (torchrun) follow the one-process Proxy-NCA run: proxies are synchronised by DDP;
``sync_batch_norm`` (the engine's ``sync_bn``) converts, falls back and refuses."""

import copy
import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _ddp import final_state, loss_curve, train_one_and_two  # noqa: E402


def test_two_process_proxy_nca_matches_one_process(tmp_path):
    # BN-free backbone (no per-replica batch statistics), uniform sampling, global batch 16 = 2 × 8; SGD
    # (RMSProp would amplify float summation-order differences of near-zero gradients into weight differences)
    args = ["proxy_nca", "--set", "optimizer=sgd",
            "--set", "steps=5", "--set", "log_every=1", "--set", "batch_size=16", "--set", "lr=0.1",
            "--set", "backbone_batch_norm=false", "--set", "num_classes=10", "--set", "shapes_per_class=6",
            "--set", "image_size=16", "--set", "eval_every=0", "--set", "eval_nmi=false",
            "--set", "proxy_lr_mult=10", "--set", "embedding_dim=8"]
    one, two = train_one_and_two(args, tmp_path)
    c1, c2 = loss_curve(one), loss_curve(two)
    assert [s for s, _ in c1] == [s for s, _ in c2] == [1, 2, 3, 4, 5]
    assert c1[0][1] != c1[-1][1]  # it trains
    for (_, l1), (_, l2) in zip(c1, c2, strict=True):
        assert math.isclose(l1, l2, rel_tol=1e-5), (c1, c2)
    # the final training-module state (embedding net AND proxies) is the same
    w1, w2 = final_state(one), final_state(two)
    assert "loss.proxies" in w1 and w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------- sync_bn
# torch's SyncBatchNorm synchronises GPU tensors only: under a 2-process gloo group its training
# forward raises on CPU (checked with torch 2.14), so the global-batch statistics cannot be run here.
# What CPU can check: the conversion (every BN, its state kept), the fallbacks (one process: the module
# unchanged; no process group / eval: torch's own BN numbers) and the refusal of CPU multi-process runs.
def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.BatchNorm1d(5, momentum=0.3)))
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
        for _ in range(3):
            net(torch.randn(6, 3, 4, 4))
    return net


def test_sync_batch_norm_converts_every_bn_with_its_state():
    from vislearn.train.distributed import DistInfo, sync_batch_norm

    net = _bn_net()
    before = copy.deepcopy(net)
    conv = sync_batch_norm(net, DistInfo(rank=0, world_size=2), torch.device("cuda"))  # no GPU needed to convert
    bn_names = ["1", "3.2"]
    kinds = {name: type(m) for name, m in conv.named_modules() if name in bn_names}
    assert kinds == {"1": torch.nn.SyncBatchNorm, "3.2": torch.nn.SyncBatchNorm}
    assert conv.get_submodule("3.2").momentum == 0.3
    ref_state, state = before.state_dict(), conv.state_dict()
    assert ref_state.keys() == state.keys()
    for k in ref_state:
        assert torch.equal(state[k], ref_state[k]), k
    x = torch.randn(8, 3, 4, 4)
    # without a process group SyncBatchNorm falls back to torch's BN: batch statistics in training
    # (and the same running-statistics update), running statistics in eval
    torch.testing.assert_close(conv(x), before(x), rtol=0, atol=0)
    for k in ref_state:
        torch.testing.assert_close(conv.state_dict()[k], before.state_dict()[k], rtol=0, atol=0, msg=k)
    conv.eval(), before.eval()
    torch.testing.assert_close(conv(x), before(x), rtol=0, atol=0)


def test_sync_batch_norm_on_one_process_returns_the_module_unchanged():
    from vislearn.train.distributed import DistInfo, sync_batch_norm

    net = _bn_net()
    assert sync_batch_norm(net, DistInfo(), torch.device("cuda")) is net
    assert [type(m) for m in net.modules() if "BatchNorm" in type(m).__name__] == \
        [torch.nn.BatchNorm2d, torch.nn.BatchNorm1d]


def test_sync_batch_norm_refuses_several_cpu_processes():
    from vislearn.errors import UserError
    from vislearn.train.distributed import DistInfo, sync_batch_norm

    with pytest.raises(UserError, match="sync_bn needs CUDA.*2-process run is on cpu; set sync_bn=false"):
        sync_batch_norm(_bn_net(), DistInfo(rank=1, world_size=2), torch.device("cpu"))
