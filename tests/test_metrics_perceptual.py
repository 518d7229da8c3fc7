"""The perceptual metric: LPIPS equivalence, caching, fast mode, fitting, evaluation, maps, bad input."""

import os
import sys
from pathlib import Path

import lpips
import pytest
import torch
import torchvision

from vislearn.errors import UserError
from vislearn.io import save_weights
from vislearn.metrics.iqa import srocc, two_afc_agreement
from vislearn.metrics.perceptual import IQAEvaluation, TwoAFCEvaluation, create_metric
from vislearn.metrics.perceptual_maps import region_ablation, sensitivity_map
from vislearn.recipes.perceptual import PairFeatures, fit

sys.path.insert(0, str(Path(__file__).parent))
from _oracles import lpips_vgg_peer  # noqa: E402

LIN = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    torch.manual_seed(3)
    feats = torchvision.models.vgg16().features  # random torchvision VGG-16 trunk
    path = tmp_path_factory.mktemp("vgg") / "vgg16_features.pth"
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, path)
    return feats, str(path)


def _pair(n=3, h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, h, w, generator=g)
    y = (x + 0.1 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)
    return x, y


def test_lpips_equivalence(backbone):
    feats, path = backbone
    ours = create_metric("lpips_vgg", backbone_weights=path, lin_weights=LIN)
    x, y = _pair()
    with torch.no_grad():
        peer = lpips_vgg_peer(feats)(x, y, normalize=True).flatten()
        d = ours(x, y)
        torch.testing.assert_close(d, peer, rtol=1e-5, atol=1e-6)
        peer_map = lpips_vgg_peer(feats, spatial=True)(x, y, normalize=True)
        torch.testing.assert_close(ours(x, y, spatial=True), peer_map, rtol=1e-5, atol=1e-6)
        # pooled per-channel features are a sufficient statistic of the distance
        D = ours.pair_features(x, y)
        torch.testing.assert_close(D @ ours.head.flat_weights(), d, rtol=1e-5, atol=1e-7)
        # the same network through the model registry (what a loss imports): LPIPS's numbers too
        from vislearn.models import create_model

        registered = create_model("lpips_vgg", backbone_weights=path, lin_weights=LIN)
        assert registered.model_name == "lpips_vgg"
        torch.testing.assert_close(registered(x, y), peer, rtol=1e-5, atol=1e-6)


def test_reference_cache_and_fast_mode(backbone):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path)
    x, y = _pair(4)
    ref = x[:1]
    with torch.no_grad():
        full = m(ref.expand(4, -1, -1, -1), y)
        torch.testing.assert_close(m(ref, y), full, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(m(m.reference(ref), y), full, rtol=1e-5, atol=1e-7)
        assert (m(y, y) == 0).all() and (full > 0).all()
        m.set_fast(True)
        fast = m(m.reference(ref), y)
    assert ((fast - full).abs() / full).max() < 1e-2


def test_bad_input(backbone, tmp_path):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path)
    x, y = _pair(2, 32, 32)
    with pytest.raises(UserError, match=r"\(x \+ 1\) / 2"):
        m(x * 2 - 1, y)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        m(x, y * 255)
    with pytest.raises(UserError, match="differ in shape"):
        m(x, y[:, :, :16])
    with pytest.raises(UserError, match="batch sizes"):
        m(x, torch.cat([y, y, y]))
    with pytest.raises(UserError, match="relu5_3"):
        m(x[:, :, :8, :8], y[:, :, :8, :8])
    small = create_metric("semantic_vgg16", backbone_weights=path, layers=("relu1_2", "relu2_2"))
    assert small(x[:, :, :8, :8], y[:, :, :8, :8]).shape == (2,)
    with pytest.raises(UserError, match="not an lpips VGG"):
        create_metric("lpips_vgg", backbone_weights=path, lin_weights=path)
    with pytest.raises(UserError, match="does not fit"):
        create_metric("lpips_vgg", backbone_weights=LIN, lin_weights=LIN)
    with pytest.raises(UserError, match="lin_weights"):
        create_metric("lpips_vgg", backbone_weights=path)
    with pytest.raises(UserError, match="unknown metric"):
        create_metric("lpips_alex")


def _synthetic(kind, n=240, c=1472, seed=0):
    # 8 latent factors, each driving its own block of channels (real pooled features are strongly
    # correlated); the hidden weighting cares about a few factors only, so uniform weights rank poorly
    g = torch.Generator().manual_seed(seed)
    block = torch.arange(c) % 8
    mix = torch.nn.functional.one_hot(block, 8).T.float() * (0.5 + torch.rand(8, c, generator=g))
    w_true = torch.tensor([3.0, 0, 0, 1.0, 0, 0, 0, 0.2])[block] * torch.rand(c, generator=g)
    groups = [i // 12 for i in range(n)]  # 20 "reference images"

    def feats():
        return (torch.rand(n, 8, generator=g) @ mix + 0.05 * torch.rand(n, c, generator=g)) * 1e-3

    d0 = feats()
    if kind == "mos":
        dist = d0 @ w_true
        mos = 9 - 8 * torch.sigmoid((dist - dist.median()) / dist.std())
        return PairFeatures("mos", d0, mos, groups=groups), w_true
    d1 = feats()
    h = torch.sigmoid(50 * ((d0 - d1) @ w_true) / (d0 @ w_true).std())  # fraction finding B closer
    return PairFeatures("2afc", d0, h, d1=d1, groups=groups), w_true


def test_fit_mos_recovers_hidden_weighting(backbone):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path)
    pf, _ = _synthetic("mos")
    res = fit(m, pf, steps=600, lr=0.05, eval_every=20, patience=8)
    assert res.val["srocc"] >= 0.95 > res.val_before["srocc"]
    assert all((w >= 0).all() for w in m.head.weights)
    # held-out rows are whole reference groups
    assert res.val_size % 12 == 0 and res.train_size + res.val_size == 240


def test_fit_2afc(backbone):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path)
    pf, _ = _synthetic("2afc")
    res = fit(m, pf, steps=300, lr=0.05, eval_every=20, patience=8)
    assert res.val["2afc"] > res.val_before["2afc"] + 0.05
    assert res.val["2afc"] <= res.val["human_ceiling"] + 1e-9


class _Judgments(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.refs = [torch.rand(3, 32, 32, generator=g) for _ in range(4)]
        self.items = [(r, ((r + s * 0.05 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)), 5.0 - s)
                      for r in self.refs for s in range(1, 5)]
        self.ref_keys = [k for k in range(4) for _ in range(4)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_fit_from_images_and_save_load(backbone, tmp_path):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path)
    data = _Judgments()
    res = fit(m, data, steps=40, eval_every=10, val_fraction=0.25, feature_batch=3)
    assert res.val_size == 4 and res.train_size == 12
    save_weights(m.head, tmp_path / "head.safetensors")
    m2 = create_metric("semantic_vgg16", backbone_weights=path, weights=tmp_path / "head.safetensors")
    ref, dist, _ = data[0]
    with torch.no_grad():
        torch.testing.assert_close(m2.rating(ref[None], dist[None]), m.rating(ref[None], dist[None]))
    with pytest.raises(UserError, match="does not fit"):
        create_metric("semantic_vgg16", backbone_weights=path, weights=LIN)


def test_accumulating_evaluations(backbone):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path)
    data = _Judgments()
    ev = IQAEvaluation(m)
    ds, ss = [], []
    for k in range(4):
        ref = data.refs[k][None]
        dist = torch.stack([data[k * 4 + j][1] for j in range(4)])
        scores = [data[k * 4 + j][2] for j in range(4)]
        ds.append(ev.update(ref, dist, scores))
        ss += scores
    out = ev.compute()
    assert out["srocc"] == pytest.approx(srocc(-torch.cat(ds), torch.tensor(ss)))
    assert out["srocc"] > 0.5 and out["n"] == 16
    tev = TwoAFCEvaluation(m)
    x, y = _pair(4, 32, 32)
    z = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    h = torch.tensor([0.1, 0.2, 0.9, 0.6])
    tev.update(x, y, z, h)
    with torch.no_grad():
        expect = two_afc_agreement(m(x, y), m(x, z), h)
    assert tev.compute()["2afc"] == pytest.approx(expect)


def test_sensitivity_map_and_ablation(backbone):
    _, path = backbone
    m = create_metric("semantic_vgg16", backbone_weights=path, layers=("relu1_2", "relu2_2", "relu3_3"))
    img = torch.full((3, 32, 32), 0.5)
    img[:, 8:16, 8:16] = torch.rand(3, 8, 8)  # texture only in one corner block
    smap = sensitivity_map(m, img, kind="noise", level=4, patch=8, stride=8)
    assert smap.shape == (32, 32) and (smap > 0).all()
    ab = region_ablation(m, img, (8, 8, 16, 16), kind="blur", level=5, num_outside=4)
    # blur changes (almost) only the textured block; outside it the metric sees little
    assert ab["mse_outside"] < 0.01 * ab["mse_inside"] and ab["d_outside"] < 0.1 * ab["d_inside"]
    comp = region_ablation(m, img, (0, 0, 32, 16), kind="noise", level=3, outside="complement")
    assert comp["num_outside"] == 1 and comp["region_fraction"] == pytest.approx(0.5)
