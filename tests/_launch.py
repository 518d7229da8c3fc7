"""Launching real multi-process jobs from the tests: a clean environment, free ports, torchrun agents, timeouts.

Every job gets an explicit environment (:func:`job_env`: nothing inherited that could change it, such as
``WORLD_SIZE``/``RANK`` of an outer torchrun, ``TORCHELASTIC_*`` or ``CUDA_VISIBLE_DEVICES``), starts with
SIGINT and SIGTERM at their default dispositions (a suite started from a background shell inherits SIGINT
ignored) in a session of its own, and is killed as a whole process group when it runs past its timeout,
so a hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PYTHON = sys.executable


def job_env(**extra: str) -> dict[str, str]:
    """The whole environment of a launched job (CPU only, one thread, this worktree's sources)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
           "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONHASHSEED": "0",
           "LC_ALL": "C.UTF-8"}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


def start(cmd: Sequence[str], env: dict[str, str], cwd: str | os.PathLike | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own session with default SIGINT/SIGTERM handling; stdout and stderr captured."""
    return subprocess.Popen(list(cmd), env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_signals)


def wait_all(procs: Sequence[subprocess.Popen], timeout: float) -> list[tuple[int, str, str]]:
    """``(returncode, stdout, stderr)`` of each process; past ``timeout`` every group is killed and the test fails."""
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append((p.returncode, out, err))
    except subprocess.TimeoutExpired:
        tails = []
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
            tails.append(err[-2000:])
        raise AssertionError(f"job ran past {timeout} s and was killed:\n" + "\n---\n".join(tails)) from None
    return results


def run(cmd: Sequence[str], env: dict[str, str], timeout: float = 120) -> tuple[str, str]:
    """Run one job to the end; fail the test on a non-zero exit (with its stderr) or a timeout."""
    [(rc, out, err)] = wait_all([start(cmd, env)], timeout)
    assert rc == 0, f"exit {rc}:\n{err[-3000:]}"
    return out, err


def torchrun_standalone(nproc: int) -> list[str]:
    """The launcher prefix of ``nproc`` processes on this machine (``torchrun --standalone``)."""
    return [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]


# torchrun's c10d rendezvous shares its TCPStore with the workers by default, and the workers of a restarted
# group then read the previous group's keys (the restart count that should separate them differs between
# agents): pytorch/pytorch#135712. Each group gets a store of its own with this.
AGENT_ENV = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


def torchrun_agents(nnodes: int, port: int, run_id: str, max_restarts: int = 0) -> list[list[str]]:
    """One launcher prefix per node: ``nnodes`` torchrun agents, one process each, meeting by c10d on
    127.0.0.1:``port`` (the first agent hosts the rendezvous store; c10d assigns the node ranks; no
    ``--node-rank``). Run them with ``job_env(**AGENT_ENV)``."""
    return [[PYTHON, "-m", "torch.distributed.run", f"--nnodes={nnodes}", "--nproc-per-node=1",
             "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={run_id}",
             f"--rdzv-conf=is_host={int(i == 0)},join_timeout=90", "--local-addr=127.0.0.1",
             f"--max-restarts={max_restarts}", "--monitor-interval=0.1"]
            for i in range(nnodes)]
