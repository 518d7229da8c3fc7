"""CUDA paths, checked on a lent GPU machine: engine precisions, nccl DDP, and inference throughput.

Run: ``python benchmarks/gpu_check.py`` (needs CUDA; each section reports its own error and the
script goes on). Writes ``results/bench_gpu_check.json``. Never part of the test suite: the project
builds and passes its tests without a GPU.
"""

from __future__ import annotations

import os
import sys
import time
import traceback

import torch
from _common import ROOT, write_bench

sys.path.insert(0, str(ROOT / "tests"))


def engine_precisions() -> dict:
    """The one engine on CUDA in fp32, bf16 autocast and fp16 autocast with a GradScaler."""
    from vislearn.recipes import get_recipe
    from vislearn.train import Trainer, seed_everything

    out = {}
    for precision in ("fp32", "bf16", "fp16"):
        recipe = get_recipe("batchnorm")  # the BN paper's digits MLP (with BN)
        cfg = recipe.config("quick", {"steps": 600, "precision": precision, "device": "cuda", "log_every": 100})
        seed_everything(0)
        t0 = time.time()
        res = Trainer(cfg, recipe.build(cfg), None, progress=False).fit()
        out[precision] = {"top1": res.final_metrics["top1"], "wall_s": time.time() - t0}
    return out


def nccl_ddp() -> dict:
    """DistributedDataParallel over nccl (one process: a single-GPU machine cannot host two ranks)."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    dist.init_process_group("nccl", rank=0, world_size=1)
    try:
        m = torch.nn.Linear(256, 256).cuda()
        ddp = torch.nn.parallel.DistributedDataParallel(m, device_ids=[0])
        x = torch.randn(64, 256, device="cuda")
        ddp(x).square().mean().backward()
        t = torch.ones(4, device="cuda")
        dist.all_reduce(t)
        return {"backend": dist.get_backend(), "all_reduce": t.tolist(), "grad_norm": float(m.weight.grad.norm())}
    finally:
        dist.destroy_process_group()


def throughput(name: str, batch: int = 256, size: int = 299) -> dict:
    """Images/s: ours eager fp32, ours fast path (vislearn.inference.optimize), timm fp32 and bf16/cl."""
    import timm

    from vislearn.inference import optimize
    from vislearn.models import create_model

    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    ours = create_model(name, num_classes=1000).cuda().eval()
    x = torch.rand(batch, 3, size, size, device="cuda")
    fast = optimize(ours)
    peer = timm.create_model(name, pretrained=False).cuda().eval()

    def rate(fn, n=10):
        with torch.no_grad():
            for _ in range(3):
                fn()
            torch.cuda.synchronize()
            t0 = time.time()
            for _ in range(n):
                fn()
            torch.cuda.synchronize()
        return batch * n / (time.time() - t0)

    peer_cl = timm.create_model(name, pretrained=False).cuda().eval().to(memory_format=torch.channels_last)
    xcl = x.contiguous(memory_format=torch.channels_last)

    def peer_best():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return peer_cl(xcl)

    with torch.no_grad():
        ref = ours(x).argmax(1)
        agree = float((fast(x).argmax(1) == ref).float().mean())
    return {"ours_fp32": rate(lambda: ours(x)), "ours_fast": rate(lambda: fast(x)),
            "timm_fp32": rate(lambda: peer(x * 2 - 1)), "timm_bf16_cl": rate(peer_best), "top1_agreement": agree}


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return
    numbers: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                     "bf16_supported": torch.cuda.is_bf16_supported()}
    sections = {"engine": engine_precisions, "nccl_ddp": nccl_ddp,
                "inception_v3": lambda: throughput("inception_v3"),
                "inception_v4": lambda: throughput("inception_v4")}
    for key, fn in sections.items():
        t0 = time.time()
        try:
            numbers[key] = fn()
        except Exception as e:  # report and go on: one failing path must not hide the others
            numbers[key] = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-1500:]}
        print(key, f"{time.time() - t0:.1f}s", numbers[key], flush=True)
    v3 = numbers.get("inception_v3", {})
    summary = (f"{numbers['device']}: engine fp32/bf16/fp16 ran; nccl DDP "
               f"{'ok' if 'error' not in numbers['nccl_ddp'] else 'FAILED'}; inception_v3 ours fast "
               f"{v3.get('ours_fast', float('nan')):.0f} img/s vs timm bf16 {v3.get('timm_bf16_cl', float('nan')):.0f}")
    write_bench("gpu_check", summary, numbers)


if __name__ == "__main__":
    main()
