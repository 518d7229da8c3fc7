"""Embedding network: registry backbones + linear embedding head."""

import pytest
import torch

from vislearn.errors import UserError
from vislearn.models import create_model, list_models


def test_embedding_net_small_convnet():
    m = create_model("embedding_net", backbone="small_convnet", embedding_dim=24)
    x = torch.rand(3, 3, 32, 32)
    e = m(x)
    assert e.shape == (3, 24)
    assert m.feature_info == m.backbone.feature_info  # the backbone's stages, forwarded
    # the head is exactly pool + linear on the backbone's last map
    ref = m.embedding(m.backbone.forward_features(x)[-1].mean((2, 3)))
    assert torch.allclose(e, ref)
    # the backbone's classifier is dropped (no unused parameters under DDP)
    assert isinstance(m.backbone.classifier, torch.nn.Identity)
    e.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    n = sum(p.numel() for p in m.parameters())
    assert n == (3 * 9 * 16 + 16 * 2) + (16 * 9 * 32 + 32 * 2) + (32 * 9 * 64 + 64 * 2) + (64 * 9 * 128 + 128 * 2) \
        + 128 * 24 + 24


def test_embedding_net_normalization_and_output_norm():
    m = create_model("embedding_net", backbone="small_convnet", embedding_dim=8, normalize_output=True,
                     normalization=((0.1,) * 3, (0.2,) * 3))
    assert m.normalization[0] == pytest.approx((0.1,) * 3) and m.backbone.normalization == m.normalization
    e = m(torch.rand(2, 3, 16, 16))
    assert torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        m(torch.rand(2, 3, 16, 16) * 5)


def test_embedding_net_other_backbone_and_errors():
    assert {"embedding_net", "small_convnet"} <= set(list_models())
    m = create_model("embedding_net", backbone="small_convnet", embedding_dim=4,
                     backbone_kwargs={"batch_norm": False, "widths": (4, 4, 8, 8)})
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert m(torch.rand(2, 3, 16, 16)).shape == (2, 4)
    with pytest.raises(UserError, match="embedding_dim"):
        create_model("embedding_net", backbone="small_convnet", embedding_dim=0)
    with pytest.raises(UserError, match="unknown model"):
        create_model("embedding_net", backbone="no_such_net")


def test_embedding_head_on_precomputed_maps():
    from vislearn.models.embedding import EmbeddingHead

    torch.manual_seed(0)
    maps = torch.randn(3, 6, 5, 5)
    linear = EmbeddingHead(6, 4)  # width 0: pool + linear, i.e. W·mean(map) + b
    torch.testing.assert_close(linear(maps), maps.mean((2, 3)) @ linear.embedding.weight.T + linear.embedding.bias)
    torch.testing.assert_close(linear(maps.mean((2, 3))), linear(maps))  # vectors are taken as pooled features
    conv = EmbeddingHead(6, 4, width=8).eval()
    bn = conv.stage.bn  # fresh running statistics: eval BN is x / sqrt(1 + eps)
    hidden = torch.nn.functional.conv2d(maps, conv.stage.conv.weight, stride=2, padding=1) / (1 + bn.eps) ** 0.5
    want = conv.embedding(hidden.relu().mean((2, 3)))  # 3x3 stride 2: 5x5 -> 3x3, then pool
    assert conv(maps).shape == (3, 4)
    torch.testing.assert_close(conv(maps), want)
    with pytest.raises(UserError, match="needs \\(N, C, H, W\\) maps"):
        conv(maps.mean((2, 3)))
    with pytest.raises(UserError, match="width must be an int >= 0"):
        EmbeddingHead(6, 4, width=-1)
