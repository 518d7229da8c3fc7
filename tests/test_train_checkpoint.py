"""When checkpoints are written: every ``ckpt_every`` steps, every ``ckpt_minutes`` of wall time, at every
evaluation (``ckpt_at_eval``) and at the end; each holds a checksum of its files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import vislearn.train.engine as engine
from vislearn.train import Trainer
from vislearn.train.config import TrainConfig

sys.path.insert(0, str(Path(__file__).parent))
import _engine_job as job  # noqa: E402


class _Saves:
    def __init__(self, monkeypatch) -> None:
        self.steps: list[int] = []
        real = Trainer.save_checkpoint

        def spy(trainer):
            self.steps.append(trainer.step)
            real(trainer)

        monkeypatch.setattr(Trainer, "save_checkpoint", spy)


@pytest.mark.parametrize(("per_reading", "minutes", "expect"), [
    (25.0, 1.0, [3, 6, 9, 10]),  # start at t=50, steps 1-3 read 75, 100, 125 -> save at 3 (clock restarts at 150)
    (20.0, 1.0, [3, 6, 9, 10]),  # step 3 reads exactly 60 s after the start: due (>=)
    (25.0, 0.5, [2, 4, 6, 8, 10]),  # 30 s: due every second step; step 10 is the end's save
])
def test_wall_time_checkpoints(tmp_path, monkeypatch, per_reading, minutes, expect):
    saves, clock = _Saves(monkeypatch), [0.0]

    def fake_now():  # one reading per step (and one when a save starts); due once ckpt_minutes passed
        clock[0] += per_reading
        return clock[0]

    monkeypatch.setattr(engine, "_now", fake_now)
    cfg = job.config(steps=10, ckpt_every=0, eval_every=0, ckpt_minutes=minutes)
    Trainer(cfg, job.task(), tmp_path, progress=False).fit()
    assert saves.steps == expect
    assert TrainConfig().ckpt_minutes == 10.0  # by default, every 10 minutes


def test_checkpoint_at_every_evaluation_and_the_end(tmp_path, monkeypatch):
    saves = _Saves(monkeypatch)
    Trainer(job.config(steps=10, ckpt_every=0, eval_every=4, ckpt_minutes=0, ckpt_at_eval=True), job.task(), tmp_path,
            progress=False).fit()
    assert saves.steps == [4, 8, 10]
    saves.steps.clear()
    Trainer(job.config(steps=10, ckpt_every=0, eval_every=4, ckpt_minutes=0, ckpt_at_eval=False), job.task(),
            tmp_path / "b", progress=False).fit()
    assert saves.steps == [10]


def test_in_memory_runs_write_nothing(monkeypatch):
    saves = _Saves(monkeypatch)
    Trainer(job.config(steps=4, ckpt_every=2, eval_every=0), job.task(), None, progress=False).fit()
    assert saves.steps == [2, 4]  # called, but returns at once: nothing to write to
