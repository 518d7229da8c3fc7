"""Signals: the engine's SIGTERM/SIGINT handling does not depend on what the test process inherited.

A shell running a job in the background starts it with SIGINT ignored; the suite (``conftest.py``)
and the engine each install the handler they need and put the inherited one back.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
import torch

from vislearn.train import Trainer
from vislearn.train.checkpoint import latest_checkpoint

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _engine_job as job  # noqa: E402


def _in_child_with_sigint_ignored(fn) -> int:
    """Run ``fn()`` in a forked child whose SIGINT is ignored, as a background shell starts a job; its exit code."""
    pid = os.fork()
    if pid == 0:
        torch.set_num_threads(1)  # the child never enters an OpenMP team the parent may have left locked
        code = 1
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            code = fn()
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_engine_ctrl_c_test_passes_when_the_suite_starts_with_sigint_ignored():
    def run_the_test() -> int:
        return int(pytest.main(["-q", "-p", "no:cacheprovider",
                                f"{HERE / 'test_train_engine.py'}::test_in_memory_run_lets_ctrl_c_through"]))

    assert _in_child_with_sigint_ignored(run_the_test) == 0


def test_engine_installs_its_handler_over_an_ignored_sigint_and_restores_it(tmp_path):
    def run() -> int:
        def interrupt(trainer, step):
            if step == 3:
                signal.raise_signal(signal.SIGINT)

        res = Trainer(job.config(steps=20, ckpt_every=0), job.task(), tmp_path, progress=False,
                      callbacks=[interrupt]).fit()
        ok = res.interrupted and res.step == 3 and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        return 0 if ok else 5

    assert _in_child_with_sigint_ignored(run) == 0
    assert latest_checkpoint(tmp_path).name == "step_00000003"
