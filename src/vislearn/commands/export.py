"""``vislearn export --model NAME --weights PATH --format torchscript|onnx --out FILE``.

The exported graph is the eval-mode model: [0, 1] RGB images in, logits out, with the model's
input normalisation baked in (so the exported file needs no preprocessing beyond resizing and
scaling to [0, 1]). Input validation is Python-side and is not part of the graph. TorchScript is
produced by ``torch.jit.trace`` at ``--image-size`` (the model's registered size by default);
ONNX by ``torch.onnx.export`` with a dynamic batch axis, and only when the ``onnx`` package is
installed (a clear error otherwise).
"""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to TorchScript or ONNX")
    p.add_argument("--model", default="inception_v3", help="registry name (default: inception_v3)")
    p.add_argument("--weights", default=None, help="weights file (default: the model's random initialisation)")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    p.add_argument("--out", required=True, help="output file (.pt for TorchScript, .onnx for ONNX)")
    p.add_argument("--image-size", type=int, default=None, help="example input size (default: the model's)")
    p.add_argument("--num-classes", type=int, default=None, help="classes, when no weights file sets them")
    p.set_defaults(func=run)


def export_model(model, fmt: str, out: str | os.PathLike, image_size: int) -> None:
    """Write ``model`` (eval mode, validation off in the copy it traces) as TorchScript or ONNX."""
    import copy

    import torch

    from vislearn.errors import UserError
    from vislearn.io import atomic_write_with

    model = copy.deepcopy(model).eval()
    if hasattr(model, "validate_inputs"):
        model.validate_inputs = False
    chans = getattr(model, "in_chans", 3)
    minimum = getattr(model, "min_input_size", 1)
    if image_size < minimum:
        raise UserError(f"--image-size must be at least {minimum} for {type(model).__name__}, got {image_size}")
    example = torch.rand(1, chans, image_size, image_size)
    out = os.fspath(out)
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise UserError(f"output folder does not exist: {parent}")
    if fmt == "torchscript":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            # torch marks jit.trace deprecated in favour of torch.export, but TorchScript files remain
            # the format C++/mobile runtimes load; the normalisation branch is a per-model constant
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            write = torch.jit.trace(model, example, check_trace=False).save
    elif fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("ONNX export needs the 'onnx' package (pip install onnx onnxscript); "
                            "use --format torchscript instead") from None

        def write(tmp: str) -> None:
            with torch.no_grad():
                torch.onnx.export(model, (example,), tmp, input_names=["images"], output_names=["logits"],
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    else:
        raise UserError(f"unknown format {fmt!r}; choose torchscript or onnx")
    atomic_write_with(out, write)


def run(args) -> int:
    from vislearn.models import create_model, create_model_from_weights, get_entry

    entry = get_entry(args.model)
    if args.weights is not None:
        model = create_model_from_weights(args.weights, name=args.model).eval()
    else:
        model = create_model(args.model, num_classes=args.num_classes).eval()
    size = args.image_size or entry.input_size[-1]
    export_model(model, args.format, args.out, size)
    print(f"wrote {args.out} ({args.format}, input 1x{entry.input_size[0]}x{size}x{size} in [0, 1], "
          f"normalization {getattr(model, 'normalization', None)})")
    return 0
