"""Recipe ``dino``: DINO* with a weighted ensemble of heads (Ruan et al., ICLR 2023; Caron et al. 2021).

``vislearn train dino --set heads=16 scheme=ent`` trains a backbone with ``heads`` (projection head,
codebook) pairs combined by ``scheme`` (``unif | prob | ent | ent_st``; γ of ent/ent_st decays from
``gamma_start`` to ``gamma``, in ``log c`` units, over ``gamma_epochs``). ``heads=1`` is the DINO*
baseline (every scheme is then the plain cross-entropy). The machinery (student, EMA teacher, the
per-step hook, multi-crop data, k-NN evaluation, backbone-only export) is :mod:`vislearn.recipes.ssl`.

Presets:

* ``quick``: a 3-block, 64-wide ViT with 4 px patches on 1000 embedded 32 px crops of
  scikit-image's 10 sample photos (label = the photo, used by the k-NN only; another 1000 crops are
  held out), 2 global 32 px crops and 2 local 16 px crops, small heads (hidden 256, 64-d, 256
  codes), 300 steps (~10 epochs) of batch 32 with the views made in one DataLoader worker: a few
  minutes on 2 CPU cores. Schedules stated in epochs (teacher temperature, γ) are shortened to 5
  epochs. Evaluation: k-NN (k = 20, T = 0.07) of the held-out crops against the training crops:
  0.941 at initialisation, 0.956 after training with 1 head and with 4 (ENT). On the embedded
  shapes (``dataset=shapes``, classes = colour × shape × fill) the same run lowers the k-NN
  accuracy (0.27 → 0.25): the colour augmentations teach an invariance those labels contradict.
  (These numbers were measured with the per-sample torchvision views; embedded data now get the
  batched :class:`~vislearn.data.multicrop.TensorMultiCrop` views: bilinear, a fixed jitter order.)
* ``paper``: the retuned DINO* of App. B.1 for ViT-S/16 on ImageNet (``--data ROOT`` with
  ``train/`` and ``val/``), each value with its source below, including DINO's weight-decay
  schedule (0.04 → 0.4 cosine over the run, App. B.1; the engine's ``weight_decay_end``; the quick
  preset keeps a constant 0.04). Linear warm-up and the minimum learning rate are in steps / as a ratio
  (the engine's units), computed from the ImageNet train size at batch 1024.
"""

from __future__ import annotations

from dataclasses import dataclass

from vislearn.losses.dino import DINOLoss
from vislearn.losses.ensemble import WeightedEnsembleLoss
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.recipes.ssl import IMAGENET_TRAIN_IMAGES, SSLConfig, build_ssl_task
from vislearn.train.engine import Task

__all__ = ["DINOConfig", "DINORecipe", "dino_loss"]


@dataclass
class DINOConfig(SSLConfig):
    normalization: str = "sinkhorn"  # sinkhorn (DINO*) | center (DINO)
    center_momentum: float = 0.9


def dino_loss(cfg: DINOConfig, ensemble: WeightedEnsembleLoss) -> DINOLoss:
    """DINO's loss for ``cfg``; the center (if any) is updated once per optimizer step by the recipe's hook."""
    return DINOLoss(cfg.codes, cfg.heads, teacher_temp=cfg.teacher_temp, warmup_teacher_temp=cfg.warmup_teacher_temp,
                    warmup_teacher_temp_epochs=cfg.warmup_teacher_temp_epochs, student_temp=cfg.student_temp,
                    normalization=cfg.normalization, center_momentum=cfg.center_momentum, center_update="step",
                    sinkhorn_iterations=cfg.sinkhorn_iterations, ensemble=ensemble)


_BATCH = 1024  # App. B.1
_STEPS_PER_EPOCH = IMAGENET_TRAIN_IMAGES // _BATCH  # 1251

DINO_QUICK = DINOConfig(
    backbone="vit_tiny_p4", vit_dim=64, vit_depth=3, vit_heads=4,
    heads=1, scheme="ent", codes=256, head_hidden=256, head_dim=64, head_layers=3,
    gamma_epochs=5, warmup_teacher_temp_epochs=5,  # the paper's 30 epochs are more than this whole run
    num_local=2, global_size=32, local_size=16,
    dataset="photos", num_crops=1000, image_size=32,  # k-NN on the embedded shapes falls (module docstring)
    steps=300, batch_size=32, optimizer="adamw", lr=5e-4, weight_decay=0.04, schedule="cosine", warmup_steps=30,
    min_lr_ratio=0.01, clip_grad=3.0, log_every=50, eval_every=0, num_workers=1)

DINO_PAPER = DINOConfig(
    **PAPER_LOADING,
    backbone="vit_small_p16",  # Table 2 / Table 7: ViT-S/16
    drop_path=0.1,  # App. B.1: "stochastic depth 0.1"
    heads=16,  # Sec. 5 / Fig. 3a: 16 heads for DINO*-ENT
    scheme="ent",  # Table 1: ENT is the best scheme
    gamma=0.05, gamma_start=0.5, gamma_epochs=30,  # Sec. 5.1, Table 7: γ 0.05·log c, decayed from 0.5 over 30 epochs
    codes=1024,  # App. B.1: c = 1024 for the ensembles (4096 for the baseline: set codes=4096 heads=1)
    head_hidden=1024, head_dim=256, head_layers=3,  # App. B.1: 3-layer MLP, hidden 1024, 256-d L2-normalised
    student_temp=0.1,  # App. B.1 (DINO's value)
    teacher_temp=0.025, warmup_teacher_temp=0.05, warmup_teacher_temp_epochs=30,  # App. B.1, Table 7
    normalization="sinkhorn",  # App. B.1: Sinkhorn-Knopp replaces centering in DINO*
    momentum_start=0.996, momentum_end=1.0,  # App. B.1: teacher momentum 0.996 → 1, cosine
    global_size=224, local_size=96, global_scale=(0.25, 1.0), local_scale=(0.08, 0.25),  # App. B.1 multi-crop
    num_local=10,  # Table 7: 10 local crops
    dataset="folder", image_size=224,  # App. B.3: 224 centre crop for evaluation
    epochs=800,  # Table 7: ViT-S/16, 800 epochs
    batch_size=_BATCH,  # App. B.1: batch 1024
    optimizer="adamw", lr=2e-3,  # App. B.1: AdamW, lr 2e-3 (1e-3 × bs/512)
    schedule="cosine", warmup_steps=10 * _STEPS_PER_EPOCH,  # Table 7: 10 warm-up epochs for DINO* ViT-S/16
    min_lr_ratio=1e-5 / 2e-3,  # Table 7: min lr 1e-5
    clip_grad=3.0,  # Table 7: gradient clipping 3.0 for DINO* ViT-S/16
    weight_decay=0.04, weight_decay_end=0.4,  # App. B.1: weight decay 0.04 → 0.4, cosine over the run
    precision="bf16", log_every=100, eval_every=0, ckpt_every=5000)


@register_recipe("dino")
class DINORecipe(Recipe):
    """DINO* with ``heads`` (projection head, codebook) pairs and a weighting ``scheme``."""

    description = "DINO* self-supervised ViT with a weighted ensemble of heads (Ruan et al. 2023)"
    Config = DINOConfig
    data_formats = {"imagefolder": "folder"}
    presets = {"quick": DINO_QUICK, "paper": DINO_PAPER}

    def build(self, cfg: DINOConfig, data: str | None = None) -> Task:
        return build_ssl_task(cfg, data, "dino", dino_loss)
