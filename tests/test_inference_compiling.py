"""optimize(compile=True): the inductor-compiled (frozen) model gives the eager optimized model's outputs.

Compiling takes seconds per graph on two cores, so one small model per mechanism: a classifier under
bf16 autocast, and a non-classifier (an L2-normalised embedding network) in fp32 with its compiled
``forward_features``. The four Inception families are compiled at full size by benchmarks/inference.py.
"""

import pytest
import torch

from vislearn.errors import UserError
from vislearn.inference import optimize
from vislearn.models import create_model


@pytest.mark.slow
def test_compiled_classifier_bf16_matches_eager_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = create_model("small_convnet", num_classes=5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(4, 3, 16, 16)
    eager = optimize(model, precision="bf16")
    fast = optimize(model, precision="bf16", compile=True)
    assert fast.compiled and not eager.compiled and "compiled=True" in repr(fast)
    freezing = torch._inductor.config.freezing
    out, ref = fast(x), eager(x)
    assert torch._inductor.config.freezing == freezing  # set for the compile only, then restored
    assert out.dtype == torch.float32
    # both run bf16 convolutions; inductor fuses the bias/ReLU epilogues and rounds at other points
    assert float((out - ref).abs().max() / ref.abs().max()) < 0.03
    assert model.training and all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    with pytest.raises(UserError, match="values must be in"):  # validation still runs (eagerly)
        fast(x + 2)
    with pytest.raises(UserError, match="inference only"):
        fast.train()


@pytest.mark.slow
def test_compiled_embedding_net_fp32_forward_and_features():
    torch.manual_seed(0)
    model = create_model("embedding_net", backbone="small_convnet", embedding_dim=8).eval()
    x = torch.rand(3, 3, 16, 16)
    fast = optimize(model, precision="fp32", compile=True)
    with torch.no_grad():
        ref, ref_feats = model(x), model.forward_features(x)
    torch.testing.assert_close(fast(x), ref, rtol=1e-4, atol=1e-5)
    feats = fast.forward_features(x)
    assert len(feats) == len(ref_feats)
    torch.testing.assert_close(feats[-1], ref_feats[-1], rtol=1e-4, atol=1e-4)
    assert fast(x[:1]).shape == (1, 8)  # a new batch size recompiles (dynamic batch) and still works
