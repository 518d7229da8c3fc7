"""The ``msn`` recipe's presets: MSN* is DINO* plus ME-MAX and masking (App. B.2, Table 8)."""

from vislearn.recipes import get_recipe
from vislearn.recipes.dino import DINO_PAPER, DINO_QUICK


def test_paper_preset_is_msn_star_vit_s16():
    cfg = get_recipe("msn").config("paper")
    assert (cfg.heads, cfg.gamma, cfg.me_max_weight, cfg.sinkhorn_iterations, cfg.mask_ratio) == (8, 0.01, 4.0, 0, 0.2)
    assert cfg.warmup_steps == 20 * (1_281_167 // 1024) and cfg.clip_grad == 1.0  # Table 8, ViT-S/16
    # everything else is DINO*'s (head, multi-crop, optimiser, schedules)
    for name in ("backbone", "codes", "head_hidden", "head_dim", "lr", "batch_size", "epochs", "teacher_temp",
                 "warmup_teacher_temp", "momentum_start", "num_local", "local_size", "weight_decay"):
        assert getattr(cfg, name) == getattr(DINO_PAPER, name), name


def test_quick_preset_is_dinos_with_the_msn_loss():
    cfg = get_recipe("msn").config("quick")
    assert (cfg.steps, cfg.vit_dim, cfg.num_local, cfg.dataset) == (DINO_QUICK.steps, DINO_QUICK.vit_dim,
                                                                    DINO_QUICK.num_local, "shapes")
    assert (cfg.gamma, cfg.mask_ratio, cfg.me_max_weight, cfg.sinkhorn_iterations) == (0.01, 0.2, 4.0, 0)
