"""Recipe ``swycc``: every objective trains a few steps through recipes.run, the arms share the autoencoder
family and latent size, the evaluation's numbers against the metrics, and the config errors."""

import math

import pytest
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from vislearn.errors import UserError
from vislearn.metrics.generative import high_frequency_ratio, psnr, ssim
from vislearn.recipes import build, get_recipe, run
from vislearn.recipes.swycc import PerceptualLoss, evaluate_autoencoder

TINY = {"steps": 3, "num_train": 16, "num_eval": 8, "batch_size": 8, "width": 8, "refine_width": 8,
        "refine_channel_mult": "1,2", "disc_ndf": 8, "disc_start": 1, "eval_steps": 2, "lr": 1e-3,
        "perceptual_layers": "relu1_2", "log_every": 1}


@pytest.mark.parametrize("objective", ["swycc", "mse", "gan"])
def test_each_objective_trains(objective):
    before = {}

    def snapshot(cfg, task):
        before.update({k: v.clone() for k, v in task.model.state_dict().items()})

    result = run("swycc", "quick", {**TINY, "objective": objective}, progress=False, on_build=snapshot)
    train = [r for r in result.history if r["split"] == "train"]
    assert len(train) == 3 and all(math.isfinite(r["loss"]) for r in train)
    after = result.task.model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("decoder_initial.") for k in changed)
    assert result.task.model.has_refine == (objective == "swycc")
    if objective == "swycc":
        assert any(k.startswith("decoder_refine.") for k in changed)
        assert set(result.final_metrics) >= {"psnr", "ssim", "hf_ratio", "perceptual", "psnr_initial"}
    if objective == "gan":
        disc = result.task.module.loss.discriminator
        assert int(result.task.module.step) == 3  # StepHook: the discriminator ran at steps 1 and 2 (0-based)
        assert train[0]["d_loss"] == 0.0 and train[1]["d_loss"] > 0  # disc_start=1
        assert any(p.abs().sum() > 0 for p in disc.parameters())
    assert all(math.isfinite(v) for v in result.final_metrics.values())


def test_gan_arm_with_accumulation_and_bf16():
    """The adaptive weight's autograd.grad inside the engine's forward under autocast and 2 micro-batches."""
    result = run("swycc", "quick", {**TINY, "objective": "gan", "grad_accum_steps": 2, "precision": "bf16",
                                    "disc_start": 0, "steps": 2}, progress=False)
    train = [r for r in result.history if r["split"] == "train"]
    assert all(math.isfinite(r["loss"]) and r["d_loss"] > 0 and r["adaptive_weight"] > 0 for r in train)


def test_arms_share_the_family_and_latent_size():
    x = torch.rand(2, 3, 32, 32)
    shapes = {}
    for objective in ("swycc", "mse", "gan"):
        _, task = build("swycc", "quick", {**TINY, "objective": objective})
        shapes[objective] = tuple(task.model.encode(x).shape)
        assert task.model.model_name == "swycc"
    assert shapes == {"swycc": (2, 4, 4, 4), "mse": (2, 4, 4, 4), "gan": (2, 4, 4, 4)}


def test_evaluate_matches_the_metrics():
    _, task = build("swycc", "quick", {**TINY, "objective": "mse"})
    model = task.model.eval()
    perceptual = PerceptualLoss(layers=("relu1_2",))
    loader = DataLoader(task.eval_set, batch_size=5)
    with torch.no_grad():
        out = evaluate_autoencoder(model, loader, perceptual)
        images = torch.stack([task.eval_set[i][0] for i in range(len(task.eval_set))])
        recon = model.decode_initial(model.encode(images))
        assert out["psnr"] == pytest.approx(psnr(recon, images).mean().item(), rel=1e-5)
        assert out["ssim"] == pytest.approx(ssim(recon, images).mean().item(), rel=1e-5)
        assert out["hf_ratio"] == pytest.approx(high_frequency_ratio(recon, images).item(), rel=1e-5)
        assert out["perceptual"] == pytest.approx(perceptual.distance(recon, images).mean().item(), rel=1e-4)


def test_swycc_evaluation_is_seeded():
    _, task = build("swycc", "quick", {**TINY, "objective": "swycc"})
    model = task.model.eval()
    loader = DataLoader(task.eval_set, batch_size=8)
    with torch.no_grad():
        a = evaluate_autoencoder(model, loader, None, steps=2, seed=3)
        b = evaluate_autoencoder(model, loader, None, steps=2, seed=3)
        c = evaluate_autoencoder(model, loader, None, steps=2, seed=4)
    assert a == b and a["psnr"] != c["psnr"]


def test_perceptual_weights_file(tmp_path):
    from vislearn.models import create_model

    torch.manual_seed(5)
    vgg = create_model("vgg16", features_only=True)
    path = tmp_path / "vgg16.safetensors"
    save_file({k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}, str(path))
    loaded = PerceptualLoss(str(path), layers=("relu1_2", "relu2_2"))
    torch.testing.assert_close(loaded.metric.backbone.features[0].weight, vgg.features[0].weight)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert loaded(x, x).item() == 0.0 and loaded(x, y).item() > 0
    with pytest.raises(UserError, match="perceptual_weights: no file"):
        PerceptualLoss(str(tmp_path / "missing.pth"))


def test_presets_carry_the_paper_values():
    paper = get_recipe("swycc").presets["paper"]
    assert (paper.batch_size, paper.steps, paper.lr, paper.warmup_steps, paper.schedule, paper.clip_grad) == \
        (256, 1_000_000, 1e-4, 10_000, "cosine", 1.0)
    assert (paper.lambda_mse, paper.image_size, paper.kl_weight, paper.disc_weight, paper.disc_start) == \
        (1.0, 256, 1e-6, 0.5, 50_001)
    from vislearn.recipes.swycc import lambda_perceptual_of

    assert lambda_perceptual_of(paper) == 0.1
    assert lambda_perceptual_of(get_recipe("swycc").config("paper", {"objective": "gan"})) == 1.0


def test_config_errors():
    with pytest.raises(UserError, match="objective must be one of swycc, mse, gan, got 'vae'"):
        build("swycc", "quick", {**TINY, "objective": "vae"})
    with pytest.raises(UserError, match="image_size 36 must be divisible by downsample 8"):
        build("swycc", "quick", {**TINY, "image_size": 36})
    with pytest.raises(UserError, match="needs --data ROOT"):
        build("swycc", "paper", {"steps": 1})
    with pytest.raises(UserError, match="eval_steps must be >= 1"):
        build("swycc", "quick", {**TINY, "eval_steps": 0})
