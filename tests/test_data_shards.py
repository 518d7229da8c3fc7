"""Packed datasets: `vislearn data pack` writes shards that read back sample for sample (bytes identical),
per-rank shard order disjoint and covering, exact mid-epoch resume, corrupt shards named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from vislearn.cli import main
from vislearn.data.formats import CocoDetection, ImageFolderDataset, MultilabelCSV
from vislearn.data.layout import detect_layout
from vislearn.data.pack import pack_dataset, parse_size
from vislearn.data.samplers import ShardOrderSampler
from vislearn.data.shards import ShardDataset, packed_splits, verify_shards
from vislearn.errors import UserError


def _image(path: Path, rng: np.random.Generator, h: int, w: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=90) if path.suffix == ".jpg" else Image.fromarray(arr).save(path)


def _imagefolder(root: Path, per_class: int = 4, same_size: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("cat", "dog", "owl"):
            for k in range(per_class):
                h, w = (8, 8) if same_size else (10 + k, 12 + 2 * k)
                _image(root / split / c / f"{k}.{'png' if k % 2 else 'jpg'}", rng, h, w)
    return root


def _coco(root: Path, n_train: int = 5) -> Path:
    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train2017", n_train), ("val2017", 2)):
        images, anns = [], []
        for i in range(n):
            _image(root / split / f"{i:03d}.jpg", rng, 20, 30)
            images.append({"id": 100 + i, "file_name": f"{i:03d}.jpg", "width": 30, "height": 20})
            for j in range(i % 3 + 1):
                anns.append({"id": len(anns), "image_id": 100 + i, "category_id": 7 if j % 2 else 3,
                             "bbox": [2.0 + j, 3.0, 10.0, 25.0], "iscrowd": int(j == 2), "area": 55.5 + j})
        anns.append({"id": len(anns), "image_id": 100, "category_id": 3, "bbox": [1, 1, 0, 5]})  # empty: skipped
        data = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "kite"},
                                                                       {"id": 3, "name": "bus"}]}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root


def test_imagefolder_pack_reads_back_sample_for_sample_with_identical_bytes(tmp_path):
    src = _imagefolder(tmp_path / "src")
    index = pack_dataset(src, "imagefolder", tmp_path / "out", shard_size=3000)
    assert index["classes"] == ["cat", "dog", "owl"]
    assert len(index["splits"]["train"]["shards"]) > 2  # the size limit cut several shards
    assert detect_layout(tmp_path / "out") == "imagefolder"
    for split in ("train", "val"):
        source = ImageFolderDataset(src / split)
        packed = ShardDataset(tmp_path / "out", split)
        assert len(packed) == len(source) == 12
        order = []
        for i in range(len(packed)):
            ext, data, meta, _ = packed.raw(i)
            j = meta["index"]
            order.append(j)
            path, label = source.samples[j]
            assert data == Path(path).read_bytes() and ext == Path(path).suffix[1:]
            image, target = packed[i]
            ref_image, ref_target = source[j]
            assert target == ref_target == label == packed.targets[i]
            assert image.dtype == torch.float32 and torch.equal(image, ref_image)
        assert sorted(order) == list(range(12))
        if split == "val":
            assert order == list(range(12))  # evaluation splits keep the reader's order
        else:
            assert order != list(range(12))  # training splits are mixed once (class-sorted folders)


def test_coco_pack_reads_back_boxes_labels_crowd_and_area(tmp_path):
    src = _coco(tmp_path / "src")
    with pytest.warns(UserWarning, match="empty_box 1"):
        pack_dataset(src, "coco", tmp_path / "out")
    assert detect_layout(tmp_path / "out") == "coco"
    with pytest.warns(UserWarning):
        source = CocoDetection(src / "annotations" / "instances_train2017.json", src / "train2017")
    train, val = packed_splits(tmp_path / "out", "train", "val", fmt="coco")
    assert (train.split, val.split, len(train), len(val)) == ("train2017", "val2017", 5, 2)
    assert train.classes == source.classes == ["bus", "kite"]
    for i in range(len(train)):
        j = train.raw(i)[2]["index"]
        image, target = train[i]
        ref_image, ref_target = source[j]
        assert torch.equal(image, ref_image)
        assert set(target) == set(ref_target)
        for key in target:
            assert torch.equal(target[key], ref_target[key]), key
            assert target[key].dtype == ref_target[key].dtype, key


def test_csv_pack_multi_hot_targets_match(tmp_path):
    rng = np.random.default_rng(2)
    rows = {"train": [("a.jpg", "sky|sea"), ("b.png", ""), ("c.jpg", "sea")], "val": [("d.jpg", "sky")]}
    for split, items in rows.items():
        for name, _ in items:
            _image(tmp_path / "src" / "img" / name, rng, 9, 9)
        (tmp_path / "src" / f"{split}.csv").write_text("".join(f"img/{n},{lb}\n" for n, lb in items))
    pack_dataset(tmp_path / "src", "csv", tmp_path / "out")
    assert detect_layout(tmp_path / "out") == "multilabel_csv"
    source = MultilabelCSV(tmp_path / "src" / "train.csv")
    packed = ShardDataset(tmp_path / "out", "train")
    for i in range(3):
        j = packed.raw(i)[2]["index"]
        assert torch.equal(packed[i][1], source[j][1]) and torch.equal(packed.targets[i], source.targets[j])
        assert torch.equal(packed[i][0], source[j][0])


def test_brace_pattern_selects_training_shards_and_keeps_the_eval_split(tmp_path):
    pack_dataset(_imagefolder(tmp_path / "src"), "imagefolder", tmp_path / "out", shard_size=3000)
    whole = ShardDataset(tmp_path / "out", "train")
    sizes = [int(s) for s in json.loads((tmp_path / "out" / "index.json").read_text())["splits"]["train"]["shards"]
             for s in [s["samples"]]]
    train, val = packed_splits(f"{tmp_path}/out/train-{{000001..000002}}.tar", "train", "val")
    assert len(train) == sizes[1] + sizes[2] and len(val) == 12
    for i in range(len(train)):
        assert train.raw(i)[1] == whole.raw(sizes[0] + i)[1]
        assert train.targets[i] == whole.targets[sizes[0] + i]
    with pytest.raises(UserError, match="train-000099.tar"):
        packed_splits(f"{tmp_path}/out/train-{{000001,000099}}.tar", "train", "val")


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_order_splits_ranks_disjoint_equal_and_covering(world):
    sizes = [5, 1, 7, 3, 4]  # uneven shards, 20 samples
    total = sum(sizes)
    for epoch in (0, 1):
        per_rank = []
        for rank in range(world):
            s = ShardOrderSampler(sizes, num_replicas=world, rank=rank, seed=4, buffer=3)
            s.set_epoch(epoch)
            per_rank.append(list(s))
            assert len(per_rank[-1]) == len(s) == total // world  # the same count on every rank: no hang
        seen = [i for r in per_rank for i in r]
        assert len(set(seen)) == len(seen) == world * (total // world)  # disjoint
        assert set(seen) <= set(range(total))
        if world == 1:
            assert sorted(seen) == list(range(total))
    # whole shards per rank: the shards a rank reads hold its block (at most the two edge shards are shared)
    starts = np.cumsum([0] + sizes)
    s0 = ShardOrderSampler(sizes, num_replicas=2, rank=0, seed=4, buffer=3)
    shards_of = {int(np.searchsorted(starts, i, side="right") - 1) for i in s0}
    assert sum(sizes[k] for k in shards_of) - len(s0) < max(sizes)
    # every sample is trained on over a few epochs (the dropped remainder changes with the epoch)
    s = ShardOrderSampler(sizes, num_replicas=3, rank=0, seed=4)
    covered = set()
    for epoch in range(12):
        for rank in range(3):
            s.rank = rank
            s.set_epoch(epoch)
            covered |= set(s)
    assert covered == set(range(total))


class _Recorder(nn.Module):
    """Records the identity (pixel sum) of every image it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.seen: list[float] = []

    def forward(self, batch):
        x, _ = batch
        self.seen += [round(float(v), 4) for v in x.flatten(1).sum(1)]
        return {"loss": (self.w * x.mean()).sum()}


@pytest.mark.parametrize("workers,persistent", [(0, False), (2, True)])
def test_engine_resumed_mid_epoch_reads_exactly_the_remaining_samples(tmp_path, workers, persistent):
    from vislearn.train import Task, TrainConfig, Trainer
    from vislearn.train.hooks import Hook

    pack_dataset(_imagefolder(tmp_path / "src", same_size=True), "imagefolder", tmp_path / "out", shard_size=900)
    cfg = TrainConfig(steps=9, batch_size=2, lr=1e-3, log_every=0, eval_every=0, seed=5, num_workers=workers,
                      persistent_workers=persistent)

    def task(stop_at: int = 0) -> Task:
        class Stop(Hook):
            def should_stop(self, step: int, metrics: dict) -> bool:
                return step == stop_at

        return Task(_Recorder(), ShardDataset(tmp_path / "out", "train"), hooks=[Stop()] if stop_at else [])

    ref = task()
    tr = Trainer(cfg, ref, None, progress=False)
    assert isinstance(tr.sampler, ShardOrderSampler) and tr.steps_per_epoch == 6
    tr.fit()
    assert len(ref.module.seen) == 18 and len(set(ref.module.seen[:12])) == 12  # one whole epoch, then 3 steps
    first = task(stop_at=4)  # stops mid-epoch (step 4 of 6)
    Trainer(cfg, first, tmp_path / "run", progress=False).fit()
    second = task()
    tr = Trainer(cfg, second, tmp_path / "run", resume=True, progress=False)
    assert (tr.step, tr.epoch, tr.batch_in_epoch) == (4, 0, 4)
    tr.fit()
    assert first.module.seen + second.module.seen == ref.module.seen


def test_truncated_or_changed_shard_is_named(tmp_path):
    pack_dataset(_imagefolder(tmp_path / "src"), "imagefolder", tmp_path / "out", shard_size=3000)
    shard = tmp_path / "out" / "train-000001.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[:-700])
    with pytest.raises(UserError, match=r"train-000001\.tar is \d+ bytes .*truncated"):
        ShardDataset(tmp_path / "out", "train")
    # same size, one byte changed inside an image: the checksum names the file when the shard is opened
    flipped = bytearray(data)
    flipped[700] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    ds = ShardDataset(tmp_path / "out", "train")
    first = int(json.loads((tmp_path / "out" / "index.json").read_text())["splits"]["train"]["shards"][0]["samples"])
    ds[0]  # another shard reads fine
    with pytest.raises(UserError, match=r"train-000001\.tar: SHA-256 .* does not match the index"):
        ds[first]
    with pytest.raises(UserError, match=r"train-000001\.tar: SHA-256"):
        verify_shards(tmp_path / "out")
    assert main(["data", "verify", str(tmp_path / "out")]) == 2  # the CLI reports it as a user error
    # a shard that is not a tar at all (size kept, hash skipped): named as unreadable
    shard.write_bytes(b"\x07" * len(data))
    with pytest.raises(UserError, match=r"train-000001\.tar is not a readable tar|train-000001\.tar holds"):
        ShardDataset(tmp_path / "out", "train", verify="size")[first]


def test_pack_cli_progress_index_and_refusals(tmp_path, capsys):
    src = _imagefolder(tmp_path / "src", per_class=2)
    assert main(["data", "pack", str(src), "--format", "imagefolder", "--out", str(tmp_path / "out"),
                 "--shard-size", "2kB"]) == 0
    out, err = capsys.readouterr()
    assert "train: 6 samples in" in out and "packed 12/12 images" in err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    for entry in index["splits"].values():
        assert sum(s["samples"] for s in entry["shards"]) == entry["samples"] == 6
        assert all(len(s["sha256"]) == 64 for s in entry["shards"])
    assert verify_shards(tmp_path / "out") == sum(len(e["shards"]) for e in index["splits"].values())
    assert main(["data", "pack", str(src), "--format", "imagefolder", "--out", str(tmp_path / "out")]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert (parse_size("1GB"), parse_size("2GiB"), parse_size("500 MB")) == (10**9, 2 * 2**30, 5 * 10**8)
    with pytest.raises(UserError, match="--shard-size"):
        parse_size("big")


def test_recipes_stream_packed_data_of_their_format(tmp_path):
    from vislearn.recipes.runner import build

    pack_dataset(_imagefolder(tmp_path / "folder"), "imagefolder", tmp_path / "folder_packed")
    with pytest.warns(UserWarning):
        pack_dataset(_coco(tmp_path / "coco", n_train=12), "coco", tmp_path / "coco_packed")
    cases = [("classify", tmp_path / "folder_packed", ["image_size=16", "model=mlp"]),
             ("classify", f"{tmp_path}/folder_packed/train-000000.tar", ["image_size=16", "model=mlp"]),
             ("multibox", tmp_path / "coco_packed", [])]
    for name, data, overrides in cases:
        cfg, task = build(name, "quick", overrides, str(data))
        train = getattr(task.train_set, "dataset", task.train_set)
        assert isinstance(train, ShardDataset), name
        assert callable(getattr(task.train_set, "distributed_sampler", None))
        image, _ = task.train_set[0]
        assert image.dtype == torch.float32 and image.shape[0] == 3
    with pytest.raises(UserError, match="looks like"):
        build("multilabel", "quick", [], str(tmp_path / "coco_packed"))


def test_nuswide_pack_keeps_the_official_splits_and_targets(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_data_nuswide import make_layout
    from vislearn.data.nuswide import NUSWIDE

    make_layout(tmp_path / "src")
    pack_dataset(tmp_path / "src", "nuswide", tmp_path / "out")
    assert detect_layout(tmp_path / "out") == "nuswide"
    for split in ("train", "test"):
        source, packed = NUSWIDE(tmp_path / "src", split), ShardDataset(tmp_path / "out", split)
        assert len(packed) == len(source) and packed.classes == source.classes
        for i in range(len(packed)):
            j = packed.raw(i)[2]["index"]
            assert packed.raw(i)[1] == source.paths[j].read_bytes()
            assert torch.equal(packed[i][1], source[j][1]) and torch.equal(packed[i][0], source[j][0])
