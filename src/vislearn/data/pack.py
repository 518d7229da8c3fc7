"""Packing a dataset into WebDataset tar shards with an index (``vislearn data pack``).

The source is read with the library's own readers (so a folder that trains also packs, and one
that fails to read fails here, naming the file) but no image is decoded: each sample's file bytes
are written untouched as ``KEY.<ext>`` (the file's own extension) beside ``KEY.json`` with its
target and source path. Shards are ``<split>-NNNNNN.tar``, a new one started before a sample
would take the current one past ``shard_size`` bytes (a sample larger than that gets a shard of
its own). A training split (its name starts with ``train``) is written in a seeded random order
(``shuffle_seed``; WebDataset's advice: shards are read in sequence, so a class-sorted folder must
be mixed once here, the sampler's shuffle buffer then mixes within a few shards); other splits keep
the reader's order. Each sample's json records ``index``, its position in the source reader, so
packed item ``i`` is source item ``json["index"]`` byte for byte. ``index.json``
(:mod:`vislearn.data.shards`) is written last, atomically: a folder
without it is an unfinished pack.

Formats and their splits: ``imagefolder`` (``train/`` and ``val/``), ``coco`` (each
``annotations/instances_<split>*.json`` with its image folder; the targets are what
:class:`~vislearn.data.formats.CocoDetection` keeps, boxes already xyxy and clipped), ``csv``
(``train.csv`` and ``val.csv``/``test.csv``), ``nuswide`` (the official train and test lists,
unlabelled images dropped as :class:`~vislearn.data.nuswide.NUSWIDE` does).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from vislearn.data.shards import FORMATS, INDEX_NAME, INDEX_VERSION, sha256_file
from vislearn.errors import UserError

__all__ = ["parse_size", "pack_dataset"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "kib": 2**10, "mib": 2**20,
          "gib": 2**30, "k": 10**3, "m": 10**6, "g": 10**9}


def parse_size(text: str) -> int:
    """``"1GB"`` → 10⁹ bytes (also ``500MB``, ``2GiB``, a plain number of bytes); ``UserError`` otherwise."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if m is None or m.group(2).lower() not in _UNITS:
        raise UserError(f"--shard-size: expected a size like 1GB, 500MB or 2GiB, got {text!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < 1:
        raise UserError(f"--shard-size must be positive, got {text!r}")
    return size


# a record: (source path, json-able target); the json also gets the source path relative to the root
Record = tuple[Path, dict]


def _imagefolder(src: Path) -> tuple[list[str], dict[str, list[Record]], dict[str, list]]:
    from vislearn.data.formats import ImageFolderDataset, image_folder_splits

    train, val = image_folder_splits(src, 1)
    splits, targets = {}, {}
    for name, ds in (("train", train), ("val", val)):
        assert isinstance(ds, ImageFolderDataset)
        splits[name] = [(Path(p), {"label": int(t)}) for p, t in ds.samples]
        targets[name] = [int(t) for _, t in ds.samples]
    return train.classes, splits, targets


def _coco(src: Path) -> tuple[list[str], dict[str, list[Record]], dict[str, list]]:
    from vislearn.data.formats import CocoDetection

    anns = sorted((src / "annotations").glob("instances_*.json"))
    if not anns:
        raise UserError(f"{src}: no annotations/instances_<split>*.json (COCO layout expected)")
    classes: list[str] | None = None
    splits = {}
    for a in anns:
        split = a.stem.removeprefix("instances_")
        ds = CocoDetection(a, src / split)
        if classes is not None and ds.classes != classes:
            raise UserError(f"{a}: categories differ from the other splits' ({src}/annotations)")
        classes = ds.classes
        rows = []
        for i, im in enumerate(ds.images):
            t = ds.target(i)
            image_id = t["image_id"].item() if hasattr(t["image_id"], "item") else t["image_id"]
            rows.append((ds.image_root / im["file_name"],
                         {"image_id": image_id, "boxes": t["boxes"].tolist(), "labels": t["labels"].tolist(),
                          "iscrowd": t["iscrowd"].tolist(), "area": t["area"].tolist()}))
        splits[split] = rows
    return classes or [], splits, {}


def _multilabel(paths_targets: dict[str, tuple[list[Path], object]]) -> tuple[dict, dict]:
    splits, targets = {}, {}
    for name, (paths, multi) in paths_targets.items():
        labels = [row.nonzero().flatten().tolist() for row in multi]
        splits[name] = [(Path(p), {"labels": lb}) for p, lb in zip(paths, labels, strict=True)]
        targets[name] = labels
    return splits, targets


def _csv(src: Path) -> tuple[list[str], dict, dict]:
    from vislearn.data.formats import MultilabelCSV

    val = next((src / n for n in ("val.csv", "test.csv") if (src / n).is_file()), None)
    if not (src / "train.csv").is_file() or val is None:
        raise UserError(f"{src}: expected train.csv and val.csv (or test.csv)")
    train = MultilabelCSV(src / "train.csv", src)
    ev = MultilabelCSV(val, src, classes=train.classes)
    return (train.classes, *_multilabel({"train": (train.paths, train.targets), val.stem: (ev.paths, ev.targets)}))


def _nuswide(src: Path) -> tuple[list[str], dict, dict]:
    from vislearn.data.nuswide import NUSWIDE

    parts = {s: NUSWIDE(src, s) for s in ("train", "test")}
    return (parts["train"].classes, *_multilabel({s: (d.paths, d.targets) for s, d in parts.items()}))


_READERS: dict[str, Callable] = {"imagefolder": _imagefolder, "coco": _coco, "csv": _csv, "nuswide": _nuswide}


def _ext(path: Path) -> str:
    ext = path.suffix.lower().lstrip(".")
    return "jpg" if ext == "jpeg" else ext


def _write_split(name: str, rows: list[tuple[int, Record]], root: Path, out: Path, shard_size: int,
                 progress: Callable[[str], None], done: list[int], total: int, t0: float) -> list[dict]:
    from webdataset import TarWriter

    shards: list[dict] = []
    writer, path, count, size = None, None, 0, 0

    def close() -> None:
        writer.close()
        shards.append({"name": path.name, "samples": count, "bytes": path.stat().st_size,
                       "sha256": sha256_file(path)})

    last = 0.0
    for i, (source_index, (src, meta)) in enumerate(rows):
        try:
            data = src.read_bytes()
        except OSError as e:
            raise UserError(f"cannot read {src}: {e}") from None
        try:
            rel = str(src.relative_to(root))
        except ValueError:
            rel = str(src)
        payload = json.dumps({**meta, "path": rel, "index": source_index}).encode()
        need = len(data) + len(payload) + 3 * 512
        if writer is not None and count and size + need > shard_size:
            close()
            writer = None
        if writer is None:
            path, count, size = out / f"{name}-{len(shards):06d}.tar", 0, 0
            writer = TarWriter(str(path), encoder=False, mtime=0.0)
        writer.write({"__key__": f"{i:09d}", _ext(src): data, "json": payload})
        count, size = count + 1, size + need
        done[0] += 1
        now = time.monotonic()
        if now - last >= 2.0 or done[0] == total:
            last = now
            rate = done[0] / max(now - t0, 1e-9)
            progress(f"packed {done[0]}/{total} images ({name} shard {len(shards)}, {rate:.0f} img/s, "
                     f"eta {(total - done[0]) / max(rate, 1e-9):.0f} s)")
    if writer is not None:
        close()
    return shards


def pack_dataset(src: str | os.PathLike, fmt: str, out: str | os.PathLike, shard_size: int = 10**9,
                 progress: Callable[[str], None] | None = None, shuffle_seed: int = 0) -> dict:
    """Pack the ``fmt`` dataset at ``src`` into shards under ``out`` (module docstring); the index written.

    ``out`` must not exist or be empty. ``progress`` gets a line at most every 2 s (and at the end).
    ``shuffle_seed`` fixes the order of the training splits.
    """
    from vislearn.io import atomic_write_json

    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.is_dir():
        raise UserError(f"{src}: not a folder")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty folder")
    classes, splits, targets = _READERS[fmt](src)
    out.mkdir(parents=True, exist_ok=True)
    total, done, t0 = sum(len(r) for r in splits.values()), [0], time.monotonic()
    index: dict = {"vislearn_shards": INDEX_VERSION, "format": fmt, "classes": list(classes), "source": str(src),
                   "splits": {}}
    for name, rows in splits.items():
        order = list(range(len(rows)))
        if name.startswith("train"):
            import random

            random.Random(shuffle_seed).shuffle(order)
        shards = _write_split(name, [(i, rows[i]) for i in order], src, out, shard_size,
                              progress or (lambda _: None), done, total, t0)
        entry: dict = {"samples": len(rows), "shards": shards}
        if name in targets:
            entry["targets"] = [targets[name][i] for i in order]
        index["splits"][name] = entry
    atomic_write_json(out / INDEX_NAME, index)
    return index
