"""Few-shot evaluation: k-NN against a numpy oracle, n-shot logistic regression on easy and
impossible data, the std over splits, the linear probe against scikit-learn, and bad input."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from vislearn.errors import UserError
from vislearn.metrics.fewshot import knn_accuracy, linear_probe_accuracy, nshot_accuracy, nshot_split_accuracies


def _np_knn(xtr, ytr, xte, yte, k, t):
    """DINO's vote written out one test sample at a time."""
    xtr = xtr / np.linalg.norm(xtr, axis=1, keepdims=True)
    xte = xte / np.linalg.norm(xte, axis=1, keepdims=True)
    correct = 0
    for q, y in zip(xte, yte, strict=True):
        sims = xtr @ q
        order = np.argsort(-sims, kind="stable")[:k]
        scores = {}
        for i in order:
            scores[ytr[i]] = scores.get(ytr[i], 0.0) + np.exp(sims[i] / t)
        best = max(sorted(scores), key=lambda c: scores[c])
        correct += best == y
    return correct / len(yte)


def _blobs(n_classes=4, per_class=12, dim=16, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim))
    x = np.concatenate([c + spread * rng.normal(size=(per_class, dim)) for c in centers])
    y = np.repeat(np.arange(n_classes), per_class)
    return x, y


def test_knn_matches_numpy_oracle():
    rng = np.random.default_rng(0)
    xtr, ytr = rng.normal(size=(40, 6)), rng.integers(0, 5, 40)
    xte, yte = rng.normal(size=(25, 6)), rng.integers(0, 5, 25)
    for k, t in ((1, 0.07), (5, 0.07), (20, 0.5), (40, 0.1)):
        want = _np_knn(xtr, ytr, xte, yte, k, t)
        assert knn_accuracy(xtr, ytr, xte, yte, k=k, temperature=t) == pytest.approx(want)
    # tensors and small blocks (7 test rows of 40 × 4 bytes) give the same answer
    got = knn_accuracy(torch.from_numpy(xtr).float(), torch.from_numpy(ytr), torch.from_numpy(xte).float(),
                       torch.from_numpy(yte), k=5, memory_mb=7 * 40 * 4 / 2**20)
    assert got == pytest.approx(_np_knn(xtr, ytr, xte, yte, 5, 0.07))


def test_knn_obvious_case_and_weighting():
    # test points sit on their class's training points: perfect accuracy
    x, y = _blobs(spread=0.01)
    assert knn_accuracy(x, y, x + 1e-3, y, k=5) == 1.0
    # one very close neighbour of class 1 outvotes two far ones of class 0 at a low temperature,
    # but not under a plain majority (high temperature)
    xtr = np.array([[1.0, 0.0], [0.0, 1.0], [0.05, 1.0]])
    ytr = np.array([1, 0, 0])
    xte, yte = np.array([[1.0, 0.3]]), np.array([1])
    assert knn_accuracy(xtr, ytr, xte, yte, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(xtr, ytr, xte, yte, k=3, temperature=100.0) == 0.0


def test_nshot_separable_blobs_is_near_one():
    x, y = _blobs(n_classes=5, per_class=20, spread=0.1)
    xt, yt = _blobs(n_classes=5, per_class=10, spread=0.1)  # same seed: same centres
    mean, std = nshot_accuracy(x, y, xt, yt, shots=1, splits=3, seed=0)
    assert mean >= 0.95
    assert std >= 0


def test_nshot_random_labels_is_near_chance():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 16)), rng.integers(0, 4, 200)
    xt, yt = rng.normal(size=(400, 16)), rng.integers(0, 4, 400)
    mean, _ = nshot_accuracy(x, y, xt, yt, shots=5, splits=4, seed=0, l2=1e-2)
    assert abs(mean - 0.25) < 0.08


def test_std_is_the_sample_std_of_the_splits_and_seeded():
    rng = np.random.default_rng(2)
    x, y = _blobs(n_classes=3, per_class=15, spread=1.5, seed=2)
    xt, yt = _blobs(n_classes=3, per_class=30, spread=1.5, seed=2)
    x = x + 0.3 * rng.normal(size=x.shape)
    grid = (1e-3, 1e-1, 10.0)
    accs = nshot_split_accuracies(x, y, xt, yt, shots=2, splits=5, seed=3, l2_grid=grid)
    assert len(accs) == 5 and len(set(accs)) > 1  # the splits really differ
    mean, std = nshot_accuracy(x, y, xt, yt, shots=2, splits=5, seed=3, l2_grid=grid)
    assert mean == pytest.approx(np.mean(accs))
    assert std == pytest.approx(np.std(accs, ddof=1))
    assert nshot_split_accuracies(x, y, xt, yt, shots=2, splits=5, seed=3, l2_grid=grid) == accs
    assert nshot_split_accuracies(x, y, xt, yt, shots=2, splits=5, seed=4, l2_grid=grid) != accs
    assert nshot_accuracy(x, y, xt, yt, shots=2, splits=1, l2_grid=grid)[1] == 0.0


def test_linear_probe_equals_sklearn_on_normalised_features():
    x, y = _blobs(n_classes=3, per_class=20, spread=1.0, seed=4)
    xt, yt = _blobs(n_classes=3, per_class=20, spread=1.0, seed=5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    xtn = xt / np.linalg.norm(xt, axis=1, keepdims=True)
    clf = LogisticRegression(C=1.0 / (1e-2 * len(x)), max_iter=1000).fit(xn, y)
    assert linear_probe_accuracy(x, y, xt, yt, l2=1e-2) == pytest.approx((clf.predict(xtn) == yt).mean())


def test_bad_input():
    x, y = _blobs(n_classes=3, per_class=4)
    with pytest.raises(UserError, match="k must be an int >= 1, got 0"):
        knn_accuracy(x, y, x, y, k=0)
    with pytest.raises(UserError, match="k=50 exceeds the 12 training samples"):
        knn_accuracy(x, y, x, y, k=50)
    with pytest.raises(UserError, match="temperature"):
        knn_accuracy(x, y, x, y, temperature=0.0)
    with pytest.raises(UserError, match="shots=5 needs 5 training examples per class, but class 0 has 4"):
        nshot_accuracy(x, y, x, y, shots=5, l2=0.1)
    with pytest.raises(UserError, match="plus one held-out example"):
        nshot_accuracy(x, y, x, y, shots=4)
    with pytest.raises(UserError, match="shots must be an int >= 1"):
        nshot_accuracy(x, y, x, y, shots=0)
    with pytest.raises(UserError, match="l2 must be"):
        nshot_accuracy(x, y, x, y, l2=-1.0)
    with pytest.raises(UserError, match="dims"):
        knn_accuracy(x, y, x[:, :3], y)
    with pytest.raises(UserError, match="length"):
        knn_accuracy(x, y[:-1], x, y)
    with pytest.raises(UserError, match="NaN"):
        knn_accuracy(np.full_like(x, np.nan), y, x, y)
