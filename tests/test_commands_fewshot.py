"""``vislearn fewshot``: end to end on a tiny ImageFolder written from embedded shapes, against a direct
call of the metric functions on features computed here by a plain forward pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.cli import main
from vislearn.commands.fewshot import split_folder
from vislearn.data.formats import ImageFolderDataset
from vislearn.data.transforms import eval_transform
from vislearn.io import save_weights
from vislearn.metrics.fewshot import knn_accuracy, linear_probe_accuracy, nshot_accuracy
from vislearn.models import create_model

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 3, 6, 4


def _write(images: torch.Tensor, labels: torch.Tensor, root, names) -> None:
    for i, (x, y) in enumerate(zip(images, labels, strict=True)):
        d = root / names[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(d / f"{i:03d}.png")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """DIR/train + DIR/val of 3 shape classes at 32 px, one folder DIR1/CLASS/*, and a random small convnet."""
    from vislearn.data.embedded import shapes_classification

    root = tmp_path_factory.mktemp("fewshot")
    tr = shapes_classification("train", num_classes=CLASSES, samples_per_class=TRAIN_PER_CLASS)
    te = shapes_classification("test", num_classes=CLASSES, samples_per_class=VAL_PER_CLASS)
    names = [f"c{i}" for i in range(CLASSES)]
    _write(tr.images, tr.targets, root / "split" / "train", names)
    _write(te.images, te.targets, root / "split" / "val", names)
    _write(tr.images, tr.targets, root / "one", names)
    torch.manual_seed(0)
    model = create_model("small_convnet", num_classes=0, widths=(4, 8, 8, 16)).eval()
    save_weights(model, root / "w.safetensors")
    return root, model


def _direct_features(model, folder, classes=None):
    ds = ImageFolderDataset(folder, eval_transform(32), classes=classes)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    with torch.no_grad():
        return model.stages[3](model.stages[2](model.stages[1](model.stages[0](model.prepare_input(x))))).mean(
            (2, 3)), torch.tensor(ds.targets)


def test_fewshot_json_equals_direct_metric_calls(tree, capsys):
    root, model = tree
    rc = main(["fewshot", "--weights", str(root / "w.safetensors"), "--data", str(root / "split"), "--shots", "1", "2",
               "--splits", "3", "--k", "5", "--batch-size", "4", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    xtr, ytr = _direct_features(model, root / "split" / "train")
    xte, yte = _direct_features(model, root / "split" / "val", classes=[f"c{i}" for i in range(CLASSES)])
    assert out["train_images"] == CLASSES * TRAIN_PER_CLASS and out["test_images"] == CLASSES * VAL_PER_CLASS
    assert out["feature_dim"] == 16 and out["image_size"] == 32 and out["model"] == "small_convnet"
    for n in (1, 2):
        mean, std = nshot_accuracy(xtr, ytr, xte, yte, shots=n, splits=3, seed=0)
        assert out["nshot"][str(n)] == {"mean": mean, "std": std}
    assert out["knn"]["accuracy"] == knn_accuracy(xtr, ytr, xte, yte, k=5, temperature=0.07)
    assert out["linear_probe"]["accuracy"] == linear_probe_accuracy(xtr, ytr, xte, yte, l2=1e-4)
    # the numbers are accuracies on 12 test images: multiples of 1/12
    assert abs(out["knn"]["accuracy"] * 12 - round(out["knn"]["accuracy"] * 12)) < 1e-9


def test_fewshot_text_output(tree, capsys):
    root, _ = tree
    assert main(["fewshot", "--weights", str(root / "w.safetensors"), "--data", str(root / "split"),
                 "--shots", "1", "--k", "3"]) == 0
    text = capsys.readouterr().out
    assert "1-shot" in text and "k-NN" in text and "linear" in text and "18 train / 12 test" in text


def test_one_folder_split_rule(tree, capsys):
    root, model = tree
    train, test = split_folder(root / "one", val_fraction=0.34, seed=3)
    ds = ImageFolderDataset(root / "one")
    assert sorted(train + test) == list(range(len(ds))) and not set(train) & set(test)
    per_class = np.bincount([ds.targets[i] for i in test], minlength=CLASSES)
    assert per_class.tolist() == [2, 2, 2]  # round(0.34 * 6) per class
    assert (train, test) == split_folder(root / "one", val_fraction=0.34, seed=3)
    assert test != split_folder(root / "one", val_fraction=0.34, seed=4)[1]
    rc = main(["fewshot", "--weights", str(root / "w.safetensors"), "--data", str(root / "one"), "--shots", "1",
               "--k", "3", "--val-fraction", "0.34", "--split-seed", "3", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    xall, yall = _direct_features(model, root / "one")
    xtr, ytr, xte, yte = xall[train], yall[train], xall[test], yall[test]
    assert out["nshot"]["1"]["mean"] == nshot_accuracy(xtr, ytr, xte, yte, shots=1, splits=3, seed=0)[0]
    assert out["knn"]["accuracy"] == knn_accuracy(xtr, ytr, xte, yte, k=3)


@pytest.mark.parametrize("extra, needle", [
    (["--shots", "0"], "--shots"),
    (["--shots", "6"], "shots=6"),          # 6 per class plus one held out for the L2 choice > 6 images
    (["--k", "100"], "k=100"),
    (["--splits", "0"], "--splits"),
])
def test_bad_arguments_one_line_exit_2(tree, capsys, extra, needle):
    root, _ = tree
    args = ["fewshot", "--weights", str(root / "w.safetensors"), "--data", str(root / "split"), "--shots", "1"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vislearn: error:") and needle in err


def test_bad_paths_one_line_exit_2(tree, capsys):
    root, _ = tree
    assert main(["fewshot", "--weights", str(root / "nope.safetensors"), "--data", str(root / "split")]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
    assert main(["fewshot", "--weights", str(root / "w.safetensors"), "--data", str(root / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(["fewshot", "--weights", str(root / "w.safetensors"), "--data", str(root / "one"),
                 "--val-fraction", "1.5"]) == 2
    assert "--val-fraction" in capsys.readouterr().err
