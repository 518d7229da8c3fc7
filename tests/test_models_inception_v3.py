"""Inception-v3: parameter counts, key layout, exact equivalence with torchvision and timm (random
weights, eval at 299 and 150, aux logits in training mode), the TF-slim converter, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torchvision

from vislearn.errors import UserError
from vislearn.io import save_weights
from vislearn.models import create_model
from vislearn.models.base import IMAGENET_MEAN, IMAGENET_STD
from vislearn.models.inception_v3 import InceptionV3, set_tf_avg_pool
from vislearn.models.tfslim_names import tf_slim_from_model
from vislearn.nn.profile import count_macs


def _randomize_bn(model: nn.Module, seed: int = 1, size: int = 120) -> None:
    """Calibrated BN statistics (one training-mode pass over random [-1, 1] images) and random γ, β.

    Without calibration a randomly initialised 42-layer network in eval mode maps every input to
    nearly the same logits, and an equivalence test would compare constants.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for m in bns:  # γ, β first: the calibrated statistics then see their effect downstream
            m.weight.copy_(torch.rand(m.num_features, generator=g) * 0.4 + 0.8)
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.momentum = 1.0
        was, aux, validate = model.training, model.AuxLogits, getattr(model, "validate_inputs", None)
        if validate is not None:
            model.validate_inputs = False  # ours, fed [-1, 1] directly with normalisation off
        model.AuxLogits = None  # the peers' aux heads need 299 px in training mode; they are not used
        flag = getattr(model, "aux_logits", None)
        if flag is not None:
            model.aux_logits = False  # timm checks this flag rather than the module
        model.train()
        model(torch.rand(2, 3, size, size, generator=g) * 2 - 1)
        model.train(was)
        model.AuxLogits = aux
        if validate is not None:
            model.validate_inputs = validate
        if flag is not None:
            model.aux_logits = flag
        for m in bns:
            m.momentum = 0.1


def _input_dependent(logits: torch.Tensor) -> None:
    assert logits.std(0).mean().item() > 1e-2, "logits barely depend on the input: a vacuous comparison"


@pytest.fixture(scope="module")
def tv_model():
    torch.manual_seed(0)
    m = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, dropout=0.0)
    _randomize_bn(m)
    return m.eval()


@pytest.fixture(scope="module")
def tv_file(tmp_path_factory, tv_model):
    path = tmp_path_factory.mktemp("tv") / "tv.pth"
    torch.save(tv_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ours_from_tv(tv_file):
    return create_model("inception_v3", weights=str(tv_file)).eval()


@pytest.fixture(scope="module")
def timm_model():
    torch.manual_seed(1)
    m = timm.create_model("inception_v3")  # timm's default: no aux head (it would run in eval mode too)
    _randomize_bn(m, seed=2)
    return m.eval()


def test_parameter_counts_match_paper_table_and_peers(tv_model):
    ours = create_model("inception_v3", aux_logits=False)
    ours_aux = create_model("inception_v3", aux_logits=True)
    n = sum(p.numel() for p in ours.parameters())
    n_aux = sum(p.numel() for p in ours_aux.parameters())
    assert n == 23_834_568 and n_aux == 27_161_264  # PAPERS.md §2 (torchvision layout)
    assert n_aux == sum(p.numel() for p in tv_model.parameters())
    assert n < 25_000_000  # paper: "< 25M parameters"


def test_state_dict_keys_identical_to_torchvision_and_timm(tv_model, timm_model):
    ours = create_model("inception_v3", aux_logits=True)
    assert list(ours.state_dict()) == list(tv_model.state_dict())
    assert list(create_model("inception_v3", aux_logits=False).state_dict()) == list(timm_model.state_dict())
    for k, v in tv_model.state_dict().items():
        assert ours.state_dict()[k].shape == v.shape, k


def test_macs_at_299():
    with torch.device("meta"):  # shapes only: nothing is computed
        ours = InceptionV3(aux_logits=False, normalization=None)
        peer = timm.create_model("inception_v3")
    macs = count_macs(ours, 299)
    assert 5.6e9 < macs < 5.8e9  # paper: "about 5 billion multiply-adds"; timm lists 5.73 GMACs
    assert macs == count_macs(peer, 299) == 5_713_216_096  # the same counter on timm's network


@pytest.mark.parametrize("size", [299, 150])
def test_torchvision_equivalence_eval(ours_from_tv, tv_model, size):
    ours = ours_from_tv
    assert ours.normalization == ((0.5,) * 3, (0.5,) * 3)
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        mine = ours(x)
        # torchvision with transform_input=False fed the same normalised tensor our forward builds
        ref = tv_model((x - 0.5) / 0.5)
    _input_dependent(ref)
    assert (mine - ref).abs().max().item() <= 1e-4


def test_torchvision_transform_input_trap_is_absorbed(ours_from_tv, tv_model):
    """torchvision's pretrained pipeline = ImageNet mean/std + transform_input=True; ours on [0, 1]
    gives the same logits with no second normalisation to remember."""
    ours = ours_from_tv
    tv_ti = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False,
                                            transform_input=True, dropout=0.0).eval()
    tv_ti.load_state_dict(tv_model.state_dict())
    x = torch.rand(2, 3, 120, 120, generator=torch.Generator().manual_seed(3))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = tv_ti((x - mean) / std)
        # equal up to float32 rounding of the two input transforms (relative 1e-4)
        assert (ours(x) - ref).abs().max().item() <= 1e-4 * ref.abs().max().item()
        # the trap itself: feeding ImageNet-normalised input to the raw network is a different model
        assert (ours(x) - tv_model((x - mean) / std)).abs().max().item() > 1e-3


def test_torchvision_equivalence_train_mode_aux(tmp_path, tv_model):
    ours = create_model("inception_v3", drop_rate=0.0)
    ours.load_state_dict(tv_model.state_dict())
    tv = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, dropout=0.0)
    tv.load_state_dict(tv_model.state_dict())
    ours.train()
    tv.train()  # BN in training mode on both sides: batch statistics
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits, aux = ours(x)
        ref = tv((x - 0.5) / 0.5)
    _input_dependent(ref.aux_logits)
    assert (aux - ref.aux_logits).abs().max().item() <= 1e-4
    assert (logits - ref.logits).abs().max().item() <= 1e-4
    # the running statistics moved identically
    assert torch.allclose(ours.Mixed_6e.branch_pool.bn.running_mean, tv.Mixed_6e.branch_pool.bn.running_mean,
                          atol=1e-6)


@pytest.mark.parametrize("size", [299, 150])
def test_timm_equivalence_eval(tmp_path, timm_model, size):
    from safetensors.torch import save_file

    path = tmp_path / "timm.safetensors"
    save_file({k: v.contiguous() for k, v in timm_model.state_dict().items()}, str(path))
    ours = create_model("inception_v3", aux_logits=False, weights=str(path)).eval()
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(size + 1))
    with torch.no_grad():
        ref = timm_model((x - 0.5) / 0.5)
        _input_dependent(ref)
        assert (ours(x) - ref).abs().max().item() <= 1e-4


def test_timm_equivalence_train_mode_aux(timm_model):
    peer = timm.create_model("inception_v3", aux_logits=True)
    peer.load_state_dict(timm_model.state_dict(), strict=False)  # + timm's own random aux head
    ours = create_model("inception_v3", drop_rate=0.0)
    ours.load_state_dict(peer.state_dict())
    ours.train()
    peer.train()
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        logits, aux = ours(x)
        ref_logits, ref_aux = peer((x - 0.5) / 0.5)
    _input_dependent(ref_aux)
    assert (aux - ref_aux).abs().max().item() <= 1e-4
    assert (logits - ref_logits).abs().max().item() <= 1e-4


def test_peer_checkpoint_with_aux_into_model_without(tmp_path, tv_model):
    path = tmp_path / "tv.pth"
    torch.save({"state_dict": tv_model.state_dict()}, path)  # a wrapped checkpoint as well
    ours = create_model("inception_v3", aux_logits=False, weights=str(path)).eval()
    x = torch.rand(1, 3, 100, 100)
    with torch.no_grad():
        assert (ours(x) - tv_model((x - 0.5) / 0.5)).abs().max().item() <= 1e-4
    # a timm checkpoint built without aux cannot fill a model with the aux head
    no_aux = timm.create_model("inception_v3").state_dict()
    torch.save(no_aux, tmp_path / "noaux.pth")
    with pytest.raises(UserError, match="no auxiliary head"):
        create_model("inception_v3", aux_logits=True, weights=str(tmp_path / "noaux.pth"))


def test_tf_slim_npz_roundtrip_drops_background_and_sets_gamma(tmp_path):
    src = create_model("inception_v3", num_classes=7, aux_logits=True)
    src.normalization = None  # calibrate BN on the [-1, 1] images it sees
    _randomize_bn(src, size=96)
    src.normalization = ((0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        for m in src.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.fill_(1.0)  # TF-slim models have no γ
    arrays = {k: v.numpy() for k, v in tf_slim_from_model(src).items()}
    assert arrays["InceptionV3/Logits/Conv2d_1c_1x1/weights"].shape == (1, 1, 2048, 8)  # 7 + background
    assert arrays["InceptionV3/Mixed_5c/Branch_1/Conv_1_0c_5x5/weights"].shape == (5, 5, 48, 64)
    assert "InceptionV3/Mixed_7c/Branch_1/Conv2d_0c_3x1/weights" in arrays
    assert not any(k.endswith("gamma") for k in arrays)
    # an EMA shadow variable takes precedence over the raw one (evaluation uses averaged weights)
    arrays["InceptionV3/Logits/Conv2d_1c_1x1/biases/ExponentialMovingAverage"] = \
        arrays["InceptionV3/Logits/Conv2d_1c_1x1/biases"] + 1.0
    path = tmp_path / "slim.npz"
    np.savez(path, **arrays)
    ours = create_model("inception_v3", num_classes=7, aux_logits=True, weights=str(path))
    assert ours.tf_avg_pool and not ours.Mixed_5b.pool.count_include_pad
    assert ours.model_kwargs["tf_avg_pool"] is True
    assert torch.equal(ours.Mixed_5b.branch1x1.bn.weight, torch.ones(64))
    assert torch.allclose(ours.fc.bias, src.fc.bias + 1.0)
    ours.fc.bias.data.copy_(src.fc.bias)
    set_tf_avg_pool(src, True)
    src.eval()
    ours.eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ref = src(x)
        _input_dependent(ref)
        assert (ours(x) - ref).abs().max().item() <= 1e-5
    src.train()
    ours.train()
    with torch.no_grad():
        assert torch.allclose(ours(x)[1], src(x)[1], atol=1e-5)


def test_tf_slim_wrong_class_count_is_clear(tmp_path):
    src = create_model("inception_v3", num_classes=5, aux_logits=False)
    np.savez(tmp_path / "slim.npz", **{k: v.numpy() for k, v in tf_slim_from_model(src).items()})
    with pytest.raises(UserError, match="6 classes; the model has 10"):
        create_model("inception_v3", num_classes=10, aux_logits=False, weights=str(tmp_path / "slim.npz"))


def test_tf_avg_pool_excludes_padding():
    pool_tf = create_model("inception_v3", tf_avg_pool=True).Mixed_5b.pool
    pool_pt = create_model("inception_v3").Mixed_5b.pool
    x = torch.ones(1, 1, 4, 4)
    assert torch.equal(pool_tf(x), x)  # TF "SAME": the mean of the valid pixels only
    assert pool_pt(x)[0, 0, 0, 0].item() == pytest.approx(4 / 9)  # PyTorch: zeros counted


def test_outputs_by_mode_and_small_input():
    m = create_model("inception_v3", num_classes=4)
    x = torch.rand(2, 3, 75, 75)
    m.train()
    out = m(x)
    assert isinstance(out, tuple) and out[0].shape == out[1].shape == (2, 4)  # aux works from 75 px
    m.eval()
    with torch.no_grad():
        assert isinstance(m(x), torch.Tensor) and m(x).shape == (2, 4)
    m2 = create_model("inception_v3", num_classes=4, aux_logits=False).train()
    assert isinstance(m2(x), torch.Tensor)


def test_forward_features_strides():
    # the paper's stage widths at width 1.0; maps agreeing with feature_info: test_models_contract.py
    m = create_model("inception_v3", aux_logits=False)
    assert [f.channels for f in m.feature_info] == [64, 192, 288, 768, 2048]
    assert [f.stride for f in m.feature_info] == [2, 4, 8, 16, 32]


def test_normalization_override_and_default():
    assert create_model("inception_v3").normalization == ((0.5,) * 3, (0.5,) * 3)
    m = create_model("inception_v3", normalization=(IMAGENET_MEAN, IMAGENET_STD))
    assert m.normalization[0] == pytest.approx(IMAGENET_MEAN)


def test_bad_inputs_are_clear():
    m = create_model("inception_v3", num_classes=3, aux_logits=False).eval()
    with pytest.raises(UserError, match="expected 3 channels, got 1"):
        m(torch.rand(1, 1, 80, 80))
    with pytest.raises(UserError, match="at least 75×75"):
        m(torch.rand(1, 3, 74, 80))
    with pytest.raises(UserError, match="float tensor"):
        m(torch.randint(0, 255, (1, 3, 80, 80), dtype=torch.uint8))
    with pytest.raises(UserError, match=r"values must be in \[0, 1\]"):
        m(torch.rand(1, 3, 80, 80) * 255)
    with pytest.raises(UserError, match="num_classes"):
        create_model("inception_v3", num_classes=0)
    with pytest.raises(UserError, match="bad option"):
        create_model("inception_v3", aux=True)


def test_wrong_checkpoints_are_clear(tmp_path):
    small = create_model("inception_v3", num_classes=10, aux_logits=False)
    save_weights(small, tmp_path / "ten.safetensors")
    with pytest.raises(UserError, match=r"fc\.weight: file \(10, 2048\) vs model \(1000, 2048\)"):
        create_model("inception_v3", aux_logits=False, weights=str(tmp_path / "ten.safetensors"))
    mlp = create_model("mlp")
    save_weights(mlp, tmp_path / "mlp.safetensors")
    with pytest.raises(UserError, match="holds weights of model 'mlp'"):
        create_model("inception_v3", weights=str(tmp_path / "mlp.safetensors"))
    torch.save(mlp.state_dict(), tmp_path / "mlp.pth")
    with pytest.raises(UserError, match="missing keys"):
        create_model("inception_v3", weights=str(tmp_path / "mlp.pth"))


def test_our_weights_roundtrip(tmp_path):
    m = create_model("inception_v3", num_classes=5, normalization=(0.4, 0.3))
    m.normalization = None
    _randomize_bn(m, size=80)
    m.normalization = (0.4, 0.3)
    save_weights(m, tmp_path / "ours.safetensors")
    m2 = create_model("inception_v3", num_classes=5, weights=str(tmp_path / "ours.safetensors")).eval()
    assert m2.normalization[1] == pytest.approx((0.3,) * 3)
    x = torch.rand(1, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), m2(x))


def test_a_timm_checkpoint_without_the_aux_head_loads_from_the_cli(timm_model, tmp_path, capsys):
    from PIL import Image

    from vislearn.cli import main
    from vislearn.models import create_model_from_weights

    path = tmp_path / "timm_v3.pth"
    torch.save(timm_model.state_dict(), path)  # timm's layout has no AuxLogits.* keys
    ours = create_model_from_weights(path, name="inception_v3").eval()
    assert ours.AuxLogits is None
    x = torch.rand(2, 3, 150, 150)
    with torch.no_grad():  # timm's inception_v3 expects [-1, 1] input; ours applies (0.5, 0.5) itself
        assert torch.allclose(ours(x), timm_model(x * 2 - 1), atol=1e-4)
    img = tmp_path / "img.png"
    Image.new("RGB", (320, 300), (120, 80, 40)).save(img)
    assert main(["predict", "--weights", str(path), str(img), "--top", "3"]) == 0
    assert main(["export", "--weights", str(path), "--out", str(tmp_path / "v3.pt"), "--image-size", "80"]) == 0
    assert "wrote" in capsys.readouterr().out
