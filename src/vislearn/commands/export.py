"""``vislearn export --model NAME --weights PATH --format torchscript|onnx|pt2 --out FILE``.

The exported graph is the eval-mode model: [0, 1] RGB images in, logits out, with the model's
input normalisation baked in (so the exported file needs no preprocessing beyond resizing and
scaling to [0, 1]). Input validation is Python-side and is not part of the graph. TorchScript is
produced by ``torch.jit.trace`` at ``--image-size`` (the model's registered size by default);
ONNX by ``torch.onnx.export`` with a dynamic batch axis, and only when the ``onnx`` package is
installed (a clear error otherwise): one self-contained file while the weights fit under ONNX's 2 GB
protobuf limit, else the graph plus one external-data file named after it (``x.onnx.data``), which
must stay beside it. ``pt2`` is ``torch.export.export`` with a dynamic batch dimension, saved by
``torch.export.save`` (load it with ``torch.export.load(path).module()``); a model that returns a dict
or tuple (``msc_multibox``: ``{"loc", "logits"}``) keeps that structure. Every file is written under
a temporary name beside its target and renamed into place (ONNX in a temporary folder under its final
name, so the sidecar's recorded name is the final one): a failed export leaves nothing behind.
Weights written by ``vislearn train`` name their model and options, so ``--model`` is only needed
for a peer's file; ``--weights`` also takes a named remote source (``torchvision:IMAGENET1K_V1``,
``hf-hub:timm/inception_v3.tv_in1k``; :mod:`vislearn.models.hub`).
"""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("export", help="export a model to TorchScript, ONNX or a torch.export program (pt2)")
    p.add_argument("--model", default=None,
                   help="registry name (default: the one vislearn weights name, else inception_v3)")
    p.add_argument("--weights", default=None,
                   help="weights file or named source (torchvision:TAG, hf-hub:REPO); default: random initialisation")
    p.add_argument("--format", choices=FORMATS, default="torchscript")
    p.add_argument("--out", required=True, help="output file (.pt for TorchScript, .onnx for ONNX, .pt2 for pt2)")
    p.add_argument("--image-size", type=int, default=None, help="example input size (default: the model's)")
    p.add_argument("--num-classes", type=int, default=None, help="classes, when no weights file sets them")
    p.set_defaults(func=run)


FORMATS = ("torchscript", "onnx", "pt2")
ONNX_SINGLE_FILE_LIMIT = 2 * 1024 ** 3 - 64 * 1024 ** 2  # protobuf's 2 GB, less room for the graph itself


def export_model(model, fmt: str, out: str | os.PathLike, image_size: int,
                 single_file_limit: int = ONNX_SINGLE_FILE_LIMIT) -> list[str]:
    """Write ``model`` (eval mode, validation off in the copy it traces) as TorchScript, ONNX or pt2.

    Returns the files written: ``[out]``, or ``[out, out + ".data"]`` for an ONNX model whose weights
    take ``single_file_limit`` bytes or more.
    """
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
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a folder; name the file to write, e.g. {os.path.join(out, 'model.pt')}")
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

        nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        return _export_onnx(model, example, out, external=nbytes >= single_file_limit)
    elif fmt == "pt2":
        program = _torch_export(model, example)

        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: torch.export warns on a path not ending in .pt2
                torch.export.save(program, f)
    else:
        raise UserError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    atomic_write_with(out, write)
    return [out]


def _torch_export(model, example):
    """``torch.export.export`` with the batch dimension dynamic (traced at batch 2: torch.export
    specialises a dimension whose example size is 1)."""
    import torch

    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        return torch.export.export(model, (example.expand(2, *example.shape[1:]).contiguous(),),
                                   dynamic_shapes=({0: batch},))


def _export_onnx(model, example, out: str, external: bool) -> list[str]:
    """``torch.onnx.export`` into a temporary folder under the final file name, then move into place."""
    import contextlib
    import io
    import shutil
    import tempfile
    import warnings

    import torch

    from vislearn.io import fsync_dir, new_file_mode

    parent, name = os.path.split(os.path.abspath(out))
    tmpdir = tempfile.mkdtemp(dir=parent, prefix=f".{name}.")
    try:
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # the exporter prints progress lines, and warns that dynamic_axes is the older spelling
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (example,), os.path.join(tmpdir, name), input_names=["images"],
                              output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                              external_data=external)
        written = sorted(os.listdir(tmpdir), key=lambda f: f == name)  # the graph last, after its sidecar
        for f in written:
            os.chmod(os.path.join(tmpdir, f), new_file_mode())
            os.replace(os.path.join(tmpdir, f), os.path.join(parent, f))
        fsync_dir(parent)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return [os.path.join(os.path.dirname(out), f) for f in reversed(written)]


def run(args) -> int:
    from vislearn.models import create_model, create_model_from_weights, get_entry
    from vislearn.models.convert import weights_metadata

    meta = weights_metadata(args.weights) if args.weights is not None else {}
    name = args.model or meta.get("model") or "inception_v3"
    entry = get_entry(name)
    if args.weights is not None:
        model = create_model_from_weights(args.weights, name=name).eval()
    else:
        model = create_model(name, num_classes=args.num_classes).eval()
    size = args.image_size or meta.get("image_size") or entry.input_size[-1]
    files = export_model(model, args.format, args.out, size)
    chans = getattr(model, "in_chans", entry.input_size[0])
    print(f"wrote {files[0]} ({args.format}, input 1x{chans}x{size}x{size} in [0, 1], "
          f"normalization {getattr(model, 'normalization', None)})")
    if len(files) > 1:
        print(f"the weights are over 2 GB, so they are in {files[1]}: keep it beside {files[0]} (same folder, "
              "same name)")
    return 0
