"""The command line: every user error is one line and exit status 2; train → eval round trip."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from vislearn.cli import main
from vislearn.recipes import apply_overrides, get_recipe
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
