"""``torch.compile`` for the inference path: inductor, with weight freezing on CPU.

Freezing (``torch._inductor.config.freezing``) treats the parameters as constants, so inductor can
pre-pack the convolution weights into oneDNN's blocked layout once and constant-fold the arithmetic
on them (on CPU this is what makes a compiled convnet beat eager oneDNN, which reorders weights on
every call), and it is what lowers the int8 graph's quantize → conv → dequantize patterns to oneDNN
int8 kernels. The flag is set only around each call of the compiled function (which is when
inductor compiles or recompiles) and restored after it, so another ``torch.compile`` in the same
process is not affected. (Passing it as ``torch.compile(options={"freezing": True})`` is not
enough in torch 2.14: the int8 lowering reads the global flag and fails without it.) A frozen graph is only valid
while the weights do not change and gradients are off, which the :class:`InferenceModel` guarantees
(``no_grad``, and ``train()`` raises).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["compile_for_inference"]


class _FrozenCall:
    """Calls the compiled function with inductor's freezing flag set (and restored afterwards)."""

    def __init__(self, compiled: Callable[..., Any]) -> None:
        self.compiled = compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with torch._inductor.config.patch(freezing=True):
            return self.compiled(*args, **kwargs)


def compile_for_inference(fn: Callable[..., Any], device: torch.device) -> Callable[..., Any]:
    """``fn`` (a module or a bound method) compiled by inductor, with freezing on CPU.

    Compilation is lazy: the first call (and the first with a new input shape or autocast dtype)
    traces and compiles, which takes seconds for a small network and minutes for Inception-v4 on a
    few CPU cores; later calls reuse the compiled code. Call it under ``torch.no_grad()`` (freezing
    applies only to graphs compiled without gradients)."""
    compiled = torch.compile(fn, backend="inductor")
    return _FrozenCall(compiled) if device.type == "cpu" else compiled
