"""VGG-16: torchvision state-dict compatibility, taps, bad input (feature_info: test_models_contract.py)."""

import os

import pytest
import torch
import torchvision

from vislearn.errors import UserError
from vislearn.models import create_model


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory):
    torch.manual_seed(1)
    tv = torchvision.models.vgg16().eval()
    path = tmp_path_factory.mktemp("vgg") / "vgg16_tv.pth"
    torch.save(tv.state_dict(), path)
    return tv, str(path)


def _norm(x):
    return torchvision.transforms.functional.normalize(x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_full_model_equals_torchvision(tv_file):
    tv, path = tv_file
    ours = create_model("vgg16", weights=path).eval()
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in tv.parameters()) == 138_357_544
    assert list(ours.state_dict()) == list(tv.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(_norm(x)), rtol=1e-5, atol=1e-5)


def test_features_only_taps(tv_file):
    tv, path = tv_file
    ours = create_model("vgg16", weights=path, features_only=True).eval()  # classifier keys ignored
    assert not hasattr(ours, "classifier")
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        taps = ours.forward_features(x)
        h = _norm(x)
        expect = []
        for i, layer in enumerate(tv.features):
            h = layer(h)
            if i in (3, 8, 15, 22, 29):
                expect.append(h.clone())
    assert len(taps) == len(expect) == 5
    for t, e in zip(taps, expect, strict=True):
        torch.testing.assert_close(t, e, rtol=1e-5, atol=1e-5)


def test_bad_input_and_weights(tmp_path):
    m = create_model("vgg16", features_only=True)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        m.forward_features(torch.rand(1, 3, 32, 32) * 2 - 1)
    with pytest.raises(UserError, match="at least 16"):
        m.forward_features(torch.rand(1, 3, 8, 8))
    import lpips

    lin = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
    with pytest.raises(UserError, match="does not fit"):
        create_model("vgg16", weights=lin, features_only=True)
