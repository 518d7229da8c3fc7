"""Does the data path keep up with the model? Decode+augment images/s per worker count beside training img/s.

The data side reads a folder of generated photo-like JPEGs (``--source-size``, ImageNet's typical
500×375 by default) through the library's reader and the recipe's training transform
(:func:`vislearn.data.transforms.train_transform`: random resized crop to ``--image-size``, flip,
float last), via the engine's kind of DataLoader with 0, 1, 2 … workers (``--workers``), both from
the image files and from the same images packed into WebDataset shards (``vislearn data pack``).
It also times the two halves the issue changed, in one process, alternating (ratios are what a
shared machine measures reliably): decoding with ``torchvision.io`` vs PIL, and the uint8 path
(crop and resize on uint8, float last) vs the old one (float32 at full size, then the crop).

The model side times training steps (forward, backward, SGD) of ``--model`` at ``--image-size``
and ``--batch`` on ``--device`` and prints its img/s. The last line says which side limits: the
data path with N workers delivers X img/s against the model's Y img/s.

Run from the repository root: ``python benchmarks/data.py --model bn_inception --image-size 128``.
``--quick`` shrinks everything to seconds (the test runs it; its numbers mean nothing).
``--json-out PATH`` writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts src/ on the path)
import numpy as np
import torch
from _common import add_common_args, apply_common_args, goal_row, interleaved, write_bench
from PIL import Image
from torch.utils.data import DataLoader

from vislearn.data.decode import decode_image_bytes
from vislearn.data.formats import ImageFolderDataset
from vislearn.data.pack import pack_dataset
from vislearn.data.shards import ShardDataset
from vislearn.data.transforms import train_transform


def make_folder(root: Path, n: int, width: int, height: int) -> Path:
    """``root/train`` and ``root/val`` of ``n`` smooth-plus-noise JPEGs (quality 90) in 4 classes."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    for split in ("train", "val"):
        for i in range(n if split == "train" else 4):
            phase = rng.uniform(0, 6, 3)
            base = 128 + 70 * np.sin(x[..., None] / 37.0 * np.array([1.0, 1.3, 0.8]) + y[..., None] / 23.0 + phase)
            arr = (base + rng.normal(0, 12, (height, width, 3))).clip(0, 255).astype(np.uint8)
            path = root / split / f"c{i % 4}" / f"{i:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(path, quality=90)
    return root


def loader_rate(dataset, workers: int, batch: int, batches: int) -> float:
    """Images/s of ``batches`` batches after one warm-up batch (worker start-up not counted)."""
    loader = DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True,
                        generator=torch.Generator().manual_seed(0), persistent_workers=workers > 0)
    it = iter(loader)
    next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        x, _ = next(it)
        n += len(x)
    return n / (time.perf_counter() - t0)


def half_ratios(root: Path, image_size: int, rounds: int) -> dict[str, float]:
    """Seconds per image: torchvision.io vs PIL decoding; the uint8 path vs float-first, decode included."""
    paths = sorted((root / "train").rglob("*.jpg"))[:8]
    blobs = [p.read_bytes() for p in paths]
    tf = train_transform(image_size)

    def pil_decode():
        for b in blobs:
            with Image.open(io.BytesIO(b)) as im:
                torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)

    def ours_decode():
        for b in blobs:
            decode_image_bytes(b, "bench")

    def new_path():
        for b in blobs:
            tf(decode_image_bytes(b, "bench")).float()

    def old_path():  # the previous reader: PIL, float32 at full resolution, then the transform
        for b in blobs:
            with Image.open(io.BytesIO(b)) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            tf(torch.from_numpy(arr).permute(2, 0, 1).contiguous())

    t = interleaved({"pil": pil_decode, "ours": ours_decode, "new": new_path, "old": old_path}, rounds=rounds,
                    clock=time.process_time)
    k = len(blobs)
    return {"decode_pil_ms": 1e3 * t["pil"] / k, "decode_ours_ms": 1e3 * t["ours"] / k,
            "decode_speedup": t["pil"] / t["ours"], "path_old_ms": 1e3 * t["old"] / k,
            "path_new_ms": 1e3 * t["new"] / k, "path_speedup": t["old"] / t["new"]}


def model_rate(name: str, image_size: int, batch: int, steps: int, device: str) -> float:
    """Training images/s of ``name``: forward, cross-entropy, backward, SGD step (one warm-up step)."""
    from vislearn.models import create_model

    model = create_model(name, num_classes=1000).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, image_size, image_size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step():
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="bn_inception", help="a registry model (--quick: small_convnet)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--source-size", default="500x375", help="generated JPEG size, WxH")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=6, help="timed batches per loader")
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json-out", default=None)
    add_common_args(ap)
    args = ap.parse_args(argv)
    apply_common_args(args)
    width, height = (int(v) for v in args.source_size.lower().split("x"))
    if args.quick:
        args.images, args.batch, args.batches, args.image_size, (width, height) = 24, 4, 2, 32, (64, 48)
        args.model = "small_convnet"
    workers = [int(w) for w in args.workers.split(",")]
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    figures: dict = {"model": args.model, "image_size": args.image_size, "source": f"{width}x{height} JPEG q90",
                     "batch": args.batch, "device": args.device, "torch_threads": torch.get_num_threads(),
                     "cpu_count": os.cpu_count(), "loader_img_s": {}}
    with tempfile.TemporaryDirectory() as tmp:
        root = make_folder(Path(tmp) / "folder", args.images, width, height)
        pack_dataset(root, "imagefolder", Path(tmp) / "packed", shard_size=4 * 10**6)
        tf = train_transform(args.image_size)
        sets = {"files": ImageFolderDataset(root / "train", tf),
                "shards": ShardDataset(Path(tmp) / "packed", "train", tf)}
        figures.update(half_ratios(root, args.image_size, rounds=2 if args.quick else 5))
        for source, ds in sets.items():
            for w in workers:
                rate = loader_rate(ds, w, args.batch, args.batches)
                figures["loader_img_s"][f"{source}/{w}"] = rate
    figures["model_img_s"] = model_rate(args.model, args.image_size, args.batch, 1 if args.quick else 3, args.device)

    print(f"decode (per image, CPU time): PIL {figures['decode_pil_ms']:.2f} ms, ours "
          f"{figures['decode_ours_ms']:.2f} ms ({figures['decode_speedup']:.2f}x)")
    print(f"decode+augment: float-first {figures['path_old_ms']:.2f} ms, uint8 path {figures['path_new_ms']:.2f} ms "
          f"({figures['path_speedup']:.2f}x)")
    print(f"{'source':>8} {'workers':>8} {'img/s':>10}")
    for key, rate in figures["loader_img_s"].items():
        source, w = key.split("/")
        print(f"{source:>8} {w:>8} {rate:>10.1f}")
    model = figures["model_img_s"]
    print(f"model {args.model} @ {args.image_size}px, batch {args.batch}, {args.device}: {model:.1f} img/s training")
    best_key = max(figures["loader_img_s"], key=figures["loader_img_s"].get)
    best = figures["loader_img_s"][best_key]
    # one worker's rate (the main process's when no worker count > 0 was timed) sizes the worker pool
    per_worker = figures["loader_img_s"].get("files/1", figures["loader_img_s"][f"files/{workers[0]}"])
    need = int(np.ceil(model / max(per_worker, 1e-9)))
    verdict = "the data path" if best < model else "the model"
    print(f"limit: {verdict} (best loader {best_key}: {best:.1f} img/s vs model {model:.1f} img/s; "
          f"about {need} worker(s) at ~{per_worker:.0f} img/s each would feed this model)")
    figures["limit"] = verdict
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(figures, indent=2))
    rows = [goal_row("JPEG decode, per image (CPU time, 1 thread)", "PIL.Image.open + convert",
                     figures["decode_speedup"], "reported", None),
            goal_row(f"decode + RandomResizedCrop({args.image_size}) + flip, per image", "the float32-first path",
                     figures["path_speedup"], "reported", None)]
    summary = (f"data path: decode ours/PIL {figures['decode_speedup']:.2f}x faster, uint8-first augment "
               f"{figures['path_speedup']:.2f}x; best loader {best_key} {best:.0f} img/s vs {args.model} training "
               f"{model:.0f} img/s: the limit is {verdict}")
    write_bench("data", summary, figures, rows=rows, quick=args.quick)
    return figures


if __name__ == "__main__":
    main()
