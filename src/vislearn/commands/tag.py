"""``vislearn tag --weights PATH IMAGE... --top-k 3 [--json]``: annotate images with a multilabel model.

The weights are a ``model.safetensors`` written by ``vislearn train multilabel``: its metadata
names the model and its options, including ``label_names`` and the training ``image_size``, so
the model is rebuilt with :func:`vislearn.models.create_model_from_weights` and nothing else is
needed. Each image is read as RGB in [0, 1], its short side resized to the training size and
centre-cropped to a square, and the ``k`` highest-scoring labels are printed with their scores
(the network's raw label scores: higher means more relevant; Gong et al. annotate with the top 3).
"""

from __future__ import annotations

__all__ = ["prepare_image", "register", "run", "tag_images"]


def register(sub) -> None:
    p = sub.add_parser("tag", help="annotate images with the top-k labels of a multilabel model")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--weights", required=True, help="model.safetensors written by `vislearn train multilabel`")
    p.add_argument("--top-k", dest="top_k", type=int, default=3, help="labels per image (default: 3, the paper's k)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of text lines")
    p.set_defaults(func=run)


def prepare_image(image, size: int):
    """Resize a 3×H×W [0, 1] image's short side to ``size`` (antialiased) and centre-crop ``size``×``size``."""
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True,
                              align_corners=False)[0].clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[:, top:top + size, left:left + size]


def tag_images(model, images, top_k: int = 3) -> list[list[tuple[str, float]]]:
    """The ``top_k`` (label name, score) pairs of each image (a list of 3×H×W tensors in [0, 1])."""
    import torch

    from vislearn.errors import UserError

    size = int(getattr(model, "image_size", 0) or 224)
    batch = torch.stack([prepare_image(im, size) for im in images])
    model.eval()
    with torch.no_grad():
        scores = model(batch).float()
    c = scores.shape[1]
    if not 1 <= top_k <= c:
        raise UserError(f"--top-k must be between 1 and the model's {c} labels, got {top_k}")
    names = getattr(model, "label_names", None) or [f"label_{i}" for i in range(c)]
    if len(names) != c:
        raise UserError(f"the weights name {len(names)} labels but the model has {c} outputs")
    values, indices = scores.topk(top_k, dim=1)
    return [[(names[int(j)], float(v)) for v, j in zip(vs, js, strict=True)] for vs, js in zip(values, indices,
                                                                                               strict=True)]


def run(args) -> int:
    import json
    import os

    from vislearn.data.formats import load_image
    from vislearn.errors import UserError
    from vislearn.models import create_model_from_weights

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    for path in args.images:
        if not os.path.isfile(path):
            raise UserError(f"image not found: {path}")
    model = create_model_from_weights(args.weights)
    if not hasattr(model, "label_names"):
        raise UserError(f"{args.weights} holds a {getattr(model, 'model_name', type(model).__name__)!r} model, "
                        "not a multilabel model trained with `vislearn train multilabel`")
    images = [load_image(p) for p in args.images]
    results = tag_images(model, images, args.top_k)
    if args.json:
        print(json.dumps([{"image": p, "labels": [n for n, _ in r], "scores": [round(s, 6) for _, s in r]}
                          for p, r in zip(args.images, results, strict=True)], indent=2))
    else:
        for p, r in zip(args.images, results, strict=True):
            print(f"{p}: " + ", ".join(f"{n} {s:.3f}" for n, s in r))
    return 0
