"""``vislearn export`` files: ONNX self-contained under 2 GB, else a sidecar under the final name; no temp leftovers."""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vislearn.cli import main
from vislearn.commands.export import export_model
from vislearn.io import save_weights
from vislearn.models import create_model


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("ex")
    model = create_model("mlp", num_classes=3, in_chans=3, image_size=8, hidden=(16,)).eval()
    save_weights(model, d / "w.safetensors")
    return model, d / "w.safetensors"


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x.numpy()})[0]


def test_onnx_is_one_file_when_it_fits(mlp, tmp_path, capsys):
    model, weights = mlp
    out = tmp_path / "m.onnx"
    assert main(["export", "--weights", str(weights), "--format", "onnx", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["m.onnx"]
    x = torch.rand(4, 3, 8, 8)  # a batch of 4 through the dynamic batch axis
    with torch.no_grad():
        np.testing.assert_allclose(_run_onnx(out, x), model(x).numpy(), atol=1e-5)


def test_onnx_sidecar_is_named_after_the_final_file_and_survives_a_move(mlp, tmp_path):
    model, _ = mlp
    files = export_model(model, "onnx", tmp_path / "big.onnx", 8, single_file_limit=1)  # as if over 2 GB
    assert files == [str(tmp_path / "big.onnx"), str(tmp_path / "big.onnx.data")]
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]  # no .tmp left behind
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for f in ("big.onnx", "big.onnx.data"):
        os.replace(tmp_path / f, moved / f)
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(_run_onnx(moved / "big.onnx", x), model(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_to_a_folder_is_refused_and_leaves_nothing(mlp, tmp_path, capsys, fmt):
    _, weights = mlp
    target = tmp_path / "outdir"
    target.mkdir()
    assert main(["export", "--weights", str(weights), "--format", fmt, "--out", str(target)]) == 2
    err = capsys.readouterr().err
    assert "is a folder" in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["outdir"] and not os.listdir(target)


def test_pt2_roundtrip_through_cli_with_a_dynamic_batch(mlp, tmp_path, capsys):
    model, weights = mlp
    out = tmp_path / "m.pt2"
    assert main(["export", "--weights", str(weights), "--format", "pt2", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["m.pt2"]
    loaded = torch.export.load(str(out)).module()
    for n in (1, 5):  # traced at batch 2; other batch sizes go through the dynamic dimension
        x = torch.rand(n, 3, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_pt2_keeps_a_dict_output(tmp_path):
    torch.manual_seed(0)
    model = create_model("msc_multibox", backbone="multibox_tiny", image_size=64, grids=(2, 1)).eval()
    files = export_model(model, "pt2", tmp_path / "mb.pt2", 64)
    assert files == [str(tmp_path / "mb.pt2")]
    loaded = torch.export.load(files[0]).module()
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        got, want = loaded(x), model(x)
    assert isinstance(got, dict) and set(got) == {"loc", "logits"}
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-5)
