"""Small pieces shared by the clustering SSL losses (DINO, MSN): reductions across processes,
Sinkhorn-Knopp, cosine logits, the teacher-temperature schedule and the pairing of teacher and
student views.

Every function that needs a cross-process reduction takes an ``all_reduce(tensor, op)`` callable
(in-place, ``op`` is ``"sum"`` or ``"max"``). The default, :func:`dist_all_reduce`, calls
``torch.distributed.all_reduce`` when a process group with more than one process is initialised
and does nothing otherwise, so one process needs no setup. Tests pass a fake world (threads that
exchange tensors) to check the reductions without launching processes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.losses._tensors import real_tensor
from vislearn.losses.ensemble import WeightedEnsembleLoss, check_positive, linear_ramp

__all__ = ["AllReduce", "TeacherTemperature", "cosine_logits", "cross_view_loss", "dist_all_reduce", "global_mean",
           "sinkhorn_knopp", "stack_views"]

AllReduce = Callable[[torch.Tensor, str], torch.Tensor]


@dataclass(frozen=True)
class TeacherTemperature:
    """The teacher temperature at an epoch: ``start`` linearly to ``final`` over ``epochs`` epochs.

    DINO's convention (``np.linspace(start, final, epochs)``, the official code and lightly): the
    final value is reached at epoch ``epochs - 1``; fractional epochs interpolate, so a per-step
    caller may pass ``step / steps_per_epoch``. Build it with :meth:`checked`.
    """

    final: float
    start: float
    epochs: int

    @classmethod
    def checked(cls, teacher_temp: float, warmup_teacher_temp: float | None,
                warmup_teacher_temp_epochs: int) -> TeacherTemperature:
        final = check_positive("teacher_temp", teacher_temp)
        start = final if warmup_teacher_temp is None else check_positive("warmup_teacher_temp", warmup_teacher_temp)
        if isinstance(warmup_teacher_temp_epochs, bool) or not isinstance(warmup_teacher_temp_epochs, int) \
                or warmup_teacher_temp_epochs < 0:
            raise UserError(f"warmup_teacher_temp_epochs must be an int >= 0, got {warmup_teacher_temp_epochs!r}")
        return cls(final, start, warmup_teacher_temp_epochs)

    def __call__(self, epoch: float | None = None, override: float | None = None) -> float:
        """``override`` if given, the final value when ``epoch`` is None, else the scheduled value."""
        if override is not None:
            return check_positive("teacher_temp", override)
        if epoch is None:
            return self.final
        return linear_ramp(epoch, self.start, self.final, self.epochs)


def dist_all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place ``torch.distributed.all_reduce`` (sum or max) under DDP; a no-op on one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def global_mean(local_sum: torch.Tensor, local_count: int | float,
                all_reduce: AllReduce | None = None) -> torch.Tensor:
    """``Σ_ranks local_sum / Σ_ranks local_count`` with one all-reduce (sum and count packed together).

    This is DINO's all-reduced center (``update_center`` in the official ``main_dino.py`` divides
    by ``len(batch) × world_size``); counting the samples instead keeps it exact when the ranks
    hold different batch sizes (a last, smaller batch).
    """
    all_reduce = all_reduce or dist_all_reduce
    packed = torch.cat([local_sum.detach().reshape(-1).float(),
                        torch.tensor([float(local_count)], device=local_sum.device)])
    all_reduce(packed, "sum")
    return (packed[:-1] / packed[-1]).reshape(local_sum.shape)


def _global_logsumexp(x: torch.Tensor, dim: int, all_reduce: AllReduce) -> torch.Tensor:
    """``log Σ exp(x)`` along ``dim`` over every process's share (a max then a sum all-reduce).

    An all ``-inf`` slice gives ``0`` instead of ``-inf`` so its entries stay ``-inf`` (mass 0)
    rather than turning into NaN.
    """
    top = all_reduce(x.amax(dim, keepdim=True).clone(), "max")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = all_reduce((x - top).exp().sum(dim, keepdim=True), "sum")
    return torch.where(total > 0, top + total.log(), torch.zeros_like(total))


@torch.no_grad()
def sinkhorn_knopp(log_scores: torch.Tensor, iterations: int = 3, all_reduce: AllReduce | None = None) -> torch.Tensor:
    """Equipartition a batch over the codes (SwAV's Sinkhorn-Knopp), from *log* scores.

    ``log_scores`` is ``(samples, codes)`` or ``(samples, heads, codes)`` (each head on its own):
    ``logits / τ`` for DINO* (DINOv2's ``sinkhorn_knopp_teacher`` takes ``exp(logits / τ)``),
    ``log p`` for MSN's probabilities. Each iteration makes every code's total mass equal (summed
    over the samples of *all* processes), then every sample's row sum 1. The result's rows sum to 1;
    the codes' totals approach ``samples / codes`` as the iterations grow. This is the iteration of
    SwAV, MSN's ``distributed_sinkhorn`` and DINOv2; their divisions by the number of codes and of
    samples are global scalars that the next normalisation removes, so they are left out, and the
    iteration runs in log space so that no temperature or logit scale can overflow or underflow
    (the result is the same up to rounding). ``iterations=0`` is the softmax over codes.

    A global constant added to ``log_scores`` changes nothing, but a per-sample one does (the first
    step normalises the codes, not the samples): DINOv2 starts from ``exp(logits / τ)``, MSN from
    normalised probabilities, and each caller here passes what its method uses.
    """
    if iterations < 0:
        raise UserError(f"sinkhorn iterations must be >= 0, got {iterations!r}")
    real_tensor(log_scores, "log_scores", "sinkhorn_knopp", (2, 3))
    all_reduce = all_reduce or dist_all_reduce
    q = log_scores.unsqueeze(1) if log_scores.dim() == 2 else log_scores  # (N, H, K)
    q = q.float()
    for _ in range(iterations):
        q = q - _global_logsumexp(q, 0, all_reduce)  # every code: total 1 over the world's samples
        q = q - torch.logsumexp(q, 2, keepdim=True)  # every sample: 1
    if iterations == 0:
        q = torch.log_softmax(q, 2)
    q = q.exp()
    return q.squeeze(1) if log_scores.dim() == 2 else q


def cosine_logits(embeddings: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of L2-normalised embeddings to L2-normalised prototypes (paper Eq. 2 before ``/τ``).

    ``embeddings`` ``(..., D)``, ``prototypes`` ``(K, D)`` -> ``(..., K)``; with per-head prototypes
    ``(H, K, D)`` the embeddings must be ``(..., H, D)`` and the result is ``(..., H, K)``.
    """
    real_tensor(embeddings, "embeddings", "cosine_logits", (1, 2, 3, 4))
    real_tensor(prototypes, "prototypes", "cosine_logits", (2, 3))
    if embeddings.shape[-1] != prototypes.shape[-1] or (
            prototypes.dim() == 3 and (embeddings.dim() < 2 or embeddings.shape[-2] != prototypes.shape[0])):
        raise UserError(f"cosine_logits: embeddings {tuple(embeddings.shape)} do not fit prototypes "
                        f"{tuple(prototypes.shape)} (expected (..., D) with (K, D), or (..., H, D) with (H, K, D))")
    e = F.normalize(embeddings, dim=-1)
    p = F.normalize(prototypes, dim=-1)
    if p.dim() == 2:
        return e @ p.t()
    return torch.einsum("...hd,hkd->...hk", e, p)


def stack_views(views: Sequence[torch.Tensor] | torch.Tensor, name: str, num_heads: int,
                num_codes: int) -> torch.Tensor:
    """A list of views, each ``(batch, codes)`` or ``(batch, heads, codes)``, as one float32
    ``(views, batch, heads, codes)`` tensor; shapes are checked against ``num_heads``/``num_codes``."""
    if isinstance(views, torch.Tensor):
        views = [views]
    views = list(views)
    if not views:
        raise UserError(f"{name}: no views given")
    out = []
    for i, v in enumerate(views):
        if not isinstance(v, torch.Tensor) or not torch.is_floating_point(v):
            raise UserError(f"{name}[{i}] must be a float tensor, got {getattr(v, 'dtype', type(v).__name__)}")
        if v.dim() == 2:
            v = v.unsqueeze(1)
        if v.dim() != 3:
            raise UserError(f"{name}[{i}] must be (batch, codes) or (batch, heads, codes), got {tuple(v.shape)}")
        if v.shape[2] != num_codes:
            raise UserError(f"{name}[{i}] has {v.shape[2]} codes, expected {num_codes}")
        if v.shape[1] != num_heads:
            raise UserError(f"{name}[{i}] has {v.shape[1]} heads, expected {num_heads}")
        if v.shape[0] != views[0].shape[0]:
            raise UserError(f"{name}: view {i} has batch {v.shape[0]} but view 0 has {views[0].shape[0]}")
        out.append(v.float())
    return torch.stack(out)


def cross_view_loss(teacher_probs: torch.Tensor, student_log_probs: torch.Tensor, ensemble: WeightedEnsembleLoss,
                    epoch: float | None = None, skip_same: bool = True) -> torch.Tensor:
    """Mean over (teacher view i, student view j) pairs of the ensemble loss of that pair.

    ``teacher_probs`` ``(Vt, B, H, C)``, ``student_log_probs`` ``(Vs, B, H, C)``. With
    ``skip_same`` (DINO), pairs with ``i == j`` are left out: student view ``i`` and teacher view
    ``i`` are the same crop for ``i < Vt`` (global views first). Without it every pair counts (MSN,
    whose target is a view of its own).
    """
    terms = [ensemble(student_log_probs[j], teacher_probs[i], epoch=epoch)
             for i in range(teacher_probs.shape[0]) for j in range(student_log_probs.shape[0])
             if not (skip_same and i == j)]
    if not terms:
        raise UserError(f"no cross-view pairs: {teacher_probs.shape[0]} teacher view(s) and "
                        f"{student_log_probs.shape[0]} student view(s); DINO needs two views or more")
    return torch.stack(terms).mean()
