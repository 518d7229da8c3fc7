"""The command line: every user error is one line and exit status 2; train → eval round trip."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from vislearn.cli import main
from vislearn.recipes import apply_overrides, get_recipe, list_recipes
from vislearn.reproduce import list_reproductions


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vislearn.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["train", "nope"], "unknown recipe 'nope'"),
    (["train", "classify", "--set", "lrr=3"], "unknown setting 'lrr'; closest: lr"),
    (["train", "classify", "--set", "lr=fast"], "expected float, got 'fast'"),
    (["train", "classify", "--preset", "huge"], "has no preset 'huge'"),
    (["reproduce", "nope"], "unknown reproduction 'nope'"),
    (["eval", "classify", "--weights", "/no/such/file.safetensors"], "weights file not found"),
    (["train", "classify", "--set", "dataset=imagenet"], "needs --data PATH"),
])
def test_user_errors_print_one_line_and_exit_2(args, message, capsys, tmp_path):
    code = main([*args, "--out", str(tmp_path / "o")] if args[0] == "train" else args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_help_on_every_command():
    out = _cli("--help").stdout
    for cmd in ("train", "eval", "reproduce", "models", "info"):
        assert cmd in out
        assert _cli(cmd, "--help").returncode == 0


def test_train_then_eval_then_refuse_to_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "classify", "--out", str(out), "--set", "steps=150", "--set", "log_every=50",
                 "--set", "model=mlp", "--set", "lr=0.5"]) == 0
    trained = json.loads(capsys.readouterr().out.splitlines()[0])
    assert main(["eval", "classify", "--weights", str(out / "model.safetensors")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["top1"] == pytest.approx(trained["top1"])
    assert main(["train", "classify", "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_models_and_info_commands(capsys):
    assert main(["models", "ml*"]) == 0
    assert "mlp" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert json.loads(capsys.readouterr().out)["torch"]


def test_overrides_parse_by_field_type():
    cfg = get_recipe("classify").config("quick", ["steps=7", "lr=0.25", "channels_last=true", "model=mlp"])
    assert (cfg.steps, cfg.lr, cfg.channels_last, cfg.model) == (7, 0.25, True, "mlp")
    assert apply_overrides(cfg, {"steps": 9}).steps == 9


def test_reproduce_list_runs(capsys):
    assert main(["reproduce", "list"]) == 0
    out = capsys.readouterr().out
    for name in list_reproductions():
        assert name in out


def test_train_on_a_users_folder_then_predict_eval_export_without_repeating_options(image_folder, tmp_path, capsys):
    from vislearn.models.convert import weights_metadata

    out = tmp_path / "run"
    assert main(["train", "classify", "--data", str(image_folder), "--out", str(out), "--set", "steps=30",
                 "--set", "batch_size=8", "--set", "log_every=10", "--set", "image_size=12"]) == 0
    captured = capsys.readouterr()
    trained = json.loads(captured.out.splitlines()[0])
    # no terminal here: one progress line per log_every steps on stderr
    assert [line.split()[1] for line in captured.err.splitlines() if line.startswith("step ")] == \
        ["10/30", "20/30", "30/30"]
    summary = json.loads((out / "summary.json").read_text())["config"]
    assert (summary["dataset"], summary["data"], summary["dataset_classes"], summary["train_size"]) == \
        ("folder", str(image_folder), 2, 24)
    meta = weights_metadata(out / "model.safetensors")
    assert (meta["classes"], meta["image_size"], meta["ema"], meta["kwargs"]["image_size"]) == (["cat", "dog"], 12,
                                                                                                 False, 12)
    # predict prints the folder's class names at the size trained at; eval rebuilds the 12×12×3 MLP from the
    # weights alone (the preset's image_size is 8)
    cat = str(image_folder / "val" / "cat" / "0.png")
    assert main(["predict", "--weights", str(out / "model.safetensors"), cat, "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert {t["class"] for t in top} == {"cat", "dog"}
    assert main(["eval", "classify", "--weights", str(out / "model.safetensors"), "--data", str(image_folder)]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(trained["top1"])
    assert main(["export", "--weights", str(out / "model.safetensors"), "--out", str(tmp_path / "m.pt")]) == 0
    assert "input 1x3x12x12" in capsys.readouterr().out  # the size trained at, the model named by the file


def test_train_points_to_the_file_whose_metrics_it_prints(tmp_path, capsys):
    out = tmp_path / "ema"
    assert main(["train", "classify", "--out", str(out), "--set", "steps=20", "--set", "ema_decay=0.5",
                 "--set", "log_every=0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == f"weights: {out / 'model_ema.safetensors'}"
    assert main(["eval", "classify", "--weights", str(out / "model_ema.safetensors")]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(json.loads(lines[0])["top1"])


@pytest.mark.parametrize("name", list_recipes())
def test_train_recipe_help_lists_its_settings(name, capsys):
    assert main(["train", name, "--help"]) == 0
    out = capsys.readouterr().out
    cfg = get_recipe(name).config("quick")
    for f in dataclasses.fields(cfg):
        assert f"\n  {f.name} " in out
    assert "--list" not in out
    assert "steps" in out and ">= 0" in out and "optimizer steps in total" in out


def test_train_help_without_a_recipe_lists_the_recipes(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "see --list" not in out and all(n in out for n in list_recipes())


def test_models_pattern_without_a_match_says_so(capsys):
    assert main(["models", "resnet*"]) == 2
    assert "no model matches 'resnet*'" in capsys.readouterr().err


def test_reproduce_without_a_name_lists_instead_of_running(capsys):
    assert main(["reproduce"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in list_reproductions()) and "===" not in out


def test_show_config_shows_what_will_run(image_folder, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "inception_v3", "--preset", "paper", "--data", str(image_folder), "--set",
                 "batch_per_replica=3", "--set", "epochs=5", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    # 24 images // (3 per replica × 2 processes) = 4 steps per epoch
    assert (shown["batch_size"], shown["steps"], shown["decay_every"]) == (6, 20, 8)
    assert "4 steps per epoch" in shown["resolved"]["steps"] and "WORLD_SIZE" in shown["resolved"]["batch_size"]
    assert shown["lr"] == pytest.approx(0.09) and "× 2 processes" in shown["resolved"]["lr"]  # 0.045 per replica
    assert main(["train", "inception_v3", "--preset", "paper", "--set", "steps=50", "--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["steps"], shown["epochs"]) == (50, 0)


class _Pickled:
    """An arbitrary Python object: torch.load(weights_only=True) refuses to rebuild it."""


def test_pickle_refusal_gives_no_unsafe_advice(tmp_path, capsys):
    import torch

    torch.save({"w": _Pickled()}, tmp_path / "p.pth")
    assert main(["predict", "--weights", str(tmp_path / "p.pth"), str(tmp_path / "p.pth")]) == 2
    err = capsys.readouterr().err
    assert "never unpickles" in err and "weights_only" not in err and err.count("\n") == 1
