"""What may change when a run is resumed, and how a run resumes at another world size.

**The saved config is compared.** A checkpoint (and ``run.json``) holds the run's config record: the
recipe, preset, data path and every field after resolution (``steps`` from ``epochs``, ``batch_size``
from ``batch_per_replica`` × processes). Resuming with any field that changes what is trained
refused with a message naming the field, its saved value and the new one. Only the fields in
:data:`MAY_CHANGE_ON_RESUME` may differ: they change logging and checkpointing, never the weights
(``skip_nonfinite`` is the knob that lets a run stopped by a non-finite loss continue; a job that hit
the process-group timeout may resume with a longer ``dist_timeout_minutes``). A field that
one side lacks (a field added to the library after the checkpoint was written) is not compared.
``eval_every`` is compared: an evaluation feeds early-stopping hooks and the best-state choice of
some recipes (perceptual), so it can change the result.

**Another world size.** The data order is a function of ``(seed, epoch)`` and the step: a global
batch is the same block of the epoch's permutation whatever the number of processes (each process
takes every ``world_size``-th index of it), so the resumed run trains on the samples the saved run
would have. The per-process random streams (augmentations, dropout) cannot be split differently,
so they are reseeded with :func:`reseed_value` ``(seed, step, rank)``: deterministic, the same on
every resume, but not the stream an uninterrupted run at the old world size would have drawn.
A packed (sharded) dataset orders each rank's own shards (:class:`vislearn.data.samplers.ShardOrderSampler`):
there the rest of the interrupted epoch follows the new world size's split, and later epochs are whole.
"""

from __future__ import annotations

import json
from typing import Any

from vislearn.errors import UserError
from vislearn.train.metrics_log import dumps_strict

__all__ = ["MAY_CHANGE_ON_RESUME", "compare_configs", "reseed_value"]

MAY_CHANGE_ON_RESUME = frozenset({"log_every", "ckpt_every", "ckpt_minutes", "ckpt_at_eval", "keep_checkpoints",
                                  "skip_nonfinite", "dist_timeout_minutes"})


def compare_configs(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    """Refuse when ``current`` differs from ``saved`` in a field that changes the run (naming each)."""
    current = json.loads(dumps_strict(current))  # as a record is stored: tuples are lists, odd values strings
    diffs = []
    for key in sorted(set(saved) & set(current)):
        a, b = saved[key], current[key]
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            a, b = list(a), list(b)  # JSON has no tuples
        if key not in MAY_CHANGE_ON_RESUME and a != b:
            diffs.append(f"{key}: saved {saved[key]!r}, now {current[key]!r}")
    if diffs:
        shown = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
        raise UserError(f"cannot resume {where}: settings differ from the saved run ({shown}); resume with "
                        f"the same settings or start a new run in another --out (only "
                        f"{', '.join(sorted(MAY_CHANGE_ON_RESUME))} may change)")


def reseed_value(seed: int, step: int, rank: int) -> int:
    """The seed of process ``rank`` resuming at ``step`` at another world size."""
    return (seed * 1_000_003 + step * 10_007 + rank) % 2**63
