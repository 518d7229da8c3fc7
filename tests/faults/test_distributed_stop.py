"""Two gloo processes: SIGTERM to rank 1 only stops both at one step (one checkpoint), resume is exact;
resuming the same checkpoint on one process follows the same global data order (issue 15.2)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _faults import assert_same_states, final_states  # noqa: E402

ROOT = HERE.parent.parent
JOB = str(HERE / "_dist_job.py")


def _launch(nproc: int, out: Path, trace: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable] if nproc == 1 else [str(Path(sys.executable).parent / "torchrun"), "--standalone",
                                                     f"--nproc_per_node={nproc}"]
    p = subprocess.run([*launcher, JOB, str(out), str(trace), *args], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _trace(trace: Path, rank: int) -> dict[int, list[int]]:
    rows = [json.loads(line) for line in Path(f"{trace}.rank{rank}").read_text().splitlines()]
    return {r["step"]: r["idx"] for r in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    _launch(2, d / "ref", d / "ref_trace")
    p = _launch(2, d / "stopped", d / "stop_trace", "--term-rank1-at", "9")
    shutil.copytree(d / "stopped", d / "stopped_copy")
    return d, p


def test_sigterm_to_one_rank_stops_both_at_one_step_and_resume_is_exact(runs):
    d, p = runs
    # both ranks print to the same pipe: their lines can interleave, so read every {...} record in it
    results = [json.loads(m) for m in re.findall(r"\{[^{}]*\}", p.stdout)]
    # rank 1 got SIGTERM during step 9; the processes agree at step 10's exchange and stop there together
    assert sorted((r["rank"], r["step"], r["interrupted"]) for r in results) == [(0, 10, True), (1, 10, True)]
    assert max(_trace(d / "stop_trace", 0)) == max(_trace(d / "stop_trace", 1)) == 10
    assert sorted(x.name for x in (d / "stopped" / "checkpoints").iterdir() if x.is_dir()) == ["step_00000010"]
    _launch(2, d / "stopped", d / "resume_trace", "--resume")
    assert sorted(_trace(d / "resume_trace", 0)) == list(range(11, 25))
    assert_same_states(final_states(d / "ref"), final_states(d / "stopped"))


def test_resume_at_another_world_size_keeps_the_global_data_order(runs):
    d, _ = runs
    p = _launch(1, d / "stopped_copy", d / "one_trace", "--resume")
    assert "resuming a 2-process checkpoint on 1" in p.stderr
    ref0, ref1, one = _trace(d / "ref_trace", 0), _trace(d / "ref_trace", 1), _trace(d / "one_trace", 0)
    assert sorted(one) == list(range(11, 25))
    for step in one:  # each step trains on the very samples of the 2-process run's step
        assert sorted(one[step]) == sorted(ref0[step] + ref1[step]), step
