"""``vislearn tag``: end to end on a tiny model trained by ``vislearn train multilabel``."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.cli import main
from vislearn.commands.tag import prepare_image
from vislearn.data.embedded import shapes_multilabel
from vislearn.data.formats import load_image
from vislearn.io import save_weights
from vislearn.models import create_model, create_model_from_weights

DATA = {"num_labels": 6, "num_samples": 24, "image_size": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tag")
    out = root / "run"
    sets = [f"{k}={v}" for k, v in DATA.items()] + ["steps=2", "batch_size=8", "log_every=0"]
    assert main(["train", "multilabel", "--out", str(out)] + sum((["--set", s] for s in sets), [])) == 0
    test = shapes_multilabel("test", **DATA)
    paths = []
    for i in range(2):
        p = root / f"scene{i}.png"
        Image.fromarray((test.images[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(p)
        paths.append(str(p))
    return out / "model.safetensors", paths, test.classes


def test_tag_json_matches_the_model_on_the_same_images(trained, capsys):
    weights, paths, classes = trained
    capsys.readouterr()
    assert main(["tag", "--weights", str(weights), *paths, "--top-k", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    model = create_model_from_weights(weights).eval()
    assert model.label_names == list(classes)
    with torch.no_grad():
        scores = model(torch.stack([load_image(p) for p in paths]))
    for item, p, row in zip(result, paths, scores, strict=True):
        values, idx = row.topk(3)
        assert item["image"] == p
        assert item["labels"] == [classes[int(i)] for i in idx]
        assert item["scores"] == pytest.approx(values.tolist(), abs=1e-5)


def test_tag_text_output(trained, capsys):
    weights, paths, classes = trained
    capsys.readouterr()
    assert main(["tag", "--weights", str(weights), paths[0], "--top-k", "2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{paths[0]}: ")
    names = [part.rsplit(" ", 1)[0] for part in line.split(": ", 1)[1].split(", ")]
    assert len(names) == 2 and set(names) <= set(classes)


def test_prepare_image_resizes_short_side_and_crops():
    x = torch.rand(3, 40, 80)
    y = prepare_image(x, 20)
    assert y.shape == (3, 20, 20)
    same = torch.rand(3, 16, 16)
    assert torch.equal(prepare_image(same, 16), same)


def test_bad_input_one_line_exit_2(trained, tmp_path, capsys):
    weights, paths, _ = trained
    corrupt = tmp_path / "bad.png"
    corrupt.write_bytes(b"no image here")
    mlp = tmp_path / "mlp.safetensors"
    save_weights(create_model("mlp"), mlp)
    cases = [
        ["tag", "--weights", str(weights), str(tmp_path / "missing.png")],
        ["tag", "--weights", str(weights), str(corrupt)],
        ["tag", "--weights", str(weights), paths[0], "--top-k", "0"],
        ["tag", "--weights", str(weights), paths[0], "--top-k", "99"],
        ["tag", "--weights", str(tmp_path / "none.safetensors"), paths[0]],
        ["tag", "--weights", str(mlp), paths[0]],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("vislearn: error:") and "\n" not in err, (argv, err)
