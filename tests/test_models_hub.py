"""Named remote weights, offline: a file placed in torch.hub's / huggingface_hub's own cache is found by
name, converted exactly (logits equal the peer with those weights) and brings the peer's data config;
an empty cache with downloads off is one clear error naming the file and where to put it."""

from __future__ import annotations

import json
import os
import sys

import huggingface_hub.constants as hf_constants
import pytest
import timm
import timm.data
import torch
import torch.hub
import torchvision
from torchvision.models import Inception_V3_Weights, VGG16_Weights
from torchvision.transforms import v2

from vislearn.cli import main
from vislearn.data.transforms import DataConfig
from vislearn.errors import UserError
from vislearn.models import create_model, create_model_from_weights
from vislearn.models.convert import load_weights, weights_metadata
from vislearn.models.hub import resolve, torchvision_data_config

sys.path.insert(0, os.path.dirname(__file__))
from test_models_inception_v3 import _input_dependent, _randomize_bn  # noqa: E402

TV_FILE = os.path.basename(Inception_V3_Weights.IMAGENET1K_V1.url)  # inception_v3_google-0cc3c7bd.pth
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Empty torch.hub and Hugging Face caches under tmp_path, downloads off (whatever the shell set)."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "torch" / "hub"))
    home = tmp_path / "hf"
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    return tmp_path


def place_in_hf_cache(repo: str, files: dict[str, str]) -> None:
    """huggingface_hub's cache layout: models--ORG--NAME/{refs/main, snapshots/COMMIT/FILE}."""
    root = os.path.join(hf_constants.HF_HUB_CACHE, "models--" + repo.replace("/", "--"))
    os.makedirs(os.path.join(root, "refs"))
    with open(os.path.join(root, "refs", "main"), "w") as f:
        f.write(COMMIT)
    snap = os.path.join(root, "snapshots", COMMIT)
    os.makedirs(snap)
    for name, src in files.items():
        os.symlink(src, os.path.join(snap, name))


@pytest.fixture(scope="module")
def tv_peer():
    """torchvision's Inception-v3 as its builder makes it with weights (aux head, transform_input)."""
    torch.manual_seed(0)
    m = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    _randomize_bn(m)
    return m.eval()


@pytest.fixture(scope="module")
def timm_export(tmp_path_factory):
    """A random timm inception_v3.tv_in1k written by timm's own Hub export (config.json + model.safetensors)."""
    torch.manual_seed(1)
    m = timm.create_model("inception_v3.tv_in1k", pretrained=False)
    _randomize_bn(m, seed=2)
    d = tmp_path_factory.mktemp("timm_export")
    timm.models.save_for_hf(m, str(d), safe_serialization=True)
    return m.eval(), d


@pytest.fixture(scope="module")
def tv_checkpoint(tmp_path_factory, tv_peer):
    path = tmp_path_factory.mktemp("tv") / TV_FILE
    torch.save(tv_peer.state_dict(), path)  # torchvision's released format: a plain state dict
    return path


def place_in_torch_hub_cache(checkpoint) -> None:
    path = os.path.join(torch.hub.get_dir(), "checkpoints", TV_FILE)
    os.makedirs(os.path.dirname(path))
    os.symlink(checkpoint, path)


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_torchvision_name_loads_the_cached_file_exactly(caches, tv_peer, tv_checkpoint):
    place_in_torch_hub_cache(tv_checkpoint)
    ours = create_model_from_weights("torchvision:IMAGENET1K_V1", name="inception_v3").eval()
    t = Inception_V3_Weights.IMAGENET1K_V1.transforms()
    x = torch.rand(3, 3, 75, 75)
    got = _logits(ours, x)
    _input_dependent(got)
    # torchvision's pipeline (its mean/std, then transform_input) in float64, so the input reaching the
    # first convolution is exactly rounded, then its network
    first_conv_input = tv_peer._transform_input(v2.functional.normalize(x.double(), t.mean, t.std)).float()
    tv_peer.transform_input = False
    try:
        want = _logits(tv_peer, first_conv_input)
    finally:
        tv_peer.transform_input = True
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    # and all in float32, as torchvision runs it: equal up to the rounding of its two input transforms
    want32 = _logits(tv_peer, v2.functional.normalize(x, t.mean, t.std))
    assert (got - want32).abs().max() <= 1e-4 * want32.abs().max()
    cfg = ours.data_config
    assert (cfg.crop_size, cfg.resize) == (t.crop_size[0], t.resize_size[0]) == (299, 342)
    assert cfg.interpolation == t.interpolation.value == "bilinear"
    # what reaches the first convolution: torchvision's mean/std followed by its transform_input
    probe = torch.rand(1, 3, 4, 4)
    torch.testing.assert_close(tv_peer._transform_input(v2.functional.normalize(probe, t.mean, t.std)),
                               v2.functional.normalize(probe, cfg.mean, cfg.std))
    assert ours.normalization == cfg.normalization


def test_predict_with_a_torchvision_name_uses_its_transforms(caches, tv_peer, tv_checkpoint, capsys):
    from PIL import Image

    place_in_torch_hub_cache(tv_checkpoint)
    img = caches / "img.png"
    g = torch.Generator().manual_seed(3)
    Image.fromarray((torch.rand(200, 260, 3, generator=g) * 255).byte().numpy()).save(img)
    assert main(["predict", "--weights", "torchvision:IMAGENET1K_V1", "--json", "--top", "3", str(img)]) == 0
    out = json.loads(capsys.readouterr().out)[0]["top"]
    from vislearn.data.formats import load_image

    x = Inception_V3_Weights.IMAGENET1K_V1.transforms()(load_image(img))[None]  # resize 342, crop 299, normalise
    probs = _logits(tv_peer, x).softmax(1)[0]
    p, idx = probs.topk(3)
    assert [t["index"] for t in out] == idx.tolist()
    assert [t["class"] for t in out] == [Inception_V3_Weights.IMAGENET1K_V1.meta["categories"][i] for i in idx]
    torch.testing.assert_close(torch.tensor([t["prob"] for t in out]), p, rtol=0, atol=1e-4)


def test_vgg16_data_config_is_torchvisions():
    t = VGG16_Weights.IMAGENET1K_V1.transforms()
    cfg = torchvision_data_config("vgg16", "IMAGENET1K_V1")
    assert (cfg.crop_size, cfg.resize, cfg.interpolation) == (t.crop_size[0], t.resize_size[0], t.interpolation.value)
    assert cfg.normalization == (tuple(t.mean), tuple(t.std))


def _timm_transform_sizes(cfg: dict) -> tuple[int, int]:
    tf = timm.data.create_transform(**cfg, is_training=False)
    resize, crop = tf.transforms[0], tf.transforms[1]
    return resize.size, crop.size


@pytest.mark.parametrize("tag", ["tv_in1k", "gluon_in1k"])
def test_hf_hub_name_loads_timm_weights_exactly_with_their_data_config(caches, timm_export, tag):
    peer, export = timm_export
    pretrained = timm.models.get_pretrained_cfg(f"inception_v3.{tag}").to_dict()
    config = json.loads((export / "config.json").read_text())
    config["pretrained_cfg"].update({k: pretrained[k] for k in ("mean", "std", "interpolation", "crop_pct")})
    (caches / f"{tag}.json").write_text(json.dumps(config))
    repo = f"timm/inception_v3.{tag}"
    place_in_hf_cache(repo, {"config.json": str(caches / f"{tag}.json"),
                             "model.safetensors": str(export / "model.safetensors")})
    spec = f"hf-hub:{repo}"
    assert weights_metadata(spec) == {"model": "inception_v3"}
    ours = create_model_from_weights(spec).eval()
    peer_cfg = timm.data.resolve_data_config({}, pretrained_cfg=pretrained)
    x = torch.rand(3, 3, 75, 75)
    got = _logits(ours, x)
    _input_dependent(got)
    torch.testing.assert_close(got, _logits(peer, v2.functional.normalize(x, peer_cfg["mean"], peer_cfg["std"])),
                               rtol=0, atol=1e-4)
    cfg = ours.data_config
    assert (cfg.in_chans, cfg.crop_size, cfg.crop_size) == peer_cfg["input_size"]
    assert cfg.interpolation == peer_cfg["interpolation"] == "bicubic"
    assert cfg.normalization == (peer_cfg["mean"], peer_cfg["std"])
    assert ours.normalization == (pytest.approx(peer_cfg["mean"]), pytest.approx(peer_cfg["std"]))
    assert cfg.resize / cfg.crop_size == pytest.approx(1 / peer_cfg["crop_pct"], abs=1 / cfg.crop_size)
    assert _timm_transform_sizes(peer_cfg) == (cfg.resize, (cfg.crop_size, cfg.crop_size)) == (341, (299, 299))


def test_hf_hub_bin_file_and_a_model_mismatch(caches, timm_export):
    peer, export = timm_export
    torch.save(peer.state_dict(), caches / "pytorch_model.bin")
    place_in_hf_cache("timm/inception_v3.tf_in1k", {"config.json": str(export / "config.json"),
                                                    "pytorch_model.bin": str(caches / "pytorch_model.bin")})
    model = create_model("inception_v3", aux_logits=False)
    config = load_weights(model, "hf-hub:timm/inception_v3.tf_in1k", model_name="inception_v3")
    assert config == model.data_config and config.crop_size == 299
    torch.testing.assert_close(model.fc.weight, peer.fc.weight, rtol=0, atol=0)
    with pytest.raises(UserError, match="holds weights of 'inception_v3', not 'inception_v4'"):
        resolve("hf-hub:timm/inception_v3.tf_in1k", "inception_v4")


def test_empty_cache_offline_is_one_clear_error_naming_the_file(caches, capsys):
    with pytest.raises(UserError) as e:
        create_model_from_weights("torchvision:IMAGENET1K_V1", name="inception_v3")
    msg = str(e.value)
    assert TV_FILE in msg and os.path.join(torch.hub.get_dir(), "checkpoints", TV_FILE) in msg
    assert Inception_V3_Weights.IMAGENET1K_V1.url in msg and "HF_HUB_OFFLINE" in msg
    with pytest.raises(UserError) as e:
        create_model_from_weights("hf-hub:timm/inception_v3.tv_in1k")
    msg = str(e.value)
    assert "model.safetensors" in msg and "config.json" in msg and hf_constants.HF_HUB_CACHE in msg
    assert "hf download timm/inception_v3.tv_in1k" in msg and "models--timm--inception_v3.tv_in1k" in msg
    img = caches / "x.png"
    img.write_bytes(b"")
    assert main(["predict", "--weights", "hf-hub:timm/inception_v3.tv_in1k", str(img)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not in the Hugging Face cache" in err


def test_names_without_a_counterpart_list_the_valid_ones(caches):
    with pytest.raises(UserError, match=r"'bn_inception' has no torchvision counterpart; .*inception_v3 "
                                        r"\(torchvision Inception_V3_Weights\), vgg16 \(torchvision VGG16_Weights\)"):
        create_model_from_weights("torchvision:IMAGENET1K_V1", name="bn_inception")
    with pytest.raises(UserError, match=r"'resnet50' has no vislearn counterpart; .*inception_v3 \(timm "
                                        r"inception_v3\), inception_v4 \(timm inception_v4\)"):
        create_model_from_weights("hf-hub:timm/resnet50.a1_in1k")
    with pytest.raises(UserError, match="Inception_V3_Weights has no 'IMAGENET1K_V9'; choose one of IMAGENET1K_V1"):
        resolve("torchvision:IMAGENET1K_V9", "inception_v3")
    with pytest.raises(UserError, match="needs a model name"):
        resolve("torchvision:IMAGENET1K_V1")
    with pytest.raises(UserError, match="hf-hub:ORG/NAME"):
        resolve("hf-hub:inception_v3")


def test_data_config_resize_follows_timms_floor_and_validates():
    assert DataConfig.from_crop_pct(299, 0.875).resize == 341  # floor(341.71), as timm
    assert DataConfig.from_crop_pct(224, 0.875).resize == 256
    with pytest.raises(UserError, match="interpolation"):
        DataConfig(224, 256, interpolation="lanczos9")
    with pytest.raises(UserError, match="resize"):
        DataConfig(224, 200)


def _image_folder(root, size=(120, 150)):
    from PIL import Image

    g = torch.Generator().manual_seed(4)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            d = root / split / c
            d.mkdir(parents=True)
            Image.fromarray((torch.rand(*size, 3, generator=g) * 255).byte().numpy()).save(d / "0.png")
    return root


def test_eval_of_hf_weights_uses_their_transform_and_normalisation(caches):
    import torch.nn.functional as F
    from PIL import Image

    from vislearn import recipes

    torch.manual_seed(5)
    peer = timm.create_model("inception_v3.gluon_in1k", pretrained=False, num_classes=2)
    _randomize_bn(peer, seed=6)
    peer.eval()
    export = caches / "export"
    timm.models.save_for_hf(peer, str(export), safe_serialization=True)
    config = json.loads((export / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, 107, 107]  # a smaller evaluation size keeps the test fast
    (export / "config.json").write_text(json.dumps(config))
    place_in_hf_cache("timm/inception_v3.gluon_in1k",
                      {f: str(export / f) for f in ("config.json", "model.safetensors")})
    data = _image_folder(caches / "data")
    # timm's inception_v3 averages over padding (the paper preset's TF-style pooling does not)
    metrics = recipes.evaluate("inception_v3", "hf-hub:timm/inception_v3.gluon_in1k", "paper",
                               ["aux_logits=false", "tf_avg_pool=false"], data=str(data))
    # the oracle: timm's data config values in a pipeline built here, then timm's network
    cfg = timm.data.resolve_data_config({}, pretrained_cfg=config["pretrained_cfg"])
    assert (tuple(cfg["input_size"]), cfg["interpolation"]) == ((3, 107, 107), "bicubic")
    assert tuple(cfg["mean"]) == (0.485, 0.456, 0.406)  # gluon_in1k's, not the converter's 0.5
    resize = int(cfg["input_size"][-1] / cfg["crop_pct"])  # floor, as timm
    # timm resizes the 8-bit image (PIL), as our reader does: resize and crop on uint8, then float
    tf = v2.Compose([v2.Resize(resize, interpolation=v2.InterpolationMode(cfg["interpolation"]), antialias=True),
                     v2.CenterCrop(cfg["input_size"][-1]), v2.ToDtype(torch.float32, scale=True),
                     v2.Normalize(cfg["mean"], cfg["std"])])
    x = torch.stack([tf(v2.functional.pil_to_tensor(Image.open(data / "val" / c / "0.png").convert("RGB")))
                     for c in ("cat", "dog")])
    z = _logits(peer, x)
    assert metrics["loss"] == pytest.approx(float(F.cross_entropy(z, torch.tensor([0, 1]))), rel=1e-5, abs=1e-4)
    assert metrics["top1"] == float((z.argmax(1) == torch.tensor([0, 1])).float().mean())


def test_a_pickle_in_a_cache_is_refused_not_unpickled(caches, capsys):
    import pickle

    marker = caches / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    raw = pickle.dumps({"state_dict": {"w": Evil()}})
    path = os.path.join(torch.hub.get_dir(), "checkpoints", TV_FILE)
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(raw)
    (caches / "pytorch_model.bin").write_bytes(raw)
    (caches / "config.json").write_text(json.dumps({"architecture": "inception_v3", "pretrained_cfg": {}}))
    place_in_hf_cache("timm/inception_v3.tv_in1k", {f: str(caches / f) for f in ("config.json", "pytorch_model.bin")})
    img = caches / "x.png"
    img.write_bytes(b"")
    for spec, name in (("torchvision:IMAGENET1K_V1", TV_FILE),
                       ("hf-hub:timm/inception_v3.tv_in1k", "pytorch_model.bin")):
        assert main(["predict", "--weights", spec, str(img)]) == 2
        err = capsys.readouterr().err
        assert name in err and err.count("\n") == 1 and "Traceback" not in err
        assert not marker.exists()


def test_downloads_on_but_no_network_is_the_same_clear_error(caches, monkeypatch):
    import socket
    import time

    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(time, "sleep", lambda s: None)  # huggingface_hub's retries back off for ~23 s
    with pytest.raises(UserError, match=rf"could not download {Inception_V3_Weights.IMAGENET1K_V1.url} .*place "
                                        rf"{TV_FILE}"):
        resolve("torchvision:IMAGENET1K_V1", "inception_v3")
    assert os.listdir(os.path.join(torch.hub.get_dir(), "checkpoints")) == []  # no partial file left
    with pytest.raises(UserError, match="not in the Hugging Face cache .* could not be downloaded .*; .*hf download"):
        resolve("hf-hub:timm/inception_v3.tv_in1k")
