"""vislearn.metrics.detection_match: the pair IoU bit for bit against pycocotools' maskUtils.iou."""

import numpy as np
from pycocotools import mask as mask_utils

from vislearn.metrics.detection_match import pair_iou, xywh


def test_pair_iou_equals_pycocotools_bit_for_bit_with_crowds():
    rng = np.random.default_rng(0)
    n = 4000
    xy = np.round(rng.uniform(0, 600, (n, 2)), 2)
    g = np.concatenate([xy, xy + np.round(rng.uniform(0.5, 80, (n, 2)), 2)], 1)
    d = g + np.round(rng.normal(0, 8, (n, 4)), 3)
    d = np.concatenate([np.minimum(d[:, :2], d[:, 2:]), np.maximum(d[:, :2], d[:, 2:])], 1)
    crowd = rng.uniform(size=n) < 0.3
    ours = pair_iou(xywh(d), xywh(g), crowd)
    ref = np.array([mask_utils.iou(xywh(d[i:i + 1]), xywh(g[i:i + 1]), [int(crowd[i])])[0, 0] for i in range(n)])
    np.testing.assert_array_equal(ours, ref)
    assert (ours > 0.5).sum() > n // 4 and (ours == 0).sum() > 10  # overlapping and disjoint pairs both occur
    # the crowd IoU is intersection over the detection's area: above the plain IoU where a box sits inside
    inside = np.array([[10.0, 10.0, 20.0, 20.0]])
    region = np.array([[0.0, 0.0, 100.0, 100.0]])
    assert pair_iou(xywh(inside), xywh(region), np.array([True]))[0] == 1.0
    assert pair_iou(xywh(inside), xywh(region), np.array([False]))[0] == 0.01
