"""The perceptual recipe and reproduction run end to end at a tiny scale."""

import json

import numpy as np
import pytest

from vislearn.reproduce import run_reproduction


def test_reproduction_runs_tiny(tmp_path):
    rec = run_reproduction("perceptual", tmp_path, scale=0.02, seeds=(0,), log=lambda m: None)
    assert (tmp_path / "perceptual.json").exists() and (tmp_path / "perceptual.png").exists()
    nums = json.loads((tmp_path / "perceptual.json").read_text())["numbers"]
    assert nums["level_order"]["total"] == 3 * 6
    assert set(nums["fit"]["0"]) >= {"srocc_fitted", "2afc_fitted", "noise_ceiling_srocc"}
    assert rec["numbers"]["backbone"] == "random"
    # a random backbone on synthetic judgments cannot test the paper's claim: the verdict says so
    assert rec["verdict"] == ("machinery verified; claim untested without human ratings (--data) and "
                              "pretrained VGG-16 weights (--weights)")


def _fake_tid(root, rng, refs=3, levels=4):
    lines = []
    for r in range(1, refs + 1):
        ref = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        _png(root / "reference_images" / f"I{r:02d}.BMP", ref)
        for lv in range(1, levels + 1):
            noisy = np.clip(ref + rng.normal(0, 12 * lv, ref.shape), 0, 255).astype(np.uint8)
            _png(root / "distorted_images" / f"i{r:02d}_01_{lv}.bmp", noisy)
            lines.append(f"{6 - lv}.0 i{r:02d}_01_{lv}.bmp")
    (root / "mos_with_names.txt").write_text("\n".join(lines) + "\n")


def test_reproduction_with_human_ratings(tmp_path):
    from vislearn.reproduce import write_results_table

    _fake_tid(tmp_path / "tid", np.random.default_rng(1), refs=10)
    rec = run_reproduction("perceptual", tmp_path / "res", scale=0.02, seeds=(0,), log=lambda m: None,
                           data=str(tmp_path / "tid"))
    human = rec["numbers"]["human_ratings"]
    assert human["kind"] == "mos" and human["judgments"] == 40
    held = human["seed 0"]
    assert set(held) == {"unfitted", "fitted", "lpips_vgg"} and "srocc" in held["lpips_vgg"]
    # noise levels 1..4 map to MOS 5..2: any sane distance orders them; LPIPS' held-out SROCC is high
    assert held["lpips_vgg"]["srocc"] > 0.5
    assert rec["verdict"] == "machinery verified; claim untested without pretrained VGG-16 weights (--weights)"
    assert "*machinery verified" in write_results_table(tmp_path / "res")


def test_reproduction_inputs_are_checked(tmp_path):
    from vislearn.errors import UserError

    with pytest.raises(UserError, match="does not use --data"):
        run_reproduction("batchnorm", tmp_path, scale=0.01, seeds=(0,), data=str(tmp_path))


def _png(path, arr):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_perceptual_map_cli(tmp_path, capsys):
    import numpy as np

    from vislearn.cli import main

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-30, 30, a.shape), 0, 255).astype(np.uint8)
    _png(tmp_path / "a.png", a)
    _png(tmp_path / "b.png", b)
    _png(tmp_path / "c.png", a[:32])
    assert main(["perceptual-map", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out",
                 str(tmp_path / "map.png")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["distance"] > 0 and (tmp_path / "map.png").stat().st_size > 1000
    assert main(["perceptual-map", str(tmp_path / "a.png"), str(tmp_path / "c.png"), "--out",
                 str(tmp_path / "x.png")]) == 2
    assert "same size" in capsys.readouterr().err
    assert main(["perceptual-map", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out",
                 str(tmp_path / "x.png"), "--metric", "lpips_vgg", "--lin-weights", str(tmp_path / "a.png")]) == 2


def test_train_perceptual_on_fake_tid(tmp_path, capsys):
    import numpy as np

    from vislearn.cli import main

    rng = np.random.default_rng(0)
    lines = []
    for r in range(1, 4):
        ref = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
        _png(tmp_path / "tid" / "reference_images" / f"I{r:02d}.BMP", ref)
        for lv in range(1, 5):
            noisy = np.clip(ref + rng.normal(0, 12 * lv, ref.shape), 0, 255).astype(np.uint8)
            _png(tmp_path / "tid" / "distorted_images" / f"i{r:02d}_01_{lv}.bmp", noisy)
            lines.append(f"{6 - lv}.0 i{r:02d}_01_{lv}.bmp")
    (tmp_path / "tid" / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    args = ["train", "perceptual", "--data", str(tmp_path / "tid"), "--out", str(tmp_path / "run"),
            "--set", "steps=6", "--set", "batch_size=4", "--set", "eval_every=3", "--set", "val_fraction=0.34"]
    assert main(args) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-2])
    assert final["step"] == 6 and "srocc" in final
    from vislearn.metrics.perceptual import create_metric

    m = create_metric("semantic_vgg16", weights=tmp_path / "run" / "model.safetensors")
    assert all((w >= 0).all() for w in m.head.weights)
