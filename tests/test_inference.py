"""optimize(): the fast inference path keeps the model's outputs and its backbone interface."""

import pytest
import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.inference import InferenceModel, cpu_supports_bf16, optimize, resolve_precision
from vislearn.models import create_model
from vislearn.nn import ConvBNAct, is_batchnorm


def _trained_mlp():
    model = create_model("mlp", batch_norm=True)
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, 1, 8, 8))  # non-trivial running statistics
    return model


def test_fp32_fold_is_exact_and_interface_is_kept():
    model = _trained_mlp()
    x = torch.rand(8, 1, 8, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize(model, precision="fp32")
    assert isinstance(fast, InferenceModel) and not fast.training
    assert not any(is_batchnorm(m) for m in fast.modules())
    # the input is untouched: still training, its 3 BNs in place, every weight and statistic unchanged
    assert model.training and sum(is_batchnorm(m) for m in model.modules()) == 3
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    model.eval()
    with torch.no_grad():
        ref = model(x)
    out = fast(x)
    assert out.dtype == torch.float32
    assert float((out - ref).abs().max() / ref.abs().max()) < 1e-5
    torch.testing.assert_close(fast.forward_features(x)[0], model.forward_features(x)[0], rtol=1e-5, atol=1e-6)
    assert fast.feature_info == model.feature_info
    assert fast.num_features == model.num_features  # other attributes forwarded
    fast.normalization = ((0.5,), (0.25,))
    assert fast.model.normalization == ((0.5,), (0.25,))
    with pytest.raises(UserError, match="inference only"):
        fast.train()


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, stride=2, padding=1)
        self.block = ConvBNAct(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def test_bf16_channels_last_returns_float32_close_to_fp32():
    torch.manual_seed(0)
    model = _Net().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2)
    x = torch.rand(4, 3, 24, 24)
    with torch.no_grad():
        ref = model(x)
    fast = optimize(model, precision="bf16")
    out = fast(x)
    assert out.dtype == torch.float32
    from vislearn.nn.fuse import FusedConv2d

    assert isinstance(fast.model.stem.conv, FusedConv2d)  # fused on the CPU by default
    assert fast.model.stem.conv.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert float((out - ref).abs().max() / ref.abs().max()) < 0.05
    plain = optimize(model, precision="bf16", fuse=False)
    assert isinstance(plain.model.stem.conv, nn.Conv2d)
    assert plain.model.stem.conv.weight.is_contiguous(memory_format=torch.channels_last)
    # the same bf16 oneDNN convolutions: fused and unfused agree to bf16 rounding
    assert float((plain(x) - out).abs().max() / ref.abs().max()) < 0.02
    assert fast.dtype == torch.bfloat16
    unfolded = optimize(model, fold=False, channels_last=False, precision="fp32")
    assert sum(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules()) == 2
    torch.testing.assert_close(unfolded(x), ref)


def test_precision_resolution_and_errors():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert resolve_precision("fp32", cpu) is None and resolve_precision("fp16", cpu) == torch.float16
    with pytest.raises(UserError, match="precision"):
        optimize(_Net(), precision="int8")
    with pytest.raises(UserError, match="already optimized"):
        optimize(optimize(_Net()))
    with pytest.raises(UserError, match="nn.Module"):
        optimize("model")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            optimize(_Net(), device="cuda")
