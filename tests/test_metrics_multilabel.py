"""Top-k annotation metrics against a direct NumPy computation and scikit-learn's average precision."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from vislearn.errors import UserError
from vislearn.metrics import MultilabelTopK, topk_scores
from vislearn.metrics.multilabel import average_precision_per_label


def numpy_reference(scores: np.ndarray, targets: np.ndarray, k: int) -> dict:
    n, c = scores.shape
    pred = np.zeros_like(targets, dtype=bool)
    for i in range(n):  # the k highest-scoring labels (continuous random scores: no ties)
        pred[i, np.argsort(-scores[i])[:k]] = True
    gt = targets.astype(bool)
    precisions, recalls, aps = [], [], []
    for j in range(c):
        n_g = gt[:, j].sum()
        if n_g == 0:
            continue
        n_p = pred[:, j].sum()
        n_t = (pred[:, j] & gt[:, j]).sum()
        precisions.append(n_t / n_p if n_p else 0.0)
        recalls.append(n_t / n_g)
        aps.append(average_precision_score(gt[:, j], scores[:, j]))
    tot_t = (pred & gt).sum()
    return {"per_class_precision": np.mean(precisions), "per_class_recall": np.mean(recalls),
            "overall_precision": tot_t / pred.sum(), "overall_recall": tot_t / gt.sum(),
            "n_plus": float(np.sum(np.array(recalls) > 0)), "mean_average_precision": np.mean(aps),
            "num_labels_evaluated": float(len(recalls))}


@pytest.mark.parametrize("seed,k", [(0, 3), (1, 1), (2, 5)])
def test_topk_scores_match_numpy_and_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    n, c = 120, 15
    targets = (rng.random((n, c)) < rng.random(c) * 0.3).astype(np.float32)
    targets[:, -1] = 0  # a label absent from the ground truth is left out of the per-class means
    scores = (rng.standard_normal((n, c)) + 1.5 * targets).astype(np.float32)
    ours = topk_scores(torch.from_numpy(scores), torch.from_numpy(targets), k=k)
    ref = numpy_reference(scores, targets, k)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(float(value), rel=1e-6, abs=1e-9), key


def test_never_predicted_label_has_precision_zero_hand_case():
    # 3 images, 3 labels, k = 1: label 2 is never predicted
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.3], [0.7, 0.6, 0.5]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    out = topk_scores(scores, targets, k=1, per_label=True)
    # predictions: 0, 1, 0 → label 0: 1/2 correct, label 1: 1/1, label 2: never predicted
    assert out["label_precision"].tolist() == pytest.approx([0.5, 1.0, 0.0])
    assert out["label_recall"].tolist() == pytest.approx([1.0, 1.0, 0.0])
    assert out["per_class_precision"] == pytest.approx(0.5)
    assert out["per_class_recall"] == pytest.approx(2 / 3)
    assert out["overall_precision"] == pytest.approx(2 / 3)
    assert out["overall_recall"] == pytest.approx(2 / 4)
    assert out["n_plus"] == 2


def test_average_precision_with_tied_scores_matches_sklearn():
    rng = np.random.default_rng(4)
    scores = rng.integers(0, 4, size=(60, 6)).astype(np.float32)  # many ties
    targets = (rng.random((60, 6)) < 0.3).astype(np.float32)
    ours = average_precision_per_label(torch.from_numpy(scores), torch.from_numpy(targets))
    ref = [average_precision_score(targets[:, j], scores[:, j]) for j in range(6)]
    assert ours.tolist() == pytest.approx(ref, rel=1e-6)


def test_accumulator_equals_one_shot():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(50, 8, generator=g)
    t = (torch.rand(50, 8, generator=g) < 0.3).float()
    m = MultilabelTopK(k=3)
    for a in range(0, 50, 16):
        m.update(s[a:a + 16], t[a:a + 16])
    assert m.compute() == topk_scores(s, t, k=3)
    m.reset()
    with pytest.raises(UserError):
        m.compute()


@pytest.mark.parametrize("args", [
    (torch.zeros(4, 3), torch.zeros(4, 2), 1),
    (torch.zeros(4, 3), torch.full((4, 3), 0.5), 1),
    (torch.zeros(4, 3), torch.ones(4, 3), 4),
    (torch.zeros(4, 3), torch.ones(4, 3), 0),
    (torch.zeros(4, 3), torch.zeros(4, 3), 1),
])
def test_bad_metric_input(args):
    with pytest.raises(UserError):
        topk_scores(*args)
