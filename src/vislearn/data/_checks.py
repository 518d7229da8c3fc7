"""Argument checks shared by the embedded datasets (one message per kind of bad value)."""

from __future__ import annotations

import numpy as np

from vislearn.errors import UserError

SPLIT_STREAM = {"train": 0, "test": 1}


def check_split(name: str, split: str) -> None:
    if split not in ("train", "test", "all"):
        raise UserError(f"{name} split must be train, test or all, got {split!r}")


def check_int(name: str, value: int, low: int, high: int | None = None) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise UserError(f"{name} must be an integer {bound}, got {value!r}")
