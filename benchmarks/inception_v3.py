"""Inception inference and training throughput: vislearn vs timm, same weights, same inputs, one process.

For each model name (default ``inception_v3``; any name that both vislearn's registry and timm know,
e.g. ``inception_v4``, ``inception_resnet_v2``, and whose timm state dict our converter loads):

* inference, batch ``--batch`` (16) at 299 px, timed interleaved (``_common.interleaved``):
  ``timm`` (fp32, NCHW, on pre-normalised input), ``timm_best`` (channels_last + bf16 autocast),
  ``ours`` (fp32 as built: validation + normalisation inside ``forward``), ``ours_fast``
  (``vislearn.inference.optimize``: BN folded, channels_last, bf16 where the CPU has native bf16);
* agreement: top-1 of ``ours_fast`` vs ours in fp32 on ``--agree`` (256) random inputs, plus the
  number of distinct predicted classes (a vacuous comparison would predict one class for all);
* training step (forward, backward, SGD step; aux head on where the model has one), batch
  ``--train-batch`` at 299 px, ours vs timm, both fp32 NCHW and both channels_last + bf16 autocast.

The weights are timm's random initialisation with BN statistics calibrated on one batch (so logits
depend on the input), loaded into ours through the registered converter.

    .venv/bin/python benchmarks/inception_v3.py [--models inception_v3] [--threads 1] [--name NAME]

writes ``results/bench_inception_v3.json`` (or ``bench_NAME.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile

import torch
import torch.nn as nn
from _common import interleaved, write_bench


def calibrate_bn(model: nn.Module, x: torch.Tensor) -> None:
    """Set every BN's running statistics to those of one batch (a train-mode pass with momentum 1)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(x)
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


def _logits(out):
    return out[0] if isinstance(out, (tuple, list)) else out


def bench_model(name: str, batch: int, size: int, rounds: int, agree_n: int, train_batch: int,
                device: str = "cpu") -> dict:
    import timm

    from vislearn.inference import optimize
    from vislearn.models import create_model

    dev = torch.device(device)
    torch.manual_seed(0)
    peer = timm.create_model(name, pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    calibrate_bn(peer, torch.rand(8, 3, size, size, generator=g) * 2 - 1)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "timm.pth")
        torch.save(peer.state_dict(), path)
        try:
            ours = create_model(name, weights=path).eval()
        except ValueError:  # our default has the aux head; timm's default checkpoint has none
            ours = create_model(name, weights=path, aux_logits=False).eval()
    mean = torch.tensor(ours.normalization[0]).view(1, 3, 1, 1)
    std = torch.tensor(ours.normalization[1]).view(1, 3, 1, 1)
    ours, peer = ours.to(dev), peer.to(dev)
    fast = optimize(ours)
    best = timm.create_model(name, pretrained=False).eval()
    best.load_state_dict(peer.state_dict())
    best = best.to(dev, memory_format=torch.channels_last)
    bf16 = fast.dtype == torch.bfloat16

    def sync(out):
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return out

    x = torch.rand(batch, 3, size, size, generator=g).to(dev)
    xn = ((x - mean.to(dev)) / std.to(dev))
    xn_cl = xn.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        max_diff = float((ours(x) - _logits(peer(xn))).abs().max())

    def timm_default():
        with torch.no_grad():
            return sync(_logits(peer(xn)))

    def timm_best():
        ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            return sync(_logits(best(xn_cl)).float())

    def ours_default():
        with torch.no_grad():
            return sync(ours(x))

    def ours_fast():
        return sync(fast(x))

    t = interleaved({"timm": timm_default, "timm_best": timm_best, "ours": ours_default, "ours_fast": ours_fast},
                    warmup=1, rounds=rounds)
    ips = {k: batch / v for k, v in t.items()}

    # top-1 agreement of the fast path with fp32 on random inputs
    agree, classes, n, margins, flip_margins = 0, set(), 0, [], []
    with torch.no_grad():
        for i in range(0, agree_n, batch):
            xi = torch.rand(min(batch, agree_n - i), 3, size, size, generator=g).to(dev)
            z = ours(xi)
            top2 = z.topk(2, 1).values
            margin = (top2[:, 0] - top2[:, 1]) / z.abs().amax(1)  # top-1 lead relative to the logit scale
            ref, got = z.argmax(1), fast(xi).argmax(1)
            agree += int((ref == got).sum())
            classes.update(ref.tolist())
            margins += margin.tolist()
            flip_margins += margin[ref != got].tolist()
            n += xi.shape[0]

    # training step, ours vs timm, same weights, same batch
    def train_fn(model, inp, y, cl: bool, amp: bool):
        m = model.to(memory_format=torch.channels_last) if cl else model
        m.train()
        opt = torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
        xin = inp.contiguous(memory_format=torch.channels_last) if cl else inp

        def step():
            ctx = torch.autocast(dev.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
            with ctx:
                out = m(xin)
                if isinstance(out, (tuple, list)):
                    loss = nn.functional.cross_entropy(out[0].float(), y) + 0.4 * nn.functional.cross_entropy(
                        out[1].float(), y)
                else:
                    loss = nn.functional.cross_entropy(out.float(), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return sync(loss)
        return step

    xt = torch.rand(train_batch, 3, size, size, generator=g).to(dev)
    yt = torch.randint(0, 1000, (train_batch,), generator=g).to(dev)
    xtn = (xt - mean.to(dev)) / std.to(dev)
    aux_ok = hasattr(ours, "AuxLogits")
    t_ours = create_model(name, weights=None, **({"aux_logits": True} if aux_ok else {})).to(dev)
    t_timm = timm.create_model(name, pretrained=False, **({"aux_logits": True} if aux_ok else {})).to(dev)
    t_timm.load_state_dict(t_ours.state_dict())
    t_ours_cl = create_model(name, **({"aux_logits": True} if aux_ok else {})).to(dev)
    t_ours_cl.load_state_dict(t_ours.state_dict())
    t_timm_cl = timm.create_model(name, pretrained=False, **({"aux_logits": True} if aux_ok else {})).to(dev)
    t_timm_cl.load_state_dict(t_ours.state_dict())
    tt = interleaved({"ours_fp32": train_fn(t_ours, xt, yt, False, False),
                      "timm_fp32": train_fn(t_timm, xtn, yt, False, False),
                      "ours_bf16_cl": train_fn(t_ours_cl, xt, yt, True, bf16),
                      "timm_bf16_cl": train_fn(t_timm_cl, xtn, yt, True, bf16)}, warmup=1, rounds=max(3, rounds))
    train_ips = {k: train_batch / v for k, v in tt.items()}
    return {
        "images_per_s": ips,
        "fast_vs_timm_best": ips["ours_fast"] / ips["timm_best"],
        "fast_vs_timm": ips["ours_fast"] / ips["timm"],
        "ours_vs_timm": ips["ours"] / ips["timm"],
        "max_abs_logit_diff_ours_vs_timm_fp32": max_diff,
        "top1_agreement_fast_vs_fp32": agree / n, "agreement_inputs": n, "distinct_top1_classes": len(classes),
        "median_relative_top1_margin_fp32": float(torch.tensor(margins).median()),
        "max_relative_top1_margin_of_flips": max(flip_margins, default=0.0),
        "train_images_per_s": train_ips,
        "train_ours_vs_timm_fp32": train_ips["ours_fp32"] / train_ips["timm_fp32"],
        "train_ours_vs_timm_bf16_cl": train_ips["ours_bf16_cl"] / train_ips["timm_bf16_cl"],
        "fast_precision": str(fast.dtype), "batch": batch, "train_batch": train_batch, "size": size,
        "rounds": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["inception_v3"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=299)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--agree", type=int, default=256)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--name", default="inception_v3", help="writes results/bench_NAME.json")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    numbers = {m: bench_model(m, args.batch, args.size, args.rounds, args.agree, args.train_batch, args.device)
               for m in args.models}
    numbers["threads"] = torch.get_num_threads()
    numbers["goals"] = {"fast_vs_timm_best": ">= 1.4", "top1_agreement_fast_vs_fp32": ">= 0.99",
                        "train_ours_vs_timm": ">= 1.0"}
    parts = []
    for m in args.models:
        r = numbers[m]
        ips = r["images_per_s"]
        parts.append(
            f"{m} bs{args.batch}@{args.size} ({args.device}, {numbers['threads']} thr): timm {ips['timm']:.1f}, "
            f"timm best {ips['timm_best']:.1f}, ours {ips['ours']:.1f}, ours fast {ips['ours_fast']:.1f} img/s; "
            f"fast/timm_best {r['fast_vs_timm_best']:.2f}x, top-1 agreement {r['top1_agreement_fast_vs_fp32']:.3f} "
            f"({r['distinct_top1_classes']} classes); train ours/timm {r['train_ours_vs_timm_fp32']:.2f}x fp32, "
            f"{r['train_ours_vs_timm_bf16_cl']:.2f}x bf16+cl")
    write_bench(args.name, " | ".join(parts), numbers)


if __name__ == "__main__":
    main()
