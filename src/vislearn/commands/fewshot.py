"""``vislearn fewshot --weights PATH --data DIR --shots 1 2 5``: frozen-feature evaluation of a backbone.

Ruan et al. (ICLR 2023, App. B.3) score self-supervised encoders on frozen features: n-shot
multinomial logistic regression (mean ± std over 3 random splits), DINO's weighted k-NN (k = 20,
T = 0.07) and a linear classifier. This command does the three for any weights file that
``vislearn.models.create_model_from_weights`` reads (a vislearn file names its model; a peer's file
needs ``--model``), on an ImageFolder tree:

* ``DIR/train/CLASS/*`` and ``DIR/val/CLASS/*``: train is the labelled pool (shots are drawn from it),
  val is the test set;
* or ``DIR/CLASS/*``: one folder, split per class by a seeded rule: the images of each class, in
  sorted path order, are permuted with ``numpy.random.default_rng(split_seed)`` (one generator, classes
  in sorted order) and the last ``max(1, round(val_fraction · n))`` go to the test set (a class needs
  two images).

Images are read as [0, 1] RGB, the short side resized to ``image_size / 0.875`` and centre-cropped to
``image_size`` (default: the model's registered input size), no augmentation. Features follow
:mod:`vislearn.metrics.frozen` (last stage, average-pooled map or [CLS] token). The n-shot λ is chosen
on held-out training examples from the paper's grid (:mod:`vislearn.metrics.fewshot`); the linear
probe is the same classifier on every training feature at ``--probe-l2``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from vislearn.errors import UserError


def register(sub) -> None:
    p = sub.add_parser("fewshot", help="n-shot, k-NN and linear-probe accuracy of a frozen backbone")
    p.add_argument("--weights", required=True,
                   help="weights file (vislearn .safetensors, or a peer's with --model) or a named source "
                        "(torchvision:TAG with --model, hf-hub:ORG/NAME)")
    p.add_argument("--model", default=None, help="registry name (needed only for a peer's weights file)")
    p.add_argument("--data", required=True, help="ImageFolder tree: DIR/train + DIR/val, or DIR/CLASS/* split here")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 2, 5], help="examples per class (default 1 2 5)")
    p.add_argument("--splits", type=int, default=3, help="random draws of the shots (default 3, the paper's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shot draws (default 0)")
    p.add_argument("--k", type=int, default=20, help="neighbours of the k-NN vote (default 20)")
    p.add_argument("--temperature", type=float, default=0.07, help="k-NN vote temperature (default 0.07)")
    p.add_argument("--probe-l2", type=float, default=1e-4, help="L2 strength of the linear probe (default 1e-4)")
    p.add_argument("--image-size", type=int, default=None, help="centre-crop size (default: the model's input size)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="test share per class when DIR has no train/ and val/ (default 0.2)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def split_folder(root: str | os.PathLike, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices ``(train, test)`` into ``ImageFolderDataset(root)`` by the module docstring's seeded rule."""
    import numpy as np

    from vislearn.data.formats import ImageFolderDataset

    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in (0, 1), got {val_fraction!r}")
    ds = ImageFolderDataset(root)
    rng = np.random.default_rng(seed)
    train, test = [], []
    by_class: dict[int, list[int]] = {}
    for i, (_, t) in enumerate(ds.samples):
        by_class.setdefault(t, []).append(i)
    for t in sorted(by_class):
        members = sorted(by_class[t], key=lambda i: ds.samples[i][0])
        if len(members) < 2:
            raise UserError(f"class {ds.classes[t]!r} in {root} has {len(members)} image; splitting needs 2 or more")
        members = [members[j] for j in rng.permutation(len(members))]
        n_test = min(len(members) - 1, max(1, round(val_fraction * len(members))))
        train.extend(members[:-n_test])
        test.extend(members[-n_test:])
    return train, test


def load_sets(data: str, image_size: int, val_fraction: float, split_seed: int, transform=None):
    """``(train, test, layout)`` datasets of centre crops for the two layouts of the module docstring
    (``transform``: another evaluation transform, e.g. named remote weights' ``data_config.transform()``)."""
    from torch.utils.data import Subset

    from vislearn.data.formats import ImageFolderDataset, image_folder_splits
    from vislearn.data.transforms import eval_transform

    root = Path(data)
    if not root.is_dir():
        raise UserError(f"--data {root} does not exist or is not a folder")
    tf = transform or eval_transform(image_size)
    if (root / "train").is_dir() or (root / "val").is_dir():
        train, test = image_folder_splits(root, image_size, train_tf=tf, eval_tf=tf)
        return train, test, "train/val folders"
    train_idx, test_idx = split_folder(root, val_fraction, split_seed)
    ds = ImageFolderDataset(root, tf)
    return Subset(ds, train_idx), Subset(ds, test_idx), f"one folder split {1 - val_fraction:.2f}/{val_fraction:.2f}" \
                                                         f" per class (seed {split_seed})"


def evaluate_features(train_x, train_y, test_x, test_y, shots, splits: int, seed: int, k: int,
                      temperature: float, probe_l2: float) -> dict:
    """The three frozen-feature scores of one backbone (the numbers the command prints)."""
    from vislearn.metrics.fewshot import knn_accuracy, linear_probe_accuracy, nshot_accuracy

    nshot = {}
    for n in shots:
        mean, std = nshot_accuracy(train_x, train_y, test_x, test_y, shots=n, splits=splits, seed=seed)
        nshot[str(n)] = {"mean": mean, "std": std}
    return {"nshot": nshot,
            "knn": {"k": k, "temperature": temperature,
                    "accuracy": knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature)},
            "linear_probe": {"l2": probe_l2,
                             "accuracy": linear_probe_accuracy(train_x, train_y, test_x, test_y, l2=probe_l2)}}


def run(args) -> int:
    import sys

    from vislearn.metrics.frozen import extract_features
    from vislearn.models import create_model_from_weights
    from vislearn.models.hub import is_remote
    from vislearn.models.registry import get_entry

    bad = [v for v in args.shots if v < 1]
    if bad:
        raise UserError(f"--shots values must be >= 1, got {bad[0]}")
    if args.splits < 1:
        raise UserError(f"--splits must be >= 1, got {args.splits}")
    if not is_remote(args.weights) and not Path(args.weights).is_file():
        raise UserError(f"--weights {args.weights} is not a file")
    model = create_model_from_weights(args.weights, name=args.model)
    model_name = getattr(model, "model_name", args.model)
    config = getattr(model, "data_config", None)  # named remote weights: their own crop/resize/interpolation
    image_size = args.image_size or (config.crop_size if config else get_entry(model_name).input_size[-1])
    transform = config.transform() if config is not None and args.image_size is None else None
    train, test, layout = load_sets(args.data, image_size, args.val_fraction, args.split_seed, transform)
    log = None if args.json else (lambda s: print(s, file=sys.stderr))
    train_x, train_y = extract_features(model, train, batch_size=args.batch_size, log=log)
    test_x, test_y = extract_features(model, test, batch_size=args.batch_size, log=log)
    scores = evaluate_features(train_x, train_y, test_x, test_y, args.shots, args.splits, args.seed, args.k,
                               args.temperature, args.probe_l2)
    report = {"weights": str(args.weights), "model": model_name, "image_size": image_size, "layout": layout,
              "feature_dim": int(train_x.shape[1]), "train_images": len(train), "test_images": len(test),
              "classes": int(max(train_y.max(), test_y.max())) + 1, "splits": args.splits, "seed": args.seed,
              **scores}
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{model_name} ({report['feature_dim']}-d features, {image_size} px) on {args.data}: "
          f"{report['train_images']} train / {report['test_images']} test images, {report['classes']} classes "
          f"({layout})")
    for n, s in scores["nshot"].items():
        print(f"  {n}-shot   {100 * s['mean']:6.2f} ± {100 * s['std']:.2f} %  ({args.splits} splits)")
    print(f"  k-NN     {100 * scores['knn']['accuracy']:6.2f} %  (k={args.k}, T={args.temperature})")
    print(f"  linear   {100 * scores['linear_probe']['accuracy']:6.2f} %  (logistic regression, l2={args.probe_l2})")
    return 0
