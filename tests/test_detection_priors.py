"""Prior shapes from data: k-means aspect ratios against a hand-made set of two box shapes."""

from __future__ import annotations

import pytest
import torch

from vislearn.detection.priors import kmeans_aspect_ratios


def test_kmeans_aspect_ratios_of_two_shape_clusters():
    # 30 boxes 2:1 (w = 0.4, h = 0.2) and 20 boxes 1:3 (w = 0.1, h = 0.3), each jittered by ±1 %
    g = torch.Generator().manual_seed(0)
    wh = torch.cat([torch.tensor([[0.4, 0.2]]).repeat(30, 1), torch.tensor([[0.1, 0.3]]).repeat(20, 1)])
    wh = wh * (1 + 0.01 * (2 * torch.rand(wh.shape, generator=g) - 1))
    boxes = torch.cat([0.5 - wh / 2, 0.5 + wh / 2], 1)
    ratios = kmeans_aspect_ratios(boxes, k=2, seed=0)
    means = [float((wh[30:, 0] / wh[30:, 1]).mean()), float((wh[:30, 0] / wh[:30, 1]).mean())]
    # the centres are the mean w and h of each cluster, so their ratio is close to the ratio means
    assert ratios == pytest.approx(means, rel=0.01)
    assert ratios == tuple(sorted(ratios)) and ratios[0] == pytest.approx(1 / 3, rel=0.02)
