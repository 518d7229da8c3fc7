"""SWYCC decoding and training cost: decode time vs sampling steps, fp32 vs bf16 + channels_last, against
diffusers' ``AutoencoderKL`` decoding the same latent shape, and a training step of each recipe arm.

* decode: ``model.decode(z, steps=S)`` for S in ``--steps`` (1 2 4 8 32) with DDIM, batch ``--batch`` (16)
  of 4×(H/8)×(W/8) latents of ``--size`` (32) px images, the ``swycc`` recipe's quick architecture with
  random weights; fp32 NCHW and bf16 autocast + channels_last, timed interleaved (``_common.interleaved``).
  The peer: ``diffusers.AutoencoderKL`` with an f8 decoder of comparable width (block channels
  32, 32, 64, 64; one ResNet block per level; 4 latent channels), random weights, same latent shape,
  same two precisions. A SWYCC decode of S steps costs one D_initial pass plus S D_refine passes;
  the ratio column is ``ours / AutoencoderKL`` seconds per image (higher = slower).
* training: seconds per optimizer step (forward, backward, Adam) of ``recipes.build("swycc", "quick",
  objective=...)`` for swycc, mse and gan at the recipe's quick settings (batch 16, 32 px, perceptual
  taps relu1_2 + relu2_2 on a random VGG-16), fp32.

    .venv/bin/python benchmarks/swycc.py [--rounds 3] [--threads 0]

writes ``results/bench_swycc.json``.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
from _common import add_common_args, apply_common_args, goal_row, interleaved, write_bench


def _autocast(on: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if on else contextlib.nullcontext()


def bench_decode(size: int, batch: int, steps: list[int], rounds: int) -> dict:
    from diffusers import AutoencoderKL

    from vislearn.recipes import build

    cfg, task = build("swycc", "quick", {"objective": "swycc", "image_size": size})
    ours = task.model.eval()
    ours_cl = build("swycc", "quick", {"objective": "swycc", "image_size": size})[1].model.eval()
    ours_cl.load_state_dict(ours.state_dict())
    ours_cl = ours_cl.to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    peer = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         block_out_channels=(32, 32, 64, 64), layers_per_block=1, norm_num_groups=8,
                         sample_size=size).eval()
    peer_cl = AutoencoderKL.from_config(peer.config).eval()
    peer_cl.load_state_dict(peer.state_dict())
    peer_cl = peer_cl.to(memory_format=torch.channels_last)
    side = size // cfg.downsample
    z = torch.randn(batch, cfg.latent_channels, side, side, generator=torch.Generator().manual_seed(1))
    z_cl = z.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert peer.decode(z).sample.shape == (batch, 3, size, size)

    def ours_fn(model, lat, bf16, s):
        def run():
            with torch.no_grad(), _autocast(bf16):
                return model.decode(lat, steps=s, generator=torch.Generator().manual_seed(2))
        return run

    def peer_fn(model, lat, bf16):
        def run():
            with torch.no_grad(), _autocast(bf16):
                return model.decode(lat).sample
        return run

    fns = {"autoencoder_kl_fp32": peer_fn(peer, z, False), "autoencoder_kl_bf16_cl": peer_fn(peer_cl, z_cl, True)}
    for s in steps:
        fns[f"swycc_{s}_fp32"] = ours_fn(ours, z, False, s)
        fns[f"swycc_{s}_bf16_cl"] = ours_fn(ours_cl, z_cl, True, s)
    t = interleaved(fns, warmup=1, rounds=rounds)
    per_image = {k: v / batch for k, v in t.items()}
    ratios = {}
    for s in steps:
        ratios[f"steps_{s}"] = {
            "fp32_vs_autoencoder_kl": per_image[f"swycc_{s}_fp32"] / per_image["autoencoder_kl_fp32"],
            "bf16_cl_vs_autoencoder_kl": per_image[f"swycc_{s}_bf16_cl"] / per_image["autoencoder_kl_bf16_cl"],
            "bf16_cl_speedup": per_image[f"swycc_{s}_fp32"] / per_image[f"swycc_{s}_bf16_cl"]}
    params = {"swycc_total": sum(p.numel() for p in ours.parameters()),
              "swycc_decoders": sum(p.numel() for n, p in ours.named_parameters() if n.startswith("decoder_")),
              "autoencoder_kl_decoder": sum(p.numel() for n, p in peer.named_parameters()
                                            if n.startswith(("decoder.", "post_quant_conv.")))}
    return {"seconds_per_image": per_image, "ratios": ratios, "params": params, "batch": batch, "size": size,
            "latent_shape": list(z.shape[1:])}


def bench_train(size: int, rounds: int) -> dict:
    from vislearn.recipes import build

    steps = {}
    for objective in ("swycc", "mse", "gan"):
        cfg, task = build("swycc", "quick", {"objective": objective, "image_size": size, "disc_start": 0})
        module = task.module.train()
        opt = torch.optim.Adam([p for p in module.parameters() if p.requires_grad], lr=1e-4)
        batch = torch.stack([task.train_set[i][0] for i in range(cfg.batch_size)])

        def step(module=module, opt=opt, batch=batch):
            loss = module((batch,))["loss"]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        steps[objective] = step
    t = interleaved(steps, warmup=1, rounds=rounds)
    return {"seconds_per_step": t, "vs_mse": {k: v / t["mse"] for k, v in t.items()}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 32])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_common_args(ap)
    args = ap.parse_args(argv)
    apply_common_args(args)
    if args.quick:
        args.batch, args.steps, args.rounds = 2, [1, 2], 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    decode = bench_decode(args.size, args.batch, args.steps, args.rounds)
    train = bench_train(args.size, args.rounds)
    numbers = {"decode": decode, "train": train, "threads": torch.get_num_threads()}
    r = decode["ratios"]
    summary = (f"SWYCC decode / AutoencoderKL decode per image at {args.size}px, same latent, fp32: "
               + ", ".join(f"{s} steps {r[f'steps_{s}']['fp32_vs_autoencoder_kl']:.1f}x" for s in args.steps)
               + "; bf16+CL speedup: " + ", ".join(f"{s} steps {r[f'steps_{s}']['bf16_cl_speedup']:.2f}x"
                                                   for s in args.steps)
               + "; train step vs mse: " + ", ".join(f"{k} {v:.1f}x" for k, v in train["vs_mse"].items()))
    rows = [goal_row(f"SWYCC decode, {s} sampler step(s), {args.size} px", "diffusers AutoencoderKL, same latent",
                     1 / r[f"steps_{s}"]["fp32_vs_autoencoder_kl"], "reported (a diffusion decoder costs steps)", None)
            for s in args.steps]
    write_bench("swycc", summary, numbers, rows=rows, quick=args.quick)


if __name__ == "__main__":
    main()
