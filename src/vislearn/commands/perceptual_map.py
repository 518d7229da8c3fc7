"""``vislearn perceptual-map REF DIST --out map.png``: where the perceptual metric sees the difference.

Prints the distance (and the rating for a fitted head) and writes a figure: the reference, the
distorted image and the metric's spatial distance map overlaid on the distorted image
(``--mode spatial``, one forward pass), or the sensitivity map of the reference to a small local
distortion moved over it (``--mode sensitivity``, ``--kind``/``--level``; DIST is then only shown).
"""

from __future__ import annotations

__all__ = ["register", "run"]


def register(sub) -> None:
    p = sub.add_parser("perceptual-map", help="perceptual distance and its spatial map for two images")
    p.add_argument("ref", help="reference image file")
    p.add_argument("dist", help="distorted image file (same size as the reference)")
    p.add_argument("--out", required=True, help="output image (.png added when the name has no extension)")
    p.add_argument("--metric", default="semantic_vgg16", choices=("semantic_vgg16", "lpips_vgg"))
    p.add_argument("--backbone-weights", default=None,
                   help="torchvision vgg16 state-dict file (default: $VISLEARN_VGG16_WEIGHTS, else random)")
    p.add_argument("--lin-weights", default=None,
                   help="lpips linear weights (default for lpips_vgg: the lpips package's v0.1/vgg.pth)")
    p.add_argument("--weights", default=None, help="a fitted head (model.safetensors of `vislearn train perceptual`)")
    p.add_argument("--size", type=int, default=0, help="resize both images so the short side is SIZE (0: keep)")
    p.add_argument("--mode", default="spatial", choices=("spatial", "sensitivity"))
    p.add_argument("--kind", default="noise", help="sensitivity mode: distortion kind")
    p.add_argument("--level", type=int, default=3, help="sensitivity mode: distortion level 1-5")
    p.add_argument("--fast", action="store_true", help="channels_last + bf16")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from vislearn.commands._output import image_output
    from vislearn.data.formats import load_image
    from vislearn.data.iqa_sets import resize_short
    from vislearn.errors import UserError
    from vislearn.metrics.perceptual import create_metric
    from vislearn.metrics.perceptual_maps import overlay_map, sensitivity_map
    from vislearn.recipes.perceptual import backbone_weights_path

    if args.size < 0:
        raise UserError(f"--size must be >= 0, got {args.size}")
    figure = image_output(args.out, "--out")
    ref = resize_short(load_image(args.ref), args.size or None)
    dist = resize_short(load_image(args.dist), args.size or None)
    if ref.shape != dist.shape:
        raise UserError(f"{args.ref} is {tuple(ref.shape[-2:])} but {args.dist} is {tuple(dist.shape[-2:])}; "
                        "the images must have the same size")
    lin = args.lin_weights
    if args.metric == "lpips_vgg" and lin is None:
        import lpips

        lin = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", "vgg.pth")
    bw = backbone_weights_path(args.backbone_weights)
    metric = create_metric(args.metric, bw, lin_weights=lin, weights=args.weights, fast=args.fast)
    with torch.no_grad():
        d = metric(ref[None], dist[None])
        if args.mode == "spatial":
            heat = metric(ref[None], dist[None], spatial=True)[0, 0]
        else:
            heat = sensitivity_map(metric, ref, args.kind, args.level)
    out = {"distance": float(d[0]), "metric": args.metric, "backbone": bw or "random"}
    if args.weights:
        out["rating"] = float(metric.to_rating(d)[0])
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.4))
    for a, img, title in ((ax[0], ref, "reference"), (ax[1], dist, "distorted")):
        a.imshow(img.permute(1, 2, 0).numpy())
        a.set_title(title)
    base = dist if args.mode == "spatial" else ref
    ax[2].imshow(overlay_map(base, heat))
    label = "distance map" if args.mode == "spatial" else f"sensitivity to {args.kind} {args.level}"
    ax[2].set_title(f"{args.metric} {label}; d = {out['distance']:.4g}" + ("" if bw else " (random VGG)"))
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(figure, dpi=100, bbox_inches="tight")
    plt.close(fig)
    out["figure"] = str(figure)
    print(json.dumps(out))
    return 0
