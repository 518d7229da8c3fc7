"""The :class:`InferenceModel` wrapper that :func:`~vislearn.inference.optimize` returns."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["InferenceModel"]


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

    ``model`` is the folded eager module (fp32 weights; under eager bf16/fp16 its conv and linear
    weights are stored in that dtype, so call it through this wrapper, under autocast). When
    ``runner`` is given (a ``torch.compile``d version of it, or the compiled int8 graph), ``forward``
    calls the runner instead; the input is
    then validated here, eagerly, because compiled code skips the model's own data-dependent checks.
    ``features_runner`` builds the compiled ``forward_features`` on first use (``None``: eager).

    Attributes not defined here (``normalization``, ``feature_info``, ``num_classes``, ...) are read
    from the wrapped ``model``.
    """

    def __init__(self, model: nn.Module, device: torch.device, dtype: torch.dtype | None,
                 channels_last: bool, *, precision: str | None = None, compiled: bool = False,
                 runner: Callable[..., Any] | None = None,
                 features_runner: Callable[[], Callable[..., Any]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.dtype = dtype
        self.channels_last = channels_last
        self.precision = precision or (str(dtype).removeprefix("torch.").replace("bfloat16", "bf16")
                                       .replace("float16", "fp16") if dtype is not None else "fp32")
        self.compiled = compiled
        # plain attributes, not submodules: the compiled code shares the model's parameters
        self.__dict__["_runner"] = runner
        self.__dict__["_features_factory"] = features_runner
        self.__dict__["_features_runner"] = None

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
        """The autocast context this model runs under (a no-op for fp32 and int8)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def _prepare(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _validate(self, x: Any) -> None:
        from vislearn.models.base import check_images

        if getattr(self.model, "validate_inputs", False) and isinstance(x, torch.Tensor):
            check_images(x, self.model.in_chans, self.model.min_input_size, where=type(self.model).__name__)

    def _run(self, fn, *args: Any, compiled: bool = False, **kwargs: Any) -> Any:
        args = tuple(self._prepare(a) for a in args)
        if compiled and args:
            self._validate(args[0])
        with torch.no_grad(), self.autocast():
            return _to_float32(fn(*args, **kwargs))

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        runner = self.__dict__["_runner"]
        if runner is None:
            return self._run(self.model, x, *args, **kwargs)
        return self._run(runner, x, *args, compiled=True, **kwargs)

    def forward_features(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if self.precision == "int8":
            raise UserError("an int8 model quantizes forward() only; optimize() another copy with "
                            "precision='bf16' or 'fp32' for forward_features")
        if not hasattr(self.model, "forward_features"):
            raise UserError(f"{type(self.model).__name__} has no forward_features")
        factory = self.__dict__["_features_factory"]
        if factory is None:
            return self._run(self.model.forward_features, x, *args, **kwargs)
        if self.__dict__["_features_runner"] is None:
            self.__dict__["_features_runner"] = factory()
        return self._run(self.__dict__["_features_runner"], x, *args, compiled=True, **kwargs)

    def train(self, mode: bool = True) -> InferenceModel:
        if mode:
            raise UserError("an optimized model is for inference only (BN is folded); optimize() a copy of "
                            "the training model instead")
        return super().train(False)

    def extra_repr(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.") if self.dtype is not None else "fp32"
        return (f"device={self.device}, precision={self.precision}, autocast={dtype}, "
                f"channels_last={self.channels_last}, compiled={self.compiled}")
