"""The inference fast path: ``optimize(model)`` → an eval-mode model that is cheaper to run.

Three independent steps, each optional:

1. **Fold BatchNorm** into the preceding conv/linear layer (:func:`vislearn.nn.fold_batchnorm`; at
   inference BN is a fixed affine map, Ioffe & Szegedy 2015, Alg. 2), removing a memory-bound pass
   over every activation map.
2. **channels_last** weights and inputs: oneDNN's (CPU) and cuDNN's (GPU) fastest convolution layout.
3. **Reduced-precision autocast**: bf16 on CPUs with native bf16 instructions (AVX-512-BF16 or
   AMX-BF16) and on CUDA devices that support it, else fp16 on CUDA; plain fp32 elsewhere. Outputs
   are returned in float32 so callers never see the reduced dtype.

Example::

    from vislearn.models import create_model
    from vislearn.inference import optimize

    fast = optimize(create_model("bn_inception"))      # eval mode, folded, channels_last, bf16 if fast
    logits = fast(images)                              # images: float N×3×H×W in [0, 1]; logits float32
    feats = fast.forward_features(images)              # backbone interface still there
    fast.normalization, fast.feature_info              # forwarded to the wrapped model

The result is for inference only (``fast.train()`` raises). The input model is not modified.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["optimize", "InferenceModel", "cpu_supports_bf16", "resolve_precision"]

_PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX-512-BF16 or AMX-BF16), so bf16 autocast pays off.

    Reads the CPU flags on Linux; elsewhere trusts oneDNN's own check on an AVX-512 capable torch build.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
        return capability.startswith("AVX512") and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # an old or unusual build: be conservative
        return False


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain fp32."""
    if precision not in _PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(_PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else None
    return None


def _to_float32(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, (list, tuple)):
        items = [_to_float32(o) for o in out]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)
    if isinstance(out, dict):
        return {k: _to_float32(v) for k, v in out.items()}
    return out


class InferenceModel(nn.Module):
    """Runs ``model`` on ``device`` under autocast to ``dtype`` with channels_last inputs; float32 outputs.

    Attributes not defined here (``normalization``, ``feature_info``, ``num_classes``, ...) are read
    from the wrapped ``model``.
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype | None,
                 channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(self._modules["model"], name)

    @property
    def normalization(self):
        return self.model.normalization

    @normalization.setter
    def normalization(self, value) -> None:
        self.model.normalization = value

    @property
    def feature_info(self):
        return self.model.feature_info

    def autocast(self):
        """The autocast context this model runs under (a no-op for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _prepare(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _run(self, fn, *args: Any, **kwargs: Any) -> Any:
        args = tuple(self._prepare(a) for a in args)
        with torch.no_grad(), self.autocast():
            return _to_float32(fn(*args, **kwargs))

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        return self._run(self.model, x, *args, **kwargs)

    def forward_features(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if not hasattr(self.model, "forward_features"):
            raise UserError(f"{type(self.model).__name__} has no forward_features")
        return self._run(self.model.forward_features, x, *args, **kwargs)

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise UserError("an optimized model is for inference only (BN is folded); optimize() a copy of "
                            "the training model instead")
        return super().train(False)

    def extra_repr(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.") if self.dtype is not None else "fp32"
        return f"device={self.device}, autocast={dtype}, channels_last={self.channels_last}"


def optimize(model: nn.Module, *, fold: bool = True, channels_last: bool = True, precision: str = "auto",
             device: str | torch.device | None = None, example_input: Any = None) -> InferenceModel:
    """An eval-mode copy of ``model`` set up for fast inference.

    Args:
        model: any module (a vislearn model, a torchvision/timm model, ...). It is deep-copied and put
            in eval mode; the original is not modified.
        fold: fold each BatchNorm that directly follows a conv/linear layer into it
            (:func:`vislearn.nn.fold_batchnorm`; exact to float rounding).
        channels_last: convert weights to, and run inputs in, the channels_last memory format.
        precision: ``"auto"`` (bf16 on CPUs with native bf16 and on bf16-capable GPUs, fp16 on other
            GPUs, fp32 otherwise), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        device: where to run (default: where the model's parameters are).
        example_input: passed to :func:`~vislearn.nn.fold_batchnorm` to find conv→BN pairs in
            architectures it does not know by structure.

    Returns:
        An :class:`InferenceModel` whose ``forward``/``forward_features`` take the same inputs as the
        model's and return float32 outputs.
    """
    from vislearn.nn.fold import fold_batchnorm

    if not isinstance(model, nn.Module):
        raise UserError(f"optimize expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, InferenceModel):
        raise UserError("this model is already optimized")
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
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("fp16 autocast on CPU is usually slower than bf16 or fp32", stacklevel=2)
    model = copy.deepcopy(model).eval()
    if fold:
        model = fold_batchnorm(model, inplace=True, example_input=example_input)
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return InferenceModel(model, device, dtype, channels_last).eval()
