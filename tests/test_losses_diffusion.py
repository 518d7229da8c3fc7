"""vislearn.losses.diffusion: weightings by hand and by their ε/v equivalences, the joint SWYCC loss."""

import math

import pytest
import torch

from vislearn.diffusion.schedules import alpha_sigma
from vislearn.errors import UserError
from vislearn.losses.diffusion import SWYCCLoss, swycc_loss, time_weight, x_prediction_loss
from vislearn.models import create_model

TINY = {"width": 8, "refine_width": 8, "norm_groups": 4, "latent_channels": 3}


def test_weightings_by_hand():
    t = torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)
    x0 = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    c = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    x0_hat = c.view(-1, 1, 1, 1).expand(3, 1, 2, 2)
    alpha, sigma = alpha_sigma(t)
    snr = alpha**2 / sigma**2
    assert x_prediction_loss(x0, x0_hat, t, "x").item() == pytest.approx((1 + 4 + 9) / 3)
    assert x_prediction_loss(x0, x0_hat, t, "eps").item() == pytest.approx(float((snr * c**2).mean()))
    assert x_prediction_loss(x0, x0_hat, t, "v").item() == pytest.approx(float((c**2 / sigma**2).mean()))
    # at t = 0.5 (unclipped θ close to π/4) the SNR is about 1
    assert snr[1].item() == pytest.approx(1.0, rel=1e-3)
    capped = x_prediction_loss(x0, x0_hat, t, "eps", max_weight=1.0, reduction="none")
    torch.testing.assert_close(capped, torch.minimum(snr, torch.ones(3, dtype=torch.float64)) * c**2)
    assert x_prediction_loss(x0, x0_hat, t, reduction="sum").item() == pytest.approx(14.0)


def test_eps_and_v_weightings_equal_eps_and_v_losses():
    g = torch.Generator().manual_seed(0)
    x0, x0_hat, eps = (torch.randn(4, 3, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    t = torch.rand(4, generator=g, dtype=torch.float64) * 0.9 + 0.05
    a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
    x_t = a * x0 + s * eps
    eps_hat = (x_t - a * x0_hat) / s
    v, v_hat = a * eps - s * x0, a * eps_hat - s * x0_hat
    eps_mse = (eps - eps_hat).square().flatten(1).mean(1)
    v_mse = (v - v_hat).square().flatten(1).mean(1)
    torch.testing.assert_close(x_prediction_loss(x0, x0_hat, t, "eps", reduction="none"), eps_mse)
    torch.testing.assert_close(x_prediction_loss(x0, x0_hat, t, "v", reduction="none"), v_mse)


def test_swycc_loss_terms_and_gradients():
    torch.manual_seed(0)
    model = create_model("swycc", **TINY)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    seen = {}

    def perceptual(pred, target):
        seen["range"] = (float(pred.detach().min()), float(pred.detach().max()))
        return (pred - target).abs().mean()

    terms = swycc_loss(model, images, lambda_mse=0.5, lambda_perceptual=0.1, perceptual=perceptual,
                       generator=torch.Generator().manual_seed(2))
    # recompute each term by hand with the same draws
    g = torch.Generator().manual_seed(2)
    x = 2 * images - 1
    t = torch.rand(2, generator=g)
    eps = torch.randn(x.shape, generator=g)
    a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
    with torch.no_grad():
        x_init = model.initial(model.encode(images))
        diffusion = (model.denoise(a * x + s * eps, t, x_init) - x).square().mean()
        mse = (x - x_init).square().mean()
        perc = ((x_init.clamp(-1, 1) + 1) / 2 - images).abs().mean()
    torch.testing.assert_close(terms.diffusion, diffusion)
    torch.testing.assert_close(terms.mse, mse)
    torch.testing.assert_close(terms.perceptual, perc)
    torch.testing.assert_close(terms.loss.detach(), diffusion + 0.5 * mse + 0.1 * perc)
    assert 0 <= seen["range"][0] and seen["range"][1] <= 1
    terms.loss.backward()
    for part in (model.encoder, model.decoder_initial, model.decoder_refine):
        assert sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None) > 0


def test_module_defaults_and_validation():
    assert SWYCCLoss().lambda_perceptual == 0.0
    with_net = SWYCCLoss(perceptual=torch.nn.L1Loss())
    assert with_net.lambda_perceptual == 0.1 and list(with_net.parameters()) == []
    with pytest.raises(UserError, match=r"unknown weighting 'epsilon'; did you mean 'eps'"):
        SWYCCLoss(weighting="epsilon")
    with pytest.raises(UserError, match="lambda_mse must be a finite number >= 0, got -1"):
        SWYCCLoss(lambda_mse=-1)
    with pytest.raises(UserError, match="needs a perceptual callable"):
        SWYCCLoss(lambda_perceptual=0.1)
    with pytest.raises(UserError, match="max_weight must be a positive number"):
        SWYCCLoss(max_weight=0)
    with pytest.raises(UserError, match="must be a callable"):
        SWYCCLoss(perceptual="vgg")
    with pytest.raises(UserError, match=r"t must have shape \(2,\)"):
        x_prediction_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        time_weight(torch.tensor([1.5]))
    assert math.isfinite(time_weight(torch.tensor([0.0]), "v").item())
