"""``vislearn.metrics.frozen``: the one feature rule for convnets, ViT token sequences and vectors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from vislearn.data.embedded import TensorImageDataset
from vislearn.errors import UserError
from vislearn.metrics.frozen import backbone_features, extract_features


class _Tokens(nn.Module):
    """forward_features returns a token sequence (N, 1 + 4, 3): token 0 is the image mean, 1.. are zeros."""

    def forward_features(self, x):
        cls = x.mean((1, 2, 3)).unsqueeze(1).expand(-1, 3)
        return [torch.cat([cls.unsqueeze(1), torch.zeros(len(x), 4, 3)], 1)]


def test_rule_per_output_shape():
    x = torch.rand(5, 3, 8, 8)
    assert torch.equal(backbone_features(_Tokens(), x), x.mean((1, 2, 3)).unsqueeze(1).expand(-1, 3))
    conv = nn.Conv2d(3, 6, 3)
    conv.forward_features = lambda t: [conv(t)]
    assert torch.allclose(backbone_features(conv, x), conv(x).mean((2, 3)))
    lin = nn.Sequential(nn.Flatten(), nn.Linear(192, 7))
    assert torch.equal(backbone_features(lin, x), lin(x))
    conv.embed = lambda t: t.amax((2, 3))  # a model's own embed wins over forward_features
    assert torch.equal(backbone_features(conv, x), x.amax((2, 3)))
    with pytest.raises(UserError, match="shape"):
        backbone_features(nn.Flatten(0), x)


def test_extract_features_batched_eval_no_grad_order():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
    model.forward_features = lambda t: [model(t)]
    model.train()
    images, labels = torch.rand(10, 3, 8, 8), torch.arange(10) % 3
    feats, y = extract_features(model, TensorImageDataset(images, labels), batch_size=3)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expect = model(images).mean((2, 3))
    assert torch.allclose(feats, expect, atol=1e-6) and torch.equal(y, labels) and not feats.requires_grad
    with pytest.raises(UserError, match="batch_size"):
        extract_features(model, TensorImageDataset(images, labels), batch_size=0)
