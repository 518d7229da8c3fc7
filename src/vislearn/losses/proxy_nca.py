"""Proxy-NCA: distance metric learning against learned class proxies.

Movshovitz-Attias, Toshev, Leung, Ioffe, Singh, "No Fuss Distance Metric Learning using Proxies",
ICCV 2017 (arXiv 1703.07464). A data point ``x`` with label ``y`` is pulled towards the proxy of its
class and pushed away from every other proxy with the NCA loss (Sec. 4, Eq. 9 of the arXiv version)::

    L(x, y) = -log( exp(-d(x, p_y)) / Σ_{z ≠ y} exp(-d(x, p_z)) ),   d(a, b) = ||a/|a| - b/|b| ||²

i.e. squared Euclidean distance between the L2-normalised embedding and L2-normalised proxies, with
the positive proxy *excluded* from the denominator (so the loss can be negative). ``scale`` multiplies
the squared distances, i.e. it is the inverse temperature ``1/T`` of the softmax over ``-d``:

* ``scale=1`` is Eq. 9 as printed (the paper states no temperature) and our default;
* the widely used PyTorch re-implementation (dichotomies/proxy-nca, the basis of ProxyNCA++'s
  baseline) multiplies the normalised proxies by 3, i.e. ``scale = 9`` (T = 1/9); with unit vectors
  ``d ∈ [0, 4]``, so ``scale=1`` leaves the softmax nearly flat over many classes and 9 is a
  reasonable value to try (the recipe exposes it as ``--set scale=9``).

Proxy initialisation (the paper is silent): ``proxy_init="unit"`` (default) draws each proxy row
from N(0, I) and rescales it to unit norm, so proxies start on the same sphere the normalised
embeddings live on and an optimizer step has the same size relative to a proxy whatever D is (the
reference implementation's ``randn / 8`` gives norm ≈ 1 at its D = 64). ``proxy_init="gaussian"``
keeps raw N(0, ``proxy_init_std``²) rows (norm ≈ √D: pytorch-metric-learning's choice and ours before),
under which RMSProp's roughly lr-sized steps move a proxy's direction √D times more slowly.

Proxy assignment (Sec. 3.2):

* **static** (``num_proxies`` = ``num_classes``, the default): proxy ``c`` belongs to class ``c``.
* **dynamic** (``num_proxies`` different from the class count): each class present in the batch is
  assigned the proxy nearest to it (smallest mean squared distance over the batch's samples of that
  class, the paper's ``p(u) = argmin_p d(u, p)`` applied per class); every other proxy is a
  negative. Several classes may share a proxy when there are fewer proxies than classes. The
  assignment is re-computed at every step (no gradient flows through the argmin). Under ``torchrun``
  the assignment sees the whole global batch: the (detached) embeddings and labels of every process
  are gathered, so N processes assign as one process holding the global batch would; the loss of each
  sample needs only its own embedding and the proxies, so it stays local (DDP averages the gradients).

Differences from pytorch-metric-learning's ``ProxyNCALoss`` (PML 2.x): PML keeps the positive
proxy in the denominator (a softmax cross-entropy over ``-softmax_scale · d``), drops samples whose
softmax probability underflows to exactly 0, and initialises proxies with Xavier-normal. With
``exclude_positive=False`` and ``scale=softmax_scale`` this module computes PML's value exactly (a
test checks it with PML's proxies copied in).

Implementation: distances come from one matrix product, ``d = |x|² + |p|² - 2 x·p`` (B × P), never a
B × P × D tensor, and the loss is a log-sum-exp, so 100k classes fit in memory and nothing overflows.
The loss math runs in float32 even under bf16/fp16 autocast.

Bad input: labels outside ``[0, num_classes)``, NaN/inf embeddings, a wrong embedding width or
mismatched lengths raise :class:`~vislearn.errors.UserError`. A batch whose samples all share one
class is *fine* for Proxy-NCA (the negatives are proxies, not other samples), so it is not an error.

Example::

    loss_fn = ProxyNCALoss(num_classes=100, embedding_dim=64)
    groups = loss_fn.param_groups(model.parameters(), lr_mult=100.0)  # proxies at 100× the lr
    loss = loss_fn(model(images), labels)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.losses._tensors import index_vector, real_matrix
from vislearn.train.distributed import gather_rows

__all__ = ["ProxyNCALoss", "proxy_nca_loss", "squared_distances"]


def squared_distances(x: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``||x_i - p_j||²`` for all pairs (B × P) as ``|x|² + |p|² - 2 x·p``: one matmul, no B×P×D tensor."""
    real_matrix(x, "x", "squared_distances", allow_empty=True)
    real_matrix(p, "p", "squared_distances", dim=x.shape[1], allow_empty=True)
    xx = x.pow(2).sum(1, keepdim=True)
    pp = p.pow(2).sum(1)
    return torch.addmm(pp.unsqueeze(0), x, p.t(), beta=1.0, alpha=-2.0).add_(xx)


class _ProxyNCAFunction(torch.autograd.Function):
    """Per-sample NCA losses of unit embeddings ``x`` (B×D) against unit proxies ``p`` (P×D).

    ``logits = -scale·d`` with ``d = |x|² + |p|² - 2x·p``; the per-row constant ``|x|²`` cancels between
    the positive term and the log-sum-exp, so it is left out. The forward keeps the softmax over the
    denominator's proxies (one B×P buffer, reused in place) and the backward is analytic::

        G = softmax_denominator - onehot(target)          (B×P, rows weighted by the incoming grad)
        dL/dx = 2·scale · G p,   dL/dp = 2·scale · (Gᵀ x - colsum(G) ⊙ p)

    so a step costs three B×P×D matrix products and a handful of passes over one B×P buffer.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: torch.Tensor, targets: torch.Tensor, scale: float,
                exclude_positive: bool) -> torch.Tensor:
        pp = p.pow(2).sum(1)
        logits = torch.addmm(pp.unsqueeze(0), x, p.t(), beta=-scale, alpha=2.0 * scale)  # -scale·(d - |x|²)
        idx = targets.unsqueeze(1)
        positive = logits.gather(1, idx).squeeze(1)
        if exclude_positive:
            logits.scatter_(1, idx, float("-inf"))
        top = logits.amax(1, keepdim=True)
        probs = logits.sub_(top).exp_()  # in place: the softmax numerators
        total = probs.sum(1, keepdim=True)
        probs.div_(total)
        losses = total.log_().add_(top).squeeze(1) - positive
        ctx.save_for_backward(x, p, targets, probs)
        ctx.scale = scale
        return losses

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, p, targets, probs = ctx.saved_tensors
        g = probs * grad.unsqueeze(1)
        g.scatter_add_(1, targets.unsqueeze(1), -grad.unsqueeze(1))
        c = 2.0 * ctx.scale
        grad_x = grad_p = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.mm(g, p).mul_(c)
        if ctx.needs_input_grad[1]:
            grad_p = torch.mm(g.t(), x).sub_(p * g.sum(0).unsqueeze(1)).mul_(c)
        return grad_x, grad_p, None, None, None


def proxy_nca_loss(embeddings: torch.Tensor, proxies: torch.Tensor, targets: torch.Tensor,
                   scale: float = 1.0, exclude_positive: bool = True, normalize: bool = True,
                   reduction: str = "mean") -> torch.Tensor:
    """The stateless Proxy-NCA loss.

    Args:
        embeddings: B × D.
        proxies: P × D.
        targets: B proxy indices (the positive proxy of each sample).
        scale: multiplies the squared distances (1: the paper's Eq. 9).
        exclude_positive: leave the positive proxy out of the denominator (the paper); ``False``
            gives the softmax cross-entropy over ``-scale·d`` (pytorch-metric-learning's form).
        normalize: L2-normalise embeddings and proxies first (the paper does).
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"``.
    """
    if reduction not in ("mean", "sum", "none"):
        raise UserError(f"reduction must be mean, sum or none, got {reduction!r}")
    real_matrix(embeddings, "embeddings", "proxy_nca_loss")
    real_matrix(proxies, "proxies", "proxy_nca_loss", dim=embeddings.shape[1])
    targets = index_vector(targets, embeddings.shape[0], "targets", "proxy_nca_loss", high=proxies.shape[0])
    if exclude_positive and proxies.shape[0] < 2:
        raise UserError("proxy_nca_loss: exclude_positive needs at least 2 proxies (the denominator would be "
                        f"empty and the loss NaN), got {proxies.shape[0]}")
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
        proxies = F.normalize(proxies, dim=1)
    losses = _ProxyNCAFunction.apply(embeddings, proxies, targets.long(), float(scale), bool(exclude_positive))
    if reduction == "mean":
        return losses.mean()
    if reduction == "sum":
        return losses.sum()
    return losses


class ProxyNCALoss(nn.Module):
    """Proxy-NCA loss with learned proxies (Movshovitz-Attias et al. 2017, Sec. 3-4).

    Args:
        num_classes: labels are in ``[0, num_classes)``.
        embedding_dim: width D of the embeddings (and proxies).
        num_proxies: number of proxies; ``None`` means one per class (static assignment). Any other
            value selects dynamic assignment (Sec. 3.2).
        scale: multiplies the squared distances inside the exponent (1 = the paper's formula).
        exclude_positive: the paper's denominator (over negatives only). ``False`` gives
            pytorch-metric-learning's variant.
        assignment: ``"auto"`` (static when ``num_proxies`` equals ``num_classes``, else dynamic),
            ``"static"`` or ``"dynamic"``.
        proxy_init: ``"unit"`` (default: N(0, I) rows rescaled to norm 1) or ``"gaussian"`` (N(0,
            ``proxy_init_std``²) rows); see the module docstring. The scale is irrelevant to the loss
            after normalisation; it sets the optimizer's step size relative to the proxy norm.
        proxy_init_std: the standard deviation of ``"gaussian"`` initialisation.

    ``forward(embeddings B×D, labels B) -> scalar`` (mean over the batch).
    """

    def __init__(self, num_classes: int, embedding_dim: int, num_proxies: int | None = None,
                 scale: float = 1.0, exclude_positive: bool = True, assignment: str = "auto",
                 proxy_init: str = "unit", proxy_init_std: float = 1.0) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise UserError(f"embedding_dim must be a positive int, got {embedding_dim!r}")
        if num_proxies is None:
            num_proxies = num_classes
        if isinstance(num_proxies, bool) or not isinstance(num_proxies, int) or num_proxies < 1:
            raise UserError(f"num_proxies must be a positive int or None, got {num_proxies!r}")
        if exclude_positive and num_proxies < 2:
            raise UserError(f"num_proxies must be >= 2 when the positive is excluded from the denominator "
                            f"(no negatives otherwise), got {num_proxies}")
        if not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            raise UserError(f"scale must be a positive finite number, got {scale!r}")
        if not isinstance(proxy_init_std, (int, float)) or not proxy_init_std > 0:
            raise UserError(f"proxy_init_std must be positive, got {proxy_init_std!r}")
        if proxy_init not in ("unit", "gaussian"):
            raise UserError(f"proxy_init must be unit or gaussian, got {proxy_init!r}")
        if assignment not in ("auto", "static", "dynamic"):
            raise UserError(f"assignment must be auto, static or dynamic, got {assignment!r}")
        if assignment == "auto":
            assignment = "static" if num_proxies == num_classes else "dynamic"
        if assignment == "static" and num_proxies != num_classes:
            raise UserError(f"static assignment needs one proxy per class: num_proxies={num_proxies} but "
                            f"num_classes={num_classes} (use assignment='dynamic')")
        self.num_classes, self.embedding_dim, self.num_proxies = num_classes, embedding_dim, num_proxies
        self.scale, self.exclude_positive, self.assignment = float(scale), bool(exclude_positive), assignment
        init = torch.randn(num_proxies, embedding_dim)
        self.proxies = nn.Parameter(F.normalize(init, dim=1) if proxy_init == "unit" else init * proxy_init_std)
        self.proxy_init = proxy_init

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
                f"num_proxies={self.num_proxies}, scale={self.scale}, exclude_positive={self.exclude_positive}, "
                f"assignment={self.assignment!r}, proxy_init={self.proxy_init!r}")

    def param_groups(self, model_params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
                     lr_mult: float = 1.0, proxy_weight_decay: float = 0.0) -> list[dict[str, Any]]:
        """Optimizer groups: the model's parameters, then the proxies at ``lr_mult`` × the base lr.

        ``model_params`` may be parameters or already-built groups (kept as they are). The proxies get
        ``weight_decay=proxy_weight_decay`` (0 by default: they are normalised in the loss, so decay
        would only shrink their norm and inflate their effective step). The engine multiplies each
        group's lr by its ``lr_mult`` (the paper trains proxies with a much higher lr).
        """
        if not isinstance(lr_mult, (int, float)) or not lr_mult > 0:
            raise UserError(f"lr_mult must be positive, got {lr_mult!r}")
        items = list(model_params)
        proxy_id = id(self.proxies)
        if items and isinstance(items[0], dict):
            groups = [dict(g) for g in items]
        else:
            groups = [{"params": [p for p in items if id(p) != proxy_id and p.requires_grad]}]
        groups = [g for g in groups if list(g["params"])]
        groups.append({"params": [self.proxies], "lr_mult": float(lr_mult), "weight_decay": proxy_weight_decay})
        return groups

    def _check(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(embeddings, torch.Tensor) or not torch.is_floating_point(embeddings):
            raise UserError(f"ProxyNCALoss: embeddings must be a float tensor, got "
                            f"{getattr(embeddings, 'dtype', type(embeddings).__name__)}")
        if embeddings.dim() != 2 or embeddings.shape[1] != self.embedding_dim:
            raise UserError(f"ProxyNCALoss: embeddings must be B×{self.embedding_dim}, got shape "
                            f"{tuple(embeddings.shape)}")
        if embeddings.shape[0] == 0:
            raise UserError("ProxyNCALoss: empty batch")
        if not isinstance(labels, torch.Tensor) or labels.dtype.is_floating_point or labels.dtype == torch.bool \
                or labels.dim() != 1:
            raise UserError(f"ProxyNCALoss: labels must be a 1-D integer tensor, got "
                            f"{getattr(labels, 'dtype', type(labels).__name__)} "
                            f"shape {tuple(getattr(labels, 'shape', ()))}")
        if labels.shape[0] != embeddings.shape[0]:
            raise UserError(f"ProxyNCALoss: {embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            bad = lo if lo < 0 else hi
            raise UserError(f"ProxyNCALoss: label {bad} is outside [0, {self.num_classes})")
        if not bool(torch.isfinite(embeddings.detach()).all()):
            raise UserError("ProxyNCALoss: embeddings contain NaN or inf")

    @torch.no_grad()
    def assign(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The positive proxy index of each sample (static: its label; dynamic: its class's nearest proxy)."""
        if self.assignment == "static":
            return labels
        mine = labels
        embeddings, labels = gather_rows(embeddings.detach())[0], gather_rows(labels)[0]  # every process's
        x = F.normalize(embeddings.float(), dim=1)
        p = F.normalize(self.proxies.detach().float(), dim=1)
        d = squared_distances(x, p)  # B × P
        classes, inverse = torch.unique(labels, return_inverse=True)
        per_class = torch.zeros(len(classes), d.shape[1], dtype=d.dtype, device=d.device)
        per_class.index_add_(0, inverse, d)  # sum over a class's samples; argmin of the sum = of the mean
        return per_class.argmin(1)[torch.searchsorted(classes, mine)]

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self._check(embeddings, labels)
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        targets = self.assign(embeddings, labels)
        with torch.autocast(embeddings.device.type, enabled=False):
            return proxy_nca_loss(embeddings.float(), self.proxies.float(), targets, scale=self.scale,
                                  exclude_positive=self.exclude_positive)
