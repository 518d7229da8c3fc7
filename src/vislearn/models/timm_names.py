"""timm's state-dict names for our Inception-v4 and Inception-ResNet-v2, and the converters that use them.

timm numbers Inception-v4's layers ``features.N`` and names Inception-ResNet-v2's after TF-slim's scopes
(``conv2d_1a``, ``mixed_5b``, ``repeat.N``, ``block8``, ...); ours are ``stages.S.name`` (see
:meth:`vislearn.models.inception_v4._InceptionNet.layers`). The mapping is by position, layer for layer.
"""

from __future__ import annotations

import re

import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.convert import Converter, StateDict, register_converter
from vislearn.models.inception_common import peer_state_dict
from vislearn.models.inception_v4 import INCEPTION_MEAN_STD, _InceptionNet

__all__: list[str] = []


def _timm_v4_names(model: nn.Module) -> list[str]:
    return [f"features.{i}" for i in range(len(model.layers()))]


def _timm_irv2_names(model: nn.Module) -> list[str]:
    s = model.stages
    n_a, n_b, n_c = len(s[2]) - 2, len(s[3]) - 1, len(s[4]) - 3
    return (["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a",
             "mixed_5b"] + [f"repeat.{i}" for i in range(n_a)] + ["mixed_6a"]
            + [f"repeat_1.{i}" for i in range(n_b)] + ["mixed_7a"] + [f"repeat_2.{i}" for i in range(n_c)]
            + ["block8", "conv2d_7b"])


def _timm_converter(peer_names, head: str):
    def convert(sd: StateDict, model: nn.Module) -> StateDict:
        if not isinstance(model, _InceptionNet):
            raise UserError(f"timm Inception weights need an Inception model, got {type(model).__name__}")
        ours = [p for p, _ in model.layers()]
        theirs = peer_names(model)
        if len(ours) != len(theirs):
            raise UserError(f"timm weights do not fit this {type(model).__name__} layout")
        table = dict(zip(theirs, ours, strict=True))
        out: StateDict = {}
        for key, v in sd.items():
            if key.startswith(head + "."):
                out["fc." + key[len(head) + 1:]] = v
                continue
            m = re.match(r"^((?:features|repeat|repeat_1|repeat_2)\.\d+|[a-z0-9_]+)\.(.*)$", key)
            if m is None or m.group(1) not in table:
                out[key] = v  # reported by name as unexpected
                continue
            rest = re.sub(r"^conv2d\.", "up.", m.group(2))  # timm's residual 1×1 expansion is ``conv2d``
            out[f"{table[m.group(1)]}.{rest}"] = v
        return peer_state_dict(out, model, "timm")  # fills num_batches_tracked absent from ported files

    return convert


register_converter(Converter(
    source="timm", model_prefix="inception_v4",
    detect=lambda sd: "features.0.conv.weight" in sd and "last_linear.weight" in sd
    and "features.3.conv.conv.weight" in sd,
    convert=_timm_converter(_timm_v4_names, "last_linear"),
    normalization=INCEPTION_MEAN_STD,  # timm's IMAGENET_INCEPTION_MEAN/STD
))
register_converter(Converter(
    source="timm", model_prefix="inception_resnet_v2",
    detect=lambda sd: "conv2d_1a.conv.weight" in sd and "mixed_5b.branch0.conv.weight" in sd
    and "classif.weight" in sd,
    convert=_timm_converter(_timm_irv2_names, "classif"),
    normalization=INCEPTION_MEAN_STD,
))
