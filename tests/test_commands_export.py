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
