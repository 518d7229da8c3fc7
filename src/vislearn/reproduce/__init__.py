"""Reproductions: one file per paper claim, run small-scale on CPU, judged by a stated criterion.

A reproduction registers its claim and criterion *before* it runs::

    @register_reproduction("batchnorm", paper="Ioffe & Szegedy 2015, Fig. 1",
                           claim="...", criterion="... (stated before the run)")
    def run(ctx: ReproContext) -> Outcome:
        ...
        return Outcome(passed=..., numbers={...}, figure=fig, notes="...")

:func:`run_reproduction` prints the claim and criterion, runs, and writes ``results/NAME.json``
(the one results format: name, claim, criterion, passed, numbers, seeds, wall_s, machine, version)
and ``results/NAME.png``; :func:`write_results_table` rewrites ``results/README.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vislearn._discover import import_submodules
from vislearn.registry import Registry


@dataclass(frozen=True)
class Reproduction:
    name: str
    fn: Callable[[ReproContext], Outcome]
    paper: str
    claim: str
    criterion: str
    seeds: tuple[int, ...] = (0, 1, 2)
    inputs: tuple[str, ...] = ()  # optional user inputs it accepts: "data" (a dataset path), "weights" (a file)


@dataclass
class ReproContext:
    """What a reproduction receives: seeds, a scale factor for its budget, and a progress logger."""

    name: str
    seeds: tuple[int, ...]
    scale: float = 1.0  # < 1 shrinks budgets (tests run reproductions at a tiny scale)
    log: Callable[[str], None] = print
    data: str | None = None  # ``vislearn reproduce NAME --data DIR`` (only where the reproduction accepts it)
    weights: str | None = None  # ``--weights FILE`` (likewise)

    def steps(self, n: int, minimum: int = 1) -> int:
        """``n`` scaled by ``scale`` (at least ``minimum``)."""
        return max(minimum, int(round(n * self.scale)))


@dataclass
class Outcome:
    passed: bool
    numbers: dict[str, Any]
    figure: Any = None  # a matplotlib Figure, saved as results/NAME.png
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # What the table shows; by default "reproduced"/"not reproduced" from ``passed``. A reproduction whose
    # small-scale run cannot test the paper's claim says so here (e.g. "machinery verified; claim untested").
    verdict: str | None = None


_REPRODUCTIONS: Registry[Reproduction] = Registry("reproduction")


def register_reproduction(name: str, *, paper: str, claim: str, criterion: str,
                          seeds: tuple[int, ...] = (0, 1, 2), inputs: tuple[str, ...] = ()):
    def wrap(fn: Callable[[ReproContext], Outcome]):
        _REPRODUCTIONS.register(name, Reproduction(name, fn, paper, claim, criterion, tuple(seeds), tuple(inputs)))
        return fn

    return wrap


def list_reproductions() -> list[str]:
    return _REPRODUCTIONS.names()


def get_reproduction(name: str) -> Reproduction:
    return _REPRODUCTIONS.get(name)


from vislearn.reproduce.results import run_reproduction, write_results_table  # noqa: E402

__all__ = ["Outcome", "ReproContext", "Reproduction", "get_reproduction", "list_reproductions",
           "register_reproduction", "run_reproduction", "write_results_table"]

import_submodules(sys.modules[__name__])
