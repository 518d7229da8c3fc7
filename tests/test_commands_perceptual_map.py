"""``vislearn perceptual-map``: the figure it reports is the file it wrote; each mode's map and the
printed distance against the ``lpips`` package (a hand computation of the windows for the sensitivity map)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import vislearn.metrics.perceptual_maps as maps
from vislearn.cli import main
from vislearn.data.distortions import distort

sys.path.insert(0, str(Path(__file__).parent))
from _oracles import lpips_vgg_peer  # noqa: E402


def test_out_without_extension_reports_the_png_it_wrote(tmp_path, capsys):
    ref, dist = tmp_path / "ref.png", tmp_path / "dist.png"
    Image.new("RGB", (32, 32), (100, 120, 140)).save(ref)
    Image.new("RGB", (32, 32), (110, 120, 130)).save(dist)
    assert main(["perceptual-map", str(ref), str(dist), "--out", str(tmp_path / "map")]) == 0
    reported = json.loads(capsys.readouterr().out)["figure"]
    assert reported == str(tmp_path / "map.png")
    assert Image.open(reported).format == "PNG" and not (tmp_path / "map").exists()
    assert main(["perceptual-map", str(ref), str(dist), "--out", str(tmp_path / "map.xyz")]) == 2
    assert "unknown image extension '.xyz'" in capsys.readouterr().err


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Two 32×32 PNGs, a random torchvision VGG-16 trunk saved as the command reads it, and lpips on it."""
    root = tmp_path_factory.mktemp("pmap")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    Image.fromarray(a).save(root / "ref.png")
    Image.fromarray(b).save(root / "dist.png")
    torch.manual_seed(3)
    feats = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])  # vgg16().features, randomly
    torch.save({f"features.{k}": v for k, v in feats.state_dict().items()}, root / "vgg16.pth")
    as_tensor = lambda arr: torch.from_numpy(arr).permute(2, 0, 1).float() / 255  # noqa: E731
    return root, as_tensor(a), as_tensor(b), lpips_vgg_peer(feats)


def _run(scene, monkeypatch, capsys, *extra):
    """Run the command; return its JSON line and the (base image, map) it drew in the third panel."""
    root = scene[0]
    drawn = []
    overlay = maps.overlay_map
    monkeypatch.setattr(maps, "overlay_map", lambda base, heat: (drawn.append((base, heat)), overlay(base, heat))[1])
    assert main(["perceptual-map", str(root / "ref.png"), str(root / "dist.png"), "--out", str(root / "m.png"),
                 "--backbone-weights", str(root / "vgg16.pth"), *extra]) == 0
    (base, heat), = drawn
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1]), base, heat


@pytest.mark.parametrize("metric", ["lpips_vgg", "semantic_vgg16"])
def test_spatial_mode_map_and_distance_are_lpips(scene, monkeypatch, capsys, metric):
    _, ref, dist, peer = scene
    out, base, heat = _run(scene, monkeypatch, capsys, "--metric", metric, "--mode", "spatial")
    # semantic_vgg16 without a fitted head weighs every channel 1: lpips's unweighted baseline
    peer.lpips = metric == "lpips_vgg"
    with torch.no_grad():
        peer.spatial = True
        peer_map = peer(ref[None], dist[None], normalize=True)[0, 0]
        peer.spatial = False
        peer_d = float(peer(ref[None], dist[None], normalize=True))
    peer.lpips = True
    assert torch.equal(base, dist) and heat.shape == (32, 32)
    torch.testing.assert_close(heat, peer_map, rtol=1e-4, atol=1e-6)
    assert out["distance"] == pytest.approx(peer_d, rel=1e-4)
    assert out["metric"] == metric and out["backbone"].endswith("vgg16.pth")


def test_sensitivity_mode_map_is_the_mean_response_of_the_windows_over_each_pixel(scene, monkeypatch, capsys):
    _, ref, dist, peer = scene
    out, base, heat = _run(scene, monkeypatch, capsys, "--metric", "lpips_vgg", "--mode", "sensitivity",
                           "--kind", "blur", "--level", "4")
    # 32×32 image: 8×8 windows at rows and columns 0, 4, ..., 24. Pixel (0, 0) lies in the window at
    # (0, 0) only; pixel (5, 26) in the four at rows {0, 4} × columns {20, 24}.
    full = distort(ref, "blur", 4, seed=0)

    def response(y, x):
        img = ref.clone()
        img[:, y:y + 8, x:x + 8] = full[:, y:y + 8, x:x + 8]
        with torch.no_grad():
            return float(peer(ref[None], img[None], normalize=True))

    assert torch.equal(base, ref) and heat.shape == (32, 32)
    assert float(heat[0, 0]) == pytest.approx(response(0, 0), rel=1e-4)
    expect = np.mean([response(y, x) for y in (0, 4) for x in (20, 24)])
    assert float(heat[5, 26]) == pytest.approx(expect, rel=1e-4)
    assert float(heat[0, 0]) != pytest.approx(float(heat[5, 26]), rel=1e-3)  # the two pixels see different windows
    with torch.no_grad():  # the printed distance is still d(REF, DIST)
        assert out["distance"] == pytest.approx(float(peer(ref[None], dist[None], normalize=True)), rel=1e-4)
