"""Retrieval metrics against pytorch-metric-learning's AccuracyCalculator and hand-computed cases."""

import numpy as np
import pytest
import torch

from vislearn.errors import UserError
from vislearn.metrics import RetrievalEvaluator, map_at_r, nmi, r_precision, recall_at_k, retrieval_metrics
from vislearn.metrics.retrieval import knn


def _pml(x, y, kmeans=None):
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    calc = AccuracyCalculator(
        include=("precision_at_1", "mean_average_precision_at_r", "r_precision", "NMI"), k="max_bin_count",
        device=torch.device("cpu"), knn_func=CustomKNN(LpDistance(normalize_embeddings=False)),
        kmeans_func=kmeans)
    return calc.get_accuracy(x, y)


def _sk_kmeans(x, k):
    from sklearn.cluster import KMeans

    return torch.as_tensor(KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(x.double().cpu().numpy()))


@pytest.mark.parametrize("chunk", [None, 7])
def test_equals_accuracy_calculator(chunk):
    torch.manual_seed(0)
    # random data with classes of unequal size, one lone sample, continuous values (no distance ties)
    y = torch.cat([torch.randint(0, 12, (300,)), torch.tensor([99])])
    x = torch.randn(301, 16) + 0.8 * torch.randn(100, 16)[y % 100]
    ours = retrieval_metrics(x, y, ks=(1, 2, 4), with_nmi=True, chunk_size=chunk)
    ref = _pml(x, y, kmeans=_sk_kmeans)
    assert ours["recall@1"] == pytest.approx(ref["precision_at_1"], abs=1e-9)
    assert ours["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-9)
    assert ours["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-9)
    assert ours["nmi"] == pytest.approx(ref["NMI"], abs=1e-9)
    assert 0 < ours["recall@1"] <= ours["recall@2"] <= ours["recall@4"] <= 1


def test_recall_brute_force():
    torch.manual_seed(1)
    x = torch.randn(60, 5)
    y = torch.randint(0, 6, (60,))
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    order = d.argsort(1)
    for k, v in recall_at_k(x, y, ks=(1, 3, 8), chunk_size=11).items():
        ref = np.mean([(y[order[i, :k]] == y[i]).any().item() for i in range(60)])
        assert v == pytest.approx(ref)


def test_hand_computed_map_and_r_precision():
    # 1-D points; labels a a a b b
    x = torch.tensor([[0.0], [1.0], [5.0], [2.1], [2.2]])
    y = torch.tensor([0, 0, 0, 1, 1])
    # q0: R=2, neighbours 1(a) 3(b) 4(b) 2(a): rel in top2 = [1,0] -> AP=(1/1)/2=0.5, RP=0.5
    # q1: R=2, neighbours 3(b,1.1) 4(b,1.2) 0(a,1.0)? -> distances: 0:1.0, 3:1.1, 4:1.2 -> [a,b] AP=.5 RP=.5
    # q2: R=2, neighbours 4(2.8) 3(2.9) -> [b,b] AP=0 RP=0
    # q3: R=1, neighbour 4 -> AP=1 RP=1; q4: R=1, neighbour 3 -> 1, 1
    assert map_at_r(x, y) == pytest.approx((0.5 + 0.5 + 0 + 1 + 1) / 5)
    assert r_precision(x, y) == pytest.approx((0.5 + 0.5 + 0 + 1 + 1) / 5)
    assert recall_at_k(x, y, ks=(1,))[1] == pytest.approx(4 / 5)


def test_knn_chunks_and_self_exclusion():
    torch.manual_seed(2)
    x = torch.randn(50, 4)
    d1, i1 = knn(x, 5, chunk_size=3)
    d2, i2 = knn(x, 5)
    assert torch.equal(i1, i2) and torch.allclose(d1, d2)
    assert not (i1 == torch.arange(50)[:, None]).any()
    ref = torch.cdist(x, x).fill_diagonal_(float("inf")).topk(5, largest=False)
    assert torch.equal(i1, ref.indices) and torch.allclose(d1, ref.values ** 2, atol=1e-5)


def test_nmi_perfect_and_evaluator():
    y = torch.arange(4).repeat_interleave(10)
    x = torch.nn.functional.one_hot(y, 4).float() * 10 + 0.01 * torch.randn(40, 4)
    assert nmi(x, y) == pytest.approx(1.0)
    ev = RetrievalEvaluator(ks=(1,), with_nmi=True, normalize=True)
    ev.update(x[:20], y[:20])
    ev.update(x[20:], y[20:])
    m = ev.compute()
    assert m["recall@1"] == 1.0 and m["map@r"] == 1.0 and m["nmi"] == pytest.approx(1.0)


def test_bad_input():
    with pytest.raises(UserError, match="N×D"):
        recall_at_k(torch.randn(5), torch.zeros(5))
    with pytest.raises(UserError, match="length 5"):
        recall_at_k(torch.randn(5, 2), torch.zeros(4))
    with pytest.raises(UserError, match="NaN"):
        recall_at_k(torch.tensor([[0.0, float("nan")], [1.0, 1.0]]), torch.tensor([0, 0]))
    with pytest.raises(UserError, match="positive"):
        recall_at_k(torch.randn(5, 2), torch.zeros(5), ks=(0,))
    with pytest.raises(UserError, match="before any update"):
        RetrievalEvaluator().compute()


# ------------------------------------------------------------- edges the mutation tool found untested
def test_smallest_inputs_integer_embeddings_and_large_k():
    # two samples of one label: each retrieves the other (the smallest legal input); one sample is refused
    assert recall_at_k(torch.tensor([[0.0], [1.0]]), torch.tensor([3, 3]), ks=(1,)) == {1: 1.0}
    with pytest.raises(UserError, match="at least 2 samples, got 1"):
        recall_at_k(torch.tensor([[0.0]]), torch.tensor([0]))
    # integer and float64 embeddings rank like their float32 values; a k beyond N - 1 is clamped
    x = torch.tensor([[0], [1], [5], [2], [3]])
    y = torch.tensor([0, 0, 0, 1, 1])
    ints = retrieval_metrics(x, y, ks=(1, 10))
    assert ints == retrieval_metrics(x.float(), y, ks=(1, 10)) == retrieval_metrics(x.double(), y, ks=(1, 10))
    # by hand (1-D points 0, 1, 5, 2, 3): nearest of 0 is 1 (a), of 1 is 0 (a), of 5 is 3 (b), of 2 is 1 or 3
    # (tie, topk order), of 3 is 2 (b); with k = 10 every query sees all 4 others: recall 1
    assert ints["recall@10"] == 1.0 and min(abs(ints["recall@1"] - 3 / 5), abs(ints["recall@1"] - 4 / 5)) < 1e-6
    assert set(retrieval_metrics(x.float(), y)) == {"recall@1", "recall@2", "recall@4", "recall@8", "map@r",
                                                  "r_precision"}  # MAP@R and R-precision by default


def test_knn_k_bounds_self_inclusion_and_argument_checks():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0], [15.0]])
    d, i = knn(x, 10)  # clamped to the N − 1 = 4 others
    assert i.shape == (5, 4) and i[0].tolist() == [1, 2, 3, 4] and d[0].tolist() == [1.0, 9.0, 49.0, 225.0]
    d, i = knn(x, 10, exclude_self=False)  # N, the first being the query itself at distance 0
    assert i.shape == (5, 5) and i[:, 0].tolist() == [0, 1, 2, 3, 4] and d[:, 0].tolist() == [0.0] * 5
    assert knn(x, 1)[1][:, 0].tolist() == [1, 0, 1, 2, 3]  # k = 1, the smallest legal k
    with pytest.raises(UserError, match="k must be >= 1, got 0"):
        knn(x, 0)
    for bad in (torch.tensor([[0], [1]]), torch.zeros(4), [[0.0], [1.0]]):  # integer, 1-D, not a tensor
        with pytest.raises(UserError, match="real floating N×D"):
            knn(bad, 1)


def test_knn_blocks_fit_the_memory_budget(monkeypatch):
    # rows per block = ⌊memory_mb · 2²⁰ / (N · bytes per element · 2)⌋: 1 MiB, N = 1000 float32 -> 131 rows
    seen = []
    real = torch.addmm

    def spy(inp, a, b, **kw):
        seen.append(a.shape[0])
        return real(inp, a, b, **kw)

    monkeypatch.setattr(torch, "addmm", spy)
    x = torch.randn(1000, 3, generator=torch.Generator().manual_seed(0))
    knn(x, 2, memory_mb=1.0)
    assert seen == [131] * 7 + [1000 - 7 * 131]


def test_nmi_cluster_count_bounds_and_evaluator_defaults():
    y = torch.tensor([0, 0, 1, 1])
    x = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    assert nmi(x, y, num_clusters=1) == 0.0  # one cluster carries no information
    # singletons: I(y; c) = H(y) = 1 bit, H(c) = 2 bits; arithmetic normalisation 2 · 1 / (1 + 2)
    assert nmi(x, y, num_clusters=4) == pytest.approx(2 / 3)
    with pytest.raises(UserError, match=r"num_clusters must be in \[1, 4\], got 5"):
        nmi(x, y, num_clusters=5)
    # defaults: NMI on, no L2 normalisation (which here would change the nearest neighbours)
    z = torch.tensor([[1.0, 0.0], [10.0, 1.0], [0.0, 1.0], [1.1, 0.0]])
    labels = torch.tensor([0, 1, 1, 0])
    ev = RetrievalEvaluator()
    ev.update(z, labels)
    got = ev.compute()
    assert got == retrieval_metrics(z, labels, with_nmi=True)
    assert got != retrieval_metrics(torch.nn.functional.normalize(z, dim=1), labels, with_nmi=True)
