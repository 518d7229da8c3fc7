"""Readers for the on-disk layouts of image-quality datasets (nothing is downloaded).

* TID2013 (Ponomarenko et al. 2015): ``mos_with_names.txt`` (lines ``5.51429 i01_01_1.bmp``),
  ``reference_images/I01.BMP`` ..., ``distorted_images/i01_01_1.bmp`` ... MOS in [0, 9], higher is
  better. File-name case varies between releases, so names are matched case-insensitively.
* KADID-10k (Lin et al. 2019): ``dmos.csv`` (header ``dist_img,ref_img,dmos,var``) and ``images/``
  holding both references and distorted images. The "dmos" column is a mean rating in [1, 5],
  higher is better.
* BAPPS 2AFC (Zhang et al. 2018): folders with ``ref/``, ``p0/``, ``p1/`` (images) and ``judge/``
  (``.npy`` arrays holding the fraction of humans who found ``p1`` closer); the root may hold one
  such folder or several (``2afc/val/traditional``, ``2afc/val/cnn`` ...), found recursively.

MOS datasets yield ``(reference, distorted, score)`` and BAPPS ``(reference, p0, p1, judge)``, images
3×H×W float in [0, 1]; ``ref_keys`` names each item's reference (the perceptual-metric fitting
shares one reference forward pass per key and splits train/held-out by it).
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from vislearn.errors import UserError

__all__ = ["IQAPairs", "TwoAFCTriplets", "bapps_2afc", "kadid10k", "open_judgments", "resize_short", "tid2013"]


def _default_loader(path: str) -> torch.Tensor:
    from vislearn.data.formats import load_image

    return load_image(path)


def resize_short(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if not size:
        return x
    h, w = x.shape[-2:]
    s = size / min(h, w)
    hw = (max(1, round(h * s)), max(1, round(w * s)))
    if hw == (h, w):
        return x
    return F.interpolate(x[None], size=hw, mode="bilinear", antialias=s < 1, align_corners=False)[0].clamp(0, 1)


def _index_folder(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise UserError(f"missing folder {folder}")
    return {p.name.lower(): p for p in folder.iterdir() if p.is_file()}


def _lookup(index: dict[str, Path], name: str, folder: Path, where: str) -> Path:
    p = index.get(name.lower())
    if p is None:
        raise UserError(f"{where}: {name} is not in {folder}")
    return p


class IQAPairs(Dataset):
    """(reference, distorted, score) items read lazily; the last reference read is kept in memory."""

    def __init__(self, name: str, refs: list[Path], dists: list[Path], scores: list[float],
                 higher_is_better: bool = True, image_size: int | None = None,
                 loader: Callable[[str], torch.Tensor] | None = None) -> None:
        if not scores:
            raise UserError(f"{name}: no judgments found")
        self.name, self.refs, self.dists = name, refs, dists
        self.scores = torch.tensor(scores, dtype=torch.float32)
        self.higher_is_better, self.image_size = higher_is_better, image_size
        self.ref_keys = [p.name.lower() for p in refs]
        self._load = loader or _default_loader
        self._cached: tuple[Path, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.scores)

    def _image(self, path: Path) -> torch.Tensor:
        return resize_short(self._load(str(path)), self.image_size)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, float]:
        rp = self.refs[i]
        if self._cached is None or self._cached[0] != rp:
            self._cached = (rp, self._image(rp))
        ref, dist = self._cached[1], self._image(self.dists[i])
        if ref.shape != dist.shape:
            raise UserError(f"{self.name}: {self.dists[i]} is {tuple(dist.shape[-2:])} but its reference "
                            f"{rp} is {tuple(ref.shape[-2:])}")
        return ref, dist, float(self.scores[i])


def tid2013(root: str | os.PathLike, image_size: int | None = None, limit: int = 0,
            loader: Callable[[str], torch.Tensor] | None = None) -> IQAPairs:
    """TID2013 from its release folder (see the module docstring for the layout)."""
    root = Path(root)
    listing = root / "mos_with_names.txt"
    if not listing.is_file():
        raise UserError(f"{root} is not a TID2013 folder: no mos_with_names.txt")
    ref_dir, dist_dir = root / "reference_images", root / "distorted_images"
    ref_idx, dist_idx = _index_folder(ref_dir), _index_folder(dist_dir)
    refs, dists, scores = [], [], []
    for n, line in enumerate(listing.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            score, name = float(parts[0]), parts[1]
        except (ValueError, IndexError):
            raise UserError(f"{listing}:{n}: expected 'MOS filename', got {line.strip()!r}") from None
        if not math.isfinite(score):
            raise UserError(f"{listing}:{n}: MOS {parts[0]!r} is not finite")
        stem = name.split("_")[0]  # i01
        ref_name = next((k for k in (f"{stem}.bmp", f"{stem}.png") if k.lower() in ref_idx), f"{stem}.bmp")
        refs.append(_lookup(ref_idx, ref_name, ref_dir, f"{listing}:{n}"))
        dists.append(_lookup(dist_idx, name, dist_dir, f"{listing}:{n}"))
        scores.append(score)
        if limit and len(scores) >= limit:
            break
    return IQAPairs("tid2013", refs, dists, scores, True, image_size, loader)


def kadid10k(root: str | os.PathLike, image_size: int | None = None, limit: int = 0,
             loader: Callable[[str], torch.Tensor] | None = None) -> IQAPairs:
    """KADID-10k from its release folder (``dmos.csv`` and ``images/``)."""
    root = Path(root)
    table = root / "dmos.csv"
    if not table.is_file():
        raise UserError(f"{root} is not a KADID-10k folder: no dmos.csv")
    img_dir = root / "images"
    idx = _index_folder(img_dir)
    refs, dists, scores = [], [], []
    try:
        text = table.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{table} is not UTF-8 text ({e})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    need = {"dist_img", "ref_img", "dmos"}
    if not reader.fieldnames or not need <= set(reader.fieldnames):
        raise UserError(f"{table}: expected columns {sorted(need)}, got {reader.fieldnames}")
    for n, row in enumerate(reader, 2):
        try:
            score = float(row["dmos"])
        except (TypeError, ValueError):
            raise UserError(f"{table}:{n}: dmos {row.get('dmos')!r} is not a number") from None
        if not math.isfinite(score):
            raise UserError(f"{table}:{n}: dmos {row['dmos']!r} is not finite")
        if not isinstance(row["ref_img"], str) or not isinstance(row["dist_img"], str):
            raise UserError(f"{table}:{n}: expected dist_img, ref_img and dmos, got a short row")
        refs.append(_lookup(idx, row["ref_img"], img_dir, f"{table}:{n}"))
        dists.append(_lookup(idx, row["dist_img"], img_dir, f"{table}:{n}"))
        scores.append(score)
        if limit and len(scores) >= limit:
            break
    return IQAPairs("kadid10k", refs, dists, scores, True, image_size, loader)


class TwoAFCTriplets(Dataset):
    """BAPPS-style (reference, p0, p1, judge) items; ``judge`` = fraction who found p1 closer."""

    def __init__(self, triplets: list[tuple[Path, Path, Path]], judges: list[float], image_size: int | None = None,
                 loader: Callable[[str], torch.Tensor] | None = None) -> None:
        if not judges:
            raise UserError("bapps: no triplets found")
        self.triplets, self.judges, self.image_size = triplets, torch.tensor(judges, dtype=torch.float32), image_size
        self.ref_keys = [str(t[0]) for t in triplets]
        self._load = loader or _default_loader

    def __len__(self) -> int:
        return len(self.judges)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        imgs = [resize_short(self._load(str(p)), self.image_size) for p in self.triplets[i]]
        if not imgs[0].shape == imgs[1].shape == imgs[2].shape:
            raise UserError(f"bapps: images of triplet {self.triplets[i][0].name} differ in size")
        return imgs[0], imgs[1], imgs[2], float(self.judges[i])


def _bapps_folders(root: Path) -> list[Path]:
    found = [d for d in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
             if all((d / s).is_dir() for s in ("ref", "p0", "p1", "judge"))]
    return found


def bapps_2afc(root: str | os.PathLike, image_size: int | None = None, limit: int = 0,
               loader: Callable[[str], torch.Tensor] | None = None) -> TwoAFCTriplets:
    """BAPPS 2AFC triplets under ``root`` (one folder with ref/p0/p1/judge, or several below it)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"BAPPS folder not found: {root}")
    folders = _bapps_folders(root)
    if not folders:
        raise UserError(f"{root} holds no BAPPS 2AFC folder (one with ref/, p0/, p1/ and judge/)")
    triplets, judges = [], []
    for d in folders:
        for jp in sorted((d / "judge").glob("*.npy")):
            stem = jp.stem
            paths = []
            for sub in ("ref", "p0", "p1"):
                cands = sorted((d / sub).glob(stem + ".*"))
                if not cands:
                    raise UserError(f"bapps: {d / sub} has no image named {stem}.*")
                paths.append(cands[0])
            try:
                arr = np.load(jp, allow_pickle=False)
                j = float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])
            except Exception as e:  # corrupt or not a numeric array
                raise UserError(f"bapps: cannot read {jp}: {type(e).__name__}: {e}") from None
            if not 0.0 <= j <= 1.0:
                raise UserError(f"bapps: {jp} holds {j}, not a fraction in [0, 1]")
            triplets.append((paths[0], paths[1], paths[2]))
            judges.append(j)
            if limit and len(judges) >= limit:
                return TwoAFCTriplets(triplets, judges, image_size, loader)
    return TwoAFCTriplets(triplets, judges, image_size, loader)


def open_judgments(root: str | os.PathLike, image_size: int | None = None, limit: int = 0,
                   loader: Callable[[str], torch.Tensor] | None = None) -> Any:
    """Recognise the layout at ``root`` (TID2013, KADID-10k or BAPPS 2AFC) and open it."""
    root = Path(root)
    if not root.exists():
        raise UserError(f"dataset path not found: {root}")
    if (root / "mos_with_names.txt").is_file():
        return tid2013(root, image_size, limit, loader)
    if (root / "dmos.csv").is_file():
        return kadid10k(root, image_size, limit, loader)
    if root.is_dir() and _bapps_folders(root):
        return bapps_2afc(root, image_size, limit, loader)
    raise UserError(f"{root}: not a TID2013 (mos_with_names.txt), KADID-10k (dmos.csv) or BAPPS 2AFC "
                    "(ref/, p0/, p1/, judge/) folder")
