"""The ViT backbone: timm's forward on the normalised input, MSN's patch dropping equal to masking attention."""

import pytest
import torch

from vislearn.data.multicrop import random_patch_mask
from vislearn.errors import UserError
from vislearn.models import create_model
from vislearn.models.base import IMAGENET_MEAN, IMAGENET_STD


def _vit(**kw):
    torch.manual_seed(0)
    return create_model("vit_tiny_p4", **{"embed_dim": 48, "depth": 2, "num_heads": 3, "num_classes": 0, **kw}).eval()


def test_embed_is_timms_cls_token_on_the_normalised_image():
    model = _vit()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        timm_tokens = model.vit.forward_features((x - mean) / std)
        torch.testing.assert_close(model.embed(x), timm_tokens[:, 0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(x), timm_tokens[:, 0], rtol=1e-5, atol=1e-6)  # num_classes=0: features
        fmap = model.forward_features(x)[0]
        assert fmap.shape == (3, 48, 8, 8)
        torch.testing.assert_close(fmap.flatten(2).transpose(1, 2), timm_tokens[:, 1:], rtol=1e-5, atol=1e-6)


def test_dropping_patches_equals_hiding_them_from_attention():
    """Removing masked tokens before the blocks (MSN) = keeping them but letting no token attend to them:
    norms and MLPs act per token, so only attention mixes tokens."""
    model = _vit()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mask = random_patch_mask((8, 8), 0.3, batch_size=2, generator=torch.Generator().manual_seed(3))
    keep = torch.cat([torch.ones(2, 1, dtype=torch.bool), ~mask], dim=1)  # [CLS] is always kept
    attend = keep[:, None, None, :].expand(2, 1, 65, 65)  # True = may attend to that key
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        hidden = model.vit.forward_features((x - mean) / std, attn_mask=attend)[:, 0]
        dropped = model.embed(x, patch_mask=mask)
        torch.testing.assert_close(dropped, hidden, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(dropped, model.embed(x), atol=1e-3)  # the mask matters
        assert torch.equal(model.embed(x, patch_mask=torch.zeros(2, 64, dtype=torch.bool)), model.embed(x))


def test_any_input_size_and_bad_options():
    model = _vit()
    with torch.no_grad():
        assert model.forward_features(torch.rand(1, 3, 18, 22))[0].shape == (1, 48, 5, 6)  # ceil(H / 4)
    with pytest.raises(UserError, match="patch_mask must be"):
        model.embed(torch.rand(1, 3, 32, 32), patch_mask=torch.zeros(1, 10, dtype=torch.bool))
    with pytest.raises(UserError, match="not divisible by num_heads"):
        create_model("vit_tiny_p4", embed_dim=50, num_heads=3)
    with pytest.raises(UserError, match="values must be in"):
        model(torch.full((1, 3, 32, 32), 2.0))
