"""The TF-slim Inception-v3 mapping against the official checkpoint's variables (not our own exporter).

``fixtures/inception_v3_tf_slim_variables.json`` lists every ``InceptionV3/...`` variable of the released
``inception_v3_2016_08_28`` checkpoint with its shape, and the order TF-slim creates the convolutions
in, written out by hand from tensorflow/models ``research/slim/nets/inception_v3.py`` (its source and
commit are in the file) with, for each convolution, what it reads (the convolution before it in
its branch, the block's input, or a pooling). Names and shapes alone cannot tell two same-shape
scopes apart, so the import is also checked for WHICH scope lands in which convolution: in our
forward, the convolution holding scope S must read the output of the one holding S's input.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from vislearn.models import create_model
from vislearn.models.tfslim_names import convert_tf_slim_v3, tf_slim_from_model

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "inception_v3_tf_slim_variables.json").read_text())
OFFICIAL: dict[str, list[int]] = FIXTURE["variables"]
ORDER: list[str] = FIXTURE["conv_scopes_in_creation_order"]


def test_fixture_is_the_official_layout():
    # 94 convolutions in the base + 2 in the auxiliary head, each with weights and three BN variables
    # (no gamma: scale=False), plus two 1×1 classifiers with biases over 1001 classes (background first)
    assert len(ORDER) == 96 and len(OFFICIAL) == 96 * 4 + 4
    assert OFFICIAL["InceptionV3/Mixed_6a/Branch_1/Conv2d_1a_1x1/weights"] == [3, 3, 96, 96]  # a "1x1" that is 3×3
    assert OFFICIAL["InceptionV3/Logits/Conv2d_1c_1x1/weights"] == [1, 1, 2048, 1001]
    assert not any(k.endswith("gamma") for k in OFFICIAL)


def test_exported_names_and_shapes_are_the_official_checkpoints():
    model = create_model("inception_v3", num_classes=1000, aux_logits=True)
    ours = {k: list(v.shape) for k, v in tf_slim_from_model(model).items()}
    assert sorted(set(ours) - set(OFFICIAL)) == [] and sorted(set(OFFICIAL) - set(ours)) == []
    assert ours == OFFICIAL


def _official_arrays() -> dict[str, torch.Tensor]:
    """Official-layout arrays whose BN beta is the scope's creation index: each conv's origin is readable."""
    g = torch.Generator().manual_seed(0)
    arrays = {k: 0.01 * torch.randn(shape, generator=g) for k, shape in OFFICIAL.items()}
    for i, scope in enumerate(ORDER):
        arrays[f"InceptionV3/{scope}/BatchNorm/beta"] = torch.full(OFFICIAL[f"InceptionV3/{scope}/BatchNorm/beta"],
                                                                   float(i))
        arrays[f"InceptionV3/{scope}/BatchNorm/moving_variance"] += 1.0
    return arrays


def _dataflow(model: nn.Module) -> dict[str, str]:
    """For each of our conv+BN modules that runs: the module whose output it reads ("block_input": its
    Inception block's input, "other": anything else, e.g. a pooling's output)."""
    made_by: dict[int, str] = {}
    block_inputs: set[int] = set()
    keep: list[torch.Tensor] = []  # hold every tensor so no id is reused
    read: dict[str, str] = {}
    hooks = []
    for name, m in model.named_modules():
        if name.startswith(("Mixed_", "AuxLogits")) and "." not in name:
            hooks.append(m.register_forward_pre_hook(lambda mod, args: (block_inputs.add(id(args[0])),
                                                                          keep.append(args[0]))[0]))
        if hasattr(m, "conv") and isinstance(getattr(m, "bn", None), nn.BatchNorm2d):
            def hook(mod, args, out, name=name):
                x = args[0]
                read[name] = made_by.get(id(x), "block_input" if id(x) in block_inputs else "other")
                made_by[id(out)] = name
                keep.extend([x, out])
            hooks.append(m.register_forward_hook(hook))
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 96, 96))
    for h in hooks:
        h.remove()
    return read


def test_import_puts_each_official_scope_in_the_convolution_that_computes_it():
    model = create_model("inception_v3", num_classes=1000, aux_logits=True)
    arrays = _official_arrays()
    model.load_state_dict(convert_tf_slim_v3(arrays, model))
    modules = dict(model.named_modules())
    read = _dataflow(model)
    scope_of = {name: ORDER[int(modules[name].bn.bias[0])] for name in read}
    assert sorted(scope_of.values()) == sorted(ORDER)  # every official scope imported exactly once
    for name, scope in scope_of.items():
        # the same block, and the same input as in TF-slim's graph (which conv feeds which)
        assert name.split(".")[0] == scope.split("/")[0], (name, scope)
        expected = FIXTURE["conv_input"][scope]
        assert (scope_of[read[name]] if read[name] in scope_of else read[name]) == expected, (name, scope)
        tf_weights = arrays[f"InceptionV3/{scope}/weights"]  # [kh, kw, in, out]
        torch.testing.assert_close(modules[name].conv.weight, tf_weights.permute(3, 2, 0, 1))
    torch.testing.assert_close(model.fc.bias, arrays["InceptionV3/Logits/Conv2d_1c_1x1/biases"][1:])  # background
    torch.testing.assert_close(model.AuxLogits.fc.bias, arrays["InceptionV3/AuxLogits/Conv2d_2b_1x1/biases"][1:])
