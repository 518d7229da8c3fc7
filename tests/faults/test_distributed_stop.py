"""Two gloo processes: SIGTERM to rank 1 only stops both at one step (one checkpoint), resume is exact;
resuming the same checkpoint on one process follows the same global data order (issue 15.2). The jobs get an
explicit environment and default signal dispositions (tests/_launch.py). This is also issue 19's "DDP with
checkpoint and resume"."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _faults import assert_same_states, final_states  # noqa: E402

from _launch import PYTHON, job_env, run, torchrun_standalone  # noqa: E402

JOB = str(HERE / "_dist_job.py")


def _launch(nproc: int, out: Path, trace: Path, *args: str) -> tuple[str, str]:
    launcher = [PYTHON] if nproc == 1 else torchrun_standalone(nproc)
    return run([*launcher, JOB, str(out), str(trace), *args], job_env(), timeout=180)


def _trace(trace: Path, rank: int) -> dict[int, list[int]]:
    rows = [json.loads(line) for line in Path(f"{trace}.rank{rank}").read_text().splitlines()]
    return {r["step"]: r["idx"] for r in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    _launch(2, d / "ref", d / "ref_trace")
    out, _ = _launch(2, d / "stopped", d / "stop_trace", "--term-rank1-at", "9")
    shutil.copytree(d / "stopped", d / "stopped_copy")
    return d, out


def test_sigterm_to_one_rank_stops_both_at_one_step_and_resume_is_exact(runs):
    d, out = runs
    # both ranks print to the same pipe: their lines can interleave, so read every {...} record in it
    results = [json.loads(m) for m in re.findall(r"\{[^{}]*\}", out)]
    # rank 1 got SIGTERM during step 9; the processes agree at step 10's exchange and stop there together
    assert sorted((r["rank"], r["step"], r["interrupted"]) for r in results) == [(0, 10, True), (1, 10, True)]
    assert max(_trace(d / "stop_trace", 0)) == max(_trace(d / "stop_trace", 1)) == 10
    assert sorted(x.name for x in (d / "stopped" / "checkpoints").iterdir() if x.is_dir()) == ["step_00000010"]
    _launch(2, d / "stopped", d / "resume_trace", "--resume")
    assert sorted(_trace(d / "resume_trace", 0)) == list(range(11, 25))
    assert_same_states(final_states(d / "ref"), final_states(d / "stopped"))


def test_resume_at_another_world_size_keeps_the_global_data_order(runs):
    d, _ = runs
    _, err = _launch(1, d / "stopped_copy", d / "one_trace", "--resume")
    assert "resuming a 2-process checkpoint on 1" in err
    ref0, ref1, one = _trace(d / "ref_trace", 0), _trace(d / "ref_trace", 1), _trace(d / "one_trace", 0)
    assert sorted(one) == list(range(11, 25))
    for step in one:  # each step trains on the very samples of the 2-process run's step
        assert sorted(one[step]) == sorted(ref0[step] + ref1[step]), step
