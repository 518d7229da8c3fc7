"""``vislearn predict --model NAME --weights PATH IMAGE...``: top-k classes of image files.

Preprocessing is the model family's evaluation transform: for ``inception_v3`` (299 px input)
resize the short side to 342 and take the central 299×299 crop (torchvision's reference); other
models use their registered input size with the usual 87.5 % crop. Named remote weights
(``--weights torchvision:IMAGENET1K_V1``, ``--weights hf-hub:timm/inception_v3.tv_in1k``) bring their
own data config (crop, resize, interpolation, mean/std: :mod:`vislearn.models.hub`), which replaces
that default. ``--resize``/``--crop`` change it (a new ``--crop`` keeps the config's crop fraction).
Images go in as [0, 1] RGB; the model applies its own normalisation (``model.normalization``),
which loading torchvision/timm/TF-slim weights sets to what those weights expect.

Weights written by ``vislearn train`` name their model, its options, the class names (an
ImageFolder's folder names) and the input size trained at, so ``--model`` and ``--crop`` are only
needed for a peer's file. Class names: ``--classes FILE`` (one per line), else the names stored with
vislearn weights, else the 1000 ImageNet names that torchvision ships offline when the model has
1000 outputs, else the indices.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("predict", help="top-k classes of image files with a classifier")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--model", default=None,
                   help="registry name (default: the one vislearn weights name, else inception_v3)")
    p.add_argument("--weights", required=True,
                   help="weights file (vislearn .safetensors, torchvision/timm .pth/.safetensors, TF-slim .npz) "
                        "or a named source: torchvision:IMAGENET1K_V1, hf-hub:timm/inception_v3.tv_in1k")
    p.add_argument("--top", type=int, default=5, help="how many classes to list (default 5)")
    p.add_argument("--crop", type=int, default=None,
                   help="centre-crop size (default: the size the weights were trained at, else the model's)")
    p.add_argument("--resize", type=int, default=None,
                   help="short side before cropping (default: crop / 0.875, i.e. 342 for 299)")
    p.add_argument("--classes", default=None, help="text file with one class name per line")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--fast", action="store_true", help="use vislearn.inference.optimize (BN folded, bf16)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=run)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, from torchvision's offline weight metadata."""
    from torchvision.models import Inception_V3_Weights

    return list(Inception_V3_Weights.IMAGENET1K_V1.meta["categories"])


def class_names(model, path: str | None, stored: list[str] | None = None) -> list[str]:
    from vislearn.errors import UserError

    n = _num_outputs(model)
    if path is not None:
        try:
            with open(path, encoding="utf-8") as f:
                names = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise UserError(f"cannot read class names from {path}: {e.strerror}") from None
        if len(names) != n:
            raise UserError(f"{path} lists {len(names)} class names; the model has {n} outputs")
        return names
    if stored and len(stored) == n:
        return list(stored)
    if n == 1000:
        return imagenet_categories()
    return [str(i) for i in range(n)]


def _num_outputs(model) -> int:
    for attr in ("num_classes",):
        if isinstance(getattr(model, attr, None), int):
            return int(getattr(model, attr))
    fc = getattr(model, "fc", None) or getattr(model, "classifier", None)
    return int(fc.out_features)


def run(args) -> int:
    import torch

    from vislearn.data.formats import load_image
    from vislearn.data.transforms import eval_transform
    from vislearn.errors import UserError
    from vislearn.models import create_model_from_weights, get_entry
    from vislearn.models.convert import weights_metadata

    meta = weights_metadata(args.weights)
    name = args.model or meta.get("model") or "inception_v3"
    entry = get_entry(name)
    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.crop is not None and (args.crop < 1 or (args.resize is not None and args.resize < args.crop)):
        raise UserError(f"--resize must be >= --crop >= 1, got resize {args.resize} crop {args.crop}")
    model = create_model_from_weights(args.weights, name=name).eval()
    config = getattr(model, "data_config", None)  # set by named remote weights
    crop = args.crop or meta.get("image_size") or (config.crop_size if config else entry.input_size[-1])
    if args.resize is not None and args.resize < crop:
        raise UserError(f"--resize must be >= --crop >= 1, got resize {args.resize} crop {crop}")
    resize = args.resize or (round(crop / config.crop_pct) if config else None)
    names = class_names(model, args.classes, meta.get("classes"))
    k = min(args.top, len(names))
    transform = eval_transform(crop, resize=resize, interpolation=config.interpolation if config else "bilinear")
    images = [transform(load_image(p)) for p in args.images]  # every file checked before any work
    runner = model
    if args.fast:
        from vislearn.inference import optimize

        runner = optimize(model)
    results = []
    with torch.no_grad():
        for i in range(0, len(images), args.batch_size):
            batch = torch.stack(images[i:i + args.batch_size]).clamp_(0, 1)
            probs = runner(batch).float().softmax(1)
            p, idx = probs.topk(k, dim=1)
            for j in range(batch.shape[0]):
                results.append({"image": args.images[i + j],
                                "top": [{"index": int(c), "class": names[int(c)], "prob": round(float(q), 6)}
                                        for q, c in zip(p[j], idx[j], strict=True)]})
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            print(r["image"])
            for rank, t in enumerate(r["top"], 1):
                print(f"  {rank}. {t['prob']:7.2%}  {t['class']} ({t['index']})")
    return 0
