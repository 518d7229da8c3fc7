"""MultiHead: shapes, independent heads, each head equal to a plain MLP + normalised codebook,
parameter counts in closed form, and what a teacher copy / EMA needs."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.models.ssl_heads import MultiHead, head_parameter_count


def test_shapes_and_range():
    heads = MultiHead(num_heads=4, in_dim=12, hidden_dim=32, out_dim=8, num_codes=20)
    x = torch.randn(5, 12)
    logits = heads(x)
    assert logits.shape == (5, 4, 20)
    assert logits.abs().max() <= 1 + 1e-6
    z = heads.embed(x)
    assert z.shape == (5, 4, 8)
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(5, 4))


def test_each_head_is_an_mlp_with_a_normalised_codebook():
    heads = MultiHead(num_heads=3, in_dim=6, hidden_dim=10, out_dim=4, num_codes=7, num_layers=3)
    x = torch.randn(8, 6)
    out = heads(x)
    for i in range(3):
        mlp = nn.Sequential(nn.Linear(6, 10), nn.GELU(), nn.Linear(10, 10), nn.GELU(), nn.Linear(10, 4))
        with torch.no_grad():
            for lin, stacked in zip([mlp[0], mlp[2], mlp[4]], heads.layers, strict=True):
                lin.weight.copy_(stacked.weight[i].t())
                lin.bias.copy_(stacked.bias[i])
        want = F.normalize(mlp(x), dim=-1) @ F.normalize(heads.codebook[i], dim=-1).t()
        torch.testing.assert_close(out[:, i], want, rtol=1e-5, atol=1e-6)


def test_heads_are_independently_initialised():
    heads = MultiHead(num_heads=4, in_dim=6, hidden_dim=10, out_dim=4, num_codes=7)
    for p in heads.parameters():
        if p.dim() >= 2 and p.shape[0] == 4 and p.abs().sum() > 0:  # biases start at zero
            for i in range(1, 4):
                assert not torch.allclose(p[0], p[i])
    out = heads(torch.randn(3, 6))
    assert not torch.allclose(out[:, 0], out[:, 1])
    # DINO's init: truncated normal, std 0.02, within ±2 std
    w = heads.layers[0].weight
    assert w.abs().max() <= 0.04 + 1e-7 and 0.01 < w.std() < 0.02


@pytest.mark.parametrize("h, layers", [(1, 3), (16, 3), (2, 1), (3, 2)])
def test_parameter_counts_by_closed_form(h, layers):
    d, hid, out, c = 384, 64, 32, 100
    heads = MultiHead(num_heads=h, in_dim=d, hidden_dim=hid, out_dim=out, num_codes=c, num_layers=layers)
    n = sum(p.numel() for p in heads.parameters())
    assert n == h * head_parameter_count(d, hid, out, c, layers)
    widths = [d] + [hid] * (layers - 1) + [out]
    plain = nn.Sequential(*[nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)])
    assert n == h * (sum(p.numel() for p in plain.parameters()) + c * out)  # an nn.Linear MLP + codes per head
    # the paper's DINO* ensemble head, one pair: ViT-S feature 384, hidden 1024, 256-d, 1024 codes
    assert head_parameter_count(384, 1024, 256, 1024, 3) == 394240 + 1049600 + 262400 + 262144


def test_teacher_copy_and_ema_friendly():
    student = MultiHead(num_heads=2, in_dim=6, hidden_dim=10, out_dim=4, num_codes=7)
    teacher = copy.deepcopy(student).requires_grad_(False)
    x = torch.randn(3, 6)
    torch.testing.assert_close(teacher(x), student(x))
    assert set(teacher.state_dict()) == set(student.state_dict())
    assert not list(student.buffers())  # no hidden state beside the parameters
    student(x).sum().backward()
    assert all(p.grad is not None for p in student.parameters())
    with torch.no_grad():  # an EMA step over the state dict moves the teacher towards the student
        for p in student.parameters():
            p.add_(1.0)
        for pt, ps in zip(teacher.parameters(), student.parameters(), strict=True):
            pt.lerp_(ps, 0.004)
    assert not torch.allclose(teacher(x), student(x))


def test_bad_arguments_and_input():
    with pytest.raises(UserError, match="num_heads must be an int >= 1, got 0"):
        MultiHead(num_heads=0, in_dim=4)
    with pytest.raises(UserError, match="num_codes"):
        MultiHead(num_heads=1, in_dim=4, num_codes=0)
    with pytest.raises(UserError, match=r"\(batch, 4\)"):
        MultiHead(num_heads=1, in_dim=4, hidden_dim=8, out_dim=4, num_codes=5)(torch.randn(2, 5))
