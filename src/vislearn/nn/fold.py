"""Folding inference-mode BatchNorm into the preceding convolution or linear layer.

At inference BN is a fixed per-channel affine map (Ioffe & Szegedy 2015, Alg. 2, line 11):
``y = s·z + (β − s·E[z])`` with ``s = γ/√(Var[z]+ε)``. When ``z = W*x + b`` comes straight from a
convolution or linear layer, the two compose into one layer with weights ``s·W`` (output channel
``k`` scaled by ``s_k``) and bias ``s·(b − E[z]) + β`` — the BN costs nothing at inference.

Which BN directly follows which layer is found from the module tree:

* neighbours in an ``nn.Sequential`` (``Conv2d``/``Linear`` then BN; MLP's ``Linear → BN``),
* the ``conv``/``bn`` children of :class:`vislearn.nn.ConvBNAct` and of torchvision's
  ``BasicConv2d`` (Inception), and ``convK``/``bnK`` in torchvision's ResNet and its blocks,
* or, given ``example_input``, from an actual forward pass: a BN whose input tensor *is* the output
  tensor of a conv/linear layer (each called once). This finds pairs in any architecture.

A BN that cannot be folded (no producing layer found, ``track_running_stats=False``, a subclass
with extra behaviour such as timm's ``BatchNormAct2d``) is left in place, counted in the report and
named in a warning.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.nn.batchnorm import BatchNorm1d, BatchNorm2d, is_batchnorm

__all__ = ["fold_batchnorm", "FoldReport", "fold_bn_into"]

# Exact types only: a subclass may add behaviour (e.g. an activation) that folding would drop.
_FOLDABLE_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNorm1d, BatchNorm2d)
_PRODUCERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class FoldReport:
    """What :func:`fold_batchnorm` did: names of folded pairs and of BN layers left in place."""

    folded: list[tuple[str, str]] = field(default_factory=list)  # (producer name, BN name)
    unfolded: list[str] = field(default_factory=list)

    @property
    def num_folded(self) -> int:
        return len(self.folded)

    @property
    def num_unfolded(self) -> int:
        return len(self.unfolded)


def _bn_foldable(bn: nn.Module) -> bool:
    return type(bn) in _FOLDABLE_BN and bn.track_running_stats and bn.running_mean is not None


def _producer_ok(layer: nn.Module, bn: nn.Module) -> bool:
    if type(layer) not in _PRODUCERS:
        return False
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return out == bn.num_features


@torch.no_grad()
def fold_bn_into(layer: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` into ``layer`` (a Conv1d/2d/3d or Linear) in place, in float64 arithmetic.

    ``layer`` gets a bias if it had none; ``bn`` itself is not modified (replace it with an Identity).
    """
    if not _bn_foldable(bn) or not _producer_ok(layer, bn):
        raise UserError(f"cannot fold {type(bn).__name__} into {type(layer).__name__}")
    w = layer.weight
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(shift)
    new_w = w.double() * scale.reshape(-1, *([1] * (w.dim() - 1)))
    new_b = b * scale + shift
    layer.weight.copy_(new_w.to(w.dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b.to(dtype=w.dtype, device=w.device), requires_grad=w.requires_grad)
    else:
        layer.bias.copy_(new_b.to(layer.bias.dtype))


def _known_pairs(parent: nn.Module) -> list[tuple[str, str]]:
    """Child-name pairs (producer, bn) that a known block applies in that order."""
    from vislearn.nn.conv import ConvBNAct

    if isinstance(parent, ConvBNAct):
        return [("conv", "bn")]
    cls = type(parent)
    mod = cls.__module__
    if mod.startswith("torchvision.models") and cls.__name__ in ("BasicConv2d",):
        return [("conv", "bn")]
    if mod.startswith("torchvision.models.resnet") and cls.__name__ in ("ResNet", "BasicBlock", "Bottleneck"):
        return [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
    return []


def _is_plain_sequential(m: nn.Module) -> bool:
    return isinstance(m, nn.Sequential) and type(m).forward is nn.Sequential.forward


def _structural_pairs(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """(parent, producer child name, parent, bn child name) found from the module tree."""
    pairs = []
    for parent in model.modules():
        children = dict(parent.named_children())
        if _is_plain_sequential(parent):
            names = list(children)
            for a, b in zip(names, names[1:], strict=False):
                if type(children[a]) in _PRODUCERS and is_batchnorm(children[b]):
                    pairs.append((parent, a, parent, b))
        for a, b in _known_pairs(parent):
            if a in children and b in children and type(children[a]) in _PRODUCERS \
                    and is_batchnorm(children[b]):
                pairs.append((parent, a, parent, b))
    return pairs


@torch.no_grad()
def _traced_pairs(model: nn.Module, example_input: Any) -> list[tuple[nn.Module, str, nn.Module, str]]:
    """Pairs seen in a forward pass: a BN whose input is the very tensor a conv/linear returned.

    The tensor's version counter must be unchanged (an in-place op such as ``ReLU(inplace=True)``
    between the two keeps the object but changes the values), and both modules must run once.
    """
    parents: dict[nn.Module, tuple[nn.Module, str]] = {}
    for parent in model.modules():
        for name, child in parent.named_children():
            parents[child] = (parent, name)
    outputs: dict[int, tuple[nn.Module, int]] = {}
    calls: dict[nn.Module, int] = {}
    links: dict[nn.Module, nn.Module] = {}
    keep: list[Any] = []  # keeps outputs alive so their ids stay unique during the pass

    def after_producer(mod, args, out):
        calls[mod] = calls.get(mod, 0) + 1
        if isinstance(out, torch.Tensor):
            outputs[id(out)] = (mod, out._version)
            keep.append(out)

    def before_bn(mod, args):
        calls[mod] = calls.get(mod, 0) + 1
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and id(x) in outputs and outputs[id(x)][1] == x._version:
            links[mod] = outputs[id(x)][0]

    handles = []
    for m in model.modules():
        if type(m) in _PRODUCERS:
            handles.append(m.register_forward_hook(after_producer))
        elif is_batchnorm(m):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        model(*example_input) if isinstance(example_input, (tuple, list)) else model(example_input)
    finally:
        for h in handles:
            h.remove()
    pairs = []
    for bn, src in links.items():
        if calls.get(bn) == 1 and calls.get(src) == 1 and src in parents and bn in parents:
            pairs.append((*parents[src], *parents[bn]))
    return pairs


def fold_batchnorm(model: nn.Module, *, example_input: Any = None, inplace: bool = False,
                   return_report: bool = False, warn: bool = True) -> nn.Module | tuple[nn.Module, FoldReport]:
    """An inference copy of ``model`` with every BN that directly follows a conv/linear folded into it.

    Args:
        model: a model in eval mode (``model.eval()``): folding uses the population statistics, so a
            model in training mode is refused.
        example_input: optional input for one forward pass that discovers conv→BN pairs in any
            architecture (beyond ``nn.Sequential`` neighbours and the known conv/bn blocks).
        inplace: modify ``model`` itself instead of a deep copy.
        return_report: also return a :class:`FoldReport`.
        warn: warn (naming them) when BN layers are left in place.

    Returns:
        The folded model (folded BN layers replaced by ``nn.Identity``), and the report if asked. The
        report is also attached as ``model.bn_fold_report``.

    Example::

        fast = fold_batchnorm(create_model("bn_inception").eval())
    """
    if not isinstance(model, nn.Module):
        raise UserError(f"fold_batchnorm expects an nn.Module, got {type(model).__name__}")
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise UserError(f"fold_batchnorm needs a model in eval mode (BN must use its population statistics), "
                        f"but {len(training)} module(s) are in training mode, e.g. {training[0]!r}; "
                        "call model.eval() first")
    if not inplace:
        model = copy.deepcopy(model)
    pairs = _structural_pairs(model)
    if example_input is not None:
        pairs += _traced_pairs(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    report = FoldReport()
    done: set[int] = set()
    producers_used: set[int] = set()
    for parent, pname, bparent, bname in pairs:
        layer, bn = getattr(parent, pname), getattr(bparent, bname)
        if id(bn) in done or id(layer) in producers_used or not _bn_foldable(bn) or not _producer_ok(layer, bn):
            continue
        fold_bn_into(layer, bn)
        setattr(bparent, bname, nn.Identity().eval())  # the model is in eval mode: keep it so
        done.add(id(bn))
        producers_used.add(id(layer))
        report.folded.append((names.get(layer, pname), names.get(bn, bname)))
    report.unfolded = [n for n, m in model.named_modules() if is_batchnorm(m)]
    if report.unfolded and warn:
        warnings.warn(f"fold_batchnorm left {len(report.unfolded)} BatchNorm layer(s) in place (no directly "
                      f"preceding conv/linear found or not foldable): {', '.join(report.unfolded[:5])}"
                      + (" ..." if len(report.unfolded) > 5 else "")
                      + ("" if example_input is not None else "; pass example_input to trace the model"),
                      stacklevel=2)
    model.bn_fold_report = report
    return (model, report) if return_report else model
