"""``vislearn reconstruct``: end to end on a tiny trained SWYCC file (grid PNG, seeded samples, the std column),
the baseline file, and one clear error (exit 2) per bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.cli import main
from vislearn.commands.reconstruct import reconstruction_grid
from vislearn.io import save_weights
from vislearn.models import create_model, create_model_from_weights
from vislearn.recipes import run

TINY = {"steps": 2, "num_train": 16, "num_eval": 8, "batch_size": 8, "width": 8, "refine_width": 8,
        "refine_channel_mult": "1,2", "eval_steps": 1, "lambda_perceptual": 0.0}


def _train(tmp_path_factory, objective):
    out = tmp_path_factory.mktemp(objective)
    run("swycc", "quick", {**TINY, "objective": objective}, out=out, progress=False)
    return out / "model.safetensors"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return _train(tmp_path_factory, "swycc")


def _png(path, h=32, w=32, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_reconstruct_writes_a_grid_per_image(weights, tmp_path, capsys):
    a, b = _png(tmp_path / "a.png"), _png(tmp_path / "b.png", 40, 48, seed=1)
    out = tmp_path / "out"
    assert main(["reconstruct", "--weights", str(weights), str(a), str(b), "--steps", "2", "--samples", "3",
                 "--crop", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for stem in ("a", "b"):
        png = out / f"{stem}_reconstruct.png"
        assert png.is_file() and Image.open(png).size[0] > 5 * Image.open(png).size[1] / 2  # a row of 6 panels
        assert str(png) in printed
    assert printed.count("sample 3") == 2


def test_grid_columns_are_the_models_outputs(weights):
    model = create_model_from_weights(weights).eval()
    image = torch.rand(3, 32, 32)
    cols, titles = reconstruction_grid(model, image, steps=2, samples=3, seed=7)
    assert [t.split("\n")[0] for t in titles] == ["original", "D_initial", "sample 1", "sample 2", "sample 3",
                                                   "std over samples"]
    with torch.no_grad():
        z = model.encode(image[None])
        torch.testing.assert_close(cols[1], model.decode_initial(z)[0])
        draws = model.decode(z.expand(3, -1, -1, -1), steps=2, generator=torch.Generator().manual_seed(7))
    for k in range(3):
        torch.testing.assert_close(cols[2 + k], draws[k])
    torch.testing.assert_close(cols[5], draws.std(0).mean(0))
    assert cols[5].shape == (32, 32) and cols[5].max() > 0  # the samples differ
    assert len(reconstruction_grid(model, image, steps=1, samples=1)[0]) == 3  # no std for one sample


def test_baseline_weights_give_the_reconstruction_only(tmp_path_factory, tmp_path, capsys):
    weights = _train(tmp_path_factory, "mse")
    img = _png(tmp_path / "c.png")
    assert main(["reconstruct", "--weights", str(weights), str(img), "--out", str(tmp_path / "o")]) == 0
    assert "reconstruction" in capsys.readouterr().out and (tmp_path / "o" / "c_reconstruct.png").is_file()


def test_bad_inputs_exit_2_with_one_line(weights, tmp_path, capsys):
    img = _png(tmp_path / "x.png")
    odd = _png(tmp_path / "odd.png", 36, 32)
    other = tmp_path / "mlp.safetensors"
    save_weights(create_model("mlp"), other)
    cases = [
        (["--weights", str(weights), str(img), "--steps", "0"], "--steps must be >= 1, got 0"),
        (["--weights", str(weights), str(img), "--samples", "0"], "--samples must be >= 1"),
        (["--weights", str(weights), str(img), "--sampler", "dpm"], "unknown sampler 'dpm'"),
        (["--weights", str(tmp_path / "none.safetensors"), str(img)], "--weights: no file"),
        (["--weights", str(other), str(img)], "holds 'mlp', not swycc weights"),
        (["--weights", str(weights), str(tmp_path / "missing.png")], "no such image file"),
        (["--weights", str(weights), str(odd)], "image size 36×32 is not divisible by the downsample factor 8"),
        (["--weights", str(weights), str(img), "--out", str(img)], "exists and is not a folder"),
    ]
    for argv, message in cases:
        out = [] if "--out" in argv else ["--out", str(tmp_path / "o")]
        assert main(["reconstruct", *argv, *out]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
