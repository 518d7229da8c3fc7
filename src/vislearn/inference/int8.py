"""int8 post-training static quantization through the PT2E flow (torchao), lowered by inductor.

The steps (torchao's ``torchao.quantization.pt2e``; the flow left ``torch.ao.quantization`` in
torch 2.10+):

1. ``torch.export`` the folded fp32 model (batch dimension dynamic) into an aten graph;
   then every ``add``/``sub`` with an ``alpha`` (``x + alpha · y``, e.g. Inception-ResNet's scaled
   residual sums, ``torch.add(x, r, alpha=scale)``) is rewritten to an explicit ``mul`` then ``add``/``sub``
   (:func:`explicit_alpha`): inductor's int8 conv+add fusion matches ``add(conv(...), other)`` and drops
   the ``alpha`` keyword, so the compiled graph computed ``x + y`` (Inception-ResNet-v2 at 75 px: cosine
   0.57 to the fp32 logits; the reference graph, which keeps ``alpha``, 0.9995);
2. ``prepare_pt2e`` with the ``X86InductorQuantizer`` and its default config: per-channel symmetric
   int8 weights, per-tensor affine uint8 activations, observers placed where inductor has fused int8
   kernels (conv, linear, and the ops that pass a quantized tensor through: pooling, concat, ...);
3. calibration: the observers see the user's batches and record activation ranges (min/max);
4. ``convert_pt2e``: observers become quantize/dequantize pairs (the "reference" int8 graph, which
   still computes in fp32 and is slow: it is for checking, not for speed);
5. ``torch.compile`` with freezing: inductor pattern-matches dequant → conv → quant into oneDNN int8
   convolutions with pre-packed int8 weights.

torchao is an optional dependency (``pip install 'vislearn[int8]'``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["explicit_alpha", "quantize_int8"]


def _torchao_pt2e():
    try:
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
            X86InductorQuantizer,
            get_default_x86_inductor_quantization_config,
        )
    except ImportError as e:
        raise UserError("precision='int8' needs torchao: pip install 'vislearn[int8]' (the int8 extra) "
                        f"[{e}]") from None
    return prepare_pt2e, convert_pt2e, X86InductorQuantizer, get_default_x86_inductor_quantization_config


def quantize_int8(model: nn.Module, calibration: Iterable[Any], prepare_input) -> torch.fx.GraphModule:
    """The converted (reference, uncompiled) int8 graph of ``model`` calibrated on ``calibration``.

    Args:
        model: the folded, channels_last fp32 model in eval mode; not modified.
        calibration: an iterable of input batches (tensors, or ``(images, labels)`` pairs whose first
            item is used), in the same form as the model's input.
        prepare_input: moves a batch to the model's device and memory format.
    """
    prepare_pt2e, convert_pt2e, Quantizer, default_config = _torchao_pt2e()
    batches = [prepare_input(_images(b)) for b in calibration]
    if not batches:
        raise UserError("precision='int8': calibration= gave no batches (pass a few representative input batches)")
    example = batches[0]
    dynamic = ({0: torch.export.Dim.AUTO},) if example.dim() > 0 else None
    try:
        with torch.no_grad():
            graph = torch.export.export(model, (example,), dynamic_shapes=dynamic).module()
    except Exception as e:  # torch.export's errors are many types; the user needs to know which model failed
        raise UserError(f"precision='int8': {type(model).__name__} cannot be captured by torch.export "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    explicit_alpha(graph)
    quantizer = Quantizer().set_global(default_config())
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in batches:
            prepared(x)
    return convert_pt2e(prepared)


def explicit_alpha(graph: torch.fx.GraphModule) -> int:
    """Rewrite ``aten.add/sub.Tensor(x, y, alpha=a)`` (``a`` ≠ 1) in ``graph`` as ``add/sub(x, mul(y, a))``, in place.

    Same values; it keeps the scale out of inductor's int8 conv+binary fusion, whose pattern ignores
    ``alpha``. The scaled operand then stays a float ``mul`` that inductor fuses with the add (the
    fused int8 conv+add kernel is lost for these sums). Returns the number of nodes rewritten.
    """
    binary = {torch.ops.aten.add.Tensor, torch.ops.aten.sub.Tensor}
    rewritten = 0
    for node in list(graph.graph.nodes):
        if node.op != "call_function" or node.target not in binary:
            continue
        alpha = node.kwargs.get("alpha", 1)
        if alpha == 1 or len(node.args) != 2:
            continue
        with graph.graph.inserting_before(node):
            scaled = graph.graph.call_function(torch.ops.aten.mul.Tensor, (node.args[1], alpha))
        scaled.meta.update({k: v for k, v in node.args[1].meta.items() if k in ("val", "tensor_meta")}
                           if isinstance(node.args[1], torch.fx.Node) else {})
        node.args = (node.args[0], scaled)
        node.kwargs = {k: v for k, v in node.kwargs.items() if k != "alpha"}
        rewritten += 1
    if rewritten:
        graph.graph.lint()
        graph.recompile()
    return rewritten


def _images(batch: Any) -> torch.Tensor:
    if isinstance(batch, (tuple, list)) and batch:
        batch = batch[0]
    if not isinstance(batch, torch.Tensor):
        raise UserError(f"calibration batches must be tensors or (images, labels) pairs, got {type(batch).__name__}")
    return batch
