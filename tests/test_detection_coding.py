"""fit_coder_stats at its edges (the survivors of `make mutants` on detection/coding.py, tests/MUTANTS.md)."""

from __future__ import annotations

import numpy as np
import torch

from vislearn.detection.coding import box_offsets, fit_coder_stats


def test_fit_coder_stats_no_one_and_two_matches():
    priors = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.2, 0.3, 0.9, 0.8]])
    boxes = torch.tensor([[0.15, 0.05, 0.55, 0.45], [0.25, 0.2, 0.8, 0.9]])
    mean, std = fit_coder_stats(torch.zeros(0, 4), torch.zeros(0, 4))  # no match: the identity coder
    assert torch.equal(mean, torch.zeros(4)) and torch.equal(std, torch.ones(4))
    mean, std = fit_coder_stats(boxes[:1], priors[:1], mode="corner")  # one match: its offsets, unit std
    torch.testing.assert_close(mean, box_offsets(boxes[:1], priors[:1], "corner")[0])
    assert torch.equal(std, torch.ones(4))
    # two matches: the population std (ddof 0) of the corner offsets (box − prior), by hand with numpy
    off = (boxes - priors).double().numpy()
    mean, std = fit_coder_stats(boxes, priors, mode="corner")
    np.testing.assert_allclose(mean.numpy(), off.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std.numpy(), np.maximum(off.std(0, ddof=0), 1e-3), rtol=1e-6)
