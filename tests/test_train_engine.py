"""The training engine: learning, exact resumption after SIGKILL/SIGTERM, DDP equivalence, precision."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vislearn.errors import UserError
from vislearn.train import Trainer
from vislearn.train.checkpoint import latest_checkpoint, load_safetensors
from vislearn.train.schedules import lr_factor

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _engine_job as job  # noqa: E402
from _ddp import final_state, loss_curve, train_one_and_two  # noqa: E402


def _run_job(out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(HERE / "_engine_job.py"), str(out), *args], env=env,
                          capture_output=True, text=True, timeout=300)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_safetensors(latest_checkpoint(out) / "model.safetensors")


def test_engine_learns_digits_and_records_history():
    result = Trainer(job.config(steps=200, ckpt_every=0), job.task(), None, progress=False).fit()
    evals = [h for h in result.history if h["split"] == "eval"]
    assert [h["step"] for h in evals] == [40, 80, 120, 160, 200]
    assert result.final_metrics["top1"] > 0.85
    train = [h for h in result.history if h["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"] * 0.5


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert _run_job(ref).returncode == 0
    # killed with SIGKILL at step 87: the newest checkpoint is step 75; 12 steps are lost and redone
    p = _run_job(killed, "--kill-at", "87")
    assert p.returncode == -9, p.stderr
    assert latest_checkpoint(killed).name == "step_00000075"
    p = _run_job(killed, "--resume")
    assert p.returncode == 0, p.stderr
    a, b = _weights(ref), _weights(killed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)
    ema_ref = load_safetensors(ref / "model_ema.safetensors")
    ema_res = load_safetensors(killed / "model_ema.safetensors")
    for k in ema_ref:
        torch.testing.assert_close(ema_ref[k], ema_res[k], rtol=1e-6, atol=1e-7, msg=k)
    # the resumed run's metrics history continues the killed one's (nothing lost, nothing doubled)
    hist = json.loads((latest_checkpoint(killed) / "trainer.json").read_text())["history"]
    assert [h["step"] for h in hist if h["split"] == "eval"] == [40, 80, 120]


def test_sigterm_checkpoints_and_resume_is_exact(tmp_path):
    ref, stopped = tmp_path / "ref", tmp_path / "stopped"
    assert _run_job(ref).returncode == 0
    p = _run_job(stopped, "--term-at", "63")
    assert p.returncode == 0, p.stderr  # a graceful stop
    assert latest_checkpoint(stopped).name == "step_00000063"
    assert not (stopped / "model.safetensors").exists()
    assert _run_job(stopped, "--resume").returncode == 0
    a, b = _weights(ref), _weights(stopped)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        Trainer(job.config(), job.task(), tmp_path, resume=True, progress=False)


def test_corrupt_checkpoint_is_reported_by_name(tmp_path):
    # one checkpoint kept: nothing to fall back to (tests/faults covers the fall-back)
    Trainer(job.config(steps=30, keep_checkpoints=1), job.task(), tmp_path, progress=False).fit()
    d = latest_checkpoint(tmp_path)
    (d / "trainer_state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt checkpoint .*step_00000030"):
        Trainer(job.config(steps=60, keep_checkpoints=1), job.task(), tmp_path, resume=True, progress=False)


def test_two_process_gloo_ddp_matches_one_process(tmp_path):
    one, two = train_one_and_two(["classify", "--set", "steps=40", "--set", "log_every=5", "--set", "batch_size=60",
                                  "--set", "lr=0.5", "--set", "momentum=0.9"], tmp_path)
    c1, c2 = loss_curve(one), loss_curve(two)
    assert [s for s, _ in c1] == [s for s, _ in c2] == list(range(5, 41, 5))
    for (_, l1), (_, l2) in zip(c1, c2, strict=True):
        assert math.isclose(l1, l2, rel_tol=1e-4), (c1, c2)
    w1, w2 = final_state(one), final_state(two)
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_trains_on_cpu():
    result = Trainer(job.config(steps=80, precision="bf16", ckpt_every=0, ema_decay=0.0), job.task(), None,
                     progress=False).fit()
    assert result.final_metrics["top1"] > 0.6


def test_fp16_on_cpu_is_refused():
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        Trainer(job.config(steps=2, precision="fp16"), job.task(), None, progress=False).fit()


def test_bad_config_values_are_user_errors():
    with pytest.raises(UserError, match="ema_decay"):
        Trainer(job.config(ema_decay=1.5), job.task(), None, progress=False)
    with pytest.raises(UserError, match="fewer than one batch"):
        Trainer(job.config(batch_size=100_000), job.task(), None, progress=False)
    with pytest.raises(UserError, match="unknown optimizer"):
        Trainer(job.config(optimizer="lion"), job.task(), None, progress=False)


def test_schedules_closed_form():
    assert lr_factor(0, schedule="constant") == 1.0
    assert lr_factor(4, schedule="constant", warmup_steps=10) == pytest.approx(0.5)
    # Inception: 0.94 every 2 epochs; with 100 steps per 2 epochs, step 250 is two decays in
    assert lr_factor(250, schedule="staircase", decay_every=100, decay_rate=0.94) == pytest.approx(0.94**2)
    assert lr_factor(50, schedule="exponential", decay_every=100, decay_rate=0.94) == pytest.approx(0.94**0.5)
    assert lr_factor(50, schedule="cosine", total_steps=100) == pytest.approx(0.5)
    assert lr_factor(100, schedule="cosine", total_steps=100, min_lr_ratio=0.1) == pytest.approx(0.1)
    assert lr_factor(60, schedule="cosine", total_steps=110, warmup_steps=10) == pytest.approx(0.5)
    with pytest.raises(UserError, match="unknown schedule"):
        lr_factor(0, schedule="poly")


def test_lr_mult_param_groups_follow_the_schedule():
    t = job.task()
    head = list(t.module.model[-1].parameters())
    rest = [p for p in t.module.parameters() if all(p is not h for h in head)]
    t.param_groups = [{"params": rest}, {"params": head, "lr_mult": 10.0}]
    tr = Trainer(job.config(steps=5, schedule="constant", warmup_steps=0, ckpt_every=0), t, None, progress=False)
    tr.fit()
    assert [g["lr"] for g in tr.optimizer.param_groups] == pytest.approx([0.2, 2.0])


def test_in_memory_run_lets_ctrl_c_through():
    import signal

    def interrupt(trainer, step):
        if step == 3:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        Trainer(job.config(steps=20, ckpt_every=0), job.task(), None, progress=False, callbacks=[interrupt]).fit()
