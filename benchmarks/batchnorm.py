"""Batch Normalization hot paths, ours vs torch, timed interleaved in one process.

(a) Training step of one BN layer (forward + backward, 32×64×28×28 float32): our reference
    :class:`vislearn.nn.BatchNorm2d` (the paper's Alg. 1 and backward equations in plain tensor ops)
    vs ``torch.nn.BatchNorm2d`` (fused kernel). Reported as a time ratio ours/torch.
(b) BN-Inception inference, batch 16 at 224×224, on this machine:
      eager fp32 NCHW  |  channels_last + bf16 autocast, BN unfolded  |  folded + channels_last + bf16
    (:func:`vislearn.inference.optimize`), in images/s, with the ratios and the top-1 agreement of
    the fast paths with fp32 on 256 random images. The issue's goal: folded ≥ 1.3× unfolded.

Run from the repository root: ``.venv/bin/python benchmarks/batchnorm.py``. On a GPU machine,
``python benchmarks/batchnorm.py --device cuda --json-out gpu.json`` measures the same on CUDA (TF32
off, so "fp32" is fp32; batches 16 and 128) and writes that JSON only; a later CPU run given
``--include gpu.json`` stores it under ``"cuda"`` in ``results/bench_batchnorm.json``.
"""

from __future__ import annotations

import argparse
import json

import _common  # noqa: F401  (puts src/ on the path)
import torch
import torch.nn as nn
from _common import add_common_args, apply_common_args, goal_row, interleaved, write_bench

from vislearn.inference import cpu_supports_bf16, optimize
from vislearn.models import create_model
from vislearn.nn import BatchNorm2d, recompute_population_statistics

CPU = torch.device("cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_layer(rounds: int = 15, device: torch.device = CPU) -> dict:
    torch.manual_seed(0)
    x = torch.randn(32, 64, 28, 28, device=device, requires_grad=True)
    g = torch.randn_like(x)
    ours, ref = BatchNorm2d(64).to(device), nn.BatchNorm2d(64).to(device)

    def step(layer):
        def run():
            y = layer(x)
            y.backward(g)
            x.grad = None
            layer.weight.grad = layer.bias.grad = None
            _sync(device)
        return run

    t = interleaved({"ours": step(ours), "torch": step(ref)}, warmup=3, rounds=rounds)
    return {"shape": list(x.shape), "ours_ms": t["ours"] * 1e3, "torch_ms": t["torch"] * 1e3,
            "ours_over_torch_time": t["ours"] / t["torch"]}


def bench_inference(batch: int = 16, size: int = 224, rounds: int = 7, agree_n: int = 256,
                    device: torch.device = CPU) -> dict:
    torch.manual_seed(0)
    model = create_model("bn_inception").to(device)
    # population statistics by the paper's estimator on random images, so BN is not the identity
    recompute_population_statistics(model, [torch.rand(16, 3, size, size) for _ in range(2)], num_batches=2)
    model.eval()
    paths = {
        "eager_fp32_nchw": optimize(model, fold=False, channels_last=False, precision="fp32"),
        "bf16_channels_last_unfolded": optimize(model, fold=False, channels_last=True, precision="bf16"),
        "bf16_channels_last_folded": optimize(model, fold=True, channels_last=True, precision="bf16"),
    }
    x = torch.rand(batch, 3, size, size, device=device)

    def timed(m):
        def run():
            m(x)
            _sync(device)
        return run

    t = interleaved({k: timed(m) for k, m in paths.items()}, warmup=2, rounds=rounds)
    out = {f"{k}_img_per_s": batch / v for k, v in t.items()}
    out["folded_over_unfolded"] = t["bf16_channels_last_unfolded"] / t["bf16_channels_last_folded"]
    out["folded_over_eager_fp32"] = t["eager_fp32_nchw"] / t["bf16_channels_last_folded"]
    out["unfolded_bf16_over_eager_fp32"] = t["eager_fp32_nchw"] / t["bf16_channels_last_unfolded"]
    # top-1 agreement with fp32 on random images, and the folded path's fp32 exactness
    gen = torch.Generator().manual_seed(1)
    agree = {k: 0 for k in paths if k != "eager_fp32_nchw"}
    folded_fp32 = optimize(model, fold=True, channels_last=False, precision="fp32")
    max_rel = 0.0
    for _ in range(agree_n // 32):
        xb = torch.rand(32, 3, size, size, generator=gen).to(device)
        ref = paths["eager_fp32_nchw"](xb)
        for k in agree:
            agree[k] += int((paths[k](xb).argmax(1) == ref.argmax(1)).sum())
        max_rel = max(max_rel, float((folded_fp32(xb) - ref).abs().max() / ref.abs().max()))
    n = agree_n // 32 * 32
    # float32 noise floor: eager fp32 and folded fp32 against float64 on 4 images
    import copy

    xb = torch.rand(4, 3, size, size, generator=gen).to(device)
    with torch.no_grad():
        ref64 = copy.deepcopy(model).double()(xb.double())
    for k, m in (("eager_fp32", paths["eager_fp32_nchw"]), ("folded_fp32", folded_fp32)):
        out[f"{k}_vs_fp64_max_rel"] = float((m(xb).double() - ref64).abs().max() / ref64.abs().max())
    out.update({f"{k}_top1_agreement": v / n for k, v in agree.items()})
    out["folded_fp32_max_rel_logit_diff"] = max_rel
    out["batch"], out["image_size"], out["agreement_images"] = batch, size, n
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json-out", default=None, help="CUDA mode: write the numbers here (not results/)")
    parser.add_argument("--include", default=None, help="a --json-out file to store under 'cuda'")
    add_common_args(parser)
    args = parser.parse_args(argv)
    apply_common_args(args)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False  # "fp32" means fp32 (TF32 would round to 10 mantissa bits)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = True
        numbers = {"device": torch.cuda.get_device_name(device), "torch": torch.__version__,
                   "bn_layer_fwd_bwd": bench_layer(rounds=50, device=device),
                   **{f"bn_inception_inference_b{b}": bench_inference(batch=b, rounds=30, device=device)
                      for b in (16, 128)}}
        text = json.dumps(numbers, indent=1)
        print(text)
        if args.json_out:
            with open(args.json_out, "w") as f:
                f.write(text)
        return
    if args.quick:
        layer, inf = bench_layer(rounds=2), bench_inference(batch=2, size=75, rounds=1, agree_n=32)
    else:
        layer, inf = bench_layer(), bench_inference()
    numbers = {"bn_layer_fwd_bwd": layer, "bn_inception_inference": inf,
               "cpu_native_bf16": cpu_supports_bf16(), "threads": torch.get_num_threads()}
    if args.include:
        with open(args.include) as f:
            numbers["cuda"] = json.load(f)
    summary = (f"BN layer fwd+bwd ours/torch time {layer['ours_over_torch_time']:.2f}x; BN-Inception b16@224 "
               f"img/s fp32 {inf['eager_fp32_nchw_img_per_s']:.1f}, bf16+CL unfolded "
               f"{inf['bf16_channels_last_unfolded_img_per_s']:.1f}, "
               f"folded {inf['bf16_channels_last_folded_img_per_s']:.1f} "
               f"(folded/unfolded {inf['folded_over_unfolded']:.2f}x, goal 1.3x; /fp32 "
               f"{inf['folded_over_eager_fp32']:.2f}x); top-1 agreement folded bf16 vs fp32 "
               f"{inf['bf16_channels_last_folded_top1_agreement']:.3f}")
    rows = [goal_row("BN-Inception inference, folded vs unfolded (bf16 channels_last, b16@224)",
                     "the same model with BN layers", inf["folded_over_unfolded"], ">= 1.3x",
                     inf["folded_over_unfolded"] >= 1.3),
            goal_row("BN layer forward+backward (ours, the paper's Alg. 1 explicitly)", "torch.nn.BatchNorm2d",
                     1 / layer["ours_over_torch_time"], "reported (ours is a reference implementation)", None)]
    write_bench("batchnorm", summary, numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()
