"""The contract every registered model keeps, checked for every name in ``list_models()``.

For each model, built small (narrow width options below) at its smallest valid input:

* forward: the output has the model's declared shape and is finite;
* backward: every trainable parameter gets a finite gradient;
* ``forward_features``: one map per ``feature_info`` entry, with its channels, and with its stride
  (see :func:`test_feature_strides` for what stride means here);
* ``fold_batchnorm``: the folded eval model agrees with the eager eval model;
* safetensors: ``save_weights`` then ``create_model_from_weights`` rebuilds the model by name from
  the file's metadata alone and gives bit-identical outputs;
* ``channels_last``: weights and input in channels_last give the same eval outputs.

The names are collected at import time, so a model registered by any branch is checked without
editing this file. A check that does not apply to a model is switched off only in the tables below,
each with its reason; an unknown kind of model fails until it is described here.
"""

from __future__ import annotations

import copy
import inspect
import math
from pathlib import Path
from typing import Any

import lpips
import pytest
import torch
import torch.nn as nn

from vislearn.io import save_weights
from vislearn.models import create_model, get_entry, list_models
from vislearn.models.registry import create_model_from_weights
from vislearn.nn import fold_batchnorm

NAMES = list_models()
# Full-reference metrics built on a registered backbone (vgg16, checked here in full): forward takes a
# pair of images and returns a distance; they have no feature maps, no BN and no normalisation of their
# own, so only forward/backward apply. Their values are checked against lpips in test_metrics_perceptual.py.
PAIR_METRICS: dict[str, str] = {n: "a pair-input perceptual distance on the vgg16 trunk"
                                for n in ("semantic_vgg16", "lpips_vgg")}
# Models whose input is an autoencoder's latent, not an image: forward(x_t, t) denoises a noisy latent. They
# have no image normalisation and no feature maps; test_latent_models below checks what applies to them.
LATENT_MODELS: dict[str, str] = {"latent_diffusion": "denoises autoencoder latents (forward(x_t, t)); "
                                                     "tested in test_latent_models and test_models_latent_diffusion.py"}
IMAGE_MODELS = [n for n in NAMES if n not in PAIR_METRICS and n not in LATENT_MODELS]

# The families that exist when this file was written: the list can grow, never silently shrink.
KNOWN_FAMILIES = {"bn_inception", "embedding_net", "inception_resnet_v1", "inception_resnet_v2",
                  "inception_resnet_v2_paper", "inception_v3", "inception_v4", "mlp", "msc_multibox",
                  "multibox_tiny", "multilabel_net", "multilabel_net_small", "small_convnet", "vgg16"}

_TINY_V4 = {"width": 0.05, "depths": (1, 1, 1)}
# Architecture options that keep each model small and fast; the structure (stages, strides, block
# types) is the family's own. A name absent here is built with its defaults.
SMALL: dict[str, dict[str, Any]] = {
    "bn_inception": {"num_classes": 7},
    "latent_diffusion": {"width": 16, "latent_size": 4},
    "embedding_net": {"backbone": "small_convnet", "embedding_dim": 8,
                      "backbone_kwargs": {"widths": (4, 8, 8, 16)}},
    "inception_resnet_v1": {**_TINY_V4, "num_classes": 7},
    "inception_resnet_v2": {**_TINY_V4, "num_classes": 7},
    "inception_resnet_v2_paper": {**_TINY_V4, "num_classes": 7},
    "inception_v3": {"width": 0.05, "num_classes": 7},
    "inception_v4": {**_TINY_V4, "num_classes": 7},
    "mlp": {"hidden": (16, 16), "batch_norm": True, "num_classes": 7},
    "msc_multibox": {"backbone": "multibox_tiny", "backbone_kwargs": {"widths": (4, 4, 8, 8, 8)},
                     "head_width": 8, "context_width": 4, "num_aspect_ratios": 2, "image_size": 32},
    "multibox_tiny": {"widths": (4, 4, 8, 8, 8), "num_classes": 7},
    "multilabel_net": {"width": 0.05, "num_classes": 7},
    "multilabel_net_small": {"num_classes": 7},
    "small_convnet": {"widths": (4, 8, 8, 16), "num_classes": 7},
    # two narrow blocks: the structure (patch 4, [CLS], learned position embedding) is the family's own
    "vit_tiny_p4": {"embed_dim": 24, "depth": 2, "num_heads": 3, "num_classes": 7},
    "vit_small_p4": {"embed_dim": 24, "depth": 2, "num_heads": 6, "num_classes": 7},
    "vit_small_p16": {"embed_dim": 24, "depth": 2, "num_heads": 6, "num_classes": 7},
    # the conv trunk only: the 120M-parameter classifier is checked against torchvision in test_models_vgg.py
    "vgg16": {"features_only": True},
    # LPIPS needs its learned linear layers: the lpips package ships them
    "lpips_vgg": {"lin_weights": str(Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth")},
}

# Input side where the smallest valid input is not ``model.min_input_size``, with the reason.
INPUT_SIDE: dict[str, tuple[int, str]] = {
    "mlp": (8, "flattens a fixed image_size×image_size input (registered 1×8×8)"),
    # a known defect, not a design: min_input_size=16 suits forward_features (relu5_3 gets one
    # position), but forward's final 2×2 max-pool then raises RuntimeError on the 1×1 map
    "vgg16": (32, "the smallest input that forward (not only forward_features) accepts"),
}

# Registered models that are not backbones (no forward_features/feature_info), with the reason; empty
# today. A name here is checked to really have no feature_info, so the entry cannot go stale.
NO_FEATURES: dict[str, str] = {}
# Models whose feature maps are not spatial, or whose spatial size does not follow the input.
# parameters that forward() does not use, by name prefix, with the reason
NOT_IN_FORWARD: dict[str, tuple[str, str]] = {
    **{name: ("head.logistic.", "the logistic map turns distances into ratings; forward returns the distance")
       for name in ("semantic_vgg16", "lpips_vgg")},
    "swycc": ("decoder_", "forward is the encoder; both decoders train through swycc_loss (test_models_swycc.py)"),
}
FLAT_FEATURES = {"mlp": "an MLP: its one feature is a flat N×width vector (stride 1 by definition)"}
FIXED_GRID = {"msc_multibox": "each map is pooled to its g×g grid whatever the input size; "
                              "feature_info stride is the nominal image_size // g"}
# Unpadded ("VALID") convolutions: a map is smaller than ceil(H / stride) by the border they drop.
VALID_PADDING = {"inception_v3", "inception_v4", "inception_resnet_v1", "inception_resnet_v2",
                 "inception_resnet_v2_paper", "multilabel_net"}

BATCH = 2


def _n_images(model: nn.Module) -> int:
    """How many image batches ``forward`` takes: 1, or 2 for a model of pairs (a perceptual distance)."""
    params = list(inspect.signature(model.forward).parameters.values())
    required = [p for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(required) in (1, 2), f"{type(model).__name__}.forward takes {len(required)} inputs: describe it here"
    return len(required)


def _run(model: nn.Module, x: torch.Tensor) -> Any:
    """``model(x)``, or ``model(x, y)`` with ``y`` a fixed other batch for a model of image pairs."""
    if _n_images(model) == 1:
        return model(x)
    return model(x, torch.rand(x.shape, generator=torch.Generator().manual_seed(3)).to(memory_format=_layout(x)))


def _layout(x: torch.Tensor) -> torch.memory_format:
    cl = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model(name, **SMALL.get(name, {}))
    chans = getattr(model, "in_chans", get_entry(name).input_size[0])
    side = INPUT_SIDE[name][0] if name in INPUT_SIDE else model.min_input_size
    x = torch.rand(BATCH, chans, side, side, generator=torch.Generator().manual_seed(1))
    return model, x


def _tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a model output (a tensor, a tuple of them, or a dict of them), in a fixed order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for k in sorted(out) for t in _tensors(out[k])]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in _tensors(o)]
    raise TypeError(f"unexpected model output type {type(out).__name__}")


def _expected_shapes(model: nn.Module, n: int) -> dict[str, tuple[int, ...]] | tuple[int, ...]:
    """What an eval-mode forward returns, from the attributes that declare it."""
    if _n_images(model) == 2:  # one distance per pair
        return (n,)
    if hasattr(model, "num_priors"):  # a MultiBox proposer
        return {"loc": (n, model.num_priors, 4), "logits": (n, model.num_priors)}
    if hasattr(model, "embedding_dim"):
        return (n, model.embedding_dim)
    if hasattr(model, "latent_channels"):  # an autoencoder: forward is the encoder, z is N×C×H/f×W/f
        return (n, model.latent_channels)
    if getattr(model, "features_only", False):
        return (n, model.feature_info[-1].channels)  # leading dims only; spatial size checked finite
    classes = getattr(model, "num_classes", None) or model.model_kwargs.get("num_classes")
    if classes:  # a classifier: the attribute, or the option it was built with
        return (n, classes)
    raise AssertionError(f"{type(model).__name__}: say in _expected_shapes what its forward returns")


def test_registry_is_complete():
    assert NAMES, "list_models() is empty: the contract would check nothing"
    missing = KNOWN_FAMILIES - set(NAMES)
    assert not missing, f"registered families disappeared: {sorted(missing)}"
    for table in (SMALL, INPUT_SIDE, NO_FEATURES, FLAT_FEATURES, FIXED_GRID, NOT_IN_FORWARD, PAIR_METRICS,
                  LATENT_MODELS):
        stale = set(table) - set(NAMES)
        assert not stale, f"exemption/option tables name unregistered models: {sorted(stale)}"
    assert VALID_PADDING <= set(NAMES)


@pytest.mark.parametrize("name", IMAGE_MODELS + sorted(PAIR_METRICS))
def test_forward_shape_and_finite(name):
    model, x = _build(name)
    with torch.no_grad():
        out = _run(model.eval(), x)
    expected = _expected_shapes(model, BATCH)
    if isinstance(expected, dict):
        assert isinstance(out, dict) and set(out) == set(expected)
        for k, shape in expected.items():
            assert tuple(out[k].shape) == shape, k
    else:
        assert isinstance(out, torch.Tensor)
        assert tuple(out.shape[:len(expected)]) == expected
        assert out.numel() > 0
    for t in _tensors(out):
        assert torch.isfinite(t).all()


@pytest.mark.parametrize("name", IMAGE_MODELS + sorted(PAIR_METRICS))
def test_backward_reaches_every_parameter(name):
    model, x = _build(name)
    model.train()
    outs = _tensors(_run(model, x))
    g = torch.Generator().manual_seed(2)
    # random weights on every output element, so no gradient cancels (as a softmax sum would)
    loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in outs)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    if name in NOT_IN_FORWARD:
        prefix = NOT_IN_FORWARD[name][0]
        assert any(n.startswith(prefix) for n in no_grad), f"{name}: {prefix}* is used by forward now"
        no_grad = [n for n in no_grad if not n.startswith(prefix)]
        trainable = [(n, p) for n, p in trainable if not n.startswith(prefix)]
    assert not no_grad, f"parameters the output does not depend on: {no_grad[:8]}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:8]}"
    assert any(p.grad.abs().sum() > 0 for _, p in trainable)


def _map_sizes(model: nn.Module, side: int, chans: int) -> list[tuple[int, ...]]:
    x = torch.rand(1, chans, side, side)
    with torch.no_grad():
        return [tuple(f.shape[2:]) for f in model.forward_features(x)]


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_feature_maps_match_feature_info(name):
    model, x = _build(name)
    if name in NO_FEATURES:
        assert not getattr(model, "feature_info", None), f"{name} has feature_info: remove it from NO_FEATURES"
        return
    info = list(getattr(model, "feature_info", None) or [])
    assert info, f"{name} has no feature_info: add it, or list the model in NO_FEATURES with the reason"
    with torch.no_grad():
        feats = model.eval().forward_features(x)
    assert len(feats) == len(info)
    assert [f.shape[1] for f in feats] == [i.channels for i in info]
    assert all(f.shape[0] == BATCH and torch.isfinite(f).all() for f in feats)
    assert all(f.dim() == (2 if name in FLAT_FEATURES else 4) for f in feats)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_feature_strides(name):
    """Stride = how fast a map grows with the input: ``L`` more input pixels give ``L / stride`` more
    map positions, for ``L`` the least common multiple of the strides. This is exact for padded and
    unpadded convolutions alike. Padded ("SAME") models also give exactly ``ceil(H / stride)``
    positions at input side ``H``; unpadded ("VALID", :data:`VALID_PADDING`) ones fewer (they drop a
    border), never more.
    """
    model, x = _build(name)
    model.eval()
    if name in NO_FEATURES:  # test_feature_maps_match_feature_info checks it has none
        return
    info = list(model.feature_info)
    side, chans = x.shape[-1], x.shape[1]
    if name in FLAT_FEATURES:
        assert [i.stride for i in info] == [1] * len(info)
        return
    if name in FIXED_GRID:  # checked at the nominal input size the strides are defined for
        sizes = _map_sizes(model, model.image_size, chans)
        assert [model.image_size // s[0] for s in sizes] == [i.stride for i in info]
        return
    step = math.lcm(*(i.stride for i in info))
    sizes, grown = _map_sizes(model, side, chans), _map_sizes(model, side + step, chans)
    for i, a, b in zip(info, sizes, grown, strict=True):
        assert all((bb - aa) * i.stride == step for aa, bb in zip(a, b, strict=True)), (i, a, b)
        padded = math.ceil(side / i.stride)
        if name in VALID_PADDING:
            assert all(m <= padded for m in a), (i, a)
        else:
            assert all(m == padded for m in a), (i, a)


def _check_close(a: Any, b: Any, rtol: float, atol: float) -> None:
    ta, tb = _tensors(a), _tensors(b)
    assert len(ta) == len(tb)
    for u, v in zip(ta, tb, strict=True):  # atol on the scale of the reference output
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol * max(1.0, float(v.abs().max())))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_fold_batchnorm_agrees(name):
    model, x = _build(name)
    model.eval()
    example = x if _n_images(model) == 1 else (x, x.flip(0))
    folded, report = fold_batchnorm(model, example_input=example, return_report=True, warn=False)
    assert not report.unfolded, f"BN layers left unfolded: {report.unfolded[:5]}"
    with torch.no_grad():
        _check_close(_run(folded, x), _run(model, x), rtol=1e-5, atol=1e-5)
        if name not in NO_FEATURES:
            _check_close(folded.forward_features(x), model.forward_features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_safetensors_round_trip(name, tmp_path):
    model, x = _build(name)
    model.eval()
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path)
    loaded = create_model_from_weights(path).eval()
    assert loaded.model_name == name and type(loaded) is type(model)
    assert loaded.normalization == model.normalization
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
    with torch.no_grad():
        for u, v in zip(_tensors(_run(model, x)), _tensors(_run(loaded, x)), strict=True):
            assert torch.equal(u, v)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_channels_last_agrees(name):
    model, x = _build(name)
    model.eval()
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    with torch.no_grad():
        _check_close(_run(cl, x.contiguous(memory_format=torch.channels_last)), _run(model, x), rtol=1e-4, atol=1e-5)


def test_tables_are_not_stale():
    """Each exemption still applies: a model listed in FLAT_FEATURES/FIXED_GRID really behaves so."""
    for name in FLAT_FEATURES:
        model, x = _build(name)
        assert all(f.dim() == 2 for f in model.eval().forward_features(x))
    for name in FIXED_GRID:
        model, x = _build(name)
        chans = x.shape[1]
        assert _map_sizes(model.eval(), x.shape[-1], chans) == _map_sizes(model, 2 * x.shape[-1], chans)


@pytest.mark.parametrize("name", sorted(PAIR_METRICS))
def test_pair_metrics_are_not_image_models(name):
    # the exemption above holds only while these stay pair-input metrics without a feature interface
    from vislearn.models.base import VisionModel

    model, _ = _build(name)
    assert not isinstance(model, VisionModel) and not hasattr(model, "feature_info")


@pytest.mark.parametrize("name", sorted(LATENT_MODELS))
def test_latent_models(name, tmp_path):
    """A latent model: forward(x_t, t) keeps the latent's shape, every parameter gets a gradient, and a
    safetensors round trip rebuilds it with its buffers (the latent scaling factor) bit for bit."""
    from vislearn.models.base import VisionModel

    torch.manual_seed(0)
    model = create_model(name, **SMALL.get(name, {}))
    assert not isinstance(model, VisionModel) and not hasattr(model, "feature_info")
    side = model.latent_size
    x = torch.randn(BATCH, model.latent_channels, side, side, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.3, 0.9])
    out = model(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.scaling_factor.fill_(0.37)
    path = tmp_path / f"{name}.safetensors"
    save_weights(model, path)
    loaded = create_model_from_weights(path).eval()
    assert loaded.model_name == name and float(loaded.scaling_factor) == pytest.approx(0.37)
    with torch.no_grad():
        assert torch.equal(loaded(x, t), model.eval()(x, t))
