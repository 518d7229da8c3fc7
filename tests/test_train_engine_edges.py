"""The engine's settings and bookkeeping one at a time, each against a hand count or the value it must have.

Written for the mutation run over train/engine.py (issue 19, tests/MUTANTS.md): each test pins a behaviour the
learning, resume and DDP tests cannot see (a default, a device probe, an optimizer argument, what is logged and
exported, which gradients are kept between steps).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, DistributedSampler, TensorDataset

from vislearn.errors import UserError
from vislearn.train import Task, TrainConfig, Trainer, engine
from vislearn.train.checkpoint import load_safetensors
from vislearn.train.distributed import DistInfo
from vislearn.train.hooks import Hook
from vislearn.train.nonfinite import NonFiniteLossError

sys.path.insert(0, str(Path(__file__).parent))


class _Linear(nn.Module):
    """A linear model on fixed data; extra scalars and non-scalars in the output; optionally a NaN loss at
    one step, or a finite loss whose gradient is infinite (a backward hook multiplies it by inf)."""

    def __init__(self, nan_at: int = -1, inf_grad_at: int = -1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Linear(4, 3)
        self.calls, self.nan_at, self.inf_grad_at = 0, nan_at, inf_grad_at

    def forward(self, batch):
        self.calls += 1
        x, y = batch
        h = self.model(x)
        if self.calls == self.inf_grad_at:
            h.register_hook(lambda g: g * float("inf"))
        loss = F.cross_entropy(h, y)
        if self.calls == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "double": 2 * loss.detach(), "logits": h.detach(), "note": "text"}


def _data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(2)
    return TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g))


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(steps=6, batch_size=8, lr=0.1, log_every=1, seed=1, device="cpu",
                                 ckpt_minutes=0), **kw})


def _fit(cfg: TrainConfig, module: nn.Module | None = None, out=None, **kw) -> tuple[Trainer, object]:
    m = module or _Linear()
    tr = Trainer(cfg, Task(m, _data(), model=m.model, **kw), out, progress=False)
    return tr, tr.fit()


def test_defaults_run_in_memory_without_resuming_and_without_warnings(monkeypatch, tmp_path):
    m = _Linear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a GradScaler enabled without CUDA warns at construction
        tr = Trainer(_cfg(), Task(m, _data(), model=m.model))  # resume=False and progress=True by default
    assert tr.resume is False and not tr.scaler.is_enabled() and tr.fit().step == 6
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert Trainer(_cfg(), Task(_Linear(), _data()), tmp_path).log_lines  # progress=True: lines without a terminal
    # no evaluate function: no evaluation records, however often evaluation is due
    _, res = _fit(_cfg(eval_every=2))
    assert [r for r in res.history if r["split"] == "eval"] == [] and res.final_metrics == {}


@pytest.mark.parametrize(("device", "cuda", "probe"), [
    ("auto", False, "cpu"), ("cuda", False, "cpu"), ("cpu", False, "cpu"),
    ("auto", True, "cuda"), ("cuda", True, "cuda"), ("cuda:1", True, "cuda"), ("cpu", True, "cpu")])
def test_the_process_group_backend_probe_follows_device_and_cuda(monkeypatch, device, cuda, probe):
    seen = []

    class Probed(Exception):
        pass

    def fake_init(device_type, timeout):
        seen.append(device_type)
        raise Probed  # stop here: nothing after the probe can run without a GPU

    monkeypatch.setattr(engine, "init_distributed", fake_init)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    with pytest.raises(Probed):
        Trainer(_cfg(device=device), Task(_Linear(), _data()), None)
    assert seen == [probe]


@pytest.mark.parametrize(("tty", "progress", "out", "bar", "lines"), [
    (True, True, True, True, False), (False, True, True, False, True), (False, True, False, False, False),
    (False, False, True, False, False), (True, False, True, False, False)])
def test_progress_bar_on_a_terminal_log_lines_without_one(monkeypatch, capsys, tmp_path, tty, progress, out, bar,
                                                          lines):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    m = _Linear()
    tr = Trainer(_cfg(log_every=3), Task(m, _data(), model=m.model), tmp_path if out else None, progress=progress)
    assert (tr.progress, tr.log_lines) == (bar, lines)
    tr.fit()
    err = capsys.readouterr().err
    assert (err.count("step 3/6") + err.count("step 6/6") == 2) == lines, err


def test_batch_must_split_evenly_over_the_micro_batches():
    with pytest.raises(UserError, match="batch_size 6 is not divisible by 1 processes × grad_accum_steps 4"):
        Trainer(_cfg(batch_size=6, grad_accum_steps=4), Task(_Linear(), _data()), None, progress=False)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "rmsprop", "rmsprop_tf"])
@pytest.mark.parametrize("eps", [-1.0, 0.0, 0.5])
def test_optimizer_eps_below_zero_means_the_optimizers_default(optimizer, eps):
    # torch's own default is 1e-8 for Adam, AdamW and RMSprop; TF's RMSProp (rmsprop_tf) uses 1.0. An
    # eps of 0 is a value, not "unset".
    tr = Trainer(_cfg(optimizer=optimizer, optimizer_eps=eps), Task(_Linear(), _data()), None, progress=False)
    default = 1.0 if optimizer == "rmsprop_tf" else 1e-8
    assert tr.optimizer.param_groups[0]["eps"] == (default if eps < 0 else eps)


def test_no_ema_at_decay_zero_and_fp16_refused_before_training():
    assert Trainer(_cfg(ema_decay=0.0), Task(_Linear(), _data()), None, progress=False).ema is None
    m = _Linear()
    with pytest.raises(UserError, match="fp16 needs CUDA"):
        Trainer(_cfg(precision="fp16"), Task(m, _data()), None, progress=False)  # construction alone refuses
    assert m.calls == 0


class _ShortShard(TensorDataset):
    """A dataset that brings its own per-rank sampler (as the sharded ones do), here of 4 samples."""

    def distributed_sampler(self, num_replicas, rank, seed):
        return list(range(4))


def test_a_rank_with_less_than_one_batch_is_refused():
    data = _data()
    with pytest.raises(UserError, match="smaller than one batch per process"):  # 4 samples, batch 8
        Trainer(_cfg(), Task(_Linear(), _ShortShard(*data.tensors)), None, progress=False)


def test_logged_values_are_the_means_over_each_window_of_steps():
    # log_every=1 gives each step's values; log_every=3 must log the mean of three of them (same run, same
    # seed); only scalar tensors are logged ("logits" and "note" are not)
    _, one = _fit(_cfg(log_every=1))
    _, three = _fit(_cfg(log_every=3))
    per_step = [r for r in one.history if r["split"] == "train"]
    windows = [r for r in three.history if r["split"] == "train"]
    assert [r["step"] for r in windows] == [3, 6]
    assert set(windows[0]) == {"step", "split", "loss", "double", "lr", "steps_per_s"}
    for w, lo in zip(windows, (0, 3), strict=True):
        for k in ("loss", "double", "lr"):
            assert w[k] == pytest.approx(sum(r[k] for r in per_step[lo:lo + 3]) / 3, rel=1e-6), k
    _, silent = _fit(_cfg(log_every=0))
    assert [r for r in silent.history if r["split"] == "train"] == []


def test_steps_per_second_is_the_window_over_its_wall_time():
    t0 = time.time()
    _, res = _fit(_cfg(log_every=2, steps=4))
    wall = time.time() - t0
    rates = [r["steps_per_s"] for r in res.history if r["split"] == "train"]
    assert len(rates) == 2 and all(2 / wall <= r < 1e6 for r in rates), (rates, wall)


@pytest.mark.parametrize("accum", [2, 4])
def test_accumulated_loss_is_the_mean_over_the_micro_batches(accum):
    _, one = _fit(_cfg(batch_size=16))
    _, acc = _fit(_cfg(batch_size=16, grad_accum_steps=accum))
    for a, b in zip(one.history, acc.history, strict=True):
        if a["split"] == "train":
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["double"] == pytest.approx(a["double"],
                                                                                                      rel=1e-5)


class _UsesTailOnce(nn.Module):
    """``tail`` takes part in the loss at the first forward (and the non-finite one): afterwards its gradient
    must be None, so that momentum SGD leaves it alone (a zero gradient would keep moving it by momentum)."""

    def __init__(self, nan_at: int = -1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = nn.Linear(4, 3)
        self.tail = nn.Parameter(torch.ones(3))
        self.calls, self.nan_at = 0, nan_at

    def forward(self, batch):
        self.calls += 1
        x, y = batch
        logits = self.model(x) + (self.tail if self.calls in (1, self.nan_at) else 0)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss * float("nan") if self.calls == self.nan_at else loss}


@pytest.mark.parametrize("nan_at", [-1, 2])
def test_gradients_are_dropped_after_each_step_not_zeroed(nan_at):
    m = _UsesTailOnce(nan_at)
    tails: list[torch.Tensor] = []
    tr = Trainer(_cfg(steps=3, momentum=0.9, skip_nonfinite=1), Task(m, _data(), model=m.model), None,
                 progress=False, callbacks=[lambda t, s: tails.append(t.module.tail.detach().clone())])
    tr.fit()
    assert len(tails) == 3 - (nan_at > 0)  # a skipped step calls no hook
    assert not torch.equal(tails[0], torch.ones(3))  # moved at step 1
    for t in tails[1:]:
        assert torch.equal(t, tails[0])


def test_final_metrics_interrupted_and_stopped_flags():
    values = iter(range(100))

    def evaluate(model, loader):
        return {"n": float(next(values))}

    m = _Linear()
    tr = Trainer(_cfg(eval_every=4, steps=6), Task(m, _data(), _data(8), evaluate=evaluate, model=m.model), None,
                 progress=False)
    res = tr.fit()
    assert [(r["step"], r["n"]) for r in res.history if r["split"] == "eval"] == [(4, 0.0), (6, 1.0)]
    assert res.final_metrics == {"n": 1.0} and not res.interrupted and not res.stopped_early

    class StopAtTheEnd(Hook):  # asking to stop at the last step is not stopping early
        def should_stop(self, step, metrics):
            return step >= 6

    _, res = _fit(_cfg(), hooks=[StopAtTheEnd()])
    assert res.step == 6 and not res.stopped_early


def test_sigterm_in_process_checkpoints_and_reports_interrupted(tmp_path):
    def term(trainer, step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    m = _Linear()
    tr = Trainer(_cfg(steps=6), Task(m, _data(), model=m.model), tmp_path, progress=False, callbacks=[term])
    res = tr.fit()
    assert res.interrupted and res.step == 3 and not res.stopped_early and res.final_metrics == {}
    assert (tmp_path / "checkpoints" / "step_00000003").is_dir() and not (tmp_path / "model.safetensors").exists()


def test_inference_model_and_export_hold_the_raw_and_the_ema_weights(tmp_path):
    m = _Linear()
    tr = Trainer(_cfg(ema_decay=0.5), Task(m, _data(), model=m.model), tmp_path, progress=False)
    assert tr.inference_model() is tr.ema.module.model and tr.inference_model(use_ema=False) is m.model
    tr.fit()
    raw, ema = load_safetensors(tmp_path / "model.safetensors"), load_safetensors(tmp_path / "model_ema.safetensors")
    for k, v in m.model.state_dict().items():
        assert torch.equal(raw[k], v) and torch.equal(ema[k], tr.ema.module.model.state_dict()[k]), k
    assert not torch.equal(raw["weight"], ema["weight"])


class _Indexed(Dataset):
    """Returns each sample's index and the id of the process that loaded it."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i: int):
        return torch.tensor([float(i), float(os.getpid())])


class _Record(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: list[list[int]] = []
        self.pids: set[int] = set()

    def forward(self, batch):
        self.seen.append(batch[:, 0].long().tolist())
        self.pids.update(batch[:, 1].long().tolist())
        return {"loss": (self.w - batch[:, 0].mean()).pow(2).mean()}


@pytest.mark.parametrize("accum", [1, 4])
def test_each_epoch_is_the_distributed_samplers_shuffled_order_in_whole_steps(accum):
    m = _Record()
    Trainer(_cfg(steps=10, batch_size=8, grad_accum_steps=accum), Task(m, _Indexed()), None, progress=False).fit()
    steps = [sum(m.seen[i:i + accum], []) for i in range(0, len(m.seen), accum)]
    expect = []
    for epoch in (0, 1):
        s = DistributedSampler(_Indexed(), num_replicas=1, rank=0, shuffle=True, seed=1, drop_last=True)
        s.set_epoch(epoch)
        order = list(s)
        expect += [order[i:i + 8] for i in range(0, 40, 8)]
    assert steps == expect and expect[0] != list(range(8))
    assert all(len(b) == 8 // accum for b in m.seen)


@pytest.mark.parametrize("persistent", [True, False])
def test_persistent_workers_live_for_the_whole_run(persistent):
    m = _Record()
    tr = Trainer(_cfg(steps=10, batch_size=8, num_workers=1, persistent_workers=persistent), Task(m, _Indexed()),
                 None, progress=False)
    tr.fit()
    assert len(m.seen) == 10 and os.getpid() not in m.pids
    assert len(m.pids) == (1 if persistent else 2)  # one worker for both epochs, or one per epoch


def test_non_finite_loss_without_clipping_and_non_finite_gradient_with_finite_loss_are_caught():
    with pytest.raises(NonFiniteLossError, match=r"step 2 \(loss=nan"):  # no clipping: the loss alone says it
        _fit(_cfg(), _Linear(nan_at=2))
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(.*grad_norm=(inf|nan)"):  # fp32: the norm is checked
        _fit(_cfg(clip_grad=1.0), _Linear(inf_grad_at=3))


class _FakeDDP(nn.Module):
    """DistributedDataParallel without a process group: the module itself, with ``no_sync``."""

    def __init__(self, module, device_ids=None) -> None:
        super().__init__()
        self.module = module

    def forward(self, batch):
        return self.module(batch)

    def no_sync(self):
        return contextlib.nullcontext()


def _as_rank(monkeypatch, rank: int, world_size: int = 2) -> None:
    """The engine on one rank of a ``world_size``-process world, the collectives faked as one process sees
    them (the other ranks' values equal to its own); what it tests is what each rank does on its own."""
    monkeypatch.setattr(engine, "init_distributed", lambda *a: DistInfo(rank=rank, world_size=world_size))
    monkeypatch.setattr(engine.nn.parallel, "DistributedDataParallel", _FakeDDP)
    monkeypatch.setattr(engine, "agree_on_main", lambda fn, info: fn() if info.is_main else False)
    monkeypatch.setattr(engine, "all_gather_objects", lambda obj, info: [obj] * info.world_size)
    monkeypatch.setattr(engine, "barrier", lambda info: None)
    monkeypatch.setattr(engine, "any_of", lambda flags, info: [bool(f) for f in flags])
    monkeypatch.setattr(engine, "all_reduce_mean", lambda values, info: values)


class _Odd(_Indexed):
    def __len__(self) -> int:
        return 41


def test_each_rank_seeds_its_streams_and_takes_a_disjoint_share_and_only_the_main_one_writes(monkeypatch, tmp_path):
    # 41 samples on 2 ranks, 3 per rank and step: the sampler keeps 20 per rank (drop_last), 6 steps an epoch;
    # padding to 21 would give 7 steps and one sample on both ranks
    seen = {}
    for rank in (1, 0):  # rank 1 first: it must write nothing into the run folder, whose creation is rank 0's
        _as_rank(monkeypatch, rank)
        m = _Record()
        tr = Trainer(_cfg(steps=12, batch_size=6, seed=5), Task(m, _Odd()), tmp_path / "run", progress=False)
        assert torch.initial_seed() == 5 + rank  # dropout/augmentation streams: seed + rank
        assert tr.steps_per_epoch == 6
        tr.fit()
        seen[rank] = [sum(m.seen[e * 6:(e + 1) * 6], []) for e in (0, 1)]  # per epoch
        if rank == 1:
            assert not (tmp_path / "run").exists()
    for epoch in (0, 1):
        a, b = seen[0][epoch], seen[1][epoch]
        assert len(a) == len(b) == 18 and not set(a) & set(b)
        for rank, got in ((0, a), (1, b)):
            s = DistributedSampler(_Odd(), num_replicas=2, rank=rank, shuffle=True, seed=5, drop_last=True)
            s.set_epoch(epoch)
            assert got == list(s)[:18]
    assert (tmp_path / "run" / "model.safetensors").is_file()


def _fit_as_fp16(monkeypatch, cfg: TrainConfig, module: _Linear) -> Trainer:
    """The fp16 step on CPU: the engine's logic with an enabled GradScaler (torch's CPU scaler follows the same
    unscale/step/update protocol as the CUDA one) and no autocast; fp16 itself needs CUDA. Runs all 6 steps."""
    tr = Trainer(cfg, Task(module, _data(), model=module.model), None, progress=False)
    monkeypatch.setattr(engine, "autocast_context", lambda precision, device: contextlib.nullcontext())
    tr.cfg.precision = "fp16"
    tr.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1000)
    assert tr.fit().step == 6
    return tr


def test_fp16_leaves_an_overflowing_gradient_to_the_scaler_but_checks_the_loss(monkeypatch):
    # a finite loss with an infinite gradient: the GradScaler skips that update and halves its scale; the engine
    # neither stops nor counts it (grad_norm is not checked under fp16)
    tr = _fit_as_fp16(monkeypatch, _cfg(clip_grad=1.0), _Linear(inf_grad_at=3))
    assert tr._skipped == 0 and tr.scaler.get_scale() == 512.0
    # a NaN loss is caught under fp16 too, with and without clipping; with clipping the scaler's unscale_ is
    # closed by an update (the scale backs off), without it the scaler saw nothing and is left alone; the steps
    # after it run (a second unscale_ before an update, or an update without unscale_, would raise)
    for clip, scale in ((1.0, 512.0), (0.0, 1024.0)):
        tr = _fit_as_fp16(monkeypatch, _cfg(clip_grad=clip, skip_nonfinite=1), _Linear(nan_at=2))
        assert tr._skipped == 1 and tr.scaler.get_scale() == scale
