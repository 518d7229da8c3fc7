"""TF-slim Inception-v3 weights: the variable-name tables, the converter into our state dict, and the
inverse (our weights as TF-slim-named arrays).

The names are those of tensorflow/models ``research/slim/nets/inception_v3.py``; the converter
registers itself for ``inception_v3`` (an ``.npz`` keyed by TF variable name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.base import INCEPTION_MEAN, INCEPTION_STD
from vislearn.models.convert import Converter, StateDict, register_converter
from vislearn.models.inception_v3 import set_tf_avg_pool

__all__ = ["INCEPTION_V3_TF_SCOPES", "convert_tf_slim_v3", "tf_conv_bn", "tf_dense_from_conv", "tf_slim_arrays",
           "tf_slim_from_model"]


def tf_slim_arrays(sd: StateDict, root: str) -> StateDict:
    """TF variable names normalised: ``:0`` suffixes and the ``root/`` scope (e.g. ``InceptionV3/``)
    removed, an ``ExponentialMovingAverage`` shadow preferred over the raw variable when present."""
    out: StateDict = {}
    for k, v in sd.items():
        name = k.removesuffix(":0")
        name = name[len(root) + 1:] if name.startswith(root + "/") else name
        if name.endswith("/ExponentialMovingAverage"):
            continue
        out[name] = v
    for k, v in sd.items():  # the averaged weights are what Google evaluated (paper Sec. 8)
        name = k.removesuffix(":0")
        name = name[len(root) + 1:] if name.startswith(root + "/") else name
        if name.endswith("/ExponentialMovingAverage"):
            out[name.removesuffix("/ExponentialMovingAverage")] = v
    return out


def _take(arrays: StateDict, name: str) -> torch.Tensor:
    if name not in arrays:
        raise UserError(f"TF-slim weights: missing variable {name!r}")
    return arrays[name].float()


def tf_conv_bn(arrays: StateDict, scope: str, prefix: str) -> StateDict:
    """One TF-slim ``conv2d`` + ``BatchNorm`` scope → our ``ConvBNAct`` keys under ``prefix``.

    ``scope/weights`` [kh, kw, in, out] → ``prefix.conv.weight`` [out, in, kh, kw];
    ``scope/BatchNorm/{beta, moving_mean, moving_variance}`` → ``prefix.bn.{bias, running_mean,
    running_var}``; ``scope/BatchNorm/gamma`` → ``prefix.bn.weight`` when present, else ones (the
    released models were trained with ``scale=False``).
    """
    w = _take(arrays, f"{scope}/weights")
    if w.dim() != 4:
        raise UserError(f"TF-slim weights: {scope}/weights should be 4-D [kh, kw, in, out], "
                        f"got {tuple(w.shape)}")
    beta = _take(arrays, f"{scope}/BatchNorm/beta")
    gamma = arrays.get(f"{scope}/BatchNorm/gamma")
    return {
        f"{prefix}.conv.weight": w.permute(3, 2, 0, 1).contiguous(),
        f"{prefix}.bn.weight": gamma.float() if gamma is not None else torch.ones_like(beta),
        f"{prefix}.bn.bias": beta,
        f"{prefix}.bn.running_mean": _take(arrays, f"{scope}/BatchNorm/moving_mean"),
        f"{prefix}.bn.running_var": _take(arrays, f"{scope}/BatchNorm/moving_variance"),
        f"{prefix}.bn.num_batches_tracked": torch.zeros((), dtype=torch.long),
    }


def tf_dense_from_conv(arrays: StateDict, scope: str, prefix: str, num_classes: int) -> StateDict:
    """A TF-slim 1×1 logits convolution (``weights`` [1, 1, C, K], ``biases`` [K]) → ``prefix.{weight,
    bias}``; K = num_classes + 1 drops TF's background class 0."""
    w, b = _take(arrays, f"{scope}/weights"), _take(arrays, f"{scope}/biases")
    w = w.reshape(-1, w.shape[-1]).t()
    if w.shape[0] == num_classes + 1:
        w, b = w[1:], b[1:]
    elif w.shape[0] != num_classes:
        raise UserError(f"TF-slim weights: {scope} has {w.shape[0]} classes; the model has {num_classes} "
                        f"(expected {num_classes} or {num_classes + 1} with background)")
    return {f"{prefix}.weight": w.contiguous(), f"{prefix}.bias": b.contiguous()}


def _tf_v3_scopes() -> dict[str, str]:
    """Our ConvBNAct prefix → TF-slim scope (relative to ``InceptionV3/``) for every conv of v3."""
    m: dict[str, str] = {
        "Conv2d_1a_3x3": "Conv2d_1a_3x3", "Conv2d_2a_3x3": "Conv2d_2a_3x3", "Conv2d_2b_3x3": "Conv2d_2b_3x3",
        "Conv2d_3b_1x1": "Conv2d_3b_1x1", "Conv2d_4a_3x3": "Conv2d_4a_3x3",
    }
    for blk in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        # TF-slim names Mixed_5c's 5×5 branch differently (Conv2d_0b_1x1, Conv_1_0c_5x5): a known quirk
        b1 = ("Conv2d_0b_1x1", "Conv_1_0c_5x5") if blk == "Mixed_5c" else ("Conv2d_0a_1x1", "Conv2d_0b_5x5")
        m.update({f"{blk}.branch1x1": f"{blk}/Branch_0/Conv2d_0a_1x1",
                  f"{blk}.branch5x5_1": f"{blk}/Branch_1/{b1[0]}",
                  f"{blk}.branch5x5_2": f"{blk}/Branch_1/{b1[1]}",
                  f"{blk}.branch3x3dbl_1": f"{blk}/Branch_2/Conv2d_0a_1x1",
                  f"{blk}.branch3x3dbl_2": f"{blk}/Branch_2/Conv2d_0b_3x3",
                  f"{blk}.branch3x3dbl_3": f"{blk}/Branch_2/Conv2d_0c_3x3",
                  f"{blk}.branch_pool": f"{blk}/Branch_3/Conv2d_0b_1x1"})
    m.update({"Mixed_6a.branch3x3": "Mixed_6a/Branch_0/Conv2d_1a_1x1",
              "Mixed_6a.branch3x3dbl_1": "Mixed_6a/Branch_1/Conv2d_0a_1x1",
              "Mixed_6a.branch3x3dbl_2": "Mixed_6a/Branch_1/Conv2d_0b_3x3",
              "Mixed_6a.branch3x3dbl_3": "Mixed_6a/Branch_1/Conv2d_1a_1x1"})
    for blk in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        m.update({f"{blk}.branch1x1": f"{blk}/Branch_0/Conv2d_0a_1x1",
                  f"{blk}.branch7x7_1": f"{blk}/Branch_1/Conv2d_0a_1x1",
                  f"{blk}.branch7x7_2": f"{blk}/Branch_1/Conv2d_0b_1x7",
                  f"{blk}.branch7x7_3": f"{blk}/Branch_1/Conv2d_0c_7x1",
                  f"{blk}.branch7x7dbl_1": f"{blk}/Branch_2/Conv2d_0a_1x1",
                  f"{blk}.branch7x7dbl_2": f"{blk}/Branch_2/Conv2d_0b_7x1",
                  f"{blk}.branch7x7dbl_3": f"{blk}/Branch_2/Conv2d_0c_1x7",
                  f"{blk}.branch7x7dbl_4": f"{blk}/Branch_2/Conv2d_0d_7x1",
                  f"{blk}.branch7x7dbl_5": f"{blk}/Branch_2/Conv2d_0e_1x7",
                  f"{blk}.branch_pool": f"{blk}/Branch_3/Conv2d_0b_1x1"})
    m.update({"Mixed_7a.branch3x3_1": "Mixed_7a/Branch_0/Conv2d_0a_1x1",
              "Mixed_7a.branch3x3_2": "Mixed_7a/Branch_0/Conv2d_1a_3x3",
              "Mixed_7a.branch7x7x3_1": "Mixed_7a/Branch_1/Conv2d_0a_1x1",
              "Mixed_7a.branch7x7x3_2": "Mixed_7a/Branch_1/Conv2d_0b_1x7",
              "Mixed_7a.branch7x7x3_3": "Mixed_7a/Branch_1/Conv2d_0c_7x1",
              "Mixed_7a.branch7x7x3_4": "Mixed_7a/Branch_1/Conv2d_1a_3x3"})
    for blk in ("Mixed_7b", "Mixed_7c"):
        # TF-slim quirk: the 3×1 of Branch_1 is Conv2d_0b_3x1 in Mixed_7b but Conv2d_0c_3x1 in Mixed_7c
        b1b = "Conv2d_0b_3x1" if blk == "Mixed_7b" else "Conv2d_0c_3x1"
        m.update({f"{blk}.branch1x1": f"{blk}/Branch_0/Conv2d_0a_1x1",
                  f"{blk}.branch3x3_1": f"{blk}/Branch_1/Conv2d_0a_1x1",
                  f"{blk}.branch3x3_2a": f"{blk}/Branch_1/Conv2d_0b_1x3",
                  f"{blk}.branch3x3_2b": f"{blk}/Branch_1/{b1b}",
                  f"{blk}.branch3x3dbl_1": f"{blk}/Branch_2/Conv2d_0a_1x1",
                  f"{blk}.branch3x3dbl_2": f"{blk}/Branch_2/Conv2d_0b_3x3",
                  f"{blk}.branch3x3dbl_3a": f"{blk}/Branch_2/Conv2d_0c_1x3",
                  f"{blk}.branch3x3dbl_3b": f"{blk}/Branch_2/Conv2d_0d_3x1",
                  f"{blk}.branch_pool": f"{blk}/Branch_3/Conv2d_0b_1x1"})
    m.update({"AuxLogits.conv0": "AuxLogits/Conv2d_1b_1x1", "AuxLogits.conv1": "AuxLogits/Conv2d_2a_5x5"})
    return m


INCEPTION_V3_TF_SCOPES: dict[str, str] = _tf_v3_scopes()
"""Our ConvBNAct prefix → TF-slim scope under ``InceptionV3/`` (tensorflow/models
``research/slim/nets/inception_v3.py``). Each scope holds ``weights`` and ``BatchNorm/{beta,
moving_mean, moving_variance}`` (see :func:`tf_conv_bn`); the classifiers are 1×1 convolutions with
biases: ``Logits/Conv2d_1c_1x1`` → ``fc`` and ``AuxLogits/Conv2d_2b_1x1`` → ``AuxLogits.fc``, with
1001 outputs of which class 0 (background) is dropped (see :func:`tf_dense_from_conv`)."""


def convert_tf_slim_v3(sd: StateDict, model: nn.Module) -> StateDict:
    """TF-slim Inception-v3 arrays (an ``.npz`` keyed by variable name) → our state dict.

    Also switches ``model`` to TF "SAME" average pooling (padding excluded from the mean), the
    semantics those weights were trained with. The auxiliary head is read when the model has one.
    """
    arrays = tf_slim_arrays(sd, "InceptionV3")
    has_aux = getattr(model, "AuxLogits", None) is not None
    num_classes = model.fc.out_features
    out: StateDict = {}
    for prefix, scope in INCEPTION_V3_TF_SCOPES.items():
        if prefix.startswith("AuxLogits.") and not has_aux:
            continue
        out.update(tf_conv_bn(arrays, scope, prefix))
    out.update(tf_dense_from_conv(arrays, "Logits/Conv2d_1c_1x1", "fc", num_classes))
    if has_aux:
        out.update(tf_dense_from_conv(arrays, "AuxLogits/Conv2d_2b_1x1", "AuxLogits.fc", num_classes))
    set_tf_avg_pool(model, True)
    return out


def _is_tf_slim_v3(sd: StateDict) -> bool:
    return any(re.match(r"^(InceptionV3/)?Conv2d_1a_3x3/weights(:0)?$", k) for k in sd)


register_converter(Converter(source="tf-slim", model_prefix="inception_v3", detect=_is_tf_slim_v3,
                             convert=convert_tf_slim_v3, normalization=(INCEPTION_MEAN, INCEPTION_STD),
                             options=lambda sd: {"aux_logits": any("AuxLogits/" in k for k in sd)}))


def tf_slim_from_model(model: nn.Module, background: bool = True) -> dict[str, torch.Tensor]:
    """The inverse mapping: our weights as TF-slim-named arrays (``InceptionV3/...``), with an added
    zero background class when ``background``. Used by tests and to export to TF tooling.
    BN γ is not exported (TF-slim's ``scale=False``): only models with γ = 1 round-trip exactly."""
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for prefix, scope in INCEPTION_V3_TF_SCOPES.items():
        if f"{prefix}.conv.weight" not in sd:
            continue
        out[f"InceptionV3/{scope}/weights"] = sd[f"{prefix}.conv.weight"].permute(2, 3, 1, 0).contiguous()
        out[f"InceptionV3/{scope}/BatchNorm/beta"] = sd[f"{prefix}.bn.bias"]
        out[f"InceptionV3/{scope}/BatchNorm/moving_mean"] = sd[f"{prefix}.bn.running_mean"]
        out[f"InceptionV3/{scope}/BatchNorm/moving_variance"] = sd[f"{prefix}.bn.running_var"]
    heads: Iterable[tuple[str, str]] = [("fc", "Logits/Conv2d_1c_1x1")]
    if "AuxLogits.fc.weight" in sd:
        heads = [*heads, ("AuxLogits.fc", "AuxLogits/Conv2d_2b_1x1")]
    for prefix, scope in heads:
        w, b = sd[f"{prefix}.weight"], sd[f"{prefix}.bias"]
        if background:
            w = torch.cat([torch.zeros(1, w.shape[1]), w])
            b = torch.cat([torch.zeros(1), b])
        out[f"InceptionV3/{scope}/weights"] = w.t().reshape(1, 1, w.shape[1], w.shape[0]).contiguous()
        out[f"InceptionV3/{scope}/biases"] = b.contiguous()
    return out

