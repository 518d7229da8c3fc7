"""The 5 conv + 3 FC multilabel network: layout, parameter count, metadata round trip, bad options."""

import pytest
import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.io import save_weights
from vislearn.models import create_model, create_model_from_weights


def test_paper_network_layout_and_parameter_count():
    m = create_model("multilabel_net")
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    fcs = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert len(convs) == 5 and len(fcs) == 3  # Gong et al. Sec. 4: five conv, three FC layers
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [f.out_features for f in fcs] == [4096, 4096, 81]
    # hand count: Σ (k·k·c_in + 1)·c_out over the convs, (in + 1)·out over the FC layers
    expected = ((11 * 11 * 3 + 1) * 96 + (5 * 5 * 96 + 1) * 256 + (9 * 256 + 1) * 384 + (9 * 384 + 1) * 384
                + (9 * 384 + 1) * 256 + (256 * 36 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 81)
    assert sum(p.numel() for p in m.parameters()) == expected == 58_613_201
    feats = m.forward_features(torch.rand(1, 3, 224, 224))
    assert [tuple(f.shape[-2:]) for f in feats] == [(27, 27), (13, 13), (6, 6)]  # AlexNet's grid sizes


def test_small_network_runs_on_small_images_and_keeps_metadata(tmp_path):
    names = [f"tag{i}" for i in range(7)]
    m = create_model("multilabel_net_small", num_classes=7, label_names=names, image_size=32).eval()
    x = torch.rand(3, 3, 32, 32)
    out = m(x)
    assert out.shape == (3, 7)
    path = tmp_path / "w.safetensors"
    save_weights(m, path)
    again = create_model_from_weights(path).eval()
    assert again.label_names == names and again.image_size == 32
    torch.testing.assert_close(again(x), out)


@pytest.mark.parametrize("kwargs", [
    {"variant": "vgg"}, {"norm": "group"}, {"width": 0.0}, {"dropout": 1.0},
    {"num_classes": 3, "label_names": ["a", "b"]}, {"image_size": 4},
])
def test_bad_options(kwargs):
    with pytest.raises(UserError):
        create_model("multilabel_net_small", **kwargs)


def test_input_validation():
    m = create_model("multilabel_net_small")
    with pytest.raises(UserError):
        m(torch.rand(1, 3, 32, 32) * 255)
