"""Inference-only fusion for the CPU: convolutions with pre-packed oneDNN weights and the ReLU (or the
residual sum and its ReLU) applied inside the convolution.

Why (profiled on Inception-v4 / Inception-ResNet-v2, bf16 autocast, channels_last, one thread;
``benchmarks/inception_v4.py``): after BN folding, every eager ``conv2d`` call still (1) casts its
fp32 weight and bias to bf16 (autocast: about 300 ``aten::copy_`` per Inception-v4 forward), (2) has
oneDNN reorder the plain weight into its blocked layout inside ``mkldnn_convolution``, and (3) is
followed by a separate memory-bound ReLU pass (``clamp_min_``) and, in residual blocks, a separate
scaled add. :func:`fuse_conv_act` does each of these once, ahead of time: the weight is cast and
reordered once (``mkldnn._reorder_convolution_weight``), and ``mkldnn._convolution_pointwise`` runs
conv + bias + ReLU (or conv + bias + residual add + ReLU) as one primitive. This is what inductor's
freezing pass does for ``torch.compile``; here it is done in eager mode, without a compile.

What is fused (module tree only, no tracing):

* :class:`vislearn.nn.ConvBNAct` whose BN has been folded (``bn`` is an ``nn.Identity``) and whose
  activation is a ReLU or nothing → :class:`FusedConv2d` with or without ReLU;
* a module that declares ``residual_fusion() -> (conv child name, scale, relu)`` (the Inception-ResNet
  blocks): ``relu(x + scale·conv(y))``; the scale is folded into that conv's weight and bias, the sum
  and the ReLU run inside it;
* any other ``nn.Conv2d`` (plain, e.g. a biased 1×1 projection) → :class:`FusedConv2d` without ReLU;
* a module that declares ``fusion_keeps_activation() -> [child names]`` (the Inception pooling branch,
  which pools between its 1×1 conv and the ReLU) gets those ``ConvBNAct`` children's convolutions
  fused without their activation.

Numerics: the same bf16 (or fp32) oneDNN convolution as autocast runs; a fused sum is accumulated
before its single rounding, so results agree with the unfused model to bf16 rounding. The model
must be in eval mode with BN already folded (:func:`vislearn.nn.fold_batchnorm`); the result is for
inference on the CPU only (no autograd through the packed weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["FusedConv2d", "fuse_conv_act", "can_fuse"]


def can_fuse() -> bool:
    """True when this torch build has the oneDNN fused-convolution operators (CPU builds with mkldnn)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class FusedConv2d(nn.Module):
    """An inference-only 2-D convolution on pre-packed oneDNN weights with an optional fused ReLU and
    residual sum: ``relu?(residual? + scale·conv(x))``.

    The original ``conv`` is kept as a child (its state-dict keys and fp32 weights stay), the packed
    copy in ``dtype`` is an attribute. Inputs are cast to ``dtype``; outputs are ``dtype``.
    """

    def __init__(self, conv: nn.Conv2d, *, relu: bool, dtype: torch.dtype = torch.bfloat16,
                 scale: float = 1.0, residual: bool = False, input_size: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if type(conv) is not nn.Conv2d or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise UserError(f"FusedConv2d needs a zero-padded nn.Conv2d with numeric padding, got {conv!r}")
        if dtype not in (torch.float32, torch.bfloat16):
            raise UserError(f"FusedConv2d runs in float32 or bfloat16, got {dtype}")
        self.conv = conv
        self.training = False
        self.relu, self.residual, self.scale, self.dtype = relu, residual, float(scale), dtype
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        with torch.no_grad():
            w = (conv.weight.double() * scale).to(dtype).contiguous()
            self._bias = None if conv.bias is None else (conv.bias.double() * scale).to(dtype)
        self._weight, self._packed = w, None
        if input_size is not None:
            self._pack(input_size)

    def _pack(self, input_size: Sequence[int]) -> None:
        """Reorder the weight into oneDNN's blocked layout for inputs of ``input_size`` (done once: without
        a size oneDNN picks a generic layout and reorders on every call, about 3× slower)."""
        self._packed = torch.ops.mkldnn._reorder_convolution_weight(
            self._weight, self.padding, self.stride, self.dilation, self.groups, list(input_size))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.dtype != self.dtype:
            x = x.to(self.dtype)
        if self._packed is None:  # packed for the first input's size; other sizes still work
            self._pack(x.shape)
        act = "relu" if self.relu else None
        if self.residual:
            if residual is None:
                raise UserError("this FusedConv2d adds a residual: call it as conv(x, residual)")
            if residual.dtype != self.dtype:
                residual = residual.to(self.dtype)
            return torch.ops.mkldnn._convolution_pointwise.binary(
                x, residual, self._packed, self._bias, self.padding, self.stride, self.dilation, self.groups,
                "add", None, act, [], "")
        return torch.ops.mkldnn._convolution_pointwise(
            x, self._packed, self._bias, self.padding, self.stride, self.dilation, self.groups,
            act or "none", [], "")

    def train(self, mode: bool = True) -> FusedConv2d:
        if mode:
            raise UserError("FusedConv2d is for inference only")
        return super().train(False)

    def extra_repr(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        return f"relu={self.relu}, residual={self.residual}, scale={self.scale}, dtype={dtype}"


def _input_sizes(model: nn.Module, example_input: Any, dtype: torch.dtype | None) -> dict[nn.Module, tuple[int, ...]]:
    """Each convolution's input size on ``example_input``, run as the fused model will (bf16 autocast for
    bf16: the weights may already be stored in bf16, e.g. by ``vislearn.inference.optimize``)."""
    import contextlib

    sizes: dict[nn.Module, tuple[int, ...]] = {}

    def hook(mod, args):
        if args and isinstance(args[0], torch.Tensor):
            sizes.setdefault(mod, tuple(args[0].shape))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if type(m) is nn.Conv2d]
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == torch.bfloat16 else contextlib.nullcontext()
    try:
        with torch.no_grad(), cast:
            model(*example_input) if isinstance(example_input, (tuple, list)) else model(example_input)
    finally:
        for h in handles:
            h.remove()
    return sizes


def _fusable_conv(conv: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)


@torch.no_grad()
def fuse_conv_act(model: nn.Module, *, dtype: torch.dtype | None = torch.bfloat16,
                  example_input: Any = None) -> int:
    """Replace, in place, the convolutions of an eval-mode, BN-folded CPU ``model`` by :class:`FusedConv2d`.

    Args:
        model: modified in place; must be in eval mode and on the CPU.
        dtype: the compute dtype: ``torch.bfloat16`` (what bf16 autocast would run) or ``None``/
            ``torch.float32``.
        example_input: optional input of the size the model will mostly see: the packed weight layout
            is chosen for it (without one, each convolution packs for its first call's input size;
            any other size still works).

    Returns:
        The number of convolutions fused.
    """
    from vislearn.nn.conv import ConvBNAct

    dtype = torch.float32 if dtype is None else dtype
    if not can_fuse():
        raise UserError("this torch build has no oneDNN (mkldnn) fused convolutions")
    if any(m.training for m in model.modules()):
        raise UserError("fuse_conv_act needs a model in eval mode; call model.eval() first")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise UserError("fuse_conv_act is for models on the CPU")
    sizes = _input_sizes(model, example_input, dtype) if example_input is not None else {}
    count = 0

    def fused(conv: nn.Conv2d, **kw: Any) -> FusedConv2d:
        nonlocal count
        count += 1
        return FusedConv2d(conv, dtype=dtype, input_size=sizes.get(conv), **kw)

    keep_act = {id(getattr(parent, name)) for parent in model.modules()
                if callable(getattr(parent, "fusion_keeps_activation", None))
                for name in parent.fusion_keeps_activation()}
    for parent in list(model.modules()):
        if isinstance(parent, FusedConv2d):
            continue
        spec = getattr(parent, "residual_fusion", None)
        if callable(spec):
            name, scale, relu = spec()
            conv = getattr(parent, name)
            if _fusable_conv(conv):
                setattr(parent, name, fused(conv, relu=relu, scale=scale, residual=True))
        if isinstance(parent, ConvBNAct) and isinstance(parent.bn, nn.Identity) and _fusable_conv(parent.conv) \
                and isinstance(parent.act, (nn.ReLU, nn.Identity)):
            if id(parent) in keep_act:  # its owner applies something linear between conv and activation
                parent.conv = fused(parent.conv, relu=False)
            else:
                relu = isinstance(parent.act, nn.ReLU)
                parent.conv, parent.act = fused(parent.conv, relu=relu), nn.Identity().eval()
            continue
        for name, child in list(parent.named_children()):
            if _fusable_conv(child) and not isinstance(parent, (ConvBNAct, FusedConv2d)):
                setattr(parent, name, fused(child, relu=False))
    return count
