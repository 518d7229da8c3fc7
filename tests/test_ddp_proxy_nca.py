"""Two gloo processes (torchrun) follow the one-process Proxy-NCA run: proxies are synchronised by DDP."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from vislearn.train.checkpoint import latest_checkpoint


def test_two_process_proxy_nca_matches_one_process(tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    # BN-free backbone (no per-replica batch statistics), uniform sampling, global batch 16 = 2 × 8; SGD
    # (RMSProp would amplify float summation-order differences of near-zero gradients into weight differences)
    common = ["-m", "vislearn.cli", "train", "proxy_nca", "--set", "optimizer=sgd",
              "--set", "steps=5", "--set", "log_every=1", "--set", "batch_size=16", "--set", "lr=0.1",
              "--set", "backbone_batch_norm=false", "--set", "num_classes=10", "--set", "shapes_per_class=6",
              "--set", "image_size=16", "--set", "eval_every=0", "--set", "eval_nmi=false",
              "--set", "proxy_lr_mult=10", "--set", "embedding_dim=8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", *common, "--out", str(tmp_path / "two")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]

    def curve(d):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in rows if r["split"] == "train"]

    c1, c2 = curve(tmp_path / "one"), curve(tmp_path / "two")
    assert [s for s, _ in c1] == [s for s, _ in c2] == [1, 2, 3, 4, 5]
    assert c1[0][1] != c1[-1][1]  # it trains
    for (_, l1), (_, l2) in zip(c1, c2, strict=True):
        assert math.isclose(l1, l2, rel_tol=1e-5), (c1, c2)
    # the final training-module state (embedding net AND proxies) is the same
    w1 = load_file(latest_checkpoint(tmp_path / "one") / "model.safetensors")
    w2 = load_file(latest_checkpoint(tmp_path / "two") / "model.safetensors")
    assert "loss.proxies" in w1 and w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-5, atol=1e-6)
