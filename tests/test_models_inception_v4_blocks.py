"""Inception-ResNet-v1 and the paper-layout v2, block by block, against parameter counts written out
from the paper's figures (Szegedy et al. 2017, Figs. 7, 10-19): a changed width in any branch fails.

A convolution with batch norm (no bias) costs ``kh·kw·cin·cout + 2·cout``; the residual's 1×1 linear
"up" convolution has a bias: ``cin_branches·cout + cout``.
"""

import pytest

from vislearn.models import create_model
from vislearn.models.inception_v4_blocks import ReductionA, ReductionBRes, ResidualA, ResidualB, ResidualC


def conv(kh: int, kw: int, cin: int, cout: int) -> int:
    return kh * kw * cin * cout + 2 * cout


def up(cin: int, cout: int) -> int:
    return cin * cout + cout


def res_a(c: int, b2: tuple[int, int, int]) -> int:  # Figs. 10 / 16: 32 ‖ 32→3×3 32 ‖ 32→3×3 b2[1]→3×3 b2[2]
    branches = conv(1, 1, c, 32) + conv(1, 1, c, 32) + conv(3, 3, 32, 32) \
        + conv(1, 1, c, b2[0]) + conv(3, 3, b2[0], b2[1]) + conv(3, 3, b2[1], b2[2])
    return branches + up(32 + 32 + b2[2], c)


def reduction_a(c: int, k: int, l: int, m: int, n: int) -> int:  # noqa: E741 (Fig. 7, Table 1)
    return conv(3, 3, c, n) + conv(1, 1, c, k) + conv(3, 3, k, l) + conv(3, 3, l, m)


def res_b(c: int, a: int, b: tuple[int, int, int]) -> int:  # Figs. 11 / 17: a ‖ b0 → 1×7 b1 → 7×1 b2
    return conv(1, 1, c, a) + conv(1, 1, c, b[0]) + conv(1, 7, b[0], b[1]) + conv(7, 1, b[1], b[2]) + up(a + b[2], c)


def reduction_b(c: int, a: int, b: int, cc: int, d: int, e: int) -> int:  # Figs. 12 / 18
    return (conv(1, 1, c, a) + conv(3, 3, a, b) + conv(1, 1, c, a) + conv(3, 3, a, cc)
            + conv(1, 1, c, a) + conv(3, 3, a, d) + conv(3, 3, d, e))


def res_c(c: int, a: int, b: tuple[int, int, int]) -> int:  # Figs. 13 / 19: a ‖ b0 → 1×3 b1 → 3×1 b2
    return conv(1, 1, c, a) + conv(1, 1, c, b[0]) + conv(1, 3, b[0], b[1]) + conv(3, 1, b[1], b[2]) + up(a + b[2], c)


def _params(m) -> int:
    return sum(p.numel() for p in m.parameters())


# 35×35 / 17×17 / 8×8 widths: v1 256 / 896 / 1792 (Figs. 10-14); v2 384 / 1152 / 2144 (Figs. 16-19,
# with the documented corrections of Fig. 17's 1154 and Fig. 19's 2048 to what the concatenations give)
CASES = {
    "inception_resnet_v1": dict(
        a=res_a(256, (32, 32, 32)), ra=reduction_a(256, 192, 192, 256, 384),
        b=res_b(896, 128, (128, 128, 128)), rb=reduction_b(896, 256, 384, 256, 256, 256),
        c=res_c(1792, 192, (192, 192, 192)), depths=(5, 10, 5)),
    "inception_resnet_v2_paper": dict(
        a=res_a(384, (32, 48, 64)), ra=reduction_a(384, 256, 256, 384, 384),
        b=res_b(1152, 192, (128, 160, 192)), rb=reduction_b(1152, 256, 384, 288, 288, 320),
        c=res_c(2144, 192, (192, 224, 256)), depths=(5, 10, 5)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_block_matches_the_figures(name):
    want = CASES[name]
    model = create_model(name, num_classes=10)
    kinds = {ResidualA: "a", ReductionA: "ra", ResidualB: "b", ReductionBRes: "rb", ResidualC: "c"}
    seen = {k: 0 for k in kinds.values()}
    for m in model.modules():
        kind = kinds.get(type(m))
        if kind is not None:
            assert _params(m) == want[kind], f"{name}: {type(m).__name__} has {_params(m)} parameters"
            seen[kind] += 1
    assert (seen["a"], seen["b"], seen["c"]) == want["depths"]  # Fig. 15: 5 × A, 10 × B, 5 × C
    assert seen["ra"] == seen["rb"] == 1
