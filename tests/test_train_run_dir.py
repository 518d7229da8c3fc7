"""The output folder: refused when it is a file or holds something else, ``--resume auto``, the run lock."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from vislearn import recipes
from vislearn.cli import main
from vislearn.errors import UserError
from vislearn.train.run_dir import LOCK_NAME, RunLock

TINY = {"steps": 4, "batch_size": 16, "log_every": 2, "eval_every": 0, "ckpt_every": 2, "ckpt_minutes": 0}
SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def _one_error_line(capsys) -> str:
    # a run without a terminal prints progress lines ("step N/M ...") to stderr before any error
    err = [line for line in capsys.readouterr().err.strip().splitlines() if not re.match(r"step \d+/\d+ ", line)]
    assert len(err) == 1 and err[0].startswith("vislearn: error: "), err
    return err[0]


@pytest.mark.parametrize("name", ["model.safetensors", "metrics.jsonl", "notes.txt"])
def test_fresh_run_into_a_folder_holding_other_files_refuses_and_touches_nothing(name, tmp_path, capsys):
    (tmp_path / name).write_bytes(b"someone else's")
    assert main(["train", "classify", "--out", str(tmp_path), *SETS]) == 2
    assert name in _one_error_line(capsys)
    assert sorted(os.listdir(tmp_path)) == [name] and (tmp_path / name).read_bytes() == b"someone else's"


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    assert main(["train", "classify", "--out", str(f), *SETS]) == 2
    assert "is a file" in _one_error_line(capsys)
    assert main(["train", "classify", "--out", str(f / "run"), *SETS]) == 2
    assert "is a file" in _one_error_line(capsys)
    assert f.read_bytes() == b"x"


def test_resume_auto_starts_then_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "classify", "--out", str(out), *SETS, "--resume", "auto"]) == 0  # missing: fresh
    assert main(["train", "classify", "--out", str(out), *SETS, "--resume", "auto"]) == 0  # finished: resumes
    capsys.readouterr()
    assert main(["train", "classify", "--out", str(out), *SETS]) == 2  # without --resume: refused
    assert "already holds a run" in _one_error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", "classify", "--out", str(empty), *SETS, "--resume", "auto"]) == 0
    assert main(["train", "classify", "--out", str(tmp_path / "none"), *SETS, "--resume"]) == 2
    assert "nothing to resume" in _one_error_line(capsys)


def test_resume_auto_restarts_a_run_that_never_checkpointed(tmp_path):
    # what a run killed before its first checkpoint leaves: run.json, a partial metrics.jsonl, a stale lock
    first = recipes.run("classify", "quick", {**TINY, "ckpt_every": 0}, out=tmp_path / "a", progress=False)
    out = tmp_path / "b"
    out.mkdir()
    (out / "run.json").write_text((tmp_path / "a" / "run.json").read_text())
    (out / "metrics.jsonl").write_text('{"step": 2, "split": "train", "loss": 9.0}\n{"step": 4, "spl')
    with pytest.raises(UserError, match="already holds a run"):
        recipes.run("classify", "quick", TINY, out=out, progress=False)
    res = recipes.run("classify", "quick", TINY, out=out, resume="auto", progress=False)
    assert res.step == 4 and res.final_metrics == first.final_metrics
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4] and rows[0]["loss"] != 9.0
    other = tmp_path / "c"  # a restart with other settings than the run's record: refused, naming them
    other.mkdir()
    (other / "run.json").write_text((tmp_path / "a" / "run.json").read_text())
    with pytest.raises(UserError, match="lr: saved 0.5, now 0.1"):
        recipes.run("classify", "quick", {**TINY, "lr": 0.1}, out=other, resume="auto", progress=False)


def test_second_run_on_the_same_out_is_refused_while_the_first_lives(tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tmp_path.joinpath(LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        assert main(["train", "classify", "--out", str(tmp_path), *SETS]) == 2
        line = _one_error_line(capsys)
        assert f"in use by process {sleeper.pid} on {socket.gethostname()}" in line
    finally:
        sleeper.kill()
        sleeper.wait()
    # the same lock once its process is gone: taken over with a message, the run goes ahead
    assert main(["train", "classify", "--out", str(tmp_path), *SETS]) == 0
    assert f"taking over the stale lock {tmp_path / LOCK_NAME} (process {sleeper.pid} no longer runs)" \
        in capsys.readouterr().err
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_another_host_is_refused_and_a_restarted_torchelastic_job_takes_its_own(tmp_path, monkeypatch):
    lock = tmp_path / LOCK_NAME
    lock.write_text(json.dumps({"pid": 1, "host": "elsewhere", "run_id": "job7", "restart": 0}))
    with pytest.raises(UserError, match="in use by process 1 on elsewhere.*delete the lock file"):
        RunLock(tmp_path).acquire()
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job7")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    mine = RunLock(tmp_path)
    mine.acquire()  # attempt 1 of the same job: attempt 0's lock is stale
    assert json.loads(lock.read_text())["pid"] == os.getpid() and mine.held
    mine.release()
    assert not lock.exists()
