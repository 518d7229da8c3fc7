"""The latent diffusion model, its scaling factor, its training loss and the ``latent_diffusion`` recipe."""

from __future__ import annotations

import pytest
import torch

from vislearn import recipes
from vislearn.diffusion import ddim
from vislearn.errors import UserError
from vislearn.io import save_weights
from vislearn.losses.diffusion import denoising_loss, x_prediction_loss
from vislearn.models import create_model
from vislearn.models.latent_diffusion import latent_scaling_factor


def _ldm(**kw):
    torch.manual_seed(0)
    return create_model("latent_diffusion", latent_channels=4, latent_size=4, width=16, **kw).eval()


def test_scaling_factor_is_reciprocal_std_and_stored():
    z = 3.0 * torch.randn(64, 4, 4, 4, generator=torch.Generator().manual_seed(0)) + 1.0
    ldm = _ldm()
    value = ldm.fit_scaling_factor(z)
    assert value == pytest.approx(1.0 / float(z.double().std()), rel=1e-6)
    assert float(ldm.scaling_factor) == pytest.approx(value, rel=1e-6)
    assert float(ldm.scale(z).std()) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(ldm.unscale(ldm.scale(z)), z)
    assert "scaling_factor" in ldm.state_dict()  # it travels with the weights


def test_scaling_factor_bad_input():
    with pytest.raises(UserError, match="constant"):
        latent_scaling_factor(torch.ones(10))
    with pytest.raises(UserError, match="NaN"):
        latent_scaling_factor(torch.tensor([1.0, float("nan")]))


def test_sample_is_the_ddim_sampler_on_denoise_then_unscaled():
    ldm = _ldm()
    ldm.scaling_factor.fill_(0.5)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    z = ldm.sample(2, steps=3, sampler="ddim", generator=g1)
    ref = ddim(ldm.denoise, (2, 4, 4, 4), None, steps=3, generator=g2) / 0.5
    torch.testing.assert_close(z, ref)
    assert z.shape == (2, 4, 4, 4)


def test_denoising_loss_equals_hand_noised_x_prediction_loss():
    ldm = _ldm()
    x = torch.randn(3, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    got = denoising_loss(ldm.denoise, x, None, "eps", 5.0, generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    t = torch.rand(3, generator=g)
    eps = torch.randn(x.shape, generator=g)
    alpha, sigma = torch.cos(t * torch.pi / 2), torch.sin(t * torch.pi / 2)  # ≈ the clipped cosine away from 0, 1
    x_t = alpha.view(-1, 1, 1, 1) * x + sigma.view(-1, 1, 1, 1) * eps
    snr = (alpha / sigma) ** 2
    want = (snr.clamp(max=5.0) * (x - ldm.denoise(x_t, t)).square().flatten(1).mean(1)).mean()
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        again = x_prediction_loss(x, ldm.denoise(x_t, t), t, "eps", max_weight=5.0)
    assert float(got.detach()) == pytest.approx(float(again), rel=1e-4)


@pytest.mark.parametrize("bad", [dict(latent_size=3, channel_mult=(1, 2)), dict(width=12, norm_groups=8),
                                 dict(channel_mult=())])
def test_bad_options(bad):
    with pytest.raises(UserError):
        create_model("latent_diffusion", **{"latent_channels": 4, "latent_size": 4, "width": 16, **bad})


def test_wrong_latent_shape():
    ldm = _ldm()
    with pytest.raises(UserError, match="N×4×h×w"):
        ldm(torch.randn(1, 3, 4, 4), torch.tensor([0.5]))
    with pytest.raises(UserError, match="divide"):
        ldm(torch.randn(1, 4, 3, 3), torch.tensor([0.5]))


def test_recipe_trains_on_a_saved_autoencoder(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLEARN_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    ae = create_model("swycc", latent_channels=4, downsample=8, width=8, refine_width=8, norm_groups=4,
                      refine_channel_mult=(1, 2), refine_attention=False)
    path = tmp_path / "ae.safetensors"
    save_weights(ae, path)
    overrides = {"autoencoder": str(path), "steps": 3, "batch_size": 16, "num_train": 32, "num_eval": 16,
                 "eval_samples": 8, "sample_steps": 2, "decode_steps": 1, "width": 16, "scale_sample": 32,
                 "log_every": 0, "feature_network": "shapes32"}
    from vislearn.recipes import feature_network

    monkeypatch.setitem(feature_network.SHAPES32, "steps", 5)  # a tiny feature network for the test
    r = recipes.run("latent_diffusion", "quick", overrides, progress=False)
    m = r.final_metrics
    assert set(m) >= {"fd", "mmd", "recon_fd", "recon_mmd", "scaling_factor"}
    assert all(torch.isfinite(torch.tensor(v)) for v in m.values())
    # the scaling factor is 1/std of a sample of the training latents (here all 32)
    from vislearn.recipes.latent_diffusion import autoencoder_images, encode_all

    z = encode_all(ae, autoencoder_images(r.cfg)[0])
    assert m["scaling_factor"] == pytest.approx(1.0 / float(z.double().std()), rel=1e-4)
    assert r.task.feature_record["network"] == "shapes32"


def test_recipe_refuses_a_non_autoencoder(tmp_path):
    path = tmp_path / "mlp.safetensors"
    save_weights(create_model("mlp", num_classes=3), path)
    with pytest.raises(UserError, match="not a swycc-family autoencoder"):
        recipes.run("latent_diffusion", "quick", {"autoencoder": str(path)}, progress=False)
    with pytest.raises(UserError, match="needs --set autoencoder"):
        recipes.run("latent_diffusion", "quick", {}, progress=False)
