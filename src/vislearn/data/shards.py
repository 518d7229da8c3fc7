"""Reading packed datasets: WebDataset tar shards with an index, as map-style datasets.

``vislearn data pack`` (:mod:`vislearn.data.pack`) writes a folder of WebDataset shards
(``<split>-NNNNNN.tar``; each sample is ``KEY.<image ext>`` holding the source file's bytes untouched
and ``KEY.json`` holding its label(s) or boxes) and ``index.json``::

    {"vislearn_shards": 1, "format": "imagefolder" | "coco" | "csv" | "nuswide", "classes": [...],
     "splits": {"train": {"samples": N, "targets": [...],
                          "shards": [{"name": "train-000000.tar", "samples": n, "bytes": b, "sha256": "..."}]},
                "val": {...}}}

:class:`ShardDataset` reads one split through ``wids`` (webdataset's indexed tar reader: each shard
is memory-mapped and its members indexed once, so item ``i`` is a seek, not a scan). Being
map-style, it goes through the engine's ``DistributedSampler`` like every other dataset, which
gives what streaming a sharded set needs without a second data-order mechanism:

* per-rank splitting: the dataset gives the engine its own sampler
  (:meth:`ShardDataset.distributed_sampler`, :class:`~vislearn.data.samplers.ShardOrderSampler`):
  each epoch the shards are permuted and cut into one contiguous block per rank of exactly
  ``len // world_size`` samples, so ranks read disjoint shards and have the same number of batches
  however uneven the shards are (no rank waits in a collective for one that ran out);
* a shuffle buffer of ``shuffle_buffer`` samples mixes each rank's block (the training splits were
  also shuffled once when packed, so a shard is not one class);
* per-worker splitting: the DataLoader hands each worker whole batches; a worker opens the shards
  its batches touch (an LRU of ``lru_size`` open shards per process) and reads only their members;
* exact mid-epoch resume: the order is a pure function of ``(seed, epoch, world size, rank)``, so a
  resumed run reads exactly the remaining samples of the epoch (the engine skips the consumed
  batches by index, reading nothing for them).
Wrapped in another dataset (a multi-crop or resizing wrapper) it is read through the engine's
``DistributedSampler`` instead unless the wrapper passes ``distributed_sampler`` on: still correct,
with random rather than shard-ordered access.

Integrity: opening a dataset checks that every shard exists with the byte size the index records
(a truncated copy is caught before training starts); the first time a process opens a shard it
checks the file's SHA-256 against the index (``verify="open"``, the default; ``"size"`` skips the
hash; in a DataLoader, its first worker hashes, the others read the same shards) and that the tar holds the
indexed number of samples. Each failure is a ``UserError``
naming the shard file. ``vislearn data verify DIR`` hashes every shard at once.

``--data`` accepts the folder, its ``index.json`` or a brace pattern of shards in it
(``DIR/train-{000000..000009}.tar``): a pattern replaces the training split by the shards it names
(evaluation reads the index's other split in full).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from vislearn.errors import UserError

__all__ = ["INDEX_NAME", "FORMATS", "SAMPLE_IMAGE_EXTS", "ShardDataset", "is_packed", "read_index",
           "packed_splits", "sha256_file", "verify_shards"]

INDEX_NAME = "index.json"
INDEX_VERSION = 1
FORMATS = ("imagefolder", "coco", "csv", "nuswide")
# the data_formats layout name each packed format reads as (vislearn.data.layout.LAYOUTS)
LAYOUT_OF = {"imagefolder": "imagefolder", "coco": "coco", "csv": "multilabel_csv", "nuswide": "nuswide"}
SAMPLE_IMAGE_EXTS = ("jpg", "jpeg", "png", "ppm", "bmp", "pgm", "tif", "tiff", "webp")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _split_pattern(data: str) -> tuple[Path, list[str] | None]:
    """``(folder, shard names or None)`` for a folder, an index file or a brace pattern of ``.tar`` shards."""
    if data.endswith(".tar") or "{" in data:
        import braceexpand

        names = list(braceexpand.braceexpand(os.path.expanduser(data)))
        folders = {str(Path(n).parent) for n in names}
        if len(folders) != 1:
            raise UserError(f"--data {data}: the shards of a pattern must lie in one folder (with its {INDEX_NAME})")
        return Path(folders.pop()), [Path(n).name for n in names]
    p = Path(data).expanduser()
    return (p.parent, None) if p.name == INDEX_NAME else (p, None)


def is_packed(data: str | os.PathLike | None) -> bool:
    """Whether ``data`` names a packed dataset: a folder with ``index.json``, that file, or a ``.tar`` pattern."""
    if data is None:
        return False
    s = str(data)
    if s.endswith(".tar") or ("{" in s and ".tar" in s):
        return True
    folder, _ = _split_pattern(s)
    return (folder / INDEX_NAME).is_file()


def read_index(data: str | os.PathLike) -> tuple[dict, Path, list[str] | None]:
    """``(index, folder, selected shard names or None)``; a missing or malformed index is a ``UserError``."""
    folder, names = _split_pattern(str(data))
    path = folder / INDEX_NAME
    if not path.is_file():
        raise UserError(f"--data {data}: no {INDEX_NAME} in {folder} (write one with `vislearn data pack`)")
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read shard index {path}: {e}") from None
    if not isinstance(index, dict) or index.get("vislearn_shards") != INDEX_VERSION or \
            index.get("format") not in FORMATS or not isinstance(index.get("splits"), dict):
        raise UserError(f"{path} is not a vislearn shard index (version {INDEX_VERSION}, format one of "
                        f"{', '.join(FORMATS)}, splits)")
    for split, entry in index["splits"].items():
        shards = entry.get("shards") if isinstance(entry, dict) else None
        if not isinstance(shards, list) or not shards or not all(
                isinstance(s, dict) and {"name", "samples", "bytes", "sha256"} <= set(s) for s in shards):
            raise UserError(f"{path}: split {split!r} lacks its list of shards (name, samples, bytes, sha256)")
    if names is not None:
        known = {s["name"] for entry in index["splits"].values() for s in entry["shards"]}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"--data {data}: shard(s) {', '.join(unknown[:3])} not listed in {path}")
    return index, folder, names


def _check_files(folder: Path, shards: list[dict]) -> None:
    for s in shards:
        p = folder / s["name"]
        if not p.is_file():
            raise UserError(f"shard {p} listed in {folder / INDEX_NAME} is missing")
        size = p.stat().st_size
        if size != s["bytes"]:
            raise UserError(f"shard {p} is {size} bytes but the index says {s['bytes']}: "
                            f"{'truncated' if size < s['bytes'] else 'changed'} (copy it again or re-pack)")


def verify_shards(data: str | os.PathLike, progress: Callable[[str], None] | None = None) -> int:
    """Check every shard's size and SHA-256 against the index; the number of shards checked."""
    index, folder, _ = read_index(data)
    n = 0
    for entry in index["splits"].values():
        _check_files(folder, entry["shards"])
        for s in entry["shards"]:
            _check_hash(folder / s["name"], s["sha256"])
            n += 1
            if progress is not None:
                progress(f"verified {s['name']}")
    return n


def _check_hash(path: Path, want: str) -> None:
    got = sha256_file(path)
    if got != want:
        raise UserError(f"shard {path}: SHA-256 {got[:16]}… does not match the index ({want[:16]}…); "
                        "the file is corrupt or was changed (copy it again or re-pack)")


def _checks_hashes() -> bool:
    """Whether this process hashes the shards it opens: the main process, or a loader's first worker (its
    siblings read the same shards of this rank, so one hash per shard per rank is enough)."""
    info = torch.utils.data.get_worker_info()
    return info is None or info.id == 0


class ShardDataset(Dataset):
    """One split of a packed dataset (module docstring); items as the source format's reader gives them.

    ``imagefolder``: ``(image, class index)``; ``csv``/``nuswide``: ``(image, multi-hot float vector)``;
    ``coco``: ``(image, {"boxes", "labels", "image_id", "iscrowd", "area"})`` as
    :class:`~vislearn.data.formats.CocoDetection`. Images are decoded from the stored bytes to ``uint8``,
    passed through ``transform`` (detection: ``transform(image, target)`` with the boxes wrapped) and
    converted to float in [0, 1] last. Attributes: ``classes``, ``format``, ``split``, ``shards``
    (paths), ``targets`` (classification: a list of ints; multi-label: N×C float).
    """

    float_output = True  # False: a uint8 transform result is returned as it is (as ImageFolderDataset)

    def __init__(self, data: str | os.PathLike, split: str, transform: Callable | None = None,
                 verify: str = "open", lru_size: int = 4, shuffle_buffer: int = 2000) -> None:
        if verify not in ("open", "size"):
            raise UserError(f"verify must be 'open' or 'size', got {verify!r}")
        index, folder, names = read_index(data)
        splits = index["splits"]
        if split not in splits:
            raise UserError(f"{folder / INDEX_NAME} has no split {split!r}; it has {', '.join(sorted(splits))}")
        entry = splits[split]
        shards = entry["shards"]
        keep = list(range(len(shards)))
        if names is not None and any(s["name"] in names for s in shards):  # the pattern picks this split's shards
            keep = [i for i, s in enumerate(shards) if s["name"] in names]
        shards = [shards[i] for i in keep]
        _check_files(folder, shards)
        self.format, self.split, self.classes = index["format"], split, list(index.get("classes", []))
        self.folder, self.transform, self.verify, self.lru_size = folder, transform, verify, lru_size
        self.shuffle_buffer = shuffle_buffer
        self._entries = shards
        self.shards = [folder / s["name"] for s in shards]
        self._starts = [0]
        for s in shards:
            self._starts.append(self._starts[-1] + int(s["samples"]))
        targets = entry.get("targets")
        if targets is not None:
            offsets = [sum(int(s["samples"]) for s in entry["shards"][:i]) for i in keep]
            targets = [t for i, o in zip(keep, offsets, strict=True)
                       for t in targets[o:o + int(entry["shards"][i]["samples"])]]
            if self.format in ("csv", "nuswide"):
                multi = torch.zeros(len(targets), len(self.classes))
                for n, labels in enumerate(targets):
                    multi[n, labels] = 1.0
                targets = multi
        self.targets = targets
        self._open: Any = None  # this process's LRU of open shards (never pickled to workers)
        self._verified: set[int] = set()

    def __len__(self) -> int:
        return self._starts[-1]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = None
        return state

    def distributed_sampler(self, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        """The training order the engine uses for this dataset: whole shards per rank, a shuffle buffer
        (:class:`~vislearn.data.samplers.ShardOrderSampler`)."""
        from vislearn.data.samplers import ShardOrderSampler

        return ShardOrderSampler([int(s["samples"]) for s in self._entries], num_replicas=num_replicas, rank=rank,
                                 seed=seed, buffer=self.shuffle_buffer)

    def with_transform(self, transform: Callable | None) -> ShardDataset:
        """The same split read through another transform, with float output (no file is reopened here)."""
        import copy

        other = copy.copy(self)
        other.transform, other._open, other._verified = transform, None, set(self._verified)
        other.__dict__.pop("float_output", None)  # float output again (the class default)
        return other

    def _shard(self, k: int):
        from wids.wids import IndexedTarSamples
        from wids.wids_lru import LRUCache

        if self._open is None:
            self._open = LRUCache(self.lru_size, release_handler=lambda _, v: v.close())
        tar = self._open[k]
        if tar is None:
            path, entry = self.shards[k], self._entries[k]
            if self.verify == "open" and k not in self._verified and _checks_hashes():
                _check_hash(path, entry["sha256"])
            try:
                tar = IndexedTarSamples(path=str(path), stream=open(path, "rb"))
            except Exception as e:  # wids raises ValueError/AssertionError/UnicodeDecodeError on a broken tar
                raise UserError(f"shard {path} is not a readable tar file ({type(e).__name__}: "
                                f"{str(e)[:120]}); re-pack it") from None
            if len(tar) != int(entry["samples"]):
                tar.close()
                raise UserError(f"shard {path} holds {len(tar)} samples but the index says {entry['samples']}")
            self._verified.add(k)
            self._open[k] = tar
        return tar

    def raw(self, i: int) -> tuple[str, bytes, dict, str]:
        """``(image extension, image bytes, the sample's json, where)`` of item ``i`` (nothing decoded)."""
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        k = bisect.bisect_right(self._starts, i) - 1
        sample = {name.lstrip("."): v for name, v in self._shard(k)[i - self._starts[k]].items()}
        where = f"{self.shards[k]}:{sample['__key__']}"
        ext = next((e for e in SAMPLE_IMAGE_EXTS if e in sample), None)
        if ext is None or "json" not in sample:
            raise UserError(f"shard sample {where} lacks an image or its .json (members: "
                            f"{', '.join(sorted(k for k in sample if not k.startswith('__')))})")
        try:
            meta = json.loads(sample["json"].getvalue())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"shard sample {where}: unreadable .json ({e})") from None
        return ext, sample[ext].getvalue(), meta, where

    def target(self, i: int):
        """Item ``i``'s target without decoding its image."""
        return self._target(self.raw(i)[2])

    def _target(self, meta: dict):
        if self.format == "imagefolder":
            return int(meta["label"])
        if self.format in ("csv", "nuswide"):
            t = torch.zeros(len(self.classes))
            t[list(meta["labels"])] = 1.0
            return t
        image_id = meta["image_id"]
        return {"boxes": torch.tensor(meta["boxes"], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(meta["labels"], dtype=torch.long),
                "iscrowd": torch.tensor(meta["iscrowd"], dtype=torch.bool),
                "area": torch.tensor(meta["area"], dtype=torch.float64),
                "image_id": torch.tensor(image_id) if isinstance(image_id, int) else image_id}

    def __getitem__(self, i: int):
        from vislearn.data.decode import decode_image_bytes, to_float_image
        from vislearn.data.formats import apply_image_transform

        ext, data, meta, where = self.raw(i)
        image, target = decode_image_bytes(data, f"{where}.{ext}"), self._target(meta)
        if self.format == "coco":
            if self.transform is not None:
                from vislearn.data.shapes_detection import apply_detection_transform

                image, target = apply_detection_transform(self.transform, image, target)
            return to_float_image(image), target
        return apply_image_transform(image, self.transform, self.float_output), target


def packed_splits(data: str | os.PathLike, train: str, evaluation: str, train_tf: Callable | None = None,
                  eval_tf: Callable | None = None, fmt: str | None = None) -> tuple[ShardDataset, ShardDataset]:
    """``(train, eval)`` splits of the packed dataset at ``data``; a split name matches exactly or as a
    prefix (``train`` finds ``train2017``). ``fmt``: refuse an index of another format."""
    index, folder, _ = read_index(data)
    if fmt is not None and index["format"] != fmt:
        raise UserError(f"--data {data} is a packed {index['format']} dataset; this reads {fmt}")

    def find(name: str) -> str:
        if name in index["splits"]:
            return name
        match = sorted(s for s in index["splits"] if s.startswith(name))
        if not match:
            raise UserError(f"{folder / INDEX_NAME} has no {name!r} split (it has {', '.join(index['splits'])})")
        return match[0]

    return ShardDataset(data, find(train), train_tf), ShardDataset(data, find(evaluation), eval_tf)
