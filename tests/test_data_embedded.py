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


# --------------------------------------------------------------------------------------- multilabel

def test_shapes_multilabel_counts_and_zipf_skew():
    from vislearn.data.embedded import shapes_multilabel
    ds = shapes_multilabel("train", num_labels=20, num_samples=800, image_size=16, max_labels=4, seed=1)
    y = ds.targets
    assert ds.images.shape == (800, 3, 16, 16) and y.shape == (800, 20) and y.dtype == torch.float32
    per_image = y.sum(1)
    assert per_image.min() >= 1 and per_image.max() == 4 and set(y.unique().tolist()) == {0.0, 1.0}
    freq = y.sum(0)
    assert freq[0] > 8 * freq[-1] > 0  # Zipf(1): the head label dwarfs the tail
    from scipy.stats import spearmanr
    assert spearmanr(freq.numpy(), np.arange(20)).statistic < -0.9  # frequency falls with the rank
    assert ds.classes == SHAPE_CLASSES[:20]
    flat = shapes_multilabel("train", num_labels=20, num_samples=800, image_size=16, zipf_exponent=0.0, seed=1)
    from scipy.stats import chisquare
    assert chisquare(flat.targets.sum(0).numpy()).pvalue > 1e-3  # exponent 0: consistent with uniform
    te = shapes_multilabel("test", num_labels=20, num_samples=800, image_size=16, max_labels=4, seed=1)
    assert not (_row_hashes(ds.images) & _row_hashes(te.images))
    from vislearn.data.embedded import _shapes_multilabel_arrays
    _shapes_multilabel_arrays.cache_clear()
    again = shapes_multilabel("train", num_labels=20, num_samples=800, image_size=16, max_labels=4, seed=1)
    assert torch.equal(again.images, ds.images) and torch.equal(again.targets, ds.targets)


def test_shapes_multilabel_each_label_is_drawn():
    from vislearn.data.embedded import shapes_multilabel
    # one label per image: the shape's colour (brightest saturated pixels) must be the label's colour
    ds = shapes_multilabel("train", num_labels=30, num_samples=200, image_size=32, max_labels=1, seed=0)
    pal = torch.from_numpy(_draw.PALETTE)
    nearest = ((ds.images[:, None] - pal[None, :, :, None, None]) ** 2).sum(2).flatten(2).min(2).values
    names = [ds.classes[int(r.argmax())].split()[1] for r in ds.targets]
    hits = sum(int(nearest[i].argmin()) == _draw.COLOURS.index(n) for i, n in enumerate(names))
    assert hits / len(names) > 0.95
    with pytest.raises(UserError, match="num_labels"):
        shapes_multilabel(num_labels=3, max_labels=4)


# ---------------------------------------------------------------------------------------- detection

def test_shapes_detection_boxes_are_tight_around_visible_pixels():
    from vislearn.data.shapes_detection import _generate_detection
    images, boxes, labels, background, masks = _generate_detection(0, 60, 64, 5, 8, seed=2, return_masks=True)
    total = 0
    for img, bx, lb, bg, mk in zip(images, boxes, labels, background, masks, strict=True):
        assert len(bx) == len(lb) == len(mk) <= 8
        union = torch.zeros(64, 64, dtype=torch.bool)
        for box, m in zip(bx, mk, strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert len(ys) >= 4
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            assert not (union & m).any()  # visible parts do not overlap
            union |= m
            colours = img[:, m]
            assert float((colours - colours[:, :1]).abs().max()) == 0  # one flat colour per object
            total += 1
        # every changed pixel belongs to exactly one labelled object, and nothing else changed
        assert torch.equal((img != bg).any(0), union)
    assert total > 100


def test_shapes_detection_statistics_and_determinism():
    from vislearn.data.collate import detection_collate
    from vislearn.data.shapes_detection import ShapesDetection, shapes_detection
    ds = shapes_detection("train", num_images=120, image_size=64, num_categories=4, max_objects=6, seed=0)
    assert isinstance(ds, ShapesDetection) and ds.classes == list(_draw.SHAPES[:4]) and len(ds) == 120
    img, t = ds[3]
    assert img.shape == (3, 64, 64) and t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.long
    counts = torch.tensor([len(b) for b in ds.boxes])
    assert counts.min() == 0 and counts.max() <= 6 and (counts >= 5).any()
    allb = torch.cat(ds.boxes)
    labs = torch.cat(ds.labels)
    assert set(labs.tolist()) == {0, 1, 2, 3}
    assert (allb[:, :2] >= 0).all() and (allb[:, 2:] <= 64).all() and (allb[:, 2:] > allb[:, :2]).all()
    w, h = allb[:, 2] - allb[:, 0], allb[:, 3] - allb[:, 1]
    area = w * h
    assert area.max() > 30 * area.min()  # several scales
    ratio = w / h
    assert (ratio > 1.6).sum() > 10 and (ratio < 1 / 1.6).sum() > 10  # several aspect ratios
    # occlusion: overlapping boxes occur
    from torchvision.ops import box_iou
    overl = sum(int((box_iou(b, b).fill_diagonal_(0) > 0.05).any()) for b in ds.boxes if len(b) > 1)
    assert overl > 10
    from vislearn.data.shapes_detection import _shapes_detection_cached
    _shapes_detection_cached.cache_clear()
    again = shapes_detection("train", num_images=120, image_size=64, num_categories=4, max_objects=6, seed=0)
    assert torch.equal(again.images, ds.images)
    assert all(torch.equal(a, b) for a, b in zip(again.boxes, ds.boxes, strict=True))
    te = shapes_detection("test", num_images=120, image_size=64, num_categories=4, max_objects=6, seed=0)
    assert not (_row_hashes(te.images) & _row_hashes(ds.images))
    al = shapes_detection("all", num_images=120, image_size=64, num_categories=4, max_objects=6, seed=0)
    assert len(al) == 240 and torch.equal(al.boxes[170], te.boxes[50])
    x, targets = detection_collate([ds[0], ds[1], ds[2]])
    assert x.shape == (3, 3, 64, 64) and len(targets) == 3 and torch.equal(targets[1]["boxes"], ds.boxes[1])


def test_shapes_detection_transform_moves_boxes():
    from torchvision.transforms import v2

    from vislearn.data.embedded import shapes_detection
    plain = shapes_detection("train", num_images=5, image_size=64, max_objects=5, seed=1)
    flipped = shapes_detection("train", num_images=5, image_size=64, max_objects=5, seed=1,
                               transform=v2.RandomHorizontalFlip(p=1.0))
    i = max(range(5), key=lambda j: len(plain.boxes[j]))
    img, t = flipped[i]
    assert torch.equal(img, plain.images[i].flip(-1))
    b = plain.boxes[i]
    expect = torch.stack([64 - b[:, 2], b[:, 1], 64 - b[:, 0], b[:, 3]], 1)
    assert type(t["boxes"]) is torch.Tensor and torch.equal(t["boxes"], expect)
    assert torch.equal(t["labels"], plain.labels[i])


def test_shapes_detection_boxes_stay_tight_past_the_first_chunk():
    # (a CPU-time bound used to stand here: it checked nothing and was flaky on a loaded machine.)
    # 128 px scenes of up to 10 objects are drawn 51 at a time: images 51.. come from the second chunk
    from vislearn.data.shapes_detection import _generate_detection
    images, boxes, labels, _, masks = _generate_detection(5, 60, 128, 5, 10, seed=0, return_masks=True)
    checked = 0
    for i in range(45, 60):
        assert len(boxes[i]) == len(labels[i]) == len(masks[i])
        for box, m in zip(boxes[i], masks[i], strict=True):
            ys, xs = torch.nonzero(m, as_tuple=True)
            assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
            checked += 1
    assert checked > 20


def test_get_batch_equals_collating_the_samples():
    from torch.utils.data import default_collate

    from vislearn.data.embedded import TensorImageDataset

    g = torch.Generator().manual_seed(0)
    noise = lambda x: x + torch.rand(()) # noqa: E731  a random transform: the per-sample draw order must hold
    ds = TensorImageDataset(torch.rand(10, 3, 2, 2, generator=g), torch.arange(10) % 3, noise)
    idx = [7, 2, 2, 9]
    torch.manual_seed(5)
    x, y = ds.get_batch(idx)
    torch.manual_seed(5)
    xr, yr = default_collate([ds[i] for i in idx])
    assert torch.equal(x, xr) and torch.equal(y, yr) and y.tolist() == [1, 2, 2, 0]
