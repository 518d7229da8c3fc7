"""The training engine: learning, exact resumption after SIGKILL/SIGTERM, DDP equivalence, precision."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from vislearn.errors import UserError
from vislearn.train import Task, TrainConfig, Trainer, seed_everything
from vislearn.train.checkpoint import latest_checkpoint, load_safetensors
from vislearn.train.schedules import lr_factor

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import _engine_job as job  # noqa: E402
from _ddp import final_state, loss_curve, train_one_and_two  # noqa: E402
from _launch import job_env  # noqa: E402


def _run_job(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "_engine_job.py"), str(out), *args], env=job_env(),
                          capture_output=True, text=True, timeout=300)


def _recorded(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


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
    p = _run_job(killed, "--resume", "--record", str(tmp_path / "resumed_steps"))
    assert p.returncode == 0, p.stderr
    # the resumed process starts at the checkpoint's step and runs exactly the 45 remaining steps
    # (a run that ignored the checkpoint and restarted from 0 would end with the same weights)
    assert _recorded(tmp_path / "resumed_steps") == list(range(76, 121))
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
    assert _run_job(stopped, "--resume", "--record", str(tmp_path / "resumed_steps")).returncode == 0
    assert _recorded(tmp_path / "resumed_steps") == list(range(64, 121))
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


def test_in_process_resume_starts_at_the_checkpoint_step_with_its_weights(tmp_path):
    from vislearn.train.hooks import Hook

    class StopAt30(Hook):  # the same 40-step run, stopped cleanly (final checkpoint) after step 30
        def should_stop(self, step: int, metrics: dict) -> bool:
            return step == 30

    task = job.task()
    task.hooks = [StopAt30()]
    first = Trainer(job.config(steps=40, ckpt_every=0, eval_every=0), task, tmp_path, progress=False).fit()
    assert first.stopped_early and first.step == 30
    saved = _weights(tmp_path)
    steps: list[int] = []
    tr = Trainer(job.config(steps=40, ckpt_every=0, eval_every=0), job.task(), tmp_path, resume=True,
                 progress=False, callbacks=[lambda trainer, step: steps.append(step)])
    n = tr.steps_per_epoch
    assert (tr.step, tr.epoch, tr.batch_in_epoch) == (30, 30 // n, 30 % n)
    for k, v in tr.module.state_dict().items():
        assert torch.equal(v, saved[k]), k
    tr.fit()
    assert steps == list(range(31, 41))


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_optimizer_lr_follows_warmup_schedule_and_lr_mult_at_every_step(schedule):
    t = job.task()
    head = list(t.module.model[-1].parameters())
    rest = [p for p in t.module.parameters() if all(p is not h for h in head)]
    t.param_groups = [{"params": rest}, {"params": head, "lr_mult": 10.0}]
    seen: dict[int, list[float]] = {}

    def read_lr(trainer, step):  # after step `step`: the lr the optimizer used for 0-based step `step - 1`
        seen[step - 1] = [g["lr"] for g in trainer.optimizer.param_groups]

    cfg = job.config(steps=12, schedule=schedule, warmup_steps=4, min_lr_ratio=0.1, ckpt_every=0, eval_every=0,
                     ema_decay=0.0)
    Trainer(cfg, t, None, progress=False, callbacks=[read_lr]).fit()

    def by_hand(s: int) -> float:  # warm-up (s + 1) / 4, then the decay over the 8 steps after it
        warm = min(1.0, (s + 1) / 4)
        u = min(max(s - 4, 0) / 8, 1.0)
        decay = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * u)) if schedule == "cosine" else 1 - 0.9 * u
        return 0.2 * warm * decay

    assert sorted(seen) == list(range(12))
    for s, lrs in seen.items():
        assert lrs == pytest.approx([by_hand(s), 10 * by_hand(s)], rel=1e-12), s
    assert seen[3][0] == seen[4][0] == pytest.approx(0.2)  # the peak: the end of the warm-up, the decay's start
    assert len({round(v[0], 12) for v in seen.values()}) == 11  # every other step has its own lr


def test_engine_ema_is_the_closed_form_over_two_steps():
    snapshots: list[dict[str, torch.Tensor]] = []
    t = job.task()
    cfg = job.config(steps=2, ema_decay=0.9, ckpt_every=0, eval_every=0)
    tr = Trainer(cfg, t, None, progress=False,
                 callbacks=[lambda trainer, step: snapshots.append(
                     {k: v.clone() for k, v in trainer.module.state_dict().items()})])
    tr.fit()
    w1, w2 = snapshots
    ema = tr.ema.module.state_dict()
    for k in w1:  # the first update copies, the second averages: 0.9 · θ1 + 0.1 · θ2
        torch.testing.assert_close(ema[k], 0.9 * w1[k] + 0.1 * w2[k], rtol=1e-6, atol=1e-7, msg=k)
    assert not torch.allclose(w1["model.1.weight"], w2["model.1.weight"])  # the two steps differ


class _Probe(nn.Module):
    """``loss = scale · Σ w·x``: the gradient is ``scale · Σx`` per weight, known in closed form."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1, bias=False)
        self.scale = scale
        self.dtypes: list[torch.dtype] = []

    def forward(self, batch):
        (x,) = batch
        y = self.lin(x)
        self.dtypes.append(y.dtype)
        return {"loss": self.scale * y.float().mean()}


def _probe_run(scale: float, **kw) -> tuple[Trainer, _Probe, torch.Tensor]:
    seed_everything(0)
    m = _Probe(scale)
    w0 = m.lin.weight.detach().clone()
    cfg = TrainConfig(**{**dict(steps=1, batch_size=8, lr=0.1, log_every=1, device="cpu"), **kw})
    tr = Trainer(cfg, Task(m, TensorDataset(torch.ones(8, 4))), None, progress=False)
    tr.fit()
    return tr, m, w0


def test_clipping_bounds_the_update_of_a_huge_gradient():
    # gradient = 1e6 per weight (x = 1): norm 2e6; clipped to norm 1, so one SGD step moves w by lr · 1
    tr, m, w0 = _probe_run(1e6, clip_grad=1.0)
    step = m.lin.weight.detach() - w0
    assert float(step.norm()) == pytest.approx(0.1, rel=1e-5)
    torch.testing.assert_close(step, torch.full((1, 4), -0.05))  # -lr · g / |g| with g ∝ (1, 1, 1, 1)
    assert tr.history[0]["grad_norm"] == pytest.approx(2e6, rel=1e-6)  # the norm before clipping
    _, m, w0 = _probe_run(1e6, clip_grad=0.0)  # without clipping the same step is 1e6 times larger
    assert float((m.lin.weight.detach() - w0).norm()) == pytest.approx(0.1 * 2e6, rel=1e-5)


@pytest.mark.parametrize(("precision", "dtype"), [("bf16", torch.bfloat16), ("fp32", torch.float32)])
def test_matmul_dtype_inside_the_training_forward(precision, dtype):
    _, m, _ = _probe_run(1.0, precision=precision, steps=2)
    assert m.dtypes == [dtype, dtype]


def test_keep_checkpoints_keeps_the_newest_n(tmp_path):
    Trainer(job.config(steps=40, ckpt_every=10, eval_every=0, keep_checkpoints=2), job.task(), tmp_path,
            progress=False).fit()
    kept = sorted(d.name for d in (tmp_path / "checkpoints").iterdir() if d.is_dir())
    assert kept == ["step_00000030", "step_00000040"]


@pytest.mark.parametrize("ema_eval", [True, False])
def test_ema_eval_chooses_which_weights_are_evaluated(ema_eval):
    seen: list[torch.nn.Module] = []
    t = job.task()
    t.evaluate = lambda model, loader: (seen.append(model), {"n": 1.0})[1]
    tr = Trainer(job.config(steps=3, ema_decay=0.9, ema_eval=ema_eval, ckpt_every=0, eval_every=0), t, None,
                 progress=False)
    tr.fit()
    assert seen == [tr.ema.module.model if ema_eval else tr.module.model]


class _ConvProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(64, 2))
        self.layouts: list[bool] = []

    def forward(self, batch):
        x, y = batch
        self.layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return {"loss": nn.functional.cross_entropy(self.net(x), y)}


def test_channels_last_and_workers_give_the_plain_run():
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(32, 3, 4, 4, generator=g), torch.randint(0, 2, (32,), generator=g))

    def run(**kw):
        m = _ConvProbe()
        cfg = TrainConfig(**{**dict(steps=4, batch_size=8, lr=0.1, log_every=1, device="cpu", seed=1), **kw})
        Trainer(cfg, Task(m, data), None, progress=False).fit()
        return m.state_dict(), m.layouts

    plain, layouts = run()
    other, layouts_cl = run(channels_last=True, num_workers=2)
    assert layouts == [False] * 4 and layouts_cl == [True] * 4  # 4-D float inputs arrive in channels_last
    for k in plain:  # the same data order and numbers with two loader workers
        torch.testing.assert_close(other[k], plain[k], rtol=1e-5, atol=1e-6, msg=k)


class _PerSampleOnly(torch.utils.data.Dataset):
    """The same samples without ``get_batch``: the engine falls back to per-sample fetch + collate."""

    def __init__(self, base) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


@pytest.mark.parametrize("workers", [0, 2])
def test_batched_fetch_gives_the_per_sample_run(workers):
    from vislearn.data.embedded import TensorImageDataset

    g = torch.Generator().manual_seed(0)
    flip = lambda x: x.flip(-1) if torch.rand(()) < 0.5 else x  # noqa: E731  random: the draw order matters
    data = TensorImageDataset(torch.rand(40, 3, 4, 4, generator=g), torch.randint(0, 2, (40,), generator=g), flip)

    def run(ds):
        m = _ConvProbe()
        cfg = TrainConfig(steps=6, batch_size=8, lr=0.1, log_every=1, device="cpu", seed=3, num_workers=workers)
        Trainer(cfg, Task(m, ds), None, progress=False).fit()
        return m.state_dict()

    batched, plain = run(data), run(_PerSampleOnly(data))
    assert any((batched[k] != _ConvProbe().state_dict()[k]).any() for k in batched)  # it trained
    for k in plain:
        torch.testing.assert_close(batched[k], plain[k], rtol=0, atol=0, msg=k)


def test_weight_decay_follows_the_cosine_schedule_and_spares_no_decay_groups():
    """DINO's 0.04 -> 0.4 cosine (weight_decay_end): read from the optimizer at every step, and its effect."""
    t = job.task()
    head = list(t.module.model[-1].parameters())
    rest = [p for p in t.module.parameters() if all(p is not h for h in head)]
    t.param_groups = [{"params": rest}, {"params": head, "weight_decay": 0.0}]
    seen: dict[int, list[float]] = {}
    cfg = job.config(steps=9, optimizer="adamw", lr=1e-3, weight_decay=0.04, weight_decay_end=0.4, ckpt_every=0,
                     eval_every=0, ema_decay=0.0)
    tr = Trainer(cfg, t, None, progress=False,
                 callbacks=[lambda tr, s: seen.update({s - 1: [g["weight_decay"] for g in tr.optimizer.param_groups]})])
    tr.fit()
    for s in range(9):  # the step-s update used 0.4 + (0.04 - 0.4) * (1 + cos(pi s / 9)) / 2
        assert seen[s] == pytest.approx([0.4 - 0.36 * 0.5 * (1 + math.cos(math.pi * s / 9)), 0.0], rel=1e-12), s
    assert seen[0][0] == pytest.approx(0.04)


def test_weight_decay_schedule_changes_the_adamw_update_as_its_formula_says():
    # one parameter, zero gradient: AdamW's decoupled decay alone, p <- p (1 - lr wd_t), with wd_t scheduled
    p = nn.Parameter(torch.ones(()))

    class Zero(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = p

        def forward(self, batch):
            return {"loss": self.p * 0.0 + batch[0].sum() * 0.0}

    data = TensorDataset(torch.zeros(8, 1), torch.zeros(8))
    cfg = TrainConfig(steps=4, batch_size=4, lr=0.5, optimizer="adamw", weight_decay=0.1, weight_decay_end=0.9,
                      log_every=0, device="cpu", seed=0)
    Trainer(cfg, Task(Zero(), data), None, progress=False).fit()
    expect = 1.0
    for s in range(4):
        expect *= 1 - 0.5 * (0.9 - 0.8 * 0.5 * (1 + math.cos(math.pi * s / 4)))
    assert float(p) == pytest.approx(expect, rel=1e-6)


class _BNProbe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(64, 2))

    def forward(self, batch):
        x, y = batch
        return {"loss": nn.functional.cross_entropy(self.net(x), y)}


def _bn_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(32, 3, 4, 4, generator=g), torch.randint(0, 2, (32,), generator=g))


def test_sync_bn_on_one_process_is_the_plain_bn_run():
    def run(sync_bn):
        m = _BNProbe()
        cfg = TrainConfig(steps=3, batch_size=8, lr=0.1, log_every=1, device="cpu", seed=1, sync_bn=sync_bn)
        tr = Trainer(cfg, Task(m, _bn_data()), None, progress=False)
        tr.fit()
        return tr, m.state_dict()

    _, plain = run(False)
    tr, synced = run(True)
    assert type(tr.module.net[1]) is nn.BatchNorm2d  # nothing to synchronise: not converted
    assert plain.keys() == synced.keys() and int(plain["net.1.num_batches_tracked"]) == 3
    for k in plain:  # the same weights and running statistics, bit for bit
        assert torch.equal(synced[k], plain[k]), k


def test_sync_bn_in_a_cpu_multi_process_run_is_refused_before_training(monkeypatch):
    import vislearn.train.engine as engine
    from vislearn.train.distributed import DistInfo

    # a 2-process world as init_distributed reports it (no process group: the refusal comes first)
    monkeypatch.setattr(engine, "init_distributed",
                        lambda device_type, timeout_minutes=30.0: DistInfo(rank=0, world_size=2))
    cfg = TrainConfig(steps=3, batch_size=8, lr=0.1, device="cpu", sync_bn=True)
    with pytest.raises(UserError, match="sync_bn needs CUDA"):
        Trainer(cfg, Task(_BNProbe(), _bn_data()), None, progress=False)
