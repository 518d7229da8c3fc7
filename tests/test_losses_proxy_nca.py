"""Proxy-NCA loss: closed form, pytorch-metric-learning equivalence, assignment, groups, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.losses import ProxyNCALoss, proxy_nca_loss


def test_reexported():
    import vislearn.losses as L

    assert L.ProxyNCALoss is ProxyNCALoss and hasattr(L, "TripletLoss")


def test_closed_form_2x3():
    """Hand-computed: 2 samples, 3 unit proxies in 2-D, positive excluded from the denominator."""
    loss_fn = ProxyNCALoss(num_classes=3, embedding_dim=2)
    with torch.no_grad():
        loss_fn.proxies.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]))
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # normalised: e1, e2
    y = torch.tensor([0, 2])
    # sample 0 (e1), class 0: d = 0 to p0, 2 to p1, 4 to p2 -> L = 0 + log(e^-2 + e^-4)
    l0 = 0.0 + math.log(math.exp(-2) + math.exp(-4))
    # sample 1 (e2), class 2: d = 2 to p2 (positive), 2 to p0, 0 to p1 -> L = 2 + log(e^-2 + e^0)
    l1 = 2.0 + math.log(math.exp(-2) + 1.0)
    assert loss_fn(x, y).item() == pytest.approx((l0 + l1) / 2, abs=1e-6)
    # scale multiplies the squared distances
    loss3 = ProxyNCALoss(3, 2, scale=3.0)
    loss3.proxies.data.copy_(loss_fn.proxies.data)
    l0s = 0.0 + math.log(math.exp(-6) + math.exp(-12))
    l1s = 6.0 + math.log(math.exp(-6) + 1.0)
    assert loss3(x, y).item() == pytest.approx((l0s + l1s) / 2, abs=1e-5)



def test_functional_reductions_by_hand():
    """The 2×3 case above, per sample (``none``), summed and averaged, with the positive excluded or kept."""
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    x = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 2])
    excluded = torch.tensor([math.log(math.exp(-2) + math.exp(-4)), 2.0 + math.log(math.exp(-2) + 1.0)])
    # kept in the denominator: sample 0 adds e^0 (d = 0 to p0), sample 1 adds e^-2 (its positive, d = 2)
    kept = torch.tensor([math.log(1 + math.exp(-2) + math.exp(-4)), 2.0 + math.log(2 * math.exp(-2) + 1.0)])
    for exclude, rows in ((True, excluded), (False, kept)):
        kw = dict(exclude_positive=exclude)
        torch.testing.assert_close(proxy_nca_loss(x, p, y, reduction="none", **kw), rows)
        torch.testing.assert_close(proxy_nca_loss(x, p, y, reduction="sum", **kw), rows[0] + rows[1])
        torch.testing.assert_close(proxy_nca_loss(x, p, y, reduction="mean", **kw), (rows[0] + rows[1]) / 2)
        torch.testing.assert_close(proxy_nca_loss(x, p, y, **kw), (rows[0] + rows[1]) / 2)  # the default
    with pytest.raises(UserError, match="reduction must be mean, sum or none, got 'avg'"):
        proxy_nca_loss(x, p, y, reduction="avg")

def test_against_brute_force_random():
    torch.manual_seed(1)
    b, c, d = 16, 10, 8
    x, p, y = torch.randn(b, d), torch.randn(c, d), torch.randint(0, c, (b,))
    xn, pn = F.normalize(x, dim=1), F.normalize(p, dim=1)
    ref = []
    for i in range(b):
        dist = ((xn[i] - pn) ** 2).sum(1) * 2.5
        neg = torch.cat([dist[:y[i]], dist[y[i] + 1:]])
        ref.append(-torch.log(torch.exp(-dist[y[i]]) / torch.exp(-neg).sum()))
    got = proxy_nca_loss(x, p, y, scale=2.5)
    assert got.item() == pytest.approx(torch.stack(ref).mean().item(), abs=1e-5)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_equals_pml_with_positive_kept(scale):
    from pytorch_metric_learning.losses import ProxyNCALoss as PMLProxyNCA

    torch.manual_seed(0)
    n_cls, dim = 12, 16
    pml = PMLProxyNCA(num_classes=n_cls, embedding_size=dim, softmax_scale=scale)
    ours = ProxyNCALoss(n_cls, dim, scale=scale, exclude_positive=False)
    with torch.no_grad():
        ours.proxies.copy_(pml.proxies)
    x = torch.randn(20, dim, requires_grad=True)
    y = torch.randint(0, n_cls, (20,))
    a, b = ours(x, y), pml(x, y)
    assert a.item() == pytest.approx(b.item(), abs=1e-5)
    ga, = torch.autograd.grad(a, x)
    x2 = x.detach().clone().requires_grad_(True)
    gb, = torch.autograd.grad(pml(x2, y), x2)
    assert torch.allclose(ga, gb, atol=1e-6)
    # the paper's form (positive excluded) differs and is smaller
    paper = ProxyNCALoss(n_cls, dim, scale=scale)
    paper.proxies.data.copy_(pml.proxies.data)
    assert paper(x, y).item() < a.item() - 1e-3


def test_dynamic_assignment_nearest_proxy():
    loss_fn = ProxyNCALoss(num_classes=4, embedding_dim=2, num_proxies=2)
    assert loss_fn.assignment == "dynamic"
    loss_fn.proxies.data.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    x = torch.tensor([[1.0, 0.1], [0.9, -0.1], [0.1, 1.0], [0.2, 0.9], [0.6, 0.5]])
    y = torch.tensor([3, 3, 1, 1, 0])
    t = loss_fn.assign(x, y)
    assert t.tolist() == [0, 0, 1, 1, 0]
    # the loss uses those targets
    ref = proxy_nca_loss(x, loss_fn.proxies, t)
    assert loss_fn(x, y).item() == pytest.approx(ref.item(), abs=1e-6)
    # a class votes with all its samples: mean distance decides
    t2 = loss_fn.assign(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]]), torch.tensor([2, 2, 2]))
    assert t2.tolist() == [1, 1, 1]


def test_large_class_count_no_bxcxd_and_stable():
    loss_fn = ProxyNCALoss(num_classes=20000, embedding_dim=32, scale=50.0)
    x = torch.randn(64, 32, requires_grad=True)
    y = torch.randint(0, 20000, (64,))
    loss = loss_fn(x, y)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(loss_fn.proxies.grad).all()


def test_single_class_batch_is_fine_and_bf16_autocast():
    loss_fn = ProxyNCALoss(5, 8)
    x = torch.randn(6, 8)
    y = torch.full((6,), 3)
    assert torch.isfinite(loss_fn(x, y))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        v = loss_fn(x.bfloat16(), y)
    assert v.dtype == torch.float32
    assert v.item() == pytest.approx(loss_fn(x.bfloat16().float(), y).item(), abs=1e-5)


def test_param_groups():
    model = torch.nn.Linear(4, 8)
    loss_fn = ProxyNCALoss(3, 8)
    groups = loss_fn.param_groups(model.parameters(), lr_mult=100.0)
    assert len(groups) == 2 and groups[1]["params"][0] is loss_fn.proxies
    assert groups[1]["lr_mult"] == 100.0 and groups[1]["weight_decay"] == 0.0
    from vislearn.train.optim import build_optimizer

    opt = build_optimizer("rmsprop", groups, lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-3, 0.1])
    # a module holding both model and loss: proxies are not duplicated in the first group
    both = torch.nn.ModuleDict({"m": model, "l": loss_fn})
    groups = loss_fn.param_groups(both.parameters(), lr_mult=10.0)
    assert sum(len(g["params"]) for g in groups) == 3
    with pytest.raises(UserError, match="lr_mult"):
        loss_fn.param_groups(model.parameters(), lr_mult=0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0, embedding_dim=4), "num_classes"),
    (dict(num_classes=3, embedding_dim=-1), "embedding_dim"),
    (dict(num_classes=3, embedding_dim=4, scale=0.0), "scale"),
    (dict(num_classes=3, embedding_dim=4, scale=float("nan")), "scale"),
    (dict(num_classes=3, embedding_dim=4, num_proxies=1), "num_proxies"),
    (dict(num_classes=3, embedding_dim=4, num_proxies=2, assignment="static"), "static"),
    (dict(num_classes=3, embedding_dim=4, assignment="nearest"), "assignment"),
    (dict(num_classes=3, embedding_dim=4, proxy_init="xavier"), "proxy_init"),
])
def test_init_validation(kwargs, match):
    with pytest.raises(UserError, match=match):
        ProxyNCALoss(**kwargs)


def test_forward_bad_input():
    loss_fn = ProxyNCALoss(4, 8)
    x = torch.randn(3, 8)
    with pytest.raises(UserError, match="label 4 is outside"):
        loss_fn(x, torch.tensor([0, 1, 4]))
    with pytest.raises(UserError, match="label -1"):
        loss_fn(x, torch.tensor([0, -1, 2]))
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(UserError, match="NaN"):
        loss_fn(bad, torch.tensor([0, 1, 2]))
    with pytest.raises(UserError, match="B×8"):
        loss_fn(torch.randn(3, 5), torch.tensor([0, 1, 2]))
    with pytest.raises(UserError, match="3 embeddings but 2 labels"):
        loss_fn(x, torch.tensor([0, 1]))
    with pytest.raises(UserError, match="integer"):
        loss_fn(x, torch.tensor([0.0, 1.0, 2.0]))


@pytest.mark.parametrize("exclude", [True, False])
def test_analytic_backward_gradcheck_and_autograd_reference(exclude):
    torch.manual_seed(2)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    p = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 3, 6, 1, 0])
    assert torch.autograd.gradcheck(lambda a, b: proxy_nca_loss(a, b, y, scale=2.0, exclude_positive=exclude,
                                                                 reduction="none"), (x, p))

    def reference(a, b):  # plain autograd over the explicit distance matrix
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        logits = -2.0 * torch.cdist(a, b) ** 2
        pos = logits.gather(1, y[:, None]).squeeze(1)
        if exclude:
            logits = logits.masked_fill(F.one_hot(y, 7).bool(), float("-inf"))
        return (torch.logsumexp(logits, 1) - pos).mean()

    g1 = torch.autograd.grad(proxy_nca_loss(x, p, y, scale=2.0, exclude_positive=exclude), (x, p))
    g2 = torch.autograd.grad(reference(x, p), (x, p))
    for a, b in zip(g1, g2, strict=True):
        assert torch.allclose(a, b, atol=1e-10)
    assert proxy_nca_loss(x, p, y, 2.0, exclude).item() == pytest.approx(reference(x, p).item(), abs=1e-12)


def test_proxy_initialisation_unit_norm_and_gaussian():
    torch.manual_seed(3)
    unit = ProxyNCALoss(50, 64)
    torch.testing.assert_close(unit.proxies.norm(dim=1), torch.ones(50))
    torch.manual_seed(3)
    raw = torch.randn(50, 64)
    torch.testing.assert_close(unit.proxies.data, raw / raw.norm(dim=1, keepdim=True))  # same directions
    torch.manual_seed(3)
    gauss = ProxyNCALoss(50, 64, proxy_init="gaussian", proxy_init_std=0.5)
    torch.testing.assert_close(gauss.proxies.data, raw * 0.5)
    # the loss only sees directions: both initialisations give the same value on the same batch
    x, y = torch.randn(8, 64), torch.randint(0, 50, (8,))
    assert unit(x, y).item() == pytest.approx(gauss(x, y).item(), rel=1e-6)


def test_scale_is_an_inverse_temperature():
    # d ∈ [0, 4] for unit vectors: the loss of a sample sitting on its proxy, against two orthogonal
    # negatives at d = 2, is log(2·exp(-2·scale)) - 0 = log 2 - 2·scale (closed form)
    p = torch.eye(3)
    for scale in (1.0, 9.0):
        got = proxy_nca_loss(p[:1].clone(), p, torch.tensor([0]), scale=scale)
        assert got.item() == pytest.approx(math.log(2) - 2 * scale, abs=1e-5)


def test_constructor_and_functional_bounds_are_inclusive_where_documented():
    """The smallest legal values are accepted and the next ones down refused (boundary mutants)."""
    from vislearn.losses.proxy_nca import ProxyNCALoss, proxy_nca_loss, squared_distances

    # one class, one 1-d proxy, positive kept: legal; zero of either is not
    loss = ProxyNCALoss(1, 1, exclude_positive=False)
    assert loss.proxies.shape == (1, 1)
    for bad in ({"num_classes": 0, "embedding_dim": 1}, {"num_classes": 1, "embedding_dim": 0}):
        with pytest.raises(UserError):
            ProxyNCALoss(**bad, exclude_positive=False)
    with pytest.raises(UserError, match="num_proxies"):
        ProxyNCALoss(1, 1, num_proxies=0, exclude_positive=False)
    # excluding the positive needs two proxies: 2 is accepted, 1 refused (module and function)
    assert ProxyNCALoss(2, 3).num_proxies == 2
    with pytest.raises(UserError, match=">= 2"):
        ProxyNCALoss(1, 3)
    e, t = torch.randn(4, 3), torch.zeros(4, dtype=torch.long)
    assert torch.isfinite(proxy_nca_loss(e, torch.randn(2, 3), t))
    with pytest.raises(UserError, match="at least 2 proxies"):
        proxy_nca_loss(e, torch.randn(1, 3), t)
    # scale must be > 0 (0 refused), proxy_init_std too; any positive value is kept exactly
    assert ProxyNCALoss(2, 3, scale=1e-6).scale == 1e-6
    for kw in ({"scale": 0.0}, {"proxy_init_std": 0.0}):
        with pytest.raises(UserError):
            ProxyNCALoss(2, 3, **kw)
    # squared distances of empty sets are empty, not an error
    assert squared_distances(torch.zeros(0, 3), torch.randn(2, 3)).shape == (0, 2)
    assert squared_distances(torch.randn(2, 3), torch.zeros(0, 3)).shape == (2, 0)


def test_repr_param_group_bounds_and_bad_embeddings():
    from vislearn.losses.proxy_nca import ProxyNCALoss

    loss = ProxyNCALoss(3, 4, scale=2.0)
    assert repr(loss) == ("ProxyNCALoss(num_classes=3, embedding_dim=4, num_proxies=3, scale=2.0, "
                          "exclude_positive=True, assignment='static', proxy_init='unit')")
    w = torch.nn.Parameter(torch.zeros(2))
    groups = loss.param_groups([w], lr_mult=1e-3)
    assert groups[-1]["lr_mult"] == 1e-3 and groups[0]["params"] == [w]
    with pytest.raises(UserError, match="lr_mult"):
        loss.param_groups([w], lr_mult=0.0)
    labels = torch.tensor([0, 1])
    assert torch.isfinite(loss(torch.randn(2, 4), labels))  # the legal shape passes the checks
    for bad in (torch.zeros(2, 4, dtype=torch.long), torch.zeros(8), torch.zeros(2, 4, 1), torch.zeros(2, 5)):
        with pytest.raises(UserError, match="embeddings"):
            loss(bad, labels)
