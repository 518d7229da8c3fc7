"""vislearn.io: atomic writes (and their file mode), the weights readers and checked loading."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

import vislearn.io as vio
from vislearn.errors import UserError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        vio.atomic_write_json(tmp_path / "results" / "r.json", {"b": 1, "a": [1.5]})
        vio.atomic_write_bytes(tmp_path / "r.png", b"\x89PNG")
        vio.atomic_save_safetensors({"w": torch.ones(2)}, tmp_path / "m.safetensors")
        vio.atomic_torch_save({"step": torch.tensor(3)}, tmp_path / "s.pt")
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what any new file gets under this umask
    finally:
        os.umask(old)
    assert _mode(plain) == expected
    for name in ("results/r.json", "r.png", "m.safetensors", "s.pt"):
        assert _mode(tmp_path / name) == expected, name
    assert (tmp_path / "results" / "r.json").read_text() == '{\n  "a": [\n    1.5\n  ],\n  "b": 1\n}\n'


def test_umask_fallback_without_proc_restores_the_umask(monkeypatch):
    monkeypatch.setattr(vio, "_PROC_STATUS", "/nonexistent/status")
    old = os.umask(0o027)
    try:
        assert vio.current_umask() == 0o027
        assert vio.current_umask() == 0o027  # reading it left it unchanged
    finally:
        os.umask(old)


def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.pt"
    vio.atomic_torch_save({"a": torch.tensor(1)}, target)
    with pytest.raises(Exception):  # noqa: B017  (pickling a lambda: the error type is torch's business)
        vio.atomic_torch_save({"f": lambda: 0}, target)
    assert vio.torch_load_safe(target)["a"].item() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_safetensors_metadata_roundtrip_and_metadata_only_read(tmp_path):
    path = tmp_path / "w.safetensors"
    a = torch.arange(6.0).reshape(2, 3)
    vio.atomic_save_safetensors({"a": a, "a_view": a[0]}, path, {"k": "v"})  # aliased storage is cloned
    tensors, meta = vio.read_safetensors(path)
    assert meta == {"k": "v"}
    torch.testing.assert_close(tensors["a_view"], torch.tensor([0.0, 1.0, 2.0]))
    assert set(load_file(path)) == {"a", "a_view"}  # the peer reader agrees
    assert vio.read_safetensors(path, load_tensors=False) == ({}, {"k": "v"})
    assert vio.read_metadata(path) == {"k": "v"}


def test_read_state_dict_formats_and_wrappers(tmp_path):
    w = torch.randn(3, 2)
    torch.save({"state_dict": {"module.fc.weight": w}}, tmp_path / "ddp.pth")
    sd, meta = vio.read_state_dict(tmp_path / "ddp.pth")
    assert list(sd) == ["fc.weight"] and meta == {}
    torch.testing.assert_close(sd["fc.weight"], w)
    np.savez(tmp_path / "slim.npz", **{"InceptionV3/Conv2d_1a_3x3/weights": w.numpy()})
    sd, _ = vio.read_state_dict(tmp_path / "slim.npz")
    torch.testing.assert_close(sd["InceptionV3/Conv2d_1a_3x3/weights"], w)
    save_file({"x": w}, tmp_path / "peer.safetensors")
    assert vio.read_state_dict(tmp_path / "peer.safetensors")[1] == {}
    assert vio.read_metadata(tmp_path / "ddp.pth") == {}


def test_read_state_dict_errors_name_the_file(tmp_path):
    with pytest.raises(UserError, match="weights file not found: .*absent.safetensors"):
        vio.read_state_dict(tmp_path / "absent.safetensors")
    with pytest.raises(UserError, match="weights file not found"):
        vio.read_metadata(tmp_path / "absent.safetensors")
    (tmp_path / "torn.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(UserError, match="cannot read weights file .*torn.safetensors"):
        vio.read_state_dict(tmp_path / "torn.safetensors")
    (tmp_path / "torn.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UserError, match="cannot read weights file .*torn.npz"):
        vio.read_state_dict(tmp_path / "torn.npz")
    torch.save({"lr": 0.1, "w": torch.ones(1)}, tmp_path / "mixed.pth")
    with pytest.raises(UserError, match="mixed.pth does not hold a state dict of tensors"):
        vio.read_state_dict(tmp_path / "mixed.pth")


def test_load_state_dict_checked_strict_and_lenient():
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    good = {k: torch.full_like(v, 0.5) for k, v in model.state_dict().items()}
    partial = {"0.weight": good["0.weight"], "extra": torch.zeros(1)}
    with pytest.raises(UserError, match=r"missing keys \(3\): 0.bias, 1.weight, 1.bias \| "
                                        r"unexpected keys \(1\): extra"):
        vio.load_state_dict_checked(model, partial, source="f.pth")
    vio.load_state_dict_checked(model, partial, strict=False)  # the present key is loaded, the rest kept
    assert torch.equal(model[0].weight, good["0.weight"]) and not torch.equal(model[1].bias, good["1.bias"])
    bad = {**good, "1.weight": torch.zeros(2, 3)}
    with pytest.raises(UserError, match=r"f.pth does not fit Sequential: shape mismatch \(1\): "
                                        r"1.weight: file \(2, 3\) vs model \(1, 3\)"):
        vio.load_state_dict_checked(model, bad, source="f.pth", strict=False)  # shapes are never lenient


def test_save_weights_is_duck_typed_on_model_attributes(tmp_path):
    plain = nn.Linear(2, 2)
    vio.save_weights(plain, tmp_path / "plain.safetensors")
    assert vio.read_metadata(tmp_path / "plain.safetensors") == {"format": "vislearn"}
    named = nn.Linear(2, 2)
    named.model_name, named.model_kwargs, named.normalization = "toy", {"width": 2}, ((0.5,), (0.25,))
    vio.save_weights(named, tmp_path / "named.safetensors", {"label_names": "a,b"})
    tensors, meta = vio.read_safetensors(tmp_path / "named.safetensors")
    assert meta == {"format": "vislearn", "vislearn_model": "toy", "vislearn_kwargs": '{"width": 2}',
                    "vislearn_normalization": "[[0.5], [0.25]]", "label_names": "a,b"}
    assert json.loads(meta["vislearn_kwargs"]) == {"width": 2}
    torch.testing.assert_close(tensors["weight"], named.weight.detach())


def test_torch_load_is_called_in_one_place_only():
    import ast
    from pathlib import Path

    src = Path(vio.__file__).parent
    calls = [f"{p.relative_to(src)}:{node.lineno}" for p in sorted(src.rglob("*.py"))
             for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
             if isinstance(node, ast.Attribute) and node.attr == "load"
             and isinstance(node.value, ast.Name) and node.value.id == "torch"]
    assert len(calls) == 1 and calls[0].startswith("io.py:"), calls


def test_checkpoint_directories_and_files_honour_the_umask(tmp_path):
    from vislearn.train.checkpoint import save_checkpoint

    old = os.umask(0o022)
    try:
        d = save_checkpoint(tmp_path, 5, model_state={"w": torch.ones(1)}, trainer={}, state={"rng": torch.ones(1)})
    finally:
        os.umask(old)
    assert _mode(d) == 0o755  # mkdtemp's 0700 would hide a finished run's checkpoints from the group
    assert {p.name: _mode(p) for p in d.iterdir()} == {
        "model.safetensors": 0o644, "trainer.json": 0o644, "trainer_state.pt": 0o644, "checksums.json": 0o644}
    assert _mode(tmp_path / "checkpoints" / "latest.json") == 0o644
