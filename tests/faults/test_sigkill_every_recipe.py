"""SIGKILL at seeded random steps of every recipe's (shrunk) quick preset, then resume: the same weights.

Each recipe of ``list_recipes()`` is killed once (a new recipe is covered without editing this file;
:data:`_faults.SHRINK` makes it fast); the cheapest one is killed at several points, including inside
the first checkpoint interval and right after a checkpoint.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

from vislearn import recipes

sys.path.insert(0, str(Path(__file__).parent))
from _faults import COMMON, assert_same_states, final_states, overrides, run_until_killed  # noqa: E402

_RNG = random.Random(16)  # seeded: the kill points are the same on every run of the suite
_CASES = [(name, _RNG.randint(COMMON["ckpt_every"] + 1, COMMON["steps"] - 1)) for name in recipes.list_recipes()]
_CHEAP = "classify"
_OTHER_STEPS = [k for k in range(1, COMMON["steps"]) if k != dict(_CASES)[_CHEAP]]
_CASES += [(_CHEAP, k) for k in sorted(_RNG.sample(_OTHER_STEPS, 3))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run of each recipe, made once."""
    made: dict[str, dict] = {}

    def get(name: str):
        if name not in made:
            out = tmp_path_factory.mktemp(f"ref_{name}")
            recipes.run(name, "quick", overrides(name), out=out, progress=False)
            made[name] = final_states(out)
        return made[name]

    return get


@pytest.mark.parametrize("name, kill_at", _CASES, ids=[f"{n}-kill{k}" for n, k in _CASES])
def test_sigkill_then_resume_matches_uninterrupted(name, kill_at, reference, tmp_path, capfd):
    out = tmp_path / "run"
    run_until_killed(name, overrides(name), out, kill_at)
    assert (out / ".vislearn.lock").exists()  # the killed run's lock stays behind ...
    res = recipes.run(name, "quick", overrides(name), out=out, resume="auto", progress=False)
    assert res.step == COMMON["steps"] and not res.interrupted
    assert "taking over the stale lock" in capfd.readouterr().err  # ... and is taken over
    assert not (out / ".vislearn.lock").exists()
    assert_same_states(reference(name), final_states(out))
