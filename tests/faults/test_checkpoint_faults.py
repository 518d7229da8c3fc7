"""Faults while writing or reading checkpoints: the previous checkpoint survives and is what resumes.

The engine job of ``tests/_engine_job.py`` (momentum, cosine warm-up, clipping, EMA, dropout, random
augmentation) checkpoints every 5 steps here; every case ends by resuming and comparing with an
uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import re
import sys
from pathlib import Path

import pytest

import vislearn.io
from vislearn import recipes
from vislearn.cli import main
from vislearn.errors import UserError
from vislearn.train import Trainer
from vislearn.train import checkpoint as ckpt

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _faults import assert_same_states, final_states, overrides  # noqa: E402

import _engine_job as job  # noqa: E402

CFG = dict(steps=12, ckpt_every=5, eval_every=0, log_every=4, ckpt_minutes=0)


def _fit(out: Path, resume: bool = False, **kw):
    return Trainer(job.config(**{**CFG, **kw}), job.task(), out, resume=resume, progress=False).fit()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    _fit(out)
    return final_states(out)


def _steps(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir() if not p.name.endswith(".json"))


def test_exception_in_the_middle_of_a_checkpoint_write(tmp_path, monkeypatch, reference):
    real, calls = ckpt.atomic_torch_save, [0]

    def dies_on_the_second(obj, path):  # the 2nd checkpoint dies after its weights were written
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("node lost mid-write")
        return real(obj, path)

    monkeypatch.setattr(ckpt, "atomic_torch_save", dies_on_the_second)
    with pytest.raises(RuntimeError, match="mid-write"):
        _fit(tmp_path)
    monkeypatch.setattr(ckpt, "atomic_torch_save", real)
    assert _steps(tmp_path) == ["step_00000005"]  # no half-written step_10, no temp folder left
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000005"
    assert _fit(tmp_path, resume=True).step == 12
    assert_same_states(reference, final_states(tmp_path))


def test_full_disk_is_one_clear_line_and_the_previous_checkpoint_is_intact(tmp_path, monkeypatch, capsys):
    real, calls = vislearn.io.save_file, [0]

    def disk_full(tensors, path, metadata=None):  # the 2nd checkpoint's weights: half a file, then ENOSPC
        calls[0] += 1
        if calls[0] == 2:
            Path(path).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(vislearn.io, "save_file", disk_full)
    out = tmp_path / "run"
    sets = [a for k, v in overrides("classify", steps=5, ckpt_every=2).items()
            for a in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}")]
    assert main(["train", "classify", "--out", str(out), *sets]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines()
           if not re.match(r"step \d+/\d+ ", line)]  # progress lines of a run without a terminal
    assert len(err) == 1 and "No space left on device" in err[0] and "step_00000004" in err[0], err
    assert "step_00000002 is intact" in err[0]
    assert _steps(out) == ["step_00000002"]
    monkeypatch.setattr(vislearn.io, "save_file", real)
    ckpt.load_checkpoint(out / "checkpoints" / "step_00000002")  # readable, checksums match
    assert main(["train", "classify", "--out", str(out), *sets, "--resume"]) == 0
    ref = tmp_path / "ref"
    assert main(["train", "classify", "--out", str(ref), *sets]) == 0
    assert_same_states(final_states(ref), final_states(out))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) * 2 // 3] ^= 0x10  # inside the tensor data: every parser still reads the file
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("name, damage", [("model.safetensors", _truncate), ("model.safetensors", _flip),
                                          ("ema.safetensors", _flip), ("trainer_state.pt", _flip),
                                          ("trainer.json", _truncate)],
                         ids=["model-truncated", "model-flipped", "ema-flipped", "state-flipped", "json-truncated"])
def test_damaged_checkpoint_is_named_and_the_one_before_resumes(name, damage, tmp_path, capfd, reference):
    _fit(tmp_path)  # keeps the checkpoints of steps 10 and 12 (the end)
    damage(tmp_path / "checkpoints" / "step_00000012" / name)
    assert _fit(tmp_path, resume=True).step == 12  # from step 10: steps 11 and 12 are redone
    err = capfd.readouterr().err
    assert "step_00000012" in err and "falling back" in err and name in err, err
    assert_same_states(reference, final_states(tmp_path))


def test_every_checkpoint_damaged_is_one_error_naming_them(tmp_path):
    _fit(tmp_path)
    for d in ("step_00000010", "step_00000012"):
        _flip(tmp_path / "checkpoints" / d / "model.safetensors")
    with pytest.raises(UserError, match="step_00000012.*step_00000010.*no other checkpoint"):
        _fit(tmp_path, resume=True)


def test_latest_json_that_is_not_an_object_naming_a_checkpoint_is_ignored(tmp_path):
    _fit(tmp_path)
    for pointer in ('[1, 2]', '"step_00000010"', '7', '{"dir": "../../etc"}', '{"dir": 3}', '{',
                    '{"dir": "step_00000010"}'):
        (tmp_path / "checkpoints" / "latest.json").write_text(pointer)
        expected = "step_00000010" if "dir\": \"step" in pointer else "step_00000012"  # a valid pointer is followed
        assert ckpt.latest_checkpoint(tmp_path).name == expected, pointer
        tr = Trainer(job.config(**CFG), job.task(), tmp_path, resume=True, progress=False)
        assert tr.step == int(expected[5:]), pointer


def test_checkpoint_files_are_strict_json_and_list_checksums(tmp_path):
    recipes.run("classify", "quick", overrides("classify", steps=3), out=tmp_path, progress=False)
    d = ckpt.latest_checkpoint(tmp_path)
    sums = json.loads((d / "checksums.json").read_text())
    assert set(sums) == {"model.safetensors", "trainer.json", "trainer_state.pt"}
