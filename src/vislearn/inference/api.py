"""``optimize(model, ...)``: fold BN, channels_last, reduced precision or int8, optionally compiled."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.inference.compiling import compile_for_inference
from vislearn.inference.model import InferenceModel
from vislearn.inference.precision import cpu_supports_int8, resolve_precision

__all__ = ["optimize"]


def optimize(model: nn.Module, *, fold: bool = True, channels_last: bool = True, precision: str = "auto",
             device: str | torch.device | None = None, example_input: Any = None, compile: bool | None = None,
             calibration: Iterable[Any] | None = None, fuse: bool = True) -> InferenceModel:
    """An eval-mode copy of ``model`` set up for fast inference.

    Args:
        model: any module (a vislearn model, a torchvision/timm model, ...). It is deep-copied and put
            in eval mode; the original is not modified.
        fold: fold each BatchNorm that directly follows a conv/linear layer into it
            (:func:`vislearn.nn.fold_batchnorm`; exact to float rounding).
        channels_last: convert weights to, and run inputs in, the channels_last memory format.
        precision: ``"auto"`` (bf16 on CPUs with native bf16 and on bf16-capable GPUs, fp16 on other
            GPUs, fp32 otherwise), ``"bf16"``, ``"fp16"``, ``"fp32"``, or ``"int8"`` (CPU only:
            post-training static quantization, :mod:`vislearn.inference.int8`; needs ``calibration``
            and the ``int8`` extra, torchao).
        device: where to run (default: where the model's parameters are).
        example_input: passed to :func:`~vislearn.nn.fold_batchnorm` to find conv→BN pairs in
            architectures it does not know by structure.
        compile: run ``forward`` (and ``forward_features``, on first use) through ``torch.compile``
            (inductor; weight freezing on CPU, :mod:`vislearn.inference.compiling`). The first call per
            input shape compiles (seconds to minutes). Default: on for int8 (whose uncompiled graph is a
            slow fp32 reference), off otherwise.
        calibration: for ``precision="int8"``, an iterable of input batches (or ``(images, labels)``
            pairs) like those the model will see: a few hundred images set the activation ranges.
        fuse: eager bf16/fp32 on the CPU only: pre-pack each convolution's weight for oneDNN once and run
            its ReLU (or an Inception-ResNet residual sum and its ReLU) inside it
            (:func:`vislearn.nn.fuse.fuse_conv_act`; 3-15 % faster on the Inception family). Compiled
            and int8 models get the same from inductor.

    Returns:
        An :class:`InferenceModel` whose ``forward``/``forward_features`` take the same inputs as the
        model's and return float32 outputs.
    """
    from vislearn.nn.fold import fold_batchnorm

    if not isinstance(model, nn.Module):
        raise UserError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, InferenceModel):
        raise UserError("this model is already optimized")
    if compile not in (None, True, False):
        raise UserError(f"compile must be True or False, got {compile!r}")
    if device is None:
        p = next(iter(model.parameters()), None)
        device = p.device if p is not None else torch.device("cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"bad device {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but CUDA is not available")
    dtype = resolve_precision(precision, device)
    int8 = precision == "int8"
    if int8:
        _check_int8(device, calibration, compile)
    elif calibration is not None:
        raise UserError(f"calibration= is used only with precision='int8' (got precision={precision!r})")
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("fp16 autocast on CPU is usually slower than bf16 or fp32", stacklevel=2)
    compile = int8 if compile is None else compile

    model = copy.deepcopy(model).eval()
    if fold:
        model = fold_batchnorm(model, inplace=True, example_input=example_input)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)  # frozen for good: freezing and export both want constants
    if fuse and not compile and not int8 and device.type == "cpu" and dtype in (None, torch.bfloat16):
        from vislearn.nn.fuse import can_fuse, fuse_conv_act

        if can_fuse():
            fuse_conv_act(model, dtype=dtype)
    if dtype is not None and not compile:
        _store_in(model, dtype)
    fast = InferenceModel(model, device, dtype, channels_last, precision="int8" if int8 else None,
                          compiled=bool(compile))
    if int8:
        from vislearn.inference.int8 import quantize_int8

        def prepare(x):
            x = fast._prepare(x)
            fast._validate(x)
            return x

        runner = quantize_int8(model, calibration, prepare)
        fast.__dict__["_runner"] = compile_for_inference(runner, device) if compile else runner
    elif compile:
        fast.__dict__["_runner"] = compile_for_inference(model, device)
        if hasattr(model, "forward_features"):
            fast.__dict__["_features_factory"] = lambda: compile_for_inference(model.forward_features, device)
    return fast.eval()


def _store_in(model: nn.Module, dtype: torch.dtype) -> None:
    """Store conv and linear weights in the autocast dtype once, instead of autocast casting them on every call.

    Eager autocast converts each fp32 weight to bf16/fp16 at every forward (a full read and write of
    the parameters per call: 37% of BN-Inception's CPU time at batch 2, a few percent at batch 16);
    these layers' inputs are always cast to ``dtype`` under autocast, so stored ``dtype`` weights give
    the same result. Other layers (norms, embeddings, custom parameters) keep fp32. A compiled model
    does not need this: freezing folds the cast into the constants."""
    # a fused convolution runs on its own packed copy: the original it keeps (for its state-dict keys) is never
    # called, so casting it would only add a second low-precision copy of every conv weight
    from vislearn.nn.fuse import FusedConv2d

    kept = {id(m.conv) for m in model.modules() if isinstance(m, FusedConv2d)}
    for m in model.modules():
        if id(m) in kept:
            continue
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and type(m).forward in (
                nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward, nn.Linear.forward):
            for name, p in m.named_parameters(recurse=False):
                if p.is_floating_point():
                    memory_format = torch.channels_last if p.dim() == 4 and p.is_contiguous(
                        memory_format=torch.channels_last) else torch.contiguous_format
                    setattr(m, name, nn.Parameter(p.detach().to(dtype).contiguous(memory_format=memory_format),
                                                  requires_grad=False))


def _check_int8(device: torch.device, calibration: Any, compile: bool | None) -> None:
    if device.type != "cpu":
        raise UserError(f"precision='int8' runs on the CPU only (x86 inductor quantizer), got device {device}")
    if calibration is None:
        raise UserError("precision='int8' needs calibration=: an iterable of a few input batches like those "
                        "the model will see (they set the activation ranges)")
    from vislearn.inference.int8 import _torchao_pt2e

    _torchao_pt2e()  # one clear error now when the int8 extra is missing
    if not cpu_supports_int8():
        warnings.warn("this CPU has no VNNI/AMX int8 instructions: int8 inference will be slow (often slower "
                      "than fp32); precision='auto' is the better choice here", stacklevel=3)
    if compile is False:
        warnings.warn("int8 without compile runs the reference graph (quantize/dequantize around fp32 "
                      "operators): correct but slower than fp32; pass compile=True for speed", stacklevel=3)
