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


def path_inside(root, rel: str, where: str):
    """``root / rel`` when it stays under ``root``; a ``UserError`` naming ``where`` otherwise.

    A path read from a dataset file (a COCO ``file_name``, a CSV row, an index line) is the dataset's
    to name only inside its own folder: an absolute path, a drive (``C:``) or ``..`` components that climb
    out are refused, so an annotation file cannot make a reader
    open ``/etc/passwd`` or a file beside the dataset. The check is on the text (``os.path.normpath``),
    not on resolved symlinks: a user's own symlinked image folder (``images -> /mnt/disk2/images``) is
    theirs to make and keeps working.
    """
    import os
    from pathlib import Path

    root = Path(root)
    text = str(rel)
    if not text or "\x00" in text:
        raise UserError(f"{where}: image path {text!r} is empty or holds a NUL byte")
    candidate = root / text
    posix = text.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise UserError(f"{where}: image path {text!r} is absolute; paths must be relative to {root}")
    parts = Path(os.path.normpath(posix)).parts
    if parts and parts[0] == "..":
        raise UserError(f"{where}: image path {text!r} leads outside the dataset folder {root}")
    return candidate
