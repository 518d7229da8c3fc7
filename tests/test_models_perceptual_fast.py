"""The perceptual metric's fast path (bf16 trunk copy, fused reduction, compiled wiring) against lpips fp32
on natural images, and the precomputed-reference path against the pairwise one."""

import os
import sys
from pathlib import Path

import lpips
import pytest
import skimage.data
import torch
import torch.nn.functional as F

from vislearn.data.distortions import distort
from vislearn.errors import UserError
from vislearn.metrics.perceptual import create_metric
from vislearn.models.perceptual_fast import FastTrunk, delta_pooled, normalize_taps, pooled_sq_diff, state_features
from vislearn.models.vgg import VGG16

sys.path.insert(0, str(Path(__file__).parent))
from _oracles import lpips_vgg_peer  # noqa: E402

LIN = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
TOL = 1e-2  # the fast path's distance: within 1% (relative) of fp32


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(5)
    return VGG16(features_only=True).eval()


@pytest.fixture(scope="module")
def photos():
    """Two embedded photos at 64×64 and four mild distortions of the first (noise, blur, JPEG, contrast)."""
    imgs = [torch.from_numpy(getattr(skimage.data, n)()).permute(2, 0, 1).float().div(255)[None]
            for n in ("astronaut", "coffee")]
    imgs = [F.interpolate(i, size=(64, 64), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
            for i in imgs]
    ref = imgs[0]
    dist = torch.cat([distort(ref, k, lv, seed=i) for i, (k, lv) in
                      enumerate((("noise", 1), ("blur", 1), ("jpeg", 2), ("contrast", 1)))])
    return ref, dist, imgs[1]


def _rel(a, b):
    return float(((a - b).abs() / b.abs()).max())


@pytest.fixture(scope="module")
def compiled(backbone):
    """The compiled fast path, captured by dynamo with its "eager" backend (the inductor graphs compile for
    minutes; their numbers are checked by benchmarks/perceptual.py against the same lpips oracle). One
    instance for the module: each new input shape is traced once."""
    m = create_metric("lpips_vgg", lin_weights=LIN, backbone=backbone, fast=True, compile=True)
    m.compile_backend = "eager"
    return m


def test_fast_matches_lpips_fp32_on_photos(backbone, photos, compiled):
    ref, dist, other = photos
    peer = lpips_vgg_peer(backbone.features)
    comp = compiled
    eager = create_metric("lpips_vgg", lin_weights=LIN, backbone=backbone, fast=True)
    with torch.no_grad():
        want = peer(ref.expand(4, -1, -1, -1), dist, normalize=True).flatten()
        got = comp(ref, dist)
        assert got.dtype == torch.float32
        assert _rel(got, want) < TOL  # the difference path: within 1e-2 of fp32
        # the plain bf16 trunk (eager fast): bf16's accuracy, several times further off on these mild distortions
        assert TOL / 2 < _rel(eager(ref, dist), want) < 5 * TOL
        # an unrelated photo is far: the check is not passing on near-equal numbers only
        far = peer(ref, other, normalize=True).flatten()
        assert _rel(comp(ref, other), far) < TOL and float(far) > 2 * float(want.max())
        # the fp32 path is lpips to float precision (the tolerance above is the fast path's alone)
        fp32 = create_metric("lpips_vgg", lin_weights=LIN, backbone=backbone)
        torch.testing.assert_close(fp32(ref, dist), want, rtol=1e-5, atol=1e-7)


def test_precomputed_reference_equals_pairwise(backbone, photos, compiled):
    ref, dist, _ = photos
    metrics = [create_metric("semantic_vgg16", backbone=backbone, fast=fast) for fast in (False, True)]
    for m in metrics + [compiled]:
        with torch.no_grad():
            # (the compiled metric: no equal-batch call, each new shape costs a trace; its other shapes are checked)
            pairwise = m(ref, dist) if m is compiled else m(ref.expand(4, -1, -1, -1).contiguous(), dist)
            pre = m.reference(ref)
            torch.testing.assert_close(m(pre, dist), pairwise, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(m(ref, dist), pairwise, rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(m.pair_features(pre, dist) @ m.head.flat_weights(), pairwise)
            # one by one against the same precomputed features: batching changes nothing
            one = torch.cat([m(pre, dist[i:i + 1]) for i in range(4)])
            torch.testing.assert_close(one, pairwise, rtol=1e-5, atol=1e-7)


def test_fast_trunk_taps_and_fused_reduction(backbone, photos):
    """FastTrunk is the backbone's taps in bf16; pooled_sq_diff is the unfused formula."""
    ref, dist, _ = photos
    trunk = FastTrunk(backbone)
    with torch.no_grad():
        taps = trunk(dist)
        want = backbone.taps((dist - backbone.norm_mean) / backbone.norm_std)
        assert [t.dtype for t in taps] == [torch.bfloat16] * 5
        assert [t.shape for t in taps] == [t.shape for t in want]
        assert all(t.is_contiguous(memory_format=torch.channels_last) for t in taps)
        for t, w in zip(taps, want, strict=True):
            assert float((t.float() - w).norm() / w.norm()) < 2e-2
        r = normalize_taps(trunk(ref), range(5))
        d = pooled_sq_diff(r, taps, range(5))
        b = normalize_taps(taps, range(5))
        by_hand = torch.cat([((r[i] - b[i]) ** 2).mean((2, 3)) for i in range(5)], 1)
        torch.testing.assert_close(d, by_hand)
        assert d.shape == (4, 64 + 128 + 256 + 512 + 512)
    # stopping at an earlier stage: fewer taps, the same values
    assert len(FastTrunk(backbone, num_stages=2)(dist)) == 2


def test_difference_propagation_is_exact_algebra(backbone, photos):
    """In fp32 the difference trunk (z + conv(Δ), relu/pool differences) gives the two-trunk numbers."""
    ref, dist, _ = photos
    trunk = FastTrunk(backbone, dtype=torch.float32)
    with torch.no_grad():
        state = trunk.reference_state(ref)
        got = delta_pooled(trunk, dist, state, range(5))
        want = pooled_sq_diff(normalize_taps(trunk(ref), range(5)), trunk(dist), range(5))
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-9)
        for a, b in zip(state_features(trunk, state, range(5)), normalize_taps(trunk(ref), range(5)), strict=True):
            torch.testing.assert_close(a, b)
        # a subset of stages selects the same columns
        sub = delta_pooled(trunk, dist, state, [1, 3])
        torch.testing.assert_close(sub, torch.cat([got[:, 64:192], got[:, 448:960]], 1))


def test_compiled_path_wiring(backbone, photos, compiled):
    """The compiled path keeps the reference's state, computes the difference path's numbers, and falls
    back to the same path eagerly when a gradient is needed."""
    ref, dist, _ = photos
    m = compiled
    with torch.no_grad():
        pre = m.reference(ref)
        assert pre.features is None and len(pre.state) == 14  # the input and 13 pre-activations
        trunk = FastTrunk(backbone)
        want = delta_pooled(trunk, dist, trunk.reference_state(ref), range(5))
        torch.testing.assert_close(m.pair_features(pre, dist), want, rtol=1e-4, atol=1e-8)
        # its features equal the plain bf16 trunk's, and a fp32 metric's reference works with it
        plain = normalize_taps(trunk(ref), range(5))
        for a, b in zip(m.reference_features(pre), plain, strict=True):
            torch.testing.assert_close(a, b)
        fp32 = create_metric("lpips_vgg", lin_weights=LIN, backbone=backbone)
        assert _rel(m(fp32.reference(ref), dist), fp32(ref, dist)) < 5 * TOL  # plain bf16 trunk on dist
    y = dist.clone().requires_grad_(True)
    m(ref, y).sum().backward()  # grad enabled and wanted: the eager bf16 trunk, gradients reach y
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0
    with pytest.raises(UserError, match="compile=True needs fast=True"):
        create_metric("semantic_vgg16", backbone=backbone, compile=True)


def test_fast_copy_follows_the_weights(backbone, photos):
    """The bf16 copy is derived state: not in state_dict, rebuilt after load_state_dict and .to()."""
    ref, dist, _ = photos
    m = create_metric("semantic_vgg16", backbone=VGG16(features_only=True), fast=True)
    keys = set(m.state_dict())
    with torch.no_grad():
        before = m(ref, dist)
        m.load_state_dict(create_metric("semantic_vgg16", backbone=backbone).state_dict())
        assert set(m.state_dict()) == keys
        after = m(ref, dist)
        torch.testing.assert_close(after, create_metric("semantic_vgg16", backbone=backbone, fast=True)(ref, dist))
        assert not torch.allclose(before, after)
        m.to(torch.float32)
        assert m._fast_parts is None
        torch.testing.assert_close(m(ref, dist), after)
