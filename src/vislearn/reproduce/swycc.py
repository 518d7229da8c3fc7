"""Reproduction ``swycc``: SWYCC vs MSE and GAN autoencoders, their latents under a latent diffusion model,
and where the stochastic decoder's variance lives (Birodkar et al. 2024, arXiv 2409.02529; PAPERS.md §8).

Every arm is a run of the ``swycc`` recipe (``objective=swycc|mse|gan``) with the same small-scale
settings (:data:`SMALL_SCALE`): the same encoder/decoder family, 4×4×4 latents of 32×32 images (f8, 4
channels: 48× fewer numbers than pixels), the same data (embedded photo crops + shapes), batch, steps,
optimiser and learning rate; 3 seeds each. Every arm gets the same tuning effort: the recipe's quick
defaults, the small-scale settings below for all, and one 3-point grid of one loss weight per method.

What is measured on the held-out images (the recipe's evaluation plus distribution distances here):
PSNR, the pooled high-frequency ratio (energy above half Nyquist of the reconstructions over the
originals', 1 = as much fine detail), and the distribution distance between reconstructions and
originals on the features of ``shapes32`` (:mod:`vislearn.recipes.feature_network`; no Inception or
CLIP weights offline, so these are *not* FID/CMMD values): the Fréchet distance ``fd`` (primary) and
CMMD's MMD on L2-normalised features (``mmd``).

Criteria, fixed before the run (all on means over the 3 seeds):

* learning: every arm's PSNR exceeds the trivial reconstruction (the training set's mean image) by
  :data:`LEARN_MARGIN_DB`; every LDM's ``fd`` is below that of decoding prior noise latents.
* (a) SWYCC sharper than the MSE AE: |hf_ratio − 1| smaller AND ``fd`` lower.
* (b) SWYCC vs the GAN AE: the same two metrics; "easier to tune": over a 3-point grid of each
  method's key loss weight (SWYCC: λ_mse ∈ {0.3, 1, 3}; GAN: disc_weight ∈ {0.15, 0.5, 1.5}), seed 0,
  the relative spread (max − min) / mean of ``fd`` is smaller for SWYCC.
* (c) an LDM (``latent_diffusion`` recipe, same budget) on SWYCC latents gives samples with lower
  ``fd`` to real images than on GAN-AE latents.
* (d) the decoder's sample-to-sample variance sits in high frequencies: for held-out images decoded
  :data:`VAR_SAMPLES` times, the fraction of the deviations' energy above half Nyquist exceeds the
  fraction of the images' own (mean-removed) energy above it.

Choices forced by the 2-core budget (not the paper's): no perceptual term in any arm (the random VGG
trunk costs most of a step and is not the pretrained network the paper means), a 2-layer PatchGAN
starting at a third of the steps, 4 DDIM decoding steps, tiny widths. A claim that fails here has not
been refuted at ImageNet scale; one that passes has been seen at 32 px only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import tempfile
import time
from typing import Any

import torch

from vislearn.reproduce import Outcome, ReproContext, register_reproduction

# the small-scale settings every autoencoder arm shares (module docstring)
SMALL_SCALE: dict[str, Any] = {
    "image_size": 32, "latent_channels": 4, "downsample": 8, "width": 16, "layers_per_block": 1, "norm_groups": 8,
    "refine_width": 16, "refine_channel_mult": (1, 2), "refine_attention": False,
    "num_train": 512, "num_eval": 64, "batch_size": 16, "lr": 2e-3, "warmup_steps": 10, "clip_grad": 1.0,
    "lambda_perceptual": 0.0, "disc_ndf": 16, "disc_layers": 2, "eval_steps": 4, "log_every": 0,
    "precision": "fp32", "channels_last": False,
}
AE_STEPS = 150
LDM_STEPS = 200
LDM_SCALE: dict[str, Any] = {"width": 32, "channel_mult": (1, 2), "batch_size": 64, "lr": 2e-3, "num_train": 512,
                             "num_eval": 64, "eval_samples": 64, "sample_steps": 16, "decode_steps": 4,
                             "scale_sample": 512, "log_every": 0, "ema_decay": 0.99}
GRID = {"swycc": ("lambda_mse", (0.3, 1.0, 3.0)), "gan": ("disc_weight", (0.15, 0.5, 1.5))}
LEARN_MARGIN_DB = 3.0
VAR_SAMPLES = 6
VAR_IMAGES = 16
HALF_NYQUIST = 0.25


def _images(cfg) -> torch.Tensor:
    from vislearn.recipes.swycc import swycc_datasets

    _, test = swycc_datasets(cfg, None)
    return torch.stack([test[i][0] for i in range(len(test))]).float()


def _train_images(cfg) -> torch.Tensor:
    from vislearn.recipes.swycc import swycc_datasets

    train, _ = swycc_datasets(cfg, None)
    return torch.stack([train[i][0] for i in range(len(train))]).float()


@torch.no_grad()
def _reconstruct(model, images: torch.Tensor, steps: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return model.decode(model.encode(images), steps=steps, generator=g)


def _distances(fx, real_feats: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    from vislearn.recipes.latent_diffusion import distribution_distances

    return distribution_distances(fx, real_feats, images)


def _train_ae(ctx: ReproContext, objective: str, seed: int, steps: int, extra: dict | None = None):
    from vislearn import recipes

    overrides = {**SMALL_SCALE, "objective": objective, "steps": steps, "seed": seed,
                 "disc_start": max(1, steps // 3), **(extra or {})}
    return recipes.run("swycc", "quick", overrides, progress=False)


def _ae_numbers(result, fx, real_feats: torch.Tensor, images: torch.Tensor, seed: int) -> dict[str, float]:
    m = result.final_metrics
    recon = _reconstruct(result.task.model.eval(), images, SMALL_SCALE["eval_steps"], seed)
    return {"psnr": float(m["psnr"]), "ssim": float(m["ssim"]), "hf_ratio": float(m["hf_ratio"]),
            **_distances(fx, real_feats, recon)}


def _variance_in_high_frequencies(model, images: torch.Tensor, seed: int) -> dict[str, Any]:
    """(d): the sample-to-sample deviations' energy fraction above half Nyquist vs the images' own."""
    from vislearn.metrics.generative import high_frequency_energy

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        z = model.encode(images)
        samples = torch.stack([model.decode(z, steps=SMALL_SCALE["eval_steps"], generator=g)
                               for _ in range(VAR_SAMPLES)])  # K×N×3×H×W
    dev = samples - samples.mean(0, keepdim=True)
    flat = dev.flatten(0, 1)
    total_dev = flat.double().square().flatten(1).sum(1)
    frac_var = float(high_frequency_energy(flat, HALF_NYQUIST).sum() / total_dev.sum().clamp_min(1e-20))
    centred = images - images.mean((2, 3), keepdim=True)
    frac_img = float(high_frequency_energy(centred, HALF_NYQUIST).sum() / centred.double().square().sum())
    std_map = samples.std(0).mean(1)  # N×H×W per-pixel standard deviation over samples (channel mean)
    # reference, not a criterion: white noise (independent pixels) has this fraction of its energy in the band
    white = torch.ones(1, 1, *images.shape[-2:])
    frac_white = float(high_frequency_energy(torch.fft.ifft2(white, norm="ortho").real, HALF_NYQUIST).sum()
                       / white.sum())
    return {"hf_fraction_of_variance": frac_var, "hf_fraction_of_image": frac_img,
            "hf_fraction_of_white_noise": frac_white,
            "mean_pixel_std": float(std_map.mean()), "std_maps": std_map[:4], "examples": images[:4],
            "samples": samples[:2, :4]}


def _train_ldm(ctx: ReproContext, ae, seed: int, steps: int, folder: str, tag: str) -> tuple[dict[str, float], Any]:
    from vislearn import recipes
    from vislearn.io import save_weights

    path = os.path.join(folder, f"{tag}-seed{seed}.safetensors")
    save_weights(ae, path)
    r = recipes.run("latent_diffusion", "quick", {**LDM_SCALE, "autoencoder": path, "steps": steps, "seed": seed},
                    progress=False)
    return {k: float(v) for k, v in r.final_metrics.items()}, r


@torch.no_grad()
def _prior_fd(ldm, ae, fx, real_feats: torch.Tensor, n: int, seed: int) -> float:
    """``fd`` of the decoder applied to N(0, 1/scaling_factor²) latents: what an LDM that learned nothing gives."""
    g = torch.Generator().manual_seed(seed + 3000)
    side = ldm.latent_size
    z = torch.randn(n, ldm.latent_channels, side, side, generator=g) / float(ldm.scaling_factor)
    return _distances(fx, real_feats, ae.decode(z, steps=LDM_SCALE["decode_steps"], generator=g))["fd"]


def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs)


def _spread(xs: list[float]) -> float:
    return (max(xs) - min(xs)) / abs(statistics.fmean(xs)) if xs else math.nan


@register_reproduction(
    "swycc", paper="Birodkar et al. 2024, Sample what you can't compress (arXiv 2409.02529)",
    claim="A jointly trained diffusion decoder (SWYCC) reconstructs sharper than an MSE autoencoder and better "
          "than a GAN autoencoder at the same latent size, is easier to tune, gives latents that are easier for a "
          "latent diffusion model, and its decoder is stochastic where detail is lost (high frequencies)",
    criterion="32x32 embedded photo crops + shapes, 4x4x4 latents, same family/budget/optimiser for every arm, "
              "3 seeds, means over seeds; every arm must learn (PSNR > mean-image PSNR + 3 dB; LDM fd below the "
              "decoded-prior fd). (a) SWYCC: |hf_ratio-1| smaller AND fd lower than MSE AE; (b) the same vs the GAN "
              "AE, and a smaller relative fd spread over a 3-point grid of its loss weight (SWYCC lambda_mse "
              "0.3/1/3 vs GAN disc_weight 0.15/0.5/1.5); (c) LDM samples on SWYCC latents have lower fd than on "
              "GAN-AE latents; (d) the fraction of the decoder's sample-to-sample deviation energy above half "
              "Nyquist exceeds the images' own. fd = Frechet distance on shapes32 classifier features (not FID)")
def run(ctx: ReproContext) -> Outcome:
    from vislearn.metrics.features import feature_extractor
    from vislearn.metrics.generative import psnr
    from vislearn.recipes.swycc import swycc_quick

    t0 = time.perf_counter()
    log = ctx.log
    ctx = dataclasses.replace(ctx, log=lambda msg: log(f"[{time.perf_counter() - t0:6.1f}s]{msg}"))
    ae_steps, ldm_steps = ctx.steps(AE_STEPS, minimum=3), ctx.steps(LDM_STEPS, minimum=3)
    cfg = dataclasses.replace(swycc_quick(), **{k: SMALL_SCALE[k] for k in ("image_size", "num_train", "num_eval")})
    images, train_images = _images(cfg), _train_images(cfg)
    fx = feature_extractor("shapes32")
    real_feats = fx(images)
    trivial_psnr = float(psnr(train_images.mean(0, keepdim=True).expand_as(images).contiguous(), images).mean())
    how = "cached" if fx.record.get("loaded_from_cache") else "trained"
    ctx.log(f"  feature network: {fx.record['network']} ({how}); mean-image PSNR {trivial_psnr:.2f} dB; "
            f"{ae_steps} AE steps, {ldm_steps} LDM steps")

    arms: dict[str, list[dict]] = {o: [] for o in ("swycc", "mse", "gan")}
    models: dict[tuple[str, int], Any] = {}
    for objective in arms:
        for seed in ctx.seeds:
            r = _train_ae(ctx, objective, seed, ae_steps)
            nums = _ae_numbers(r, fx, real_feats, images, seed)
            arms[objective].append(nums)
            models[(objective, seed)] = r.task.model.eval()
            ctx.log(f"  {objective:5s} seed {seed}: PSNR {nums['psnr']:.2f}  hf {nums['hf_ratio']:.3f}  "
                    f"fd {nums['fd']:.3f}  mmd {nums['mmd']:.3f}")
    summary = {o: {k: _mean([r[k] for r in rs]) for k in rs[0]} for o, rs in arms.items()}

    grid: dict[str, list[dict]] = {}
    for objective, (key, values) in GRID.items():
        grid[objective] = []
        for v in values:
            if v == (1.0 if key == "lambda_mse" else 0.5):
                nums = arms[objective][0]  # the default weight: seed 0's main run
            else:
                r = _train_ae(ctx, objective, ctx.seeds[0], ae_steps, {key: v})
                nums = _ae_numbers(r, fx, real_feats, images, ctx.seeds[0])
            grid[objective].append({key: v, **nums})
            ctx.log(f"  grid {objective} {key}={v}: fd {nums['fd']:.3f}  PSNR {nums['psnr']:.2f}")
    spreads = {o: {"fd": _spread([g["fd"] for g in gs]), "psnr": _spread([g["psnr"] for g in gs])}
               for o, gs in grid.items()}

    ldm: dict[str, list[dict]] = {"swycc": [], "gan": []}
    with tempfile.TemporaryDirectory() as folder:
        for objective in ldm:
            for seed in ctx.seeds:
                ae = models[(objective, seed)]
                nums, r = _train_ldm(ctx, ae, seed, ldm_steps, folder, objective)
                # the recipe's held-out images are these `images` (same data settings), so real_feats serve
                nums["prior_fd"] = _prior_fd(r.task.model.eval(), ae, fx, real_feats, LDM_SCALE["eval_samples"], seed)
                ldm[objective].append(nums)
                ctx.log(f"  LDM on {objective:5s} seed {seed}: fd {nums['fd']:.3f} (decoder floor "
                        f"{nums['recon_fd']:.3f}, prior {nums['prior_fd']:.3f})  scale {nums['scaling_factor']:.3f}")
    ldm_summary = {o: {k: _mean([r[k] for r in rs]) for k in rs[0]} for o, rs in ldm.items()}

    variance = [_variance_in_high_frequencies(models[("swycc", s)], images[:VAR_IMAGES], s) for s in ctx.seeds]
    var_numbers = [{k: v for k, v in d.items() if not isinstance(v, torch.Tensor)} for d in variance]
    for s, d in zip(ctx.seeds, var_numbers, strict=True):
        ctx.log(f"  variance seed {s}: {d['hf_fraction_of_variance']:.3f} of the deviation energy above half "
                f"Nyquist vs {d['hf_fraction_of_image']:.3f} of the images'; mean pixel std {d['mean_pixel_std']:.4f}")

    s, m, g = summary["swycc"], summary["mse"], summary["gan"]
    learn = {o: summary[o]["psnr"] > trivial_psnr + LEARN_MARGIN_DB for o in summary}
    learn_ldm = {o: ldm_summary[o]["fd"] < ldm_summary[o]["prior_fd"] for o in ldm_summary}
    verdicts = {
        "a_hf_closer_to_1_than_mse": abs(s["hf_ratio"] - 1) < abs(m["hf_ratio"] - 1),
        "a_fd_lower_than_mse": s["fd"] < m["fd"],
        "b_hf_closer_to_1_than_gan": abs(s["hf_ratio"] - 1) < abs(g["hf_ratio"] - 1),
        "b_fd_lower_than_gan": s["fd"] < g["fd"],
        "b_smaller_fd_spread_over_weight_grid": spreads["swycc"]["fd"] < spreads["gan"]["fd"],
        "c_ldm_fd_lower_on_swycc_latents": ldm_summary["swycc"]["fd"] < ldm_summary["gan"]["fd"],
        "d_variance_in_high_frequencies": _mean([d["hf_fraction_of_variance"] for d in var_numbers])
        > _mean([d["hf_fraction_of_image"] for d in var_numbers]),
    }
    all_learn = all(learn.values()) and all(learn_ldm.values())
    passed = all_learn and all(verdicts.values())
    notes = ("; ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in verdicts.items())
             + f"; all arms learn: {'yes' if all_learn else 'NO'}")
    numbers = {"settings": {"autoencoder": SMALL_SCALE, "ae_steps": ae_steps, "ldm": LDM_SCALE, "ldm_steps": ldm_steps,
                            "grid": {k: list(v[1]) for k, v in GRID.items()}, "grid_keys": {k: v[0] for k, v in
                                                                                            GRID.items()}},
               "feature_network": fx.record, "trivial_mean_image_psnr": trivial_psnr,
               "learn_margin_db": LEARN_MARGIN_DB, "arms_per_seed": arms, "arms_mean": summary,
               "learns": learn, "ldm_learns": learn_ldm, "grid": grid, "grid_relative_spread": spreads,
               "ldm_per_seed": ldm, "ldm_mean": ldm_summary, "variance_per_seed": var_numbers,
               "criteria": verdicts, "all_learn": all_learn}
    return Outcome(passed=bool(passed), numbers=numbers, figure=_figure(summary, arms, spreads, ldm_summary, variance,
                                                                         var_numbers, trivial_psnr), notes=notes)


def _figure(summary, arms, spreads, ldm_summary, variance, var_numbers, trivial_psnr):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(13, 6.5))
    names = list(summary)
    colors = {"swycc": "tab:blue", "mse": "tab:orange", "gan": "tab:green"}
    for i, (key, label) in enumerate((("psnr", "PSNR (dB)"), ("hf_ratio", "high-frequency ratio (1 = sharp)"),
                                      ("fd", "Fréchet distance, shapes32 features"))):
        ax = fig.add_subplot(2, 4, i + 1)
        ax.bar(range(3), [summary[n][key] for n in names], color=[colors[n] for n in names], alpha=0.6)
        for j, n in enumerate(names):
            ax.scatter([j] * len(arms[n]), [r[key] for r in arms[n]], color="k", s=10)
        if key == "psnr":
            ax.axhline(trivial_psnr, color="gray", ls="--", lw=1, label="mean image")
            ax.legend(fontsize=7)
        if key == "hf_ratio":
            ax.axhline(1.0, color="gray", ls="--", lw=1)
        ax.set_xticks(range(3), names)
        ax.set_title(label, fontsize=9)
    ax = fig.add_subplot(2, 4, 4)
    ax.bar([0, 1], [ldm_summary["swycc"]["fd"], ldm_summary["gan"]["fd"]], color=["tab:blue", "tab:green"], alpha=0.6)
    ax.scatter([0, 1], [ldm_summary["swycc"]["recon_fd"], ldm_summary["gan"]["recon_fd"]], marker="_", s=400,
               color="k", label="decoder floor")
    ax.set_xticks([0, 1], ["LDM on swycc", "LDM on gan"])
    ax.set_title(f"(c) LDM sample fd; (b) fd spread over grid: swycc {spreads['swycc']['fd']:.2f}, "
                 f"gan {spreads['gan']['fd']:.2f}", fontsize=8)
    ax.legend(fontsize=7)
    v = variance[0]
    for j in range(min(4, len(v["examples"]))):
        ax = fig.add_subplot(4, 8, 17 + j)
        ax.imshow(v["examples"][j].permute(1, 2, 0).clamp(0, 1).numpy())
        ax.axis("off")
        ax.set_title("original" if j == 0 else "", fontsize=7)
        ax = fig.add_subplot(4, 8, 25 + j)
        ax.imshow(v["std_maps"][j].numpy(), cmap="magma")
        ax.axis("off")
        ax.set_title("per-pixel std" if j == 0 else "", fontsize=7)
    ax = fig.add_subplot(2, 4, 7)
    ax.imshow(v["samples"][0, 0].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title("a SWYCC sample (seed 0)", fontsize=8)
    ax.axis("off")
    ax = fig.add_subplot(2, 4, 8)
    fv = [d["hf_fraction_of_variance"] for d in var_numbers]
    fi = [d["hf_fraction_of_image"] for d in var_numbers]
    ax.bar([0, 1], [statistics.fmean(fv), statistics.fmean(fi)], color=["tab:purple", "tab:gray"], alpha=0.6)
    ax.scatter([0] * len(fv) + [1] * len(fi), fv + fi, color="k", s=10)
    ax.set_xticks([0, 1], ["sample variance", "image"])
    ax.set_title("(d) energy fraction above half Nyquist", fontsize=8)
    fig.suptitle("SWYCC vs MSE / GAN autoencoders (32 px, 4x4x4 latents, 3 seeds)", fontsize=10)
    fig.tight_layout()
    return fig
