"""IQA statistics against scipy.stats and hand-computed cases."""

import numpy as np
import pytest
import scipy.stats
import torch

from vislearn.errors import UserError
from vislearn.metrics.iqa import krocc, logistic4, plcc, rank_average, srocc, two_afc_agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    xt, yt = np.round(x, 1), np.round(y, 1)  # many ties
    for a, b in ((x, y), (xt, yt), (xt, y)):
        assert srocc(a, b) == pytest.approx(scipy.stats.spearmanr(a, b).statistic, abs=1e-12)
        assert krocc(a, b, chunk=64) == pytest.approx(scipy.stats.kendalltau(a, b).statistic, abs=1e-12)
    np.testing.assert_allclose(rank_average(xt), scipy.stats.rankdata(xt))
    assert srocc(torch.tensor(x), torch.tensor(y)) == pytest.approx(scipy.stats.spearmanr(x, y).statistic)


def test_plcc():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, 200)
    y = rng.normal(size=200) * 0.1 + x
    assert plcc(x, y, fit=False) == pytest.approx(scipy.stats.pearsonr(x, y).statistic, abs=1e-12)
    # an exactly logistic (decreasing) relation is linearised by the fit: PLCC -> 1
    q = logistic4(x, 1.0, 9.0, 0.5, 0.1)
    assert plcc(x, q) == pytest.approx(1.0, abs=1e-6)
    assert abs(scipy.stats.pearsonr(x, q).statistic) < 0.99
    # with noise the fitted correlation is at least the linear one
    noisy = q + rng.normal(size=200) * 0.3
    assert plcc(x, noisy) >= abs(scipy.stats.pearsonr(x, noisy).statistic) - 1e-9


def test_two_afc_hand_computed():
    # d0 < d1 -> metric picks patch 0 -> earns 1 - h; d1 < d0 -> h; tie -> 0.5
    assert two_afc_agreement([1, 2, 3], [2, 1, 3], [0.2, 0.7, 0.9]) == pytest.approx((0.8 + 0.7 + 0.5) / 3)
    with pytest.raises(UserError, match="judge"):
        two_afc_agreement([1, 2], [2, 1], [0.5, 1.5])
    with pytest.raises(UserError, match="length"):
        srocc([1, 2, 3], [1, 2])
