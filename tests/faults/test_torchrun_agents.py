"""Multi-node on one machine (issue 15.3): two torchrun agents (``--nnodes=2``, c10d rendezvous on 127.0.0.1,
gloo, one process each) run ``vislearn train classify ... --resume auto``.

* the 2-node loss curve equals the 1-process curve of the same global batch;
* an elastic job (``--max-restarts=1``) whose rank-0 worker is SIGKILLed two steps after the first
  checkpoint is restarted by torchrun with the same command, resumes from that checkpoint (the restarted
  processes start at the step after it, the dead worker's lock is taken over) and ends with the weights of
  the uninterrupted 2-node run.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _faults import assert_same_states, final_states  # noqa: E402

from _ddp import loss_curve  # noqa: E402
from _launch import AGENT_ENV, free_port, job_env, start, torchrun_agents, wait_all  # noqa: E402
from vislearn.cli import main  # noqa: E402

JOB = str(HERE / "_cli_job.py")
STEPS, CKPT = 12, 4
TRAIN = ["train", "classify", "--resume", "auto", "--set", f"steps={STEPS}", "--set", "batch_size=16",
         "--set", "log_every=1", "--set", "eval_every=0", "--set", f"ckpt_every={CKPT}", "--set", "ckpt_minutes=0",
         "--set", "lr=0.3"]


def _two_nodes(out: Path, trace: Path, run_id: str, *head: str, max_restarts: int = 0) -> list[tuple[int, str, str]]:
    agents = torchrun_agents(2, free_port(), run_id, max_restarts=max_restarts)
    env = job_env(**AGENT_ENV)
    procs = [start([*agent, JOB, str(trace), *head, "--", *TRAIN, "--out", str(out)], env) for agent in agents]
    results = wait_all(procs, timeout=150)
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    return results


def test_restart_store_warning_names_the_workaround():
    from vislearn.train.distributed import restart_store_warning

    shared = {"TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_MAX_RESTARTS": "1"}
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in restart_store_warning(shared)
    assert restart_store_warning({**shared, "TORCHELASTIC_MAX_RESTARTS": "0"}) is None
    assert restart_store_warning({**shared, "TORCHELASTIC_USE_AGENT_STORE": "False"}) is None  # what AGENT_ENV gives
    assert restart_store_warning({}) is None


def _attempts(trace: Path, rank: int) -> list[list[int]]:
    """The steps of each process that held ``rank``, in the order they ran (a restarted one has a new pid)."""
    rows = [json.loads(line) for line in Path(f"{trace}.rank{rank}").read_text().splitlines()]
    pids = list(dict.fromkeys(r["pid"] for r in rows))
    return [[r["step"] for r in rows if r["pid"] == pid] for pid in pids]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("agents")
    assert main([*TRAIN, "--out", str(d / "one")]) == 0  # the 1-process reference, in this process
    _two_nodes(d / "two", d / "two_trace", "vislearn-two")
    _two_nodes(d / "killed", d / "killed_trace", "vislearn-killed", "--kill-rank", "0", max_restarts=1)
    return d


def test_two_agents_follow_the_one_process_loss_curve(runs):
    c1, c2 = loss_curve(runs / "one"), loss_curve(runs / "two")
    assert [s for s, _ in c1] == [s for s, _ in c2] == list(range(1, STEPS + 1))
    assert c1[0][1] != c1[-1][1]  # it trains
    for (_, l1), (_, l2) in zip(c1, c2, strict=True):
        assert math.isclose(l1, l2, rel_tol=1e-4), (c1, c2)
    for rank in (0, 1):
        assert _attempts(runs / "two_trace", rank) == [list(range(1, STEPS + 1))]


def test_sigkilled_worker_is_restarted_and_resumes_from_its_last_checkpoint(runs):
    trace = runs / "killed_trace"
    assert Path(f"{trace}.killed").read_text() == str(CKPT + 2)  # rank 0 died after step CKPT + 2
    for rank in (0, 1):
        first, second = _attempts(trace, rank)  # exactly one restart
        # rank 0 died right after step CKPT + 2; rank 1's next step failed in its gradient all-reduce
        assert first == list(range(1, CKPT + 3)), (rank, first)
        # torchrun's restart of the same command starts at the step after the checkpoint
        assert second == list(range(CKPT + 1, STEPS + 1)), (rank, second)
    # the logged curve has each step once, and the run ends where the uninterrupted one does
    assert [s for s, _ in loss_curve(runs / "killed")] == list(range(1, STEPS + 1))
    assert_same_states(final_states(runs / "two"), final_states(runs / "killed"))
