"""``vislearn propose --weights PATH IMAGE``: ranked MSC-MultiBox object proposals for one image.

Prints the top proposals (rank, objectness, xyxy pixel box in the original image's coordinates),
or JSON with ``--json``; ``--draw out.png`` writes the image with the boxes drawn
(:func:`torchvision.utils.draw_bounding_boxes`). The weights are a ``model.safetensors`` written by
``vislearn train multibox`` (the priors and box coder travel inside it).
"""

from __future__ import annotations

__all__ = ["propose_image", "register", "run"]


def register(sub) -> None:
    p = sub.add_parser("propose", help="ranked class-agnostic object proposals (MSC-MultiBox) for an image")
    p.add_argument("image", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--weights", required=True, help="model.safetensors of an msc_multibox model")
    p.add_argument("--top", type=int, default=100, help="proposals to keep after NMS (default 100)")
    p.add_argument("--nms", type=float, default=0.5, help="NMS IoU threshold; 1 disables NMS (default 0.5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--draw", default=None, metavar="OUT.png", help="write the image with the top boxes drawn")
    p.add_argument("--draw-top", type=int, default=20, help="boxes drawn with --draw (default 20)")
    p.set_defaults(func=run)


def propose_image(model, image, top: int = 100, nms: float | None = 0.5):
    """Proposals for one ``3×H×W`` image in [0, 1]: resized to the model's input size, boxes mapped back."""
    import torch
    import torch.nn.functional as F

    h, w = image.shape[-2:]
    size = int(getattr(model, "image_size", max(h, w)))
    x = F.interpolate(image[None].float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True).clamp(0, 1)
    boxes, scores = model.propose(x, top_k=top, nms_iou=nms)
    scale = torch.tensor([w / size, h / size, w / size, h / size])
    return boxes[0] * scale, scores[0]


def run(args) -> int:
    import json

    import torch

    from vislearn.commands._output import image_output
    from vislearn.errors import UserError
    from vislearn.models import create_model_from_weights
    from vislearn.models.convert import weights_metadata

    if args.top < 1:
        raise UserError(f"--top must be >= 1, got {args.top}")
    out = image_output(args.draw, "--draw") if args.draw else None  # refused before any work
    if not 0 < args.nms <= 1:
        raise UserError(f"--nms must be in (0, 1], got {args.nms}")
    meta = weights_metadata(args.weights)
    if meta.get("model") != "msc_multibox":
        raise UserError(f"{args.weights} holds {meta.get('model') or 'no vislearn model'!r}, not msc_multibox "
                        "weights (train them with `vislearn train multibox`)")
    from vislearn.data.formats import load_image

    image = load_image(args.image)
    model = create_model_from_weights(args.weights).eval()
    with torch.no_grad():
        boxes, scores = propose_image(model, image, args.top, None if args.nms >= 1 else args.nms)
    rows = [{"rank": i + 1, "score": round(float(s), 5), "box": [round(float(v), 2) for v in b]}
            for i, (b, s) in enumerate(zip(boxes, scores, strict=True))]
    if args.json:
        print(json.dumps({"image": str(args.image), "size": list(image.shape[-2:]), "proposals": rows}))
    else:
        print(f"{'rank':>4} {'score':>8}  box (x1, y1, x2, y2) in pixels")
        for r in rows:
            print(f"{r['rank']:>4} {r['score']:>8.4f}  {r['box']}")
    if out is not None:
        from PIL import Image
        from torchvision.utils import draw_bounding_boxes

        k = min(args.draw_top, len(boxes))
        canvas = (image.clamp(0, 1) * 255).round().to(torch.uint8)
        if k:
            canvas = draw_bounding_boxes(canvas, boxes[:k], labels=[f"{i + 1}:{float(s):.2f}" for i, s in
                                                                    enumerate(scores[:k])], colors="yellow", width=2)
        Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(out)
        print(f"drew {k} boxes -> {out}")
    return 0
