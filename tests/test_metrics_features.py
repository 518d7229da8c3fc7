"""Feature networks for distribution distances: a local Inception-v3 file, a vislearn file, ``shapes32``."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision

import vislearn.recipes  # noqa: F401  (registers "shapes32")
from vislearn.errors import UserError
from vislearn.io import save_weights
from vislearn.metrics.features import feature_extractor, feature_networks
from vislearn.models import create_model


def test_torchvision_inception_file_gives_torchvisions_pool_features(tmp_path):
    torch.manual_seed(0)
    peer = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True, transform_input=False)
    path = tmp_path / "inception_v3_google.pth"
    torch.save(peer.state_dict(), path)
    fx = feature_extractor(path)
    assert fx.record["network"] == "inception_v3" and fx.record["path"] == str(path)
    assert "torchvision/timm" in fx.record["source"]
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ours = fx(images)
    peer.fc = torch.nn.Identity()
    with torch.no_grad():  # torchvision's layout expects [-1, 1] at the first convolution
        x = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False).clamp(0, 1)
        want = peer.eval()(2 * x - 1)
    assert ours.shape == (2, 2048)
    torch.testing.assert_close(ours, want, rtol=1e-4, atol=1e-4)


def test_vislearn_classifier_file_gives_pooled_features(tmp_path):
    torch.manual_seed(0)
    model = create_model("small_convnet", num_classes=5).eval()
    path = tmp_path / "net.safetensors"
    save_weights(model, path)
    fx = feature_extractor(str(path))
    assert fx.record["network"] == "small_convnet" and fx.record["source"] == "vislearn weights file"
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model.forward_features(x)[-1].mean((2, 3))
    torch.testing.assert_close(fx(x), want)


def test_shapes32_is_trained_by_the_classify_recipe_and_cached(tmp_path):
    assert "shapes32" in feature_networks()
    fx = feature_extractor("shapes32", cache=tmp_path, steps=5)
    rec = fx.record
    assert rec["network"] == "shapes32" and rec["recipe"] == "classify" and not rec["loaded_from_cache"]
    assert rec["config"]["model"] == "small_convnet" and rec["config"]["steps"] == 5
    saved = json.loads((tmp_path / (rec["path"].rsplit("/", 1)[1].replace(".safetensors", ".json"))).read_text())
    assert saved["config"] == rec["config"]
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    again = feature_extractor("shapes32", cache=tmp_path, steps=5)
    assert again.record["loaded_from_cache"]
    torch.testing.assert_close(again(x), fx(x))
    assert fx(x).shape == (4, 128)


def test_clip_state_dict_and_unknown_inputs_are_clear_errors(tmp_path):
    clip = tmp_path / "clip.pth"
    torch.save({"visual.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(3, 3)}, clip)
    with pytest.raises(UserError, match="CLIP image tower"):
        feature_extractor(clip)
    folder = tmp_path / "clipdir"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    with pytest.raises(UserError, match="transformers"):  # not installed here: the message says so
        feature_extractor(folder)
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="neither a vislearn weights file"):
        feature_extractor(other)
    with pytest.raises(UserError, match="nothing is downloaded"):
        feature_extractor("inception-from-the-internet")
    with pytest.raises(UserError, match="options"):
        feature_extractor(other, steps=3)
