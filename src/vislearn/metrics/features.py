"""The feature network behind a distribution distance (FID, CMMD), and a record of which one it was.

FID is defined on Inception-v3 pool features and CMMD on CLIP image embeddings (PAPERS.md section 8).
Nothing here downloads, so :func:`feature_extractor` takes what the user has:

* **a local weights file of Inception-v3** (torchvision's or timm's ``inception_v3`` state dict, or a
  vislearn ``inception_v3`` file): our :class:`~vislearn.models.inception_v3.InceptionV3` loads it
  through its converter; features are the 2048-d global average pool of ``Mixed_7c`` (FID's "pool3")
  of [0, 1] images resized bilinearly to 299×299. Numbers are FID only when the weights are the
  standard ImageNet ones; we cannot check which weights a file holds, so the record names the file.
* **a local CLIP image tower** (a transformers ``CLIPVisionModelWithProjection`` directory with its
  ``config.json``): needs ``transformers`` installed, else a clear :class:`~vislearn.errors.UserError`;
  features are CMMD's L2-normalised image embeddings of images resized bicubically to the tower's
  input size with CLIP's normalisation. Bare CLIP state dicts (open_clip files) are recognised by their
  keys and refused with a message: their architecture is not in the file.
* **any other vislearn classifier file** (e.g. one trained with ``vislearn train classify``): the
  global average pool of its last feature map.
* **a registered name** (:func:`register_feature_network`): a network trained on the embedded data by
  one of our recipes when no standard network is at hand. The recipes layer registers
  ``"shapes32"`` (:mod:`vislearn.recipes.feature_network`): a small classifier trained by the
  ``classify`` recipe on the embedded shapes at 32 px and cached under the user cache dir. Distances
  from it are *not* FID or CMMD and are comparable only with each other.

Every :class:`FeatureExtractor` carries a ``record`` (JSON-able) naming the network, its source and
its config, to be stored beside the numbers it produced.

Example::

    fx = feature_extractor("~/weights/inception_v3_google.pth")  # or "shapes32"
    fid = frechet_distance(fx(real_images), fx(generated_images))
    results["feature_network"] = fx.record
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.models.base import check_images

__all__ = ["FeatureExtractor", "cache_dir", "feature_extractor", "feature_networks", "register_feature_network"]

INCEPTION_SIDE = 299
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's image normalisation
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class FeatureExtractor:
    """``extractor(images) -> N×D`` features of [0, 1] images, in batches, without gradients.

    ``record`` says which network produced them (``network``, ``source``, ``path`` or ``config``).
    """

    features: Callable[[torch.Tensor], torch.Tensor]
    record: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 64

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, in_chans=3, where=f"features ({self.record.get('network', '?')})")
        out = [self.features(images[i:i + self.batch_size]).float() for i in range(0, len(images), self.batch_size)]
        return torch.cat(out)


Builder = Callable[..., FeatureExtractor]
_NETWORKS: dict[str, Builder] = {}


def register_feature_network(name: str, builder: Builder) -> Builder:
    """Register ``builder(**options) -> FeatureExtractor`` under ``name`` (done by the recipes layer)."""
    _NETWORKS[name] = builder
    return builder


def feature_networks() -> list[str]:
    """The registered feature-network names."""
    return sorted(_NETWORKS)


def cache_dir() -> Path:
    """Where trained feature networks are cached: ``$VISLEARN_CACHE`` or ``$XDG_CACHE_HOME/vislearn``
    (default ``~/.cache/vislearn``), subfolder ``features``."""
    root = os.environ.get("VISLEARN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vislearn")
    return Path(root) / "features"


def feature_extractor(name_or_path: str | os.PathLike, **options: Any) -> FeatureExtractor:
    """The feature network named by a local path or a registered name (module docstring).

    ``options`` go to a registered builder (e.g. ``steps=``, ``cache=``); a path takes none.
    """
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        _no_options(options, text)
        return _clip_directory(path)
    if path.is_file():
        _no_options(options, text)
        return _from_file(path)
    if text in _NETWORKS:
        return _NETWORKS[text](**options)
    known = ", ".join(feature_networks()) or "none registered (import vislearn.recipes to register 'shapes32')"
    raise UserError(f"feature network {text!r} is neither a local file or directory nor a registered name "
                    f"(known: {known}); nothing is downloaded")


def pooled_features(model: nn.Module, side: int | None = None, mode: str = "bilinear") -> Callable:
    """``images -> global average pool of model.forward_features(images)[-1]`` (resized to ``side`` first)."""

    def run(images: torch.Tensor) -> torch.Tensor:
        if side is not None and tuple(images.shape[-2:]) != (side, side):
            images = F.interpolate(images, size=(side, side), mode=mode, align_corners=False).clamp(0, 1)
        feat = model.forward_features(images)[-1]
        return feat.mean((2, 3)) if feat.dim() == 4 else feat.flatten(1)

    return run


def _no_options(options: dict, text: str) -> None:
    if options:
        raise UserError(f"feature network {text!r} is a file: options {sorted(options)} apply to registered names only")


def _is_clip_state_dict(keys: set[str]) -> bool:
    return any(k.startswith(("visual.transformer.", "vision_model.embeddings.", "visual.trunk.")) for k in keys)


def _from_file(path: Path) -> FeatureExtractor:
    from vislearn.io import read_state_dict
    from vislearn.models import create_model
    from vislearn.models.convert import find_converter, weights_metadata
    from vislearn.models.registry import create_model_from_weights

    info = weights_metadata(path)
    if "model" in info:  # a vislearn file names its model
        model = create_model_from_weights(path).eval()
        name = info["model"]
        side = INCEPTION_SIDE if name == "inception_v3" else None
        if not hasattr(model, "forward_features"):
            raise UserError(f"{path}: model {name!r} has no forward_features; it cannot serve as a feature network")
        record = {"network": name, "source": "vislearn weights file", "path": str(path), "kwargs": info["kwargs"],
                  "features": "global average pool of the last feature map"
                              + (f", input resized to {side}" if side else "")}
        return FeatureExtractor(pooled_features(model, side), record)
    sd, _ = read_state_dict(path)
    if _is_clip_state_dict(set(sd)):
        raise UserError(f"{path} looks like a CLIP image tower state dict; its architecture is not in the file: "
                        "pass a transformers CLIPVisionModelWithProjection directory (with config.json) instead")
    converter = find_converter(sd, "inception_v3")
    if converter is None:
        raise UserError(f"{path} is neither a vislearn weights file nor a torchvision/timm Inception-v3 state dict "
                        "(the only peer network recognised for FID features)")
    model = create_model("inception_v3", weights=str(path)).eval()
    record = {"network": "inception_v3", "source": f"{converter.source} state dict", "path": str(path),
              "features": f"2048-d pool of Mixed_7c (FID pool3), input resized bilinearly to {INCEPTION_SIDE}",
              "note": "FID proper only if the file holds the standard ImageNet weights (not checked)"}
    return FeatureExtractor(pooled_features(model, INCEPTION_SIDE), record)


def _clip_directory(path: Path) -> FeatureExtractor:
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is a directory without config.json: expected a transformers CLIP vision model "
                        "directory (CLIPVisionModelWithProjection.save_pretrained)")
    try:
        from transformers import CLIPVisionModelWithProjection
    except ImportError:
        raise UserError(f"{path}: CLIP features (CMMD) need the 'transformers' package, which is not installed "
                        "(pip install transformers), or use an Inception-v3 file or 'shapes32'") from None
    config = json.loads((path / "config.json").read_text())
    model = CLIPVisionModelWithProjection.from_pretrained(str(path), local_files_only=True).eval()
    side = int(model.config.image_size)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def run(images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=(side, side), mode="bicubic", align_corners=False).clamp(0, 1)
        emb = model(pixel_values=(x - mean.to(x)) / std.to(x)).image_embeds
        return F.normalize(emb.float(), dim=1)  # CMMD's embeddings are unit vectors

    record = {"network": "clip_vision", "source": "transformers CLIPVisionModelWithProjection directory",
              "path": str(path), "image_size": side, "architecture": config.get("architectures"),
              "features": "L2-normalised image embeddings (CMMD)"}
    return FeatureExtractor(run, record)
