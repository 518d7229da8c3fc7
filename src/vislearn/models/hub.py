"""Named remote weights (DESIGN.md principle 4): ``torchvision:TAG`` and ``hf-hub:REPO``.

``weights="torchvision:IMAGENET1K_V1"`` names a member of the torchvision weights enum of the model's
torchvision counterpart (``inception_v3`` → ``Inception_V3_Weights.IMAGENET1K_V1``); the file lives
where torchvision's own loader keeps it, ``torch.hub.get_dir()/checkpoints/<file name of the URL>``
(``$TORCH_HOME/hub/checkpoints``). ``weights="hf-hub:timm/inception_v3.tv_in1k"`` (optionally
``@revision``) names a timm-format Hugging Face repository; its ``model.safetensors`` (else
``pytorch_model.bin``) and ``config.json`` come from huggingface_hub's cache (``$HF_HOME/hub``).

Files already in the cache are used as they are. A missing file is downloaded by the owning library
(``torch.hub.download_url_to_file`` with the hash prefix in the file name checked, as torchvision
does; ``huggingface_hub.hf_hub_download``), unless downloads are off: ``HF_HUB_OFFLINE=1``
(huggingface_hub's own switch, honoured for both sources) or ``local_files_only=True``. A file that is
neither cached nor downloadable is one ``UserError`` naming the file and where to place it.

Files are never unpickled: they go through :func:`vislearn.io.read_state_dict` (safetensors, or
``torch.load(weights_only=True)``) and the key converters of :mod:`vislearn.models.convert`.

Each set of weights comes with its :class:`~vislearn.data.transforms.DataConfig`: for torchvision, the
crop, resize and interpolation of ``weights.transforms()``; for timm, the repository's
``config.json`` ``pretrained_cfg`` (``input_size``, ``crop_pct`` with timm's ``floor(size / crop_pct)``
resize, ``interpolation``, ``mean``/``std``). ``mean``/``std`` are what reaches the first convolution:
torchvision's ``inception_v3`` builder turns on ``transform_input`` with these weights, which maps
ImageNet-normalised input back to ``(x - 0.5) / 0.5``, so that model's config says 0.5/0.5.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from vislearn.data.transforms import INTERPOLATIONS, DataConfig
from vislearn.errors import UserError

__all__ = ["COUNTERPARTS", "HF_HUB", "TORCHVISION", "Counterpart", "RemoteWeights", "is_remote", "model_for",
           "offline", "resolve", "torchvision_data_config"]

TORCHVISION = "torchvision:"
HF_HUB = "hf-hub:"
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order of preference
HF_CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Counterpart:
    """Our model and the names its peers give it, with where the correspondence is established."""

    model: str
    torchvision_weights: str | None = None  # a weights enum of torchvision.models
    timm_architecture: str | None = None
    transform_input: bool = False  # torchvision's builder sets Inception3(transform_input=True) with weights
    source: str = ""


COUNTERPARTS: tuple[Counterpart, ...] = (
    Counterpart("inception_v3", "Inception_V3_Weights", "inception_v3", transform_input=True,
                source="torchvision.models.inception_v3 and timm inception_v3 share the Inception3 layout; "
                       "converter in models/inception_v3.py, equivalence in tests/test_models_inception_v3.py"),
    Counterpart("inception_v4", timm_architecture="inception_v4",
                source="timm inception_v4 (features.N); converter in models/timm_names.py"),
    Counterpart("inception_resnet_v2", timm_architecture="inception_resnet_v2",
                source="timm inception_resnet_v2 (TF-slim scope names); converter in models/timm_names.py"),
    Counterpart("vgg16", "VGG16_Weights",
                source="torchvision.models.vgg16 (same keys); converter in models/vgg.py"),
)


@dataclass(frozen=True)
class RemoteWeights:
    """A named source resolved to a local file of the owning library's cache."""

    spec: str
    path: str
    model: str
    data_config: DataConfig


def is_remote(weights: object) -> bool:
    """Whether ``weights`` names a remote source (``torchvision:...`` or ``hf-hub:...``) rather than a path."""
    return isinstance(weights, str) and weights.startswith((TORCHVISION, HF_HUB))


def _valid(kind: str) -> str:
    if kind == "torchvision":
        return ", ".join(f"{c.model} (torchvision {c.torchvision_weights})" for c in COUNTERPARTS
                         if c.torchvision_weights)
    return ", ".join(f"{c.model} (timm {c.timm_architecture})" for c in COUNTERPARTS if c.timm_architecture)


def _split_hf(spec: str) -> tuple[str, str | None, str]:
    """``hf-hub:ORG/NAME[@REV]`` → (repo id, revision, timm architecture guessed from ``NAME``)."""
    repo, _, revision = spec[len(HF_HUB):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise UserError(f"{spec}: name a Hugging Face repository as hf-hub:ORG/NAME, e.g. "
                        "hf-hub:timm/inception_v3.tv_in1k")
    return repo, revision or None, repo.split("/")[1].split(".")[0]


def _counterpart_of_timm(arch: str, spec: str) -> Counterpart:
    for c in COUNTERPARTS:
        if c.timm_architecture == arch:
            return c
    raise UserError(f"{spec}: timm architecture {arch!r} has no vislearn counterpart; hf-hub weights work "
                    f"with: {_valid('timm')}")


def model_for(spec: str) -> str | None:
    """Our model name that ``spec`` implies (an ``hf-hub:timm/ARCH.TAG`` repository names its architecture),
    else ``None``."""
    if spec.startswith(HF_HUB + "timm/"):
        return _counterpart_of_timm(_split_hf(spec)[2], spec).model
    return None


def offline() -> bool:
    """Downloads are off: huggingface_hub's ``HF_HUB_OFFLINE`` (read from its constants, so tests can patch it)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # only hf-hub: names need the package; its switch is still honoured
        return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    return constants.is_offline_mode()


def resolve(spec: str, model_name: str | None = None, local_files_only: bool | None = None) -> RemoteWeights:
    """The local file, our model name and the data config of a named source.

    Args:
        spec: ``torchvision:TAG`` (``TAG`` a member of the model's weights enum, e.g. ``IMAGENET1K_V1``
            or ``DEFAULT``) or ``hf-hub:ORG/NAME[@REV]`` (a timm-format repository).
        model_name: our model; required for ``torchvision:``, checked against the repository for ``hf-hub:``.
        local_files_only: never download (default: :func:`offline`).
    """
    local = offline() if local_files_only is None else local_files_only
    if spec.startswith(TORCHVISION):
        return _resolve_torchvision(spec, model_name, local)
    if spec.startswith(HF_HUB):
        return _resolve_hf(spec, model_name, local)
    raise UserError(f"{spec!r} is not a named source; use {TORCHVISION}TAG or {HF_HUB}ORG/NAME")


# ----------------------------------------------------------------------------------------------- torchvision

def _torchvision_weights(model_name: str | None, tag: str, spec: str):
    from torchvision import models as tvm

    if not model_name:
        raise UserError(f"{spec} needs a model name (--model NAME); torchvision weights work with: "
                        f"{_valid('torchvision')}")
    counterpart = next((c for c in COUNTERPARTS if c.model == model_name and c.torchvision_weights), None)
    if counterpart is None:
        raise UserError(f"model {model_name!r} has no torchvision counterpart; torchvision weights work with: "
                        f"{_valid('torchvision')}")
    enum = getattr(tvm, counterpart.torchvision_weights)
    tag = tag.removeprefix(enum.__name__ + ".")
    if tag not in enum.__members__:
        raise UserError(f"{spec}: torchvision's {enum.__name__} has no {tag!r}; choose one of "
                        f"{', '.join(enum.__members__)}")
    return counterpart, enum[tag]


def torchvision_data_config(model_name: str, tag: str) -> DataConfig:
    """The :class:`DataConfig` of torchvision weights ``tag`` for our ``model_name`` (no file needed)."""
    counterpart, weights = _torchvision_weights(model_name, tag, f"{TORCHVISION}{tag}")
    return _tv_config(counterpart, weights)


def _tv_config(counterpart: Counterpart, weights) -> DataConfig:
    t = weights.transforms()
    names = {mode: name for name, mode in INTERPOLATIONS.items()}
    mean, std = ((0.5,) * 3, (0.5,) * 3) if counterpart.transform_input else (tuple(t.mean), tuple(t.std))
    return DataConfig(int(t.crop_size[0]), int(t.resize_size[0]), names[t.interpolation], mean, std)


def _resolve_torchvision(spec: str, model_name: str | None, local: bool) -> RemoteWeights:
    import torch.hub

    counterpart, weights = _torchvision_weights(model_name, spec[len(TORCHVISION):], spec)
    url = weights.url
    filename = os.path.basename(url.split("?")[0])
    path = os.path.join(torch.hub.get_dir(), "checkpoints", filename)
    if not os.path.isfile(path):
        how = (f"place {filename} (from {url}) at {path} (torch.hub's checkpoint folder, "
               "under $TORCH_HOME/hub)")
        if local:
            raise UserError(f"{spec}: {filename} is not in torch.hub's cache and downloads are off "
                            f"(HF_HUB_OFFLINE); {how}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        match = torch.hub.HASH_REGEX.search(filename)
        try:
            torch.hub.download_url_to_file(url, path, hash_prefix=match.group(1) if match else None)
        except (OSError, RuntimeError) as e:  # no network, HTTP error, or a hash that does not match
            raise UserError(f"{spec}: could not download {url} ({e}); {how}") from None
    return RemoteWeights(spec, path, counterpart.model, _tv_config(counterpart, weights))


# ------------------------------------------------------------------------------------------------ hf-hub

class _Unreachable(Exception):
    """The Hub could not be reached and the file is not cached (raised once, so no other file is tried)."""


def _hf_file(repo: str, filename: str, revision: str | None, local: bool) -> str | None:
    """The cached (or downloaded) file; ``None`` when the repository (or, offline, the cache) lacks it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        return hf_hub_download(repo, filename, revision=revision, local_files_only=local, library_name="vislearn")
    except (RepositoryNotFoundError, GatedRepoError, RevisionNotFoundError) as e:
        raise UserError(f"hf-hub:{repo}: {str(e).splitlines()[0]}") from None
    except LocalEntryNotFoundError:  # not cached, and offline or the Hub unreachable (after its retries)
        if local:
            return None
        raise _Unreachable from None
    except EntryNotFoundError:  # the repository has no such file
        return None
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:  # a server error, a full disk, ...
        raise UserError(f"hf-hub:{repo}: could not fetch {filename}: {str(e).splitlines()[0]}") from None


def _timm_data_config(config: dict, spec: str) -> DataConfig:
    pc = config.get("pretrained_cfg") or {}
    chans, height, width = (int(v) for v in pc.get("input_size", (3, 224, 224)))
    if height != width or pc.get("crop_mode", "center") != "center":
        raise UserError(f"{spec}: only square centre-crop evaluation is supported, the weights ask for "
                        f"input {height}x{width} with crop_mode {pc.get('crop_mode')!r}")
    # timm's defaults (timm/data/constants.py) for keys a config leaves out
    return DataConfig.from_crop_pct(height, float(pc.get("crop_pct", 0.875)),
                                    interpolation=pc.get("interpolation", "bicubic"),
                                    mean=tuple(pc.get("mean", (0.485, 0.456, 0.406))),
                                    std=tuple(pc.get("std", (0.229, 0.224, 0.225))), in_chans=chans)


def _resolve_hf(spec: str, model_name: str | None, local: bool) -> RemoteWeights:
    try:
        from huggingface_hub import constants
    except ImportError:
        raise UserError(f"{spec}: hf-hub weights need the huggingface_hub package (pip install huggingface_hub)") \
            from None

    repo, revision, arch = _split_hf(spec)
    if repo.startswith("timm/"):  # timm names its repositories ARCH.TAG: refuse before any download
        _counterpart_of_timm(arch, spec)
    weights = config_path = None
    try:
        weights = next((p for f in HF_WEIGHT_FILES if (p := _hf_file(repo, f, revision, local)) is not None), None)
        config_path = _hf_file(repo, HF_CONFIG_FILE, revision, local)
    except _Unreachable:
        pass
    if weights is None or config_path is None:
        missing = [f"{HF_WEIGHT_FILES[0]} (or {HF_WEIGHT_FILES[1]})"] * (weights is None) \
            + [HF_CONFIG_FILE] * (config_path is None)
        why = ("downloads are off (HF_HUB_OFFLINE)" if local
               else "they could not be downloaded (no network? HF_HUB_OFFLINE=1 skips the attempt)")
        raise UserError(f"{spec}: {' and '.join(missing)} not in the Hugging Face cache {constants.HF_HUB_CACHE} "
                        f"and {why}; on a machine with network run `hf download {repo} {HF_WEIGHT_FILES[0]} "
                        f"{HF_CONFIG_FILE}` and copy its models--{repo.replace('/', '--')} folder into that cache "
                        "(or point HF_HOME at a cache that holds it)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{spec}: cannot read {config_path}: {e}") from None
    counterpart = _counterpart_of_timm(config.get("architecture") or arch, spec)
    if model_name and model_name != counterpart.model:
        raise UserError(f"{spec} holds weights of {counterpart.model!r}, not {model_name!r}")
    return RemoteWeights(spec, weights, counterpart.model, _timm_data_config(config, spec))
