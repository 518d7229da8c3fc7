"""Security (issue 16, item 3): nothing unpickles a user's file, weights metadata is validated, no network.

* A scan of ``src/`` (ast) finds no unpickling call outside ``vislearn/io.py``, and ``io.py``'s one
  ``torch.load`` passes ``weights_only=True``.
* A malicious pickle (unpickling it would create a marker file), as a raw pickle and inside a
  ``torch.save`` zip, renamed ``.pth``/``.pt``/``.bin``/``.ckpt``, is given to every weights option of
  every CLI command (discovered from the parser): exit 2, one line, no marker.
* Malformed ``vislearn_kwargs``/``vislearn_normalization`` metadata is one ``UserError`` naming the file.
* The CLI runs with ``socket.socket.connect`` blocked in a subprocess: models, info, train (tiny),
  predict, export torchscript and reproduce list all succeed.
"""

import argparse
import ast
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.cli import build_parser, main
from vislearn.errors import UserError
from vislearn.io import atomic_save_safetensors, parse_metadata

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"


# ------------------------------------------------------------------------------------------ ast scan

def _unpickling_calls(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                if n and n.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve",
                                              "marshal", "_pickle"):
                    found.append((node.lineno, f"import {n}"))
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        dotted = ast.unparse(f)
        kw = {k.arg: k.value for k in node.keywords}
        if dotted.endswith(("torch.load", "pickle.load", "pickle.loads", "joblib.load", "dill.load",
                            "Unpickler", "torch.jit.load", "pd.read_pickle", "pandas.read_pickle")):
            found.append((node.lineno, dotted))
        elif dotted.endswith(("np.load", "numpy.load")) and "allow_pickle" in kw:
            v = kw["allow_pickle"]
            if not (isinstance(v, ast.Constant) and v.value is False):
                found.append((node.lineno, f"{dotted}(allow_pickle=...)"))
    return found


def test_scan_src_no_unpickling_outside_io():
    offenders = []
    for path in sorted((SRC / "vislearn").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        calls = _unpickling_calls(ast.parse(path.read_text(encoding="utf-8")))
        if rel == "vislearn/io.py":
            assert [c for _, c in calls] == ["torch.load"], calls  # the one torch.load
            continue
        offenders += [f"{rel}:{line}: {what}" for line, what in calls]
    assert not offenders, "unpickling outside vislearn/io.py:\n" + "\n".join(offenders)


def test_scan_io_torch_load_is_weights_only():
    tree = ast.parse((SRC / "vislearn" / "io.py").read_text(encoding="utf-8"))
    loads = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == "torch.load"]
    assert len(loads) == 1
    kw = {k.arg: k.value for k in loads[0].keywords}
    assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True


def test_scan_finds_what_it_looks_for():  # the scanner itself is not blind
    bad = "import pickle\nimport torch\nimport numpy as np\ntorch.load(f)\nnp.load(f, allow_pickle=True)\n"
    assert [w for _, w in _unpickling_calls(ast.parse(bad))] == ["import pickle", "torch.load",
                                                                   "np.load(allow_pickle=...)"]
    assert _unpickling_calls(ast.parse("np.load(f, allow_pickle=False)\nnp.load(f)\n")) == []


# ------------------------------------------------------------------------------- malicious weights

class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling creates the marker file


def _malicious_files(d: Path, marker: Path) -> list[Path]:
    files = []
    raw = pickle.dumps({"state_dict": {"w": _Evil(str(marker))}})
    for n, ext in enumerate((".pth", ".pt", ".bin", ".ckpt")):  # a raw pickle and a torch.save zip, alternately
        p = d / f"evil{ext}"
        if n % 2:
            torch.save({"model": _Evil(str(marker))}, p)
        else:
            p.write_bytes(raw)
        files.append(p)
    # sanity: the payload does fire when unpickled without protection
    pickle.loads(raw)
    assert marker.exists()
    marker.unlink()
    return files


def _weights_options() -> dict[str, tuple[argparse.ArgumentParser, list[str]]]:
    """command -> (its parser, option strings of every argument whose name mentions weights)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, p in sub.choices.items():
        opts = [a.option_strings[0] for a in p._actions if a.option_strings and "weights" in a.dest]
        if opts:
            out[name] = (p, opts)
    return out


def _argv(cmd: str, parser: argparse.ArgumentParser, option: str, weights: Path, image: Path, out: Path) -> list[str]:
    argv = [cmd]
    for a in parser._actions:
        if a.option_strings or isinstance(a, argparse._HelpAction):
            continue
        # positionals: a recipe, a reproduction that takes --weights, or an image
        argv.append("classify" if a.dest == "recipe" else "perceptual" if cmd == "reproduce" else str(image))
    for a in parser._actions:
        if a.option_strings and a.required and a.option_strings[0] != option:
            target = out / ("x.png" if cmd == "perceptual-map" else "x.pt")  # a valid output name for the command
            argv += [a.option_strings[0], str(target) if a.dest == "out" else str(weights)]
    if "--model" in parser._option_string_actions and cmd in ("export", "predict"):
        argv += ["--model", "small_convnet"]
    return argv + [option, str(weights)]


def test_every_weights_option_is_discovered():
    found = _weights_options()
    assert {"eval", "predict", "export", "tag", "propose"} <= set(found), found.keys()


def test_malicious_pickle_refused_by_every_weights_option(tmp_path, capsys):
    marker = tmp_path / "PWNED"
    files = _malicious_files(tmp_path, marker)
    image = tmp_path / "img.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    tried = 0
    for cmd, (parser, options) in sorted(_weights_options().items()):
        for option in options:
            for f in files:
                argv = _argv(cmd, parser, option, f, image, tmp_path)
                code = main(argv)
                err = capsys.readouterr().err
                assert code == 2, (argv, err)
                assert f.name in err and ("refused" in err or "cannot read" in err), (argv, err)  # the file's fault
                assert not marker.exists(), f"{argv} unpickled the file"
                assert "Traceback" not in err and err.strip().count("\n") == 0, err
                assert "weights_only=False" not in err, err  # no advice to disable the protection
                tried += 1
    assert tried >= 5 * len(files)


# ------------------------------------------------------------------------------ metadata validation

@pytest.mark.parametrize("meta,match", [
    ({"vislearn_model": "mlp", "vislearn_kwargs": "{not json"}, "vislearn_kwargs.*not valid JSON"),
    ({"vislearn_model": "mlp", "vislearn_kwargs": "[1, 2]"}, "vislearn_kwargs.*JSON object"),
    ({"vislearn_model": "mlp", "vislearn_kwargs": '{"__class__": 1, "a b": 2}'}, "vislearn_kwargs"),
    ({"vislearn_model": " "}, "vislearn_model"),
    ({"vislearn_normalization": "[[0.5], [0.5, 0.5]]"}, "vislearn_normalization"),
    ({"vislearn_normalization": '[[0.5, 0.5, 0.5], [0, 1, 1]]'}, "std > 0"),
    ({"vislearn_normalization": '[["a"], ["b"]]'}, "vislearn_normalization"),
    ({"vislearn_normalization": "[[NaN], [1]]"}, "vislearn_normalization"),
    ({"vislearn_normalization": '{"mean": 1}'}, "vislearn_normalization"),
])
def test_malformed_metadata_is_one_user_error(meta, match, tmp_path):
    with pytest.raises(UserError, match=match):
        parse_metadata(meta, tmp_path / "m.safetensors")
    from vislearn.models.registry import create_model, create_model_from_weights
    m = create_model("mlp")
    path = tmp_path / "m.safetensors"
    atomic_save_safetensors(m.state_dict(), path, {"format": "vislearn", **meta})
    with pytest.raises(UserError, match="m.safetensors"):
        create_model_from_weights(path, name=None if "vislearn_model" in meta else "mlp")


def test_valid_metadata_parsed():
    out = parse_metadata({"vislearn_model": "mlp", "vislearn_kwargs": '{"num_classes": 3}',
                          "vislearn_normalization": "[[0.5, 0.4, 0.3], [0.2, 0.2, 0.2]]"}, "x")
    assert out == {"model": "mlp", "kwargs": {"num_classes": 3},
                   "normalization": ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2))}


def test_stored_options_of_wrong_type_via_cli(tmp_path, capsys):
    from vislearn.models.registry import create_model
    m = create_model("small_convnet", num_classes=3)
    path = tmp_path / "w.safetensors"
    atomic_save_safetensors(m.state_dict(), path, {"format": "vislearn", "vislearn_model": "small_convnet",
                                                   "vislearn_kwargs": json.dumps({"no_such_option": 1})})
    image = tmp_path / "i.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    assert main(["predict", "--model", "small_convnet", "--weights", str(path), str(image)]) == 2
    err = capsys.readouterr().err
    assert "w.safetensors" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- network

# runs each argv of sys.argv[1] (JSON) through the CLI in one process with every socket connect blocked;
# prints one exit code per command
_NO_NET = """
import json, socket, sys
def _deny(*a, **k):
    raise OSError("network access attempted (blocked by the test)")
socket.socket.connect = _deny
socket.socket.connect_ex = _deny
socket.create_connection = _deny
socket.getaddrinfo = _deny
try:
    socket.socket().connect(("127.0.0.1", 9))
    print("BLOCKER BROKEN")
except OSError:
    pass
from vislearn.cli import main
for argv in json.loads(sys.argv[1]):
    print("EXIT", main(argv), flush=True)
"""


def test_cli_commands_need_no_network(tmp_path):
    from vislearn.io import save_weights
    from vislearn.models.registry import create_model
    image = tmp_path / "i.png"
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(image)
    weights = tmp_path / "w.safetensors"
    save_weights(create_model("small_convnet", num_classes=3), weights)
    steps = [["models"], ["info"], ["reproduce", "list"],
             ["train", "classify", "--out", str(tmp_path / "run"), "--set", "steps=3", "--set", "log_every=1"],
             ["predict", "--model", "small_convnet", "--weights", str(weights), str(image)],
             ["export", "--model", "small_convnet", "--weights", str(weights), "--format", "torchscript",
              "--out", str(tmp_path / "m.pt")]]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp_path / "th"),
           "HF_HOME": str(tmp_path / "hf")}
    r = subprocess.run([sys.executable, "-c", _NO_NET, json.dumps(steps)], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert "BLOCKER BROKEN" not in r.stdout
    assert r.stdout.count("EXIT 0") == len(steps), (r.stdout[-1500:], r.stderr[-2500:])
    assert "network access attempted" not in r.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file() and (tmp_path / "m.pt").is_file()
