"""Embedding networks for metric learning: any registry backbone + global pooling + a linear embedding.

Proxy-NCA (Movshovitz-Attias et al. 2017, Sec. 5) embeds images with BN-Inception (Ioffe & Szegedy
2015) pooled features followed by one fully connected layer to a 64-d embedding. ``embedding_net``
builds that head on top of any registered backbone through the shared backbone interface
(``forward_features`` → one map per stage, ``feature_info``): the last stage is global-average
pooled and projected. ``forward`` returns the (un-normalised) embedding; losses and retrieval
normalise it as they need (``normalize_output=True`` returns unit vectors).

``small_convnet`` is a four-stage Conv-BN-ReLU network for quick CPU runs on 32-pixel images
(``batch_norm=False`` gives a BN-free variant whose multi-process training follows the
single-process loss curve exactly).

Example::

    model = create_model("embedding_net", backbone="small_convnet", embedding_dim=64)
    emb = model(images)            # N × 64
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.models.base import FeatureInfo, VisionModel
from vislearn.models.registry import create_model, register_model
from vislearn.nn.conv import ConvBNAct

__all__ = ["EmbeddingHead", "EmbeddingNet", "SmallConvNet"]

# Attribute names of classification heads a backbone may carry; they are dropped because an embedding
# network never calls them (and unused parameters break DDP's gradient reduction).
_HEAD_NAMES = ("fc", "classifier", "head", "last_linear", "AuxLogits", "aux_logits_head", "aux")


class SmallConvNet(VisionModel):
    """Four 3×3 Conv-(BN)-ReLU stages (strides 1, 2, 2, 2), global average pool, linear classifier.

    Args:
        num_classes: classifier outputs (0: no classifier, ``forward`` returns pooled features).
        widths: channels of the four stages.
        batch_norm: BN after each convolution (``False``: biased convolutions, no batch statistics).
        in_chans: input channels.
    """

    min_input_size = 8

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64, 128), batch_norm: bool = True,
                 in_chans: int = 3, normalization=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))) -> None:
        self.in_chans = in_chans
        super().__init__(normalization=normalization)
        if len(widths) != 4 or any(int(w) < 1 for w in widths):
            raise UserError(f"widths must be 4 positive ints, got {widths!r}")
        strides = (1, 2, 2, 2)
        chans = (in_chans, *widths)
        self.stages = nn.ModuleList(
            ConvBNAct(chans[i], chans[i + 1], 3, stride=strides[i], padding=1, bn=batch_norm) for i in range(4))
        stride, info = 1, []
        for i, s in enumerate(strides):
            stride *= s
            info.append(FeatureInfo(f"stages.{i}", int(widths[i]), stride))
        self.feature_info = info
        self.num_features = int(widths[-1])
        self.classifier = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x)[-1].mean((2, 3)))


class EmbeddingNet(VisionModel):
    """``backbone.forward_features(x)[-1]`` → global average pool → ``Linear(C, embedding_dim)``.

    Args:
        backbone: a registry model name (default ``"bn_inception"``, the paper's) or a built module
            with ``forward_features`` and ``feature_info``.
        embedding_dim: output width (paper: 64).
        normalize_output: return L2-normalised embeddings.
        backbone_kwargs: options for building the backbone (``widths``, ``batch_norm``, ``weights``...).

    Input normalisation belongs to the backbone; ``normalization`` reads and sets the backbone's.
    """

    def __init__(self, backbone: str | nn.Module = "bn_inception", embedding_dim: int = 64,
                 normalize_output: bool = False, backbone_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(normalization=None)
        if not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise UserError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
        if isinstance(backbone, str):
            self.backbone_name = backbone
            backbone = create_model(backbone, **(backbone_kwargs or {}))
        else:
            self.backbone_name = type(backbone).__name__
        if not hasattr(backbone, "forward_features") or not getattr(backbone, "feature_info", None):
            raise UserError(f"backbone {self.backbone_name!r} has no forward_features/feature_info")
        for name in _HEAD_NAMES:
            if isinstance(getattr(backbone, name, None), nn.Module):
                setattr(backbone, name, nn.Identity())
        self.backbone = backbone
        self.in_chans = getattr(backbone, "in_chans", 3)
        self.min_input_size = getattr(backbone, "min_input_size", 1)
        self.feature_info = list(backbone.feature_info)
        self.num_features = self.feature_info[-1].channels
        self.embedding_dim = embedding_dim
        self.normalize_output = normalize_output
        self.embedding = nn.Linear(self.num_features, embedding_dim)

    @property
    def normalization(self):  # type: ignore[override]
        bb = self._modules.get("backbone")
        return getattr(bb, "normalization", None) if bb is not None else None

    @normalization.setter
    def normalization(self, value) -> None:
        bb = self._modules.get("backbone")
        if bb is None:  # during VisionModel.__init__, before the backbone exists
            return
        bb.normalization = value

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stage maps (takes [0, 1] images; the backbone validates and normalises)."""
        return self.backbone.forward_features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.forward_features(x)[-1]
        pooled = feat.mean((2, 3)) if feat.dim() == 4 else feat.flatten(1)
        emb = self.embedding(pooled)
        if self.normalize_output:
            emb = nn.functional.normalize(emb.float(), dim=1).to(emb.dtype)
        return emb


class EmbeddingHead(nn.Module):
    """The trainable top of an embedding network on precomputed backbone maps.

    ``[Conv-BN-ReLU 3×3 stride 2 to width]`` (when ``width > 0``) → global average pool →
    ``Linear(·, embedding_dim)``. Takes ``(N, C, H, W)`` maps (or ``(N, C)`` vectors when ``width`` is 0)
    and returns un-normalised embeddings, like :class:`EmbeddingNet`. Used by the ``proxy_nca``
    recipe's ``frozen_backbone`` mode (a frozen trunk whose last stage and embedding are trained).
    """

    def __init__(self, in_chans: int, embedding_dim: int = 64, width: int = 0) -> None:
        super().__init__()
        for name, v, low in (("in_chans", in_chans, 1), ("embedding_dim", embedding_dim, 1), ("width", width, 0)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UserError(f"EmbeddingHead: {name} must be an int >= {low}, got {v!r}")
        self.stage = ConvBNAct(in_chans, width, 3, stride=2, padding=1) if width else nn.Identity()
        self.embedding = nn.Linear(width or in_chans, embedding_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = self.stage(x).mean((2, 3))
        elif not isinstance(self.stage, nn.Identity):
            raise UserError(f"EmbeddingHead with a conv stage needs (N, C, H, W) maps, got {tuple(x.shape)}")
        return self.embedding(x)


@register_model("small_convnet", input_size=(3, 32, 32), paper="vislearn quick backbone (CPU presets)")
def small_convnet(**kwargs) -> SmallConvNet:
    return SmallConvNet(**kwargs)


@register_model("embedding_net", input_size=(3, 224, 224),
                paper="Movshovitz-Attias et al. 2017 (Proxy-NCA), Sec. 5: backbone + linear embedding")
def embedding_net(backbone: str = "bn_inception", embedding_dim: int = 64, **kwargs) -> EmbeddingNet:
    return EmbeddingNet(backbone=backbone, embedding_dim=embedding_dim, **kwargs)
