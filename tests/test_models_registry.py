"""Model registry, input validation, normalisation, weights files and checkpoint atomicity."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.io import atomic_write_json, read_state_dict, save_weights
from vislearn.models import VisionModel, check_images, create_model, create_model_from_weights, list_models
from vislearn.models.convert import load_weights
from vislearn.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def test_list_models_includes_mlp_and_filters():
    assert "mlp" in list_models()
    assert list_models("ml*") == ["mlp"]


def test_unknown_model_lists_closest_names():
    with pytest.raises(UserError, match=r"unknown model 'mpl'.*closest: mlp"):
        create_model("mpl")


def test_unknown_option_is_a_user_error():
    with pytest.raises(UserError, match="bad option for model 'mlp'"):
        create_model("mlp", no_such_option=3)


def test_check_images_messages():
    with pytest.raises(UserError, match="float tensor"):
        check_images(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(UserError, match="expected 3 channels, got 1"):
        check_images(torch.zeros(1, 1, 8, 8))
    with pytest.raises(UserError, match=r"values must be in \[0, 1\], got \[-1"):
        check_images(torch.full((1, 3, 8, 8), -1.0))
    with pytest.raises(UserError, match="at least 75"):
        check_images(torch.zeros(1, 3, 50, 50), min_size=75)
    with pytest.raises(UserError, match="N×C×H×W"):
        check_images(torch.zeros(3, 8, 8))
    with pytest.raises(UserError, match="NaN"):
        check_images(torch.full((1, 3, 8, 8), float("nan")))
    check_images(torch.full((1, 3, 8, 8), 1.0005))  # rounding overshoot is tolerated


class _Tiny(VisionModel):
    in_chans = 3

    def __init__(self):
        super().__init__(normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
        self.conv = nn.Conv2d(3, 2, 1)

    def forward(self, x):
        return self.conv(self.prepare_input(x))


def test_normalization_is_applied_and_overridable():
    m = _Tiny()
    x = torch.rand(2, 3, 4, 4)
    expected = m.conv((x - 0.5) / 0.25)
    torch.testing.assert_close(m(x), expected)
    m.normalization = ((0.0,), (1.0,))
    torch.testing.assert_close(m(x), m.conv(x))
    assert m.normalization == ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert "norm_mean" not in m.state_dict()  # peer state dicts stay key-compatible
    with pytest.raises(UserError, match="std must be positive"):
        m.normalization = ((0.0,), (0.0,))


def test_weights_roundtrip_restores_model_and_normalization(tmp_path):
    m = create_model("mlp", num_classes=7, hidden=(16, 16), normalization=((0.1,), (0.2,)))
    path = tmp_path / "w.safetensors"
    save_weights(m, path)
    m2 = create_model_from_weights(path)
    assert m2.normalization[0] == pytest.approx(m.normalization[0])
    assert m2.normalization[1] == pytest.approx(m.normalization[1])
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(m2(x), m(x))
    assert json.loads(read_state_dict(path)[1]["vislearn_kwargs"])["num_classes"] == 7


def test_loading_reports_mismatches_by_name(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(create_model("mlp", num_classes=7), path)
    with pytest.raises(UserError, match=r"shape mismatch.*classifier.weight: file \(7, 100\) vs model \(10, 100\)"):
        load_weights(create_model("mlp", num_classes=10), path, model_name="mlp")
    torch.save({"features.1.weight": torch.zeros(100, 64)}, tmp_path / "partial.pth")
    with pytest.raises(UserError, match="missing keys"):
        create_model("mlp", weights=str(tmp_path / "partial.pth"))


class _Evil:
    """Any non-tensor object: weights_only loading must refuse it."""


def test_bad_weights_files_are_reported_by_path(tmp_path):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="broken.safetensors"):
        create_model("mlp", weights=str(bad))
    with pytest.raises(UserError, match="not found"):
        create_model("mlp", weights=str(tmp_path / "absent.pth"))

    torch.save({"x": _Evil()}, tmp_path / "evil.pth")  # an arbitrary pickle is refused, never executed
    with pytest.raises(UserError, match="evil.pth"):
        create_model("mlp", weights=str(tmp_path / "evil.pth"))


def test_checkpoint_write_is_atomic_and_keeps_latest(tmp_path):
    model = {"w": torch.arange(4.0)}
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, model_state={"w": model["w"] * step}, trainer={"epoch": 0, "batch_in_epoch": 0},
                        state={"rng": torch.tensor([1, 2])}, keep=2)
    dirs = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert dirs == ["step_00000020", "step_00000030"]
    latest = latest_checkpoint(tmp_path)
    data = load_checkpoint(latest)
    assert data["trainer"]["step"] == 30
    torch.testing.assert_close(data["model"]["w"], torch.arange(4.0) * 30)
    # a torn write (leftover temp directory, broken pointer) never hides the last complete checkpoint
    (tmp_path / "checkpoints" / ".step_00000040.abc.tmp").mkdir()
    atomic_write_json(tmp_path / "checkpoints" / "latest.json", {"dir": "step_00000099"})
    assert latest_checkpoint(tmp_path).name == "step_00000030"
    assert not list(tmp_path.glob("checkpoints/step_*/.*.tmp"))


def test_create_model_from_weights_names_options_and_peer_files(tmp_path):
    m = create_model("mlp", num_classes=3, hidden=(8,))
    save_weights(m, tmp_path / "w.safetensors")
    x = torch.rand(2, 1, 8, 8)
    again = create_model_from_weights(tmp_path / "w.safetensors", name="mlp")  # stored options are used
    assert again.model_kwargs["num_classes"] == 3
    torch.testing.assert_close(again(x), m(x))
    with pytest.raises(UserError, match=r"shape mismatch .*classifier.weight: file \(3, 8\) vs model \(4, 8\)"):
        create_model_from_weights(tmp_path / "w.safetensors", num_classes=4)  # an override wins over the file
    with pytest.raises(UserError, match="holds weights of model 'mlp', not 'inception_v3'"):
        create_model_from_weights(tmp_path / "w.safetensors", name="inception_v3")
    torch.save(m.state_dict(), tmp_path / "peer.pth")  # no metadata: the name and options come from the caller
    with pytest.raises(UserError, match="peer.pth has no vislearn metadata; pass the model name"):
        create_model_from_weights(tmp_path / "peer.pth")
    peer = create_model_from_weights(tmp_path / "peer.pth", name="mlp", num_classes=3, hidden=(8,))
    torch.testing.assert_close(peer(x), m(x))
