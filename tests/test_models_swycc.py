"""The SWYCC autoencoder: shapes, seeded decoding, joint gradients, diffusers interop, bad input."""

import pytest
import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

from vislearn.diffusion.schedules import alpha_sigma
from vislearn.errors import UserError
from vislearn.models import create_model

TINY = {"width": 8, "refine_width": 8, "norm_groups": 4}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("swycc", latent_channels=3, **TINY).eval()


def images(n=2, h=32, w=32, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("downsample", [8, 16])
def test_shapes(downsample):
    m = create_model("swycc", latent_channels=5, downsample=downsample, **TINY)
    x = images(2, 32, 48)
    z = m.encode(x)
    assert z.shape == (2, 5, 32 // downsample, 48 // downsample)
    assert m.decode_initial(z).shape == x.shape
    out = m.decode(z, steps=1)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    feats = m.forward_features(x)
    assert [f.shape[1] for f in feats] == [i.channels for i in m.feature_info]
    assert [32 // f.shape[2] for f in feats] == [i.stride for i in m.feature_info]
    assert m.feature_info[-1].stride == downsample and torch.equal(feats[-1], m(x))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "heun"])
def test_decode_is_deterministic_under_a_seeded_generator(model, sampler):
    z = model.encode(images())
    a, b, c = (model.decode(z, steps=2, sampler=sampler, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_reconstruct_equals_decode_of_encode(model):
    x = images()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    expected = model.decode(model.encode(x), steps=2, generator=g2)
    assert torch.equal(model.reconstruct(x, steps=2, generator=g1), expected)


def test_refine_loss_reaches_all_three_networks():
    m = create_model("swycc", latent_channels=3, **TINY)
    x = images()
    t = torch.tensor([0.3, 0.8])
    alpha, sigma = alpha_sigma(t)
    x_net = 2 * x - 1
    x_t = alpha.view(-1, 1, 1, 1) * x_net + sigma.view(-1, 1, 1, 1) * torch.randn_like(x)
    loss = (m.denoise(x_t, t, m.initial(m.encode(x))) - x_net).square().mean()
    loss.backward()
    for part in (m.encoder, m.decoder_initial, m.decoder_refine):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads), type(part).__name__
        assert sum(float(g.abs().sum()) for g in grads) > 0, type(part).__name__


def test_refine_unet_is_a_diffusers_config(model):
    twin = UNet2DModel.from_config(model.decoder_refine.config)
    twin.load_state_dict(model.decoder_refine.state_dict())
    x_t, cond = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    t = torch.tensor([0.25, 0.75])
    expected = twin(torch.cat([x_t, cond], 1), 1000 * t).sample
    torch.testing.assert_close(model.denoise(x_t, t, cond), expected)
    assert model.decoder_refine.config.in_channels == 6


def test_bad_input(model, tmp_path):
    with pytest.raises(UserError, match=r"image size 36×32 is not divisible by the downsample factor 8"):
        model.encode(images(1, 36, 32))
    with pytest.raises(UserError, match=r"values must be in \[0, 1\]"):
        model.encode(images() * 2)
    z = model.encode(images())
    with pytest.raises(UserError, match="steps must be an int >= 1, got 0"):
        model.decode(z, steps=0)
    with pytest.raises(UserError, match=r"unknown sampler 'dpm'"):
        model.decode(z, sampler="dpm")
    with pytest.raises(UserError, match=r"latent of shape N×3×h×w, got shape \(2, 4, 4, 4\)"):
        model.decode(z.repeat(1, 2, 1, 1)[:, :4])
    with pytest.raises(UserError, match="latent of shape"):
        model.decode_initial(z[0])
    with pytest.raises(UserError, match="downsample must be 8 or 16, got 4"):
        create_model("swycc", downsample=4)
    with pytest.raises(UserError, match="divisible by norm_groups"):
        create_model("swycc", width=12, norm_groups=8)
    other = tmp_path / "mlp.safetensors"
    save_file(create_model("mlp").state_dict(), str(other))
    with pytest.raises(UserError, match="does not fit SWYCC: missing keys"):
        create_model("swycc", weights=str(other), **TINY)


def test_weights_round_trip(model, tmp_path):
    path = tmp_path / "swycc.safetensors"
    save_file(model.state_dict(), str(path))
    twin = create_model("swycc", latent_channels=3, weights=str(path), **TINY).eval()
    z = model.encode(images())
    assert torch.equal(twin.decode_initial(z), model.decode_initial(z))
    with pytest.raises(UserError, match="does not fit SWYCC"):
        create_model("swycc", latent_channels=4, weights=str(path), **TINY)


def test_baseline_autoencoder_without_refine():
    torch.manual_seed(0)
    m = create_model("swycc", latent_channels=3, refine=False, **TINY).eval()
    assert not m.has_refine and not any(k.startswith("decoder_refine") for k in m.state_dict())
    z = m.encode(images())
    assert torch.equal(m.decode(z, steps=3), m.decode_initial(z))  # D_initial is the decoder
    assert torch.equal(m.reconstruct(images()), m.decode_initial(z))
    assert m.last_decoder_layer is m.decoder_initial.layers[-1] and m.last_decoder_layer.out_channels == 3
    with pytest.raises(UserError, match="steps must be an int >= 1, got 0"):
        m.decode(z, steps=0)
    with pytest.raises(UserError, match="no diffusion decoder"):
        m.denoise(torch.zeros(1, 3, 32, 32), torch.ones(1), torch.zeros(1, 3, 32, 32))
    with pytest.raises(UserError, match="refine must be true or false"):
        create_model("swycc", refine="no", **TINY)


def test_gaussian_posterior():
    torch.manual_seed(0)
    m = create_model("swycc", latent_channels=3, refine=False, posterior="gaussian", **TINY).eval()
    x = images()
    mean, logvar = m.posterior(x)
    moments = m.encoder(m.prepare_input(x))
    assert moments.shape == (2, 6, 4, 4) and m.feature_info[-1].channels == 6
    torch.testing.assert_close(mean, moments[:, :3])
    torch.testing.assert_close(logvar, moments[:, 3:].clamp(-30, 20))
    torch.testing.assert_close(m.encode(x), mean)  # the posterior's mode
    assert m.decode_initial(mean).shape == x.shape
    with pytest.raises(UserError, match="deterministic latent"):
        create_model("swycc", latent_channels=3, **TINY).posterior(x)
    with pytest.raises(UserError, match="posterior must be one of deterministic, gaussian, got 'vq'"):
        create_model("swycc", posterior="vq", **TINY)
