"""The baseline autoencoders' losses: hinge losses and KL by hand / closed form, the adaptive weight against
autograd, the discriminator start, and the gradient isolation of the one-optimizer GAN step."""

import pytest
import torch
import torch.nn as nn
from torch.distributions import Normal, kl_divergence

from vislearn.errors import UserError
from vislearn.losses.autoencoder import (
    GANAutoencoderLoss,
    MSEAutoencoderLoss,
    adaptive_weight,
    disc_factor,
    gaussian_kl,
    hinge_d_loss,
    hinge_g_loss,
    mse_autoencoder_loss,
)
from vislearn.models.patchgan import PatchDiscriminator


def test_hinge_losses_by_hand():
    real = torch.tensor([2.0, 0.5, -1.0])
    fake = torch.tensor([-2.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2] (mean 5/6), relu(1 + fake) = [0, 1, 2] (mean 1)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (5 / 6 + 1))
    assert hinge_g_loss(fake).item() == pytest.approx(1 / 3)


def test_gaussian_kl_is_the_closed_form():
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g)
    expected = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    torch.testing.assert_close(gaussian_kl(mean, logvar), expected)
    torch.testing.assert_close(gaussian_kl(mean, logvar, normalizer=48.0), expected / 48)
    assert gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0.0
    with pytest.raises(UserError, match="same shape"):
        gaussian_kl(mean, logvar[:, :2])


def test_adaptive_weight_by_hand_and_clamp():
    w = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    a, b = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([0.0, 1.0, 0.0])
    rec, gan = (w * a).sum(), 2 * (w * b).sum()  # gradients a (norm 5) and 2b (norm 2)
    assert adaptive_weight(rec, gan, w, disc_weight=0.5).item() == pytest.approx(0.5 * 5 / (2 + 1e-4))
    assert adaptive_weight(rec, 0 * gan, w).item() == pytest.approx(1e4)  # 5 / 1e-4 clamped to 1e4
    out = adaptive_weight(rec, gan, w)
    assert not out.requires_grad  # detached


def test_adaptive_weight_equals_autograd_on_a_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, padding=1)
    h = torch.randn(2, 4, 8, 8)
    out = conv(h)
    rec, gan = out.abs().mean(), -(out * torch.randn_like(out)).mean()
    (g_rec,) = torch.autograd.grad(rec, conv.weight, retain_graph=True)
    (g_gan,) = torch.autograd.grad(gan, conv.weight, retain_graph=True)
    expected = g_rec.norm() / (g_gan.norm() + 1e-4)
    torch.testing.assert_close(adaptive_weight(rec, gan, conv.weight), expected)


def test_disc_factor():
    assert [disc_factor(s, 3) for s in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]


class _Gen(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Conv2d(3, 8, 3, padding=1)
        self.out = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        mean, logvar = self.body(x).chunk(2, 1)
        return self.out(mean), mean, logvar


def _setup(lambda_perceptual=0.0, perceptual=None):
    torch.manual_seed(0)
    gen, disc = _Gen(), PatchDiscriminator(3, ndf=8, n_layers=2, norm="group")
    loss = GANAutoencoderLoss(disc, perceptual, lambda_perceptual=lambda_perceptual, kl_weight=0.1,
                              disc_weight=0.5, disc_start=2)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    return gen, disc, loss, x


def test_gan_step_isolates_each_players_gradient():
    gen, disc, loss, x = _setup()
    x_hat, mean, logvar = gen(x)
    terms = loss(x, x_hat, gen.out.weight, mean=mean, logvar=logvar, step=2)
    terms["loss"].backward()
    g_grads = [p.grad.clone() for p in gen.parameters()]
    d_grads = [p.grad.clone() for p in disc.parameters()]

    # the generator's objective by hand: L1 + kl_weight·KL + λ_adv·(−mean D(x̂)), gradient w.r.t. G only
    x_hat, mean, logvar = gen(x)
    rec = (x - x_hat).abs().mean()
    g = -disc(x_hat).mean()
    (gr,) = torch.autograd.grad(rec, gen.out.weight, retain_graph=True)
    (gg,) = torch.autograd.grad(g, gen.out.weight, retain_graph=True)
    lam = 0.5 * gr.norm() / (gg.norm() + 1e-4)
    kl = gaussian_kl(mean, logvar, normalizer=x[0].numel())
    gen_obj = rec + 0.1 * kl + lam.detach() * g
    expected_g = torch.autograd.grad(gen_obj, list(gen.parameters()))
    # the discriminator's objective by hand: hinge on real and on detached reconstructions, w.r.t. D only
    d_obj = hinge_d_loss(disc(x), disc(x_hat.detach()))
    expected_d = torch.autograd.grad(d_obj, list(disc.parameters()))

    for got, want in zip(g_grads, expected_g, strict=True):
        torch.testing.assert_close(got, want)
    for got, want in zip(d_grads, expected_d, strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(terms["adaptive_weight"], lam)
    torch.testing.assert_close(terms["d_loss"], d_obj.detach())


def test_discriminator_loss_alone_reaches_only_the_discriminator_and_vice_versa():
    gen, disc, loss, x = _setup()
    x_hat, mean, logvar = gen(x)
    logits = loss.discriminate_frozen(x_hat)
    (-logits.mean()).backward()  # the generator's adversarial term
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in gen.out.parameters())
    gen.zero_grad(set_to_none=True)
    x_hat, _, _ = gen(x)
    hinge_d_loss(disc(x), disc(x_hat.detach())).backward()  # what the loss does for D
    assert all(p.grad is None for p in gen.parameters())
    assert all(p.grad is not None for p in disc.parameters())


def test_before_disc_start_no_adversarial_terms():
    gen, disc, loss, x = _setup()
    x_hat, mean, logvar = gen(x)
    terms = loss(x, x_hat, gen.out.weight, mean=mean, logvar=logvar, step=1)
    terms["loss"].backward()
    assert all(p.grad is None for p in disc.parameters())
    expected = (x - x_hat).abs().mean() + 0.1 * gaussian_kl(mean, logvar, normalizer=x[0].numel())
    torch.testing.assert_close(terms["loss"], expected)
    assert terms["d_loss"].item() == 0.0 and terms["adaptive_weight"].item() == 0.0


def test_perceptual_term_and_validation():
    calls = []

    def perceptual(pred, target):
        calls.append(pred.shape)
        return (pred - target).square().mean() * 10

    gen, disc, loss, x = _setup(lambda_perceptual=2.0, perceptual=perceptual)
    x_hat, mean, logvar = gen(x)
    images, recon = (x + 1) / 2, ((x_hat + 1) / 2).clamp(0, 1)
    terms = loss(x, x_hat, gen.out.weight, images=images, recon=recon, step=0)
    torch.testing.assert_close(terms["loss"], (x - x_hat).abs().mean() + 2.0 * perceptual(recon, images))
    with pytest.raises(UserError, match="needs images= and recon="):
        loss(x, x_hat, gen.out.weight, step=0)
    with pytest.raises(UserError, match="lambda_perceptual=1.0 needs a perceptual callable"):
        GANAutoencoderLoss(disc, None, lambda_perceptual=1.0)
    with pytest.raises(UserError, match="kl_weight must be a finite number >= 0, got -1"):
        GANAutoencoderLoss(disc, None, lambda_perceptual=0.0, kl_weight=-1)
    with pytest.raises(UserError, match="disc_start must be an int >= 0"):
        GANAutoencoderLoss(disc, None, lambda_perceptual=0.0, disc_start=-5)
    with pytest.raises(UserError, match="discriminator must be an nn.Module"):
        GANAutoencoderLoss("patchgan", None, lambda_perceptual=0.0)


def test_mse_autoencoder_loss_by_hand():
    x = torch.tensor([[[[0.0, 1.0]]]])
    x_hat = torch.tensor([[[[0.5, 0.0]]]])
    out = mse_autoencoder_loss(x, x_hat, x, x_hat, lambda_mse=2.0)
    assert out["loss"].item() == pytest.approx(2.0 * (0.25 + 1.0) / 2)
    mod = MSEAutoencoderLoss(1.0, 0.5, lambda p, t: (p - t).abs().sum())
    assert mod(x, x_hat, x, x_hat)["loss"].item() == pytest.approx(0.625 + 0.5 * 1.5)
    with pytest.raises(UserError, match="lambda_mse must be a finite number >= 0"):
        MSEAutoencoderLoss(lambda_mse=float("nan"))


def test_patch_discriminator_shapes_and_errors():
    d = PatchDiscriminator(3, ndf=8, n_layers=3)
    assert d.min_input_size == 24
    assert tuple(d(torch.zeros(2, 3, 32, 32)).shape) == (2, 1, 2, 2)  # 32 → 4 (three /2) → 3 → 2
    assert tuple(PatchDiscriminator(3, 8, 2)(torch.zeros(1, 3, 32, 32)).shape) == (1, 1, 6, 6)
    with pytest.raises(UserError, match="smaller than the 24×24"):
        d(torch.zeros(1, 3, 16, 16))
    with pytest.raises(UserError, match="norm must be 'batch' or 'group'"):
        PatchDiscriminator(norm="instance")
