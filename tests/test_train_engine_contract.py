"""The engine contract the next papers need: hooks, Task.model, gradient accumulation, compile."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vislearn.errors import UserError
from vislearn.train import Task, TrainConfig, Trainer
from vislearn.train.checkpoint import latest_checkpoint, load_safetensors
from vislearn.train.hooks import Hook

sys.path.insert(0, str(Path(__file__).parent))
import _engine_job as job  # noqa: E402


class MLPModule(nn.Module):
    """A model without batch statistics or dropout: accumulation must equal one large batch."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(20, 32), nn.Tanh(), nn.Linear(32, 5))
        self.forwards = 0

    def forward(self, batch):
        self.forwards += 1
        x, y = batch
        return {"loss": F.cross_entropy(self.model(x), y)}


def _data(n: int = 1024) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 20, generator=g)
    return TensorDataset(x, (x[:, :5].argmax(1) + (torch.rand(n, generator=g) < 0.2).long()) % 5)


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=10, batch_size=256, lr=0.5, momentum=0.9, log_every=1, seed=4, device="cpu")
    return TrainConfig(**{**base, **kw})


def _train(cfg: TrainConfig, **task_kw) -> tuple[Trainer, MLPModule]:
    m = MLPModule()
    tr = Trainer(cfg, Task(m, _data(), model=m.model, **task_kw), None, progress=False)
    tr.fit()
    return tr, m


def _losses(tr: Trainer) -> list[float]:
    return [h["loss"] for h in tr.history if h["split"] == "train"]


def test_accumulation_64x4_equals_one_batch_of_256():
    (big, mb), (acc, ma) = _train(_cfg(steps=6)), _train(_cfg(steps=6, grad_accum_steps=4))
    assert ma.forwards == 4 * mb.forwards == 24  # 6 steps over 1.5 epochs of 4 steps
    assert acc.micro_batch == 64
    for k, v in mb.state_dict().items():
        torch.testing.assert_close(ma.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)
    # the logged loss is the mean over the micro-batches: the big batch's loss
    assert _losses(acc) == pytest.approx(_losses(big), rel=1e-5)


def test_accumulation_settings_are_checked():
    m = MLPModule()
    with pytest.raises(UserError, match="grad_accum_steps 3"):
        Trainer(_cfg(grad_accum_steps=3), Task(m, _data()), None, progress=False)
    with pytest.raises(UserError, match="grad_accum_steps must be >= 1"):
        Trainer(_cfg(grad_accum_steps=0), Task(m, _data()), None, progress=False)


class Recorder(Hook):
    def __init__(self, stop_at: int = -1) -> None:
        self.steps, self.modules, self.seen, self.stop_at = [], [], {}, stop_at

    def after_optimizer_step(self, module, step):
        self.steps.append(step)
        self.modules.append(module)

    def should_stop(self, step, metrics):
        self.seen[step] = dict(metrics)
        return step == self.stop_at


def test_hooks_run_once_per_optimizer_step_with_the_training_module():
    rec = Recorder()
    m = MLPModule()
    Trainer(_cfg(steps=6, grad_accum_steps=2, compile=False), Task(m, _data(), hooks=[rec]), None,
            progress=False).fit()
    assert m.forwards == 12 and rec.steps == [1, 2, 3, 4, 5, 6]
    assert all(x is m for x in rec.modules)
    assert sorted(rec.seen) == [1, 2, 3, 4, 5]  # should_stop is not asked at the last step
    assert set(rec.seen[3]) == {"loss", "lr"}


def test_should_stop_ends_cleanly_with_final_eval_checkpoint_and_export(tmp_path):
    rec = Recorder(stop_at=6)
    t = job.task()
    t.hooks = [rec]
    result = Trainer(job.config(steps=40, eval_every=3, ckpt_every=0), t, tmp_path, progress=False).fit()
    assert result.stopped_early and not result.interrupted and result.step == 6
    assert rec.steps == [1, 2, 3, 4, 5, 6]
    assert "eval/top1" in rec.seen[3] and "eval/top1" not in rec.seen[4]
    evals = [h["step"] for h in result.history if h["split"] == "eval"]
    assert evals == [3, 6]  # the evaluation due at step 6 is the final one, not run twice
    assert result.final_metrics["top1"] == rec.seen[6]["eval/top1"]
    assert latest_checkpoint(tmp_path).name == "step_00000006"
    exported = load_safetensors(tmp_path / "model.safetensors")
    assert set(exported) == {"1.weight", "1.bias", "4.weight", "4.bias"}  # Task.model: the Sequential
    ema = load_safetensors(tmp_path / "model_ema.safetensors")
    assert set(ema) == set(exported) and not torch.equal(ema["1.weight"], exported["1.weight"])


def test_evaluate_gets_task_model_from_the_ema_copy():
    seen = []
    m = MLPModule()

    def evaluate(model, loader):
        seen.append(model)
        return {"n": 0.0}

    tr = Trainer(_cfg(steps=2, ema_decay=0.5), Task(m, _data(), _data(64), evaluate=evaluate, model=m.model),
                 None, progress=False)
    tr.fit()
    assert seen == [tr.ema.module.model]
    with pytest.raises(UserError, match="submodule"):
        Trainer(_cfg(ema_decay=0.5), Task(m, _data(), model=nn.Linear(1, 1)), None, progress=False)


def test_resume_inside_an_accumulation_cycle_is_exact(tmp_path):
    """A crash in the 2nd micro-batch of step 12; resuming from the step-10 checkpoint ends equal."""
    cfg = dict(steps=16, grad_accum_steps=2, ckpt_every=5, eval_every=0, log_every=4)
    ref = Trainer(job.config(**cfg), job.task(), tmp_path / "ref", progress=False)
    ref.fit()

    t = job.task()
    forward, calls = t.module.forward, [0]

    def crashing(batch):
        calls[0] += 1
        if calls[0] == 2 * 11 + 2:
            raise RuntimeError("killed mid-cycle")
        return forward(batch)

    t.module.forward = crashing
    with pytest.raises(RuntimeError, match="mid-cycle"):
        Trainer(job.config(**cfg), t, tmp_path / "run", progress=False).fit()
    assert latest_checkpoint(tmp_path / "run").name == "step_00000010"
    resumed = Trainer(job.config(**cfg), job.task(), tmp_path / "run", resume=True, progress=False)
    resumed.fit()
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_safetensors(tmp_path / "ref" / name), load_safetensors(tmp_path / "run" / name)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=f"{name}:{k}")
    # the step-12 record averages steps 11-12 after the resume (9-12 uninterrupted); the others match
    rows = [(h["step"], h["loss"]) for h in resumed.history if h["split"] == "train"]
    ref_rows = [(h["step"], h["loss"]) for h in ref.history if h["split"] == "train"]
    assert [s for s, _ in rows] == [s for s, _ in ref_rows] == [4, 8, 12, 16]
    for (s, a), (_, b) in zip(rows, ref_rows, strict=True):
        assert s == 12 or a == pytest.approx(b, rel=1e-6), s


def test_compiled_step_gives_the_eager_losses():
    eager, _ = _train(_cfg(steps=4, batch_size=64))
    compiled, _ = _train(_cfg(steps=4, batch_size=64, compile=True, compile_backend="aot_eager"))
    assert isinstance(compiled.wrapped, torch._dynamo.eval_frame.OptimizedModule)
    assert _losses(compiled) == pytest.approx(_losses(eager), rel=1e-5)
    assert set(compiled.module.state_dict()) == set(eager.module.state_dict())  # no _orig_mod. prefixes
