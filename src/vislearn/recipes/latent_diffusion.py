"""Recipe ``latent_diffusion``: a small latent diffusion model on a trained autoencoder's latents (SWYCC claim (c)).

``vislearn train latent_diffusion --set autoencoder=PATH`` takes the weights file of an autoencoder
trained by the ``swycc`` recipe (``objective=swycc|mse|gan``: the same model family, so one loader
serves all three), and:

1. encodes the training images once (no gradients; the latents are cached in memory, the autoencoder
   is frozen: the two stages of Rombach et al. 2022);
2. sets the latent scaling factor to ``1 / std`` of a sample of ``scale_sample`` training latents
   (:meth:`~vislearn.models.latent_diffusion.LatentDiffusion.fit_scaling_factor`; how SD's 0.18215 was
   derived), stored in the LDM's weights;
3. trains the x-predicting U-Net with :func:`vislearn.losses.diffusion.denoising_loss` on the VP cosine
   schedule, weighting ``w_t = min(SNR_t, 5)`` by default (``weighting=eps``, ``max_weight=5``: min-SNR-γ,
   Hang et al. 2023, γ = 5, whose x-prediction form this is; our choice, the SWYCC paper says nothing
   about its latent model's loss);
4. evaluates by sampling ``eval_samples`` latents (``sampler``, ``sample_steps``), decoding them with the
   autoencoder (``decode_steps`` for a SWYCC decoder; D_initial for the baselines) and measuring the
   distribution distance to held-out real images on the features of ``feature_network``
   (:func:`vislearn.metrics.features.feature_extractor`: a local Inception/CLIP file, or ``shapes32``,
   our classifier trained on the embedded shapes). Reported: ``fd`` (Fréchet distance), ``mmd`` (CMMD's
   estimator on L2-normalised features, σ = 10, × 1000), and the same two for the autoencoder's own
   reconstructions of the held-out images (``recon_fd``, ``recon_mmd``): the floor a perfect latent
   model would reach through that decoder.

Data: the ``swycc`` recipe's datasets for the same ``dataset``, ``image_size``, ``num_train`` and
``num_eval`` (:func:`vislearn.recipes.swycc.swycc_datasets`): by default ``photos_shapes``, half 32×32
crops of the embedded photos and half embedded shapes; ``imagenet`` with ``--data ROOT``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vislearn.errors import UserError
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.train.engine import Task, TrainConfig

__all__ = ["LatentDiffusionConfig", "LatentDiffusionModule", "LatentDiffusionRecipe", "autoencoder_images",
           "distribution_distances", "encode_all", "sample_images"]


@dataclass
class LatentDiffusionConfig(TrainConfig):
    autoencoder: str = ""  # a swycc-recipe weights file (objective swycc, mse or gan); required
    dataset: str = "photos_shapes"  # photos_shapes (embedded) | imagenet (--data ROOT): the swycc recipe's data
    image_size: int = 32
    num_train: int = 1024
    num_eval: int = 256
    width: int = 64
    channel_mult: tuple[int, ...] = (1, 2)
    layers_per_block: int = 1
    attention: bool = True
    norm_groups: int = 8
    weighting: str = "eps"  # with max_weight 5: w_t = min(SNR_t, 5), min-SNR-γ (Hang et al. 2023)
    max_weight: float | None = 5.0
    scale_sample: int = 512  # training latents used for the scaling factor (1/std)
    sampler: str = "ddim"
    sample_steps: int = 32
    decode_steps: int = 8  # SWYCC's sampled decoder (ignored by the baselines' deterministic D_initial)
    eval_samples: int = 256
    feature_network: str = "shapes32"  # a local Inception/CLIP file or a registered name


def _quick() -> LatentDiffusionConfig:
    return LatentDiffusionConfig(steps=600, batch_size=64, lr=2e-3, optimizer="adamw", weight_decay=0.0,
                                 schedule="cosine", warmup_steps=50, clip_grad=1.0, ema_decay=0.99,
                                 log_every=100, eval_every=0, ckpt_every=0)


def _paper() -> LatentDiffusionConfig:
    # ε-VAE's latent-model protocol where it fits a U-Net (wave2-methods.md 5.1): Adam lr 1e-4, EMA 0.9999,
    # 250 DDPM sampling steps; batch 256. SWYCC gives none of these.
    return LatentDiffusionConfig(**PAPER_LOADING,
                                 steps=100_000, batch_size=256, lr=1e-4, optimizer="adamw", weight_decay=0.0,
                                 schedule="constant", warmup_steps=5000, clip_grad=1.0, ema_decay=0.9999,
                                 width=128, channel_mult=(1, 2, 2), layers_per_block=2, num_train=50_000,
                                 num_eval=5000, eval_samples=5000, sampler="ddpm", sample_steps=250,
                                 log_every=100, eval_every=10_000, ckpt_every=10_000)


def autoencoder_images(cfg: LatentDiffusionConfig, data: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train, eval)`` image tensors (N×3×S×S in [0, 1]): the ``swycc`` recipe's datasets for the same settings."""
    from vislearn.recipes.swycc import swycc_datasets

    def stack(ds) -> torch.Tensor:
        return torch.stack([ds[i][0] for i in range(len(ds))]).float()

    train, test = swycc_datasets(cfg, data)
    return stack(train), stack(test)


@torch.no_grad()
def encode_all(autoencoder: nn.Module, images: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """The autoencoder's latents of ``images`` (eval mode, no gradients), on the CPU."""
    autoencoder.eval()
    dev = next(autoencoder.parameters()).device
    return torch.cat([autoencoder.encode(images[i:i + batch].to(dev)).float().cpu()
                      for i in range(0, len(images), batch)])


@torch.no_grad()
def sample_images(ldm: nn.Module, autoencoder: nn.Module, n: int, sampler: str, steps: int, decode_steps: int,
                  generator: torch.Generator, latent_size: int, batch: int = 128) -> torch.Tensor:
    """``n`` images: LDM latents (unscaled) decoded by the autoencoder (``decode_steps`` for a SWYCC decoder)."""
    out, dev = [], next(autoencoder.parameters()).device
    for i in range(0, n, batch):
        z = ldm.sample(min(batch, n - i), steps=steps, sampler=sampler, generator=generator, latent_size=latent_size)
        g = generator if generator.device == dev else None
        out.append(autoencoder.decode(z.to(dev), steps=decode_steps, generator=g).float().cpu())
    return torch.cat(out)


class LatentDiffusionModule(nn.Module):
    """``forward((z,))``: the weighted x-prediction loss of the LDM on scaled latents ``scaling_factor · z``."""

    def __init__(self, model: nn.Module, weighting: str, max_weight: float | None) -> None:
        super().__init__()
        from vislearn.losses.diffusion import time_weight

        time_weight(torch.zeros(1), weighting, max_weight=max_weight)  # validates both now, not at step 1
        self.model, self.weighting, self.max_weight = model, weighting, max_weight

    def forward(self, batch) -> dict[str, torch.Tensor]:
        from vislearn.losses.diffusion import denoising_loss

        (z,) = batch if isinstance(batch, (tuple, list)) else (batch,)
        loss = denoising_loss(self.model.denoise, self.model.scale(z), None, self.weighting, self.max_weight)
        return {"loss": loss}


def _load_autoencoder(path: str) -> nn.Module:
    from vislearn.models.convert import weights_metadata
    from vislearn.models.registry import create_model_from_weights

    if not path:
        raise UserError("latent_diffusion needs --set autoencoder=PATH (a weights file from `vislearn train swycc`)")
    info = weights_metadata(path)
    if info.get("model") != "swycc":
        raise UserError(f"{path} is not a swycc-family autoencoder (its model is {info.get('model')!r}); "
                        "train one with `vislearn train swycc --set objective=swycc|mse|gan`")
    ae = create_model_from_weights(path).eval()
    for p in ae.parameters():
        p.requires_grad_(False)
    return ae


def distribution_distances(fx, real_feats: torch.Tensor, images: torch.Tensor) -> dict[str, float]:
    """``{"fd", "mmd"}`` of ``images`` to the real features: Fréchet distance, and CMMD's MMD (σ 10, × 1000) on
    L2-normalised features (CMMD normalises its CLIP embeddings; we do the same for any network)."""
    from vislearn.metrics.generative import frechet_distance, mmd

    feats = fx(images)
    return {"fd": float(frechet_distance(feats, real_feats)),
            "mmd": float(mmd(F.normalize(feats.double(), dim=1), F.normalize(real_feats.double(), dim=1)))}


@register_recipe("latent_diffusion")
class LatentDiffusionRecipe(Recipe):
    """A U-Net latent diffusion model on a frozen swycc/mse/gan autoencoder's latents."""

    description = "latent diffusion (x-prediction U-Net, VP cosine, min-SNR-5) on a trained autoencoder's latents"
    Config = LatentDiffusionConfig
    data_formats = {"imagefolder": "imagenet"}
    presets = {"quick": _quick(), "paper": _paper()}

    def build(self, cfg: LatentDiffusionConfig, data: str | None = None) -> Task:
        from vislearn.metrics.features import feature_extractor
        from vislearn.models import create_model

        ae = _load_autoencoder(cfg.autoencoder)
        if cfg.image_size % ae.downsample:
            raise UserError(f"image_size {cfg.image_size} must divide by the autoencoder's downsample {ae.downsample}")
        train_images, eval_images = autoencoder_images(cfg, data)
        z = encode_all(ae, train_images)
        side = z.shape[-1]
        ldm = create_model("latent_diffusion", latent_channels=z.shape[1], latent_size=side, width=cfg.width,
                           channel_mult=tuple(cfg.channel_mult), layers_per_block=cfg.layers_per_block,
                           attention=cfg.attention, norm_groups=cfg.norm_groups)
        pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.scale_sample]
        ldm.fit_scaling_factor(z[pick])
        fx = feature_extractor(cfg.feature_network)
        real_feats = fx(eval_images)
        recon = sample_images_from_latents(ae, encode_all(ae, eval_images), cfg.decode_steps, cfg.seed)
        floor = distribution_distances(fx, real_feats, recon)

        def evaluate(model: nn.Module, loader: DataLoader) -> dict[str, float]:
            g = torch.Generator(device=next(model.parameters()).device).manual_seed(cfg.seed + 1000)
            images = sample_images(model, ae, cfg.eval_samples, cfg.sampler, cfg.sample_steps, cfg.decode_steps,
                                   g, side)
            return {**distribution_distances(fx, real_feats, images), "recon_fd": floor["fd"],
                    "recon_mmd": floor["mmd"],
                    "scaling_factor": float(model.scaling_factor)}

        module = LatentDiffusionModule(ldm, cfg.weighting, cfg.max_weight)
        eval_set: Dataset = TensorDataset(eval_images[:1])  # evaluate samples; the real features are held above
        task = Task(module, TensorDataset(z), eval_set, evaluate=evaluate, model=ldm)
        task.feature_record = fx.record  # which network the distances come from
        return task


@torch.no_grad()
def sample_images_from_latents(ae: nn.Module, z: torch.Tensor, decode_steps: int, seed: int,
                               batch: int = 128) -> torch.Tensor:
    """The autoencoder's decodings of latents ``z`` (seeded; ``decode_steps`` for a SWYCC decoder)."""
    g = torch.Generator(device=next(ae.parameters()).device).manual_seed(seed + 2000)
    return torch.cat([ae.decode(z[i:i + batch], steps=decode_steps, generator=g).float().cpu()
                      for i in range(0, len(z), batch)])
