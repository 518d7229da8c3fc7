"""Two gloo processes (torchrun) of ``vislearn train dino`` follow one process at the same global batch:
the views are seeded per sample, the ViT has no batch statistics and DINO's center is all-reduced."""

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _ddp import final_state, loss_curve, train_one_and_two  # noqa: E402


def test_two_process_dino_matches_one_process(tmp_path):
    settings = {"steps": 4, "log_every": 1, "batch_size": 8, "heads": 2, "normalization": "center",
                "optimizer": "sgd", "lr": 0.5, "warmup_steps": 0, "clip_grad": 0, "num_workers": 0,
                "vit_dim": 24, "vit_depth": 1, "vit_heads": 3, "codes": 16, "head_hidden": 16, "head_dim": 8,
                "num_local": 1, "global_size": 16, "local_size": 8, "image_size": 16, "num_classes": 4,
                "samples_per_class": 4, "knn_k": 3, "warmup_teacher_temp_epochs": 3}
    args = ["dino"] + [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]
    one, two = train_one_and_two(args, tmp_path)
    c1, c2 = loss_curve(one), loss_curve(two)
    assert [s for s, _ in c1] == [s for s, _ in c2] == [1, 2, 3, 4]
    assert c1[0][1] != c1[-1][1]  # it trains
    for (_, l1), (_, l2) in zip(c1, c2, strict=True):
        assert math.isclose(l1, l2, rel_tol=1e-4), (c1, c2)
    # the whole training module: student, teacher (EMA once per step) and the all-reduced center
    w1, w2 = final_state(one), final_state(two)
    assert "loss.center" in w1 and "teacher.module.heads.codebook" in w1 and w1.keys() == w2.keys()
    assert w1["loss.center"].abs().sum() > 0
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6, msg=k)


def test_paper_preset_is_dino_star_vit_s16():
    import timm

    from vislearn.cli import main
    from vislearn.recipes import get_recipe
    from vislearn.recipes.ssl import ssl_backbone

    cfg = get_recipe("dino").config("paper")
    assert cfg.lr == 1e-3 * cfg.batch_size / 512 == 2e-3  # App. B.1: lr 1e-3 × bs/512 at batch 1024
    assert cfg.warmup_steps == 10 * (1_281_167 // 1024)  # Table 7: 10 warm-up epochs of ImageNet at batch 1024
    assert cfg.lr * cfg.min_lr_ratio == 1e-5 and cfg.epochs == 800 and cfg.clip_grad == 3.0  # Table 7
    assert (cfg.heads, cfg.codes, cfg.scheme, cfg.normalization) == (16, 1024, "ent", "sinkhorn")
    assert (cfg.teacher_temp, cfg.warmup_teacher_temp, cfg.warmup_teacher_temp_epochs) == (0.025, 0.05, 30)
    assert (cfg.global_size, cfg.local_size, cfg.num_local) == (224, 96, 10)
    # the backbone is ViT-S/16: timm's vit_small_patch16_224 without its classifier, parameter for parameter
    backbone = ssl_backbone(cfg)
    reference = timm.create_model("vit_small_patch16_224", num_classes=0, pretrained=False)
    assert sum(p.numel() for p in backbone.parameters()) == sum(p.numel() for p in reference.parameters())
    assert backbone.num_features == 384 and backbone.patch_size == 16
    assert main(["train", "dino", "--preset", "paper", "--out", "/nonexistent/o"]) == 2  # needs --data ROOT
