"""Recipe ``swycc``: the SWYCC autoencoder and its two baselines, ``--set objective=swycc|mse|gan``.

Birodkar et al., "Sample what you can't compress", arXiv 2409.02529 (PAPERS.md section 8,
wave2-methods.md 4). Every arm trains the same encoder/decoder family at the same latent size
(:func:`vislearn.models.create_model` ``"swycc"``), so the comparison isolates the objective:

* ``swycc``: E, D_initial and D_refine jointly under :class:`vislearn.losses.diffusion.SWYCCLoss`
  (x-prediction diffusion loss + λ_mse MSE + λ_perceptual perceptual on D_initial);
* ``mse``: E + D_initial (``refine=False``) under MSE (+ the same perceptual term):
  :class:`vislearn.losses.autoencoder.MSEAutoencoderLoss`, i.e. SWYCC without its diffusion decoder;
* ``gan``: E (Gaussian posterior, ``posterior="gaussian"``) + D_initial under SD-VAE's
  L1 + perceptual + KL + adaptive-weight PatchGAN hinge loss
  (:class:`vislearn.losses.autoencoder.GANAutoencoderLoss`, the discriminator a
  :class:`vislearn.models.patchgan.PatchDiscriminator`). Both players train in the one engine with
  one optimizer: each loss reaches only its own network (the loss module's docstring says why this
  equals a generator step plus a discriminator step); :class:`StepHook` tells the loss the optimizer
  step so the discriminator starts at ``disc_start``.

**Perceptual network.** :class:`PerceptualLoss` is our perceptual metric's distance
(:func:`vislearn.metrics.perceptual.create_metric` ``"semantic_vgg16"``, all-ones channel weights:
LPIPS's unweighted "baseline" distance on VGG-16 taps), batch mean. Nothing downloads: without
``perceptual_weights=PATH`` (a local torchvision ``vgg16`` state dict) the VGG trunk keeps its seeded
random initialisation. A random trunk still gives a valid feature distance (zero for equal images,
sensitive to structure at several scales; random conv features are known to carry much of a
perceptual loss's effect) but it is *not* the pretrained network the paper means; the run records
``perceptual_weights`` in its config. The paper's perceptual network is itself unverified (ResNet,
VGG or LPIPS, wave2-methods 4.2).

``paper`` preset (ImageNet 256 via ``--data ROOT`` with ``ROOT/train`` and ``ROOT/val``); sources:

====================  ==============================  =============================================
setting               value                           source
====================  ==============================  =============================================
batch                 256 (``batch_size``)            summary [S]; use ``grad_accum_steps=A`` when it
                                                      does not fit (256 / A per micro-batch)
steps                 1 000 000                       summary [S]
lr                    1e-4, warm-up 10 000 steps,     summary [S]
                      cosine to 0
clip_grad             1.0                             summary [S]
optimizer             Adam (β 0.9, 0.999), no decay   unverified (not reported); the engine's Adam has
                                                      β1 = 0.9, SD-VAE's GAN uses (0.5, 0.9)
λ_mse, λ_perceptual   1, 0.1                          summary [S], unverified
w_t                   1 (``weighting="x"``)           ours (:mod:`vislearn.losses.diffusion`)
ema_decay             0.9999                          ours: usual for diffusion decoders, not reported
latent / widths       f8, 4 channels; 128·(1,2,4,4),  ours (SD-VAE f8c4 sizes); paper's unknown
                      2 blocks per level
GAN arm               L1 1, LPIPS→ours 1.0, KL 1e-6,  SD-VAE's kl-f8 config (taming's loss)
                      disc_weight 0.5, start 50 001,
                      PatchGAN ndf 64, 3 layers, BN
eval                  DDIM, 8 steps, seeded           ours
precision             bf16                            ours
====================  ==============================  =============================================

``quick`` preset: 32×32 crops of the embedded photos plus embedded shapes (1024 train, 128 held
out), a small f8 model (E/D_initial width 32, D_refine width 16 without attention), batch 16, 300
steps of Adam 1e-3 (warm-up 20 steps, cosine), perceptual taps relu1_2 + relu2_2, the discriminator
from step 100, fp32; a few minutes on 2 CPU cores for each arm.

Evaluation (held-out set; the SWYCC arm decodes by sampling with ``eval_sampler``/``eval_steps`` and
a generator seeded with ``eval_seed``, the baselines by D_initial): ``psnr`` and ``ssim`` (means over
images), ``hf_ratio`` (:func:`vislearn.metrics.generative.high_frequency_ratio`, pooled), ``perceptual``
(:class:`PerceptualLoss` distance, mean) and, for SWYCC, ``psnr_initial`` (D_initial alone).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.losses.autoencoder import GANAutoencoderLoss, MSEAutoencoderLoss
from vislearn.losses.diffusion import WEIGHTINGS, SWYCCLoss
from vislearn.metrics.generative import high_frequency_energy, psnr, ssim
from vislearn.models.patchgan import PatchDiscriminator
from vislearn.models.perceptual import VGG_STAGES
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.train.engine import Task, TrainConfig
from vislearn.train.hooks import Hook

__all__ = ["OBJECTIVES", "AutoencoderModule", "GANAutoencoderModule", "PerceptualLoss", "StepHook", "SWYCCConfig",
           "SWYCCModule", "SWYCCRecipe", "build_autoencoder", "evaluate_autoencoder", "swycc_datasets",
           "swycc_paper", "swycc_quick"]

OBJECTIVES = ("swycc", "mse", "gan")
# λ_perceptual when the config leaves it negative: SWYCC's summary value, the same for the MSE arm (so
# it is SWYCC without the diffusion decoder), SD-VAE's LPIPS weight for the GAN arm
DEFAULT_LAMBDA_PERCEPTUAL = {"swycc": 0.1, "mse": 0.1, "gan": 1.0}


@dataclass
class SWYCCConfig(TrainConfig):
    """Engine settings plus the autoencoder, the objective and the evaluation (module docstring)."""

    objective: str = "swycc"  # swycc | mse | gan
    dataset: str = "photos_shapes"  # photos_shapes (embedded, 32×32 crops) | imagenet (--data ROOT)
    image_size: int = 32
    num_train: int = 1024  # embedded data: photo crops + shapes, half each
    num_eval: int = 128
    # the autoencoder (create_model("swycc", ...)); channel_mult () = the model's default
    latent_channels: int = 4
    downsample: int = 8
    width: int = 32
    channel_mult: tuple[int, ...] = ()
    layers_per_block: int = 1
    refine_width: int = 32
    refine_channel_mult: tuple[int, ...] = (1, 2, 2)
    refine_layers_per_block: int = 1
    refine_attention: bool = True
    norm_groups: int = 8
    # losses
    weighting: str = "x"  # SWYCC's w_t: x | eps | v
    max_weight: float = 0.0  # > 0 truncates w_t
    lambda_diffusion: float = 1.0
    lambda_mse: float = 1.0
    lambda_perceptual: float = -1.0  # < 0: the objective's default (DEFAULT_LAMBDA_PERCEPTUAL)
    perceptual_layers: tuple[str, ...] = VGG_STAGES
    perceptual_weights: str = ""  # a local torchvision vgg16 state dict; "" = seeded random VGG-16
    perceptual_fast: bool = False  # bf16 + channels_last inside the perceptual network
    lambda_l1: float = 1.0  # GAN arm
    kl_weight: float = 1e-6
    disc_weight: float = 0.5
    disc_start: int = 50_001
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_norm: str = "batch"
    adaptive_weight: bool = True
    # evaluation
    eval_steps: int = 8
    eval_sampler: str = "ddim"
    eval_seed: int = 0


def swycc_paper() -> SWYCCConfig:
    """ImageNet 256, batch 256, 1M steps, lr 1e-4 warm-up 10k + cosine, clip 1 (module docstring table)."""
    return SWYCCConfig(
        **PAPER_LOADING,
        objective="swycc", dataset="imagenet", image_size=256,
        batch_size=256, grad_accum_steps=1,  # [S] batch 256; raise grad_accum_steps when it does not fit
        steps=1_000_000,  # [S] 1M steps
        optimizer="adam", lr=1e-4, weight_decay=0.0,  # [S] lr 1e-4; the optimiser is unverified
        schedule="cosine", warmup_steps=10_000, min_lr_ratio=0.0,  # [S] warm-up 0 → 1e-4 over 1e4, cosine to 0
        clip_grad=1.0,  # [S] gradient clip 1
        ema_decay=0.9999,  # ours (not reported)
        latent_channels=4, downsample=8, width=128, channel_mult=(1, 2, 4, 4), layers_per_block=2,  # ours (SD f8c4)
        refine_width=128, refine_channel_mult=(1, 2, 2, 4), refine_layers_per_block=2, norm_groups=32,  # ours
        weighting="x", lambda_diffusion=1.0, lambda_mse=1.0, lambda_perceptual=-1.0,  # [S] λ 1 / 0.1, unverified
        lambda_l1=1.0, kl_weight=1e-6, disc_weight=0.5, disc_start=50_001,  # SD-VAE kl-f8 config
        disc_ndf=64, disc_layers=3, disc_norm="batch",  # pix2pix / SD PatchGAN
        eval_steps=8, eval_sampler="ddim", precision="bf16", channels_last=True,
        eval_every=50_000, ckpt_every=10_000, log_every=100, eval_batch_size=64,
    )


def swycc_quick() -> SWYCCConfig:
    """Minutes on 2 CPU cores: 32×32 embedded crops, a small f8 model, every arm learns."""
    return replace(
        swycc_paper(), dataset="photos_shapes", image_size=32, num_train=1024, num_eval=128,
        batch_size=16, grad_accum_steps=1, steps=300, lr=1e-3, warmup_steps=20, clip_grad=1.0,
        ema_decay=0.0,  # 300 steps: an average would mostly hold the initialisation
        width=32, channel_mult=(), layers_per_block=1, refine_width=16, refine_channel_mult=(1, 2, 2),
        refine_layers_per_block=1, refine_attention=False, norm_groups=8,
        perceptual_layers=("relu1_2", "relu2_2"),  # the two cheap taps (deeper ones cost most of a step)
        perceptual_fast=False,
        disc_start=100, disc_ndf=32, disc_layers=2,  # a 2-layer PatchGAN (34×34 patches) fits 32×32 crops
        eval_steps=8, precision="fp32", channels_last=False,  # fp32: bf16 was not faster here
        eval_every=0, ckpt_every=0, log_every=50, eval_batch_size=128, num_workers=0, persistent_workers=False,
    )


# ------------------------------------------------------------------------------------------ parts
class PerceptualLoss:
    """Batch-mean distance of our perceptual metric (``semantic_vgg16``, all-ones weights) on [0, 1] images.

    Not an ``nn.Module`` on purpose: it is never trained or saved with the autoencoder; it follows the
    input's device on first use.
    """

    def __init__(self, weights: str | os.PathLike | None = None, layers: tuple[str, ...] = VGG_STAGES,
                 fast: bool = False) -> None:
        from vislearn.metrics.perceptual import create_metric

        if weights is not None and not os.path.isfile(weights):
            raise UserError(f"perceptual_weights: no file {weights} (a torchvision vgg16 state dict)")
        self.weights = None if weights is None else os.fspath(weights)
        self.metric = create_metric("semantic_vgg16", backbone_weights=weights, layers=tuple(layers), fast=fast)

    def distance(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """One distance per pair (N,)."""
        if self.metric.device != pred.device:
            self.metric.to(pred.device)
        return self.metric(target, pred)

    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.distance(pred, target).mean()


class SWYCCModule(nn.Module):
    """``module(batch)``: the SWYCC loss of ``model`` on ``batch[0]`` (E, D_initial, D_refine jointly)."""

    def __init__(self, model: nn.Module, loss: SWYCCLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch) -> dict[str, torch.Tensor]:
        terms = self.loss(self.model, batch[0])
        return {"loss": terms.loss, "diffusion": terms.diffusion, "mse": terms.mse, "perceptual": terms.perceptual}


class AutoencoderModule(nn.Module):
    """``module(batch)``: the MSE autoencoder's loss of E + D_initial on ``batch[0]``."""

    def __init__(self, model: nn.Module, loss: MSEAutoencoderLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch) -> dict[str, torch.Tensor]:
        images = batch[0]
        x = self.model.prepare_input(images)
        x_hat = self.model.initial(self.model.encode(images))
        return self.loss(images, self.model.to_images(x_hat), x, x_hat)


class GANAutoencoderModule(nn.Module):
    """``module(batch)``: SD-VAE's loss (generator and discriminator terms, gradient-isolated) on ``batch[0]``.

    The latent is sampled from the posterior, ``z = μ + σ ε`` (SD's ``posterior.sample()`` in training);
    ``step`` (a buffer, so it is checkpointed) is the number of optimizer steps done, set by :class:`StepHook`.
    """

    def __init__(self, model: nn.Module, loss: GANAutoencoderLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, batch) -> dict[str, torch.Tensor]:
        images = batch[0]
        x = self.model.prepare_input(images)
        mean, logvar = self.model.posterior(images)
        z = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        x_hat = self.model.initial(z)
        recon = self.model.to_images(x_hat) if self.loss.lambda_perceptual > 0 else None
        return self.loss(x, x_hat, self.model.last_decoder_layer.weight, mean=mean, logvar=logvar, images=images,
                         recon=recon, step=int(self.step))


class StepHook(Hook):
    """After each optimizer step, write the step count into the module's ``step`` buffer."""

    def after_optimizer_step(self, module: nn.Module, step: int) -> None:
        module.step.fill_(step)


# --------------------------------------------------------------------------------------- building
def check_config(cfg: SWYCCConfig) -> None:
    """``UserError`` for a setting this recipe cannot run (each message names the value)."""
    if cfg.objective not in OBJECTIVES:
        raise UserError(f"objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
    if cfg.weighting not in WEIGHTINGS:
        raise UserError(f"weighting must be one of {', '.join(WEIGHTINGS)}, got {cfg.weighting!r}")
    if cfg.image_size % cfg.downsample:
        raise UserError(f"image_size {cfg.image_size} must be divisible by downsample {cfg.downsample}")
    if cfg.num_train < cfg.batch_size:
        raise UserError(f"num_train ({cfg.num_train}) must be at least batch_size ({cfg.batch_size})")
    if cfg.eval_steps < 1:
        raise UserError(f"eval_steps must be >= 1, got {cfg.eval_steps}")


def build_autoencoder(cfg: SWYCCConfig) -> nn.Module:
    """The arm's autoencoder: SWYCC with D_refine, or E + D_initial (Gaussian posterior for ``gan``)."""
    from vislearn.models import create_model

    kwargs: dict[str, Any] = dict(
        latent_channels=cfg.latent_channels, downsample=cfg.downsample, width=cfg.width,
        layers_per_block=cfg.layers_per_block, norm_groups=cfg.norm_groups)
    if cfg.channel_mult:
        kwargs["channel_mult"] = tuple(cfg.channel_mult)
    if cfg.objective == "swycc":
        kwargs.update(refine_width=cfg.refine_width, refine_channel_mult=tuple(cfg.refine_channel_mult),
                      refine_layers_per_block=cfg.refine_layers_per_block, refine_attention=cfg.refine_attention)
    else:
        kwargs["refine"] = False
        if cfg.objective == "gan":
            kwargs["posterior"] = "gaussian"
    return create_model("swycc", **kwargs)


def lambda_perceptual_of(cfg: SWYCCConfig) -> float:
    return DEFAULT_LAMBDA_PERCEPTUAL[cfg.objective] if cfg.lambda_perceptual < 0 else cfg.lambda_perceptual


def swycc_datasets(cfg: SWYCCConfig, data: str | None):
    """``(train, eval)``: embedded photo crops + shapes at ``image_size``, or an ImageFolder tree at ``data``."""
    if data is None and cfg.dataset == "photos_shapes":
        from torch.utils.data import ConcatDataset

        from vislearn.data import embedded

        def part(n: int, seed: int, split: str):
            half = max(1, n // 2)
            crops = embedded.photo_crops(num_crops=n - half, crop_size=cfg.image_size, seed=seed)
            shapes = embedded.shapes_classification(split, num_classes=10, samples_per_class=max(1, half // 10),
                                                    image_size=cfg.image_size)
            return ConcatDataset([crops, shapes])

        return part(cfg.num_train, 0, "train"), part(cfg.num_eval, 1, "test")
    if data is None:
        raise UserError(f"dataset {cfg.dataset!r} needs --data ROOT (an ImageFolder tree with train/ and val/); "
                        "or use dataset=photos_shapes")
    from torchvision.transforms import v2

    from vislearn.data.formats import image_folder_splits
    from vislearn.data.transforms import eval_transform

    # autoencoder training: resize the short side, random crop, flip (no scale augmentation)
    train_tf = v2.Compose([v2.ToImage(), v2.Resize(cfg.image_size, antialias=True), v2.RandomCrop(cfg.image_size),
                           v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True)])
    return image_folder_splits(data, cfg.image_size, train_tf=train_tf,
                               eval_tf=eval_transform(cfg.image_size, resize=cfg.image_size))


def evaluate_autoencoder(model: nn.Module, loader, perceptual: PerceptualLoss | None = None, steps: int = 8,
                         sampler: str = "ddim", seed: int = 0) -> dict[str, float]:
    """PSNR, SSIM, pooled high-frequency ratio and perceptual distance of reconstructions of ``loader``'s images.

    A model with D_refine is decoded by sampling (a generator seeded with ``seed``), and ``psnr_initial``
    scores D_initial alone; a baseline is decoded by D_initial.
    """
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    sums: dict[str, float] = {}
    n = 0
    hf_num = hf_den = 0.0
    for batch in loader:
        images = batch[0].to(device).float()
        z = model.encode(images)
        initial = model.decode_initial(z)
        recon = model.decode(z, steps=steps, sampler=sampler, generator=gen) if model.has_refine else initial
        terms = {"psnr": psnr(recon, images), "ssim": ssim(recon, images)}
        if model.has_refine:
            terms["psnr_initial"] = psnr(initial, images)
        if perceptual is not None:
            terms["perceptual"] = perceptual.distance(recon, images)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0.0) + float(v.double().sum())
        hf_num += float(high_frequency_energy(recon).sum())
        hf_den += float(high_frequency_energy(images).sum())
        n += images.shape[0]
    out = {k: v / max(n, 1) for k, v in sums.items()}
    out["hf_ratio"] = hf_num / hf_den if hf_den > 0 else float("nan")
    return out


@register_recipe("swycc")
class SWYCCRecipe(Recipe):
    """SWYCC (Birodkar et al. 2024) and its MSE / GAN autoencoder baselines, ``--set objective=swycc|mse|gan``."""

    description = ("SWYCC autoencoder (joint E + D_initial + diffusion D_refine) vs MSE and SD-VAE-style GAN "
                   "autoencoders at the same latent size; --set objective=swycc|mse|gan")
    Config = SWYCCConfig
    data_formats = {"imagefolder": "imagenet"}
    presets = {"quick": swycc_quick(), "paper": swycc_paper()}

    def build(self, cfg: SWYCCConfig, data: str | None = None) -> Task:
        check_config(cfg)
        train, test = swycc_datasets(cfg, data)
        model = build_autoencoder(cfg)
        lam_p = lambda_perceptual_of(cfg)
        perceptual = PerceptualLoss(cfg.perceptual_weights or None, tuple(cfg.perceptual_layers),
                                    cfg.perceptual_fast)
        train_perceptual = perceptual if lam_p > 0 else None
        hooks: list[Hook] = []
        if cfg.objective == "swycc":
            loss = SWYCCLoss(weighting=cfg.weighting, max_weight=cfg.max_weight or None,
                             lambda_diffusion=cfg.lambda_diffusion, lambda_mse=cfg.lambda_mse,
                             lambda_perceptual=lam_p if train_perceptual else 0.0, perceptual=train_perceptual)
            module: nn.Module = SWYCCModule(model, loss)
        elif cfg.objective == "mse":
            module = AutoencoderModule(model, MSEAutoencoderLoss(cfg.lambda_mse, lam_p, train_perceptual))
        else:
            disc = PatchDiscriminator(3, cfg.disc_ndf, cfg.disc_layers, cfg.disc_norm)
            loss = GANAutoencoderLoss(disc, train_perceptual, lambda_l1=cfg.lambda_l1, lambda_perceptual=lam_p,
                                      kl_weight=cfg.kl_weight, disc_weight=cfg.disc_weight,
                                      disc_start=cfg.disc_start, adaptive=cfg.adaptive_weight)
            module = GANAutoencoderModule(model, loss)
            hooks.append(StepHook())

        def evaluate(m: nn.Module, loader) -> dict[str, float]:
            return evaluate_autoencoder(m, loader, perceptual, cfg.eval_steps, cfg.eval_sampler, cfg.eval_seed)

        return Task(module, train, test, evaluate=evaluate, model=model, hooks=hooks)
