"""Embedded procedural datasets: determinism, split disjointness, class balance and drawing geometry."""

import numpy as np
import pytest
import torch

from vislearn.data import _draw
from vislearn.data.embedded import SHAPE_CLASSES, shapes_classification
from vislearn.errors import UserError


def _row_hashes(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.reshape(len(x), -1)}


def test_shape_classes_are_distinct_combinations():
    assert len(SHAPE_CLASSES) == len(set(SHAPE_CLASSES)) == 160
    assert len(_draw.SHAPES) * len(_draw.COLOURS) * len(_draw.FILLS) == 160
    # the first ten mix several shapes, colours and fills
    first = [c.split() for c in SHAPE_CLASSES[:10]]
    assert len({f for f, _, _ in first}) == 2 and len({c for _, c, _ in first}) >= 4
    assert len({s for _, _, s in first}) >= 5


def test_shapes_classification_deterministic_balanced_and_disjoint():
    tr = shapes_classification("train", num_classes=12, samples_per_class=15, image_size=24, seed=3)
    te = shapes_classification("test", num_classes=12, samples_per_class=15, image_size=24, seed=3)
    al = shapes_classification("all", num_classes=12, samples_per_class=15, image_size=24, seed=3)
    assert tr.images.shape == (180, 3, 24, 24) and tr.images.dtype == torch.float32
    assert tr.targets.dtype == torch.long
    assert 0 <= float(tr.images.min()) and float(tr.images.max()) <= 1
    assert torch.bincount(tr.targets, minlength=12).tolist() == [15] * 12
    assert torch.bincount(te.targets, minlength=12).tolist() == [15] * 12
    assert tr.classes == te.classes == SHAPE_CLASSES[:12]
    assert torch.equal(al.images, torch.cat([tr.images, te.images]))
    assert torch.equal(al.targets, torch.cat([tr.targets, te.targets]))
    # no test image equals a train image
    assert not (_row_hashes(tr.images) & _row_hashes(te.images))
    assert len(_row_hashes(tr.images)) == 180
    # determinism: a fresh generation (cache cleared) gives identical bytes; another seed differs
    from vislearn.data.embedded import _shapes_classification_arrays
    _shapes_classification_arrays.cache_clear()
    again = shapes_classification("train", num_classes=12, samples_per_class=15, image_size=24, seed=3)
    assert again.images is not tr.images and torch.equal(again.images, tr.images)
    assert torch.equal(again.targets, tr.targets)
    other = shapes_classification("train", num_classes=12, samples_per_class=15, image_size=24, seed=4)
    assert not torch.equal(other.images, tr.images)
    # a cached second call returns the same tensor
    assert shapes_classification("train", num_classes=12, samples_per_class=15, image_size=24,
                                 seed=3).images is again.images


def test_shapes_classification_colour_is_the_class_colour():
    ds = shapes_classification("train", num_classes=160, samples_per_class=2, image_size=32, seed=0)
    # the most saturated/bright pixels of each image are the shape: their mean colour is closest to the
    # class colour among the palette (white is the unsaturated bright one)
    x = ds.images
    names = [ds.classes[int(t)].split()[1] for t in ds.targets]
    dist = ((x[:, None] - torch.from_numpy(_draw.PALETTE)[None, :, :, None, None]) ** 2).sum(2)
    nearest = dist.flatten(2).min(dim=2).values  # (N, 8): how close the best pixel gets to each colour
    hits = sum(int(nearest[i].argmin()) == _draw.COLOURS.index(n) for i, n in enumerate(names))
    assert hits / len(names) > 0.95


def test_shapes_classification_bad_arguments():
    with pytest.raises(UserError, match="split"):
        shapes_classification("val")
    with pytest.raises(UserError, match="num_classes"):
        shapes_classification(num_classes=161)
    with pytest.raises(UserError, match="samples_per_class"):
        shapes_classification(samples_per_class=0)


@pytest.mark.parametrize("kind", range(len(_draw.SHAPES)))
def test_shape_masks_fit_unit_disc_and_have_area(kind):
    g = np.linspace(-1.3, 1.3, 261, dtype=np.float32)
    u, v = np.meshgrid(g, g)
    m = _draw.shape_mask(kind, u, v)
    area = m.mean() * 2.6 ** 2
    assert area > 0.3, _draw.SHAPES[kind]
    assert not m[np.hypot(u, v) > 1.0 + 1e-3].any(), _draw.SHAPES[kind]


def test_square_and_circle_masks_match_closed_form_area():
    # square of circumradius 1 has area 2; circle of radius 0.85 has area pi*0.85^2
    masks = _draw.object_masks(np.array([2, 0]), np.full(2, 100.0), np.full(2, 100.0), np.full(2, 80.0),
                               np.array([0.3, 0.0]), np.ones(2), 200)
    assert masks.shape == (2, 200, 200)
    assert abs(float(masks[0].sum()) / 80 ** 2 - 2.0) < 0.01
    assert abs(float(masks[1].sum()) / 80 ** 2 - np.pi * 0.85 ** 2) < 0.01
