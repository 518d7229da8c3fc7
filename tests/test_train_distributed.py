"""Two gloo processes (torchrun) follow the one-process Proxy-NCA run: proxies are synchronised by DDP."""

import math
import sys
from pathlib import Path

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
