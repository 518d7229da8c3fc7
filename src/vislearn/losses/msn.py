"""MSN's prototype loss with mean-entropy maximisation, multi-head aware for the weighted ensemble.

Assran et al., "Masked Siamese Networks for Label-Efficient Learning", ECCV 2022 (MSN), and the
retuned MSN* of Ruan et al., ICLR 2023 (App. B.2). Anchor views (the student's *masked* global view
and its focal views; masking happens on the input, see :mod:`vislearn.data.multicrop`) are matched
to the prototype assignment of the unmasked target view (the EMA teacher)::

    p_anchor = softmax(cos(z_anchor, µ) / τ)
    p_target = sharpen(softmax(cos(z_target, µ) / τ), T)  [-> Sinkhorn-Knopp, optional]
    L = mean_anchors H[p_target, p_anchor] - λ · (H[mean_anchors p_anchor] - log K) + ε · mean_anchors H[p_anchor]

``sharpen(p, T) = p^(1/T) / Σ p^(1/T)``, which for a softmax is ``softmax(z / (τ·T))``: a teacher
temperature ``τ_t = τ·T``. MSN's τ = 0.1 and T = 0.25 give τ_t = 0.025, which is also MSN*'s teacher
temperature (App. B.2.1, Table 8: 0.025, decayed linearly from 0.05 over the first 30 epochs, i.e.
T from 0.5 to 0.25). This module takes the teacher temperature and its warm-up, like
:class:`~vislearn.losses.dino.DINOLoss`, and computes ``softmax(z / τ_t)``, which never underflows.
The last term is the official code's optional per-sample entropy penalty (``use_ent`` /
``ent_weight``, weight 0 in its configs; lightly leaves it out); ``entropy_weight=0`` by default.
The ME-MAX mean is averaged over all processes (MSN's ``AllReduce``), and like MSN its gradient is
passed to each process as if the mean were local, so DDP's gradient averaging gives the gradient of
the one-process loss on the whole batch (tested with a fake world).

Defaults are MSN*'s (App. B.2, Table 8): ME-MAX weight λ = 4.0, no Sinkhorn, τ = 0.1, τ_t = 0.025
warmed from 0.05 over 30 epochs. MSN's own ViT-S/16 config (``configs/pretrain/msn_vits16.yaml``)
uses λ = 1 with Sinkhorn on (``use_sinkhorn: true``) and a fixed T = 0.25, as lightly's ``MSNLoss``
defaults do (λ = 1, 3 iterations).

Inputs are *cosine logits* (:func:`~vislearn.losses.ssl_ops.cosine_logits` of embeddings against
prototypes, or the output of :class:`~vislearn.models.ssl_heads.MultiHead`), so teacher and student
may use different codebooks: the paper's teacher is the EMA of every student part, codebook included
(Alg. 2), whereas MSN's target reuses the student's prototypes. Pass the same prototypes to both to
get MSN's (and lightly's) behaviour.

Views: MSN pairs one target view (a view of its own) with every anchor view. MSN* is "DINO* plus
ME-MAX and masking" (App. B.1.2, B.2.1): the teacher sees DINO's 2 global views and the student the
masked global views and the local ones. Given several target views, pairs follow DINO's rule (anchor
view i skips target view i, the same crop) with ``pairing="cross"``, our reading of "the exact same
setup" as DINO*; ``pairing="all"`` keeps every pair. Sinkhorn, when on, runs over all target views.

Heads: logits ``(batch, codes)`` or ``(batch, heads, codes)``. The cross-entropies of each anchor
view go through ``ensemble`` (default: the mean over heads); the target probabilities it sees, and
whose entropy ENT takes, are those after sharpening and Sinkhorn. The paper does not say how ME-MAX
is applied per head; we take each head's ME-MAX over its own codebook and average over heads, so
the regulariser keeps one head's scale, like the weighted cross-entropy.

With one head the value equals lightly's ``MSNLoss`` on the same tensors (tested).

Example::

    loss_fn = MSNLoss(num_codes=1024, num_heads=8, ensemble=WeightedEnsembleLoss("ent", gamma=0.07))
    loss = loss_fn([student(masked_view), *[student(v) for v in focal]], teacher(view))
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.losses._tensors import real_tensor
from vislearn.losses.ensemble import WeightedEnsembleLoss, check_positive, code_entropy
from vislearn.losses.ssl_ops import (
    AllReduce,
    TeacherTemperature,
    cross_view_loss,
    dist_all_reduce,
    sinkhorn_knopp,
    stack_views,
)

__all__ = ["MSNLoss", "mean_entropy_regularizer"]


class _StraightThroughMean(torch.autograd.Function):
    """Forward: the count-weighted mean of the processes' local means; backward: identity (MSN's AllReduce)."""

    @staticmethod
    def forward(ctx, local_mean: torch.Tensor, count: int, all_reduce: AllReduce) -> torch.Tensor:
        packed = torch.cat([local_mean.detach().reshape(-1) * count,
                            torch.tensor([float(count)], dtype=local_mean.dtype, device=local_mean.device)])
        all_reduce(packed, "sum")
        return (packed[:-1] / packed[-1]).reshape(local_mean.shape)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def mean_entropy_regularizer(anchor_probs: torch.Tensor, all_reduce: AllReduce | None = None) -> torch.Tensor:
    """ME-MAX (MSN Eq. 4): ``log K - H[mean p]`` per head, averaged over heads; ≥ 0, 0 at uniform use.

    ``anchor_probs`` ``(samples, heads, codes)``; the mean over samples spans all processes.
    """
    real_tensor(anchor_probs, "anchor_probs", "mean_entropy_regularizer", (3,))
    local = anchor_probs.mean(0)  # (H, K)
    mean = _StraightThroughMean.apply(local, anchor_probs.shape[0], all_reduce or dist_all_reduce)
    return (math.log(anchor_probs.shape[-1]) - code_entropy(mean)).mean()


class MSNLoss(nn.Module):
    """MSN / MSN* loss (module docstring).

    Args:
        num_codes: number of prototypes ``K`` per head (MSN* 4096 for one head, 1024 for ensembles).
        num_heads: number of (projection head, codebook) pairs (MSN* ENT: 8).
        temperature: the anchors' (student) ``τ`` (0.1).
        teacher_temp: the targets' ``τ_t = τ·T`` (0.025: MSN's T = 0.25, MSN*'s teacher temperature).
        warmup_teacher_temp: ``τ_t`` at epoch 0 (MSN* 0.05); ``None``: no warm-up (MSN).
        warmup_teacher_temp_epochs: warm-up length (30), DINO's ``np.linspace`` convention.
        me_max_weight: ``λ`` (MSN* 4.0; MSN 1.0; 0 disables it).
        entropy_weight: ``ε`` of the per-sample anchor entropy penalty (0: off, as in MSN's configs).
        sinkhorn_iterations: Sinkhorn-Knopp on the targets (0: off, MSN*; MSN and lightly use 3).
        pairing: with several target views, ``"cross"`` (DINO's rule: anchor view i skips target
            view i, the same crop) or ``"all"``; one target view is always paired with every anchor.
        ensemble: how heads combine; default the mean over heads (plain MSN for one head).
        all_reduce: the cross-process reduction (default ``torch.distributed`` when initialised).
    """

    def __init__(self, num_codes: int, num_heads: int = 1, temperature: float = 0.1, teacher_temp: float = 0.025,
                 warmup_teacher_temp: float | None = 0.05, warmup_teacher_temp_epochs: int = 30,
                 me_max_weight: float = 4.0, entropy_weight: float = 0.0,
                 sinkhorn_iterations: int = 0, pairing: str = "cross", ensemble: WeightedEnsembleLoss | None = None,
                 all_reduce: AllReduce | None = None) -> None:
        super().__init__()
        for name, value in (("num_codes", num_codes), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be an int >= 1, got {value!r}")
        self.temperature = check_positive("temperature", temperature)
        self.teacher_temperature = TeacherTemperature.checked(teacher_temp, warmup_teacher_temp,
                                                              warmup_teacher_temp_epochs)
        for name, value in (("me_max_weight", me_max_weight), ("entropy_weight", entropy_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UserError(f"{name} must be a finite number >= 0, got {value!r}")
        if isinstance(sinkhorn_iterations, bool) or not isinstance(sinkhorn_iterations, int) \
                or sinkhorn_iterations < 0:
            raise UserError(f"sinkhorn_iterations must be an int >= 0, got {sinkhorn_iterations!r}")
        if pairing not in ("cross", "all"):
            raise UserError(f"pairing must be 'cross' or 'all', got {pairing!r}")
        if ensemble is not None and not isinstance(ensemble, WeightedEnsembleLoss):
            raise UserError(f"ensemble must be a WeightedEnsembleLoss, got {type(ensemble).__name__}")
        self.num_codes, self.num_heads = num_codes, num_heads
        self.me_max_weight, self.entropy_weight = float(me_max_weight), float(entropy_weight)
        self.sinkhorn_iterations, self.pairing = sinkhorn_iterations, pairing
        self.ensemble = ensemble if ensemble is not None else WeightedEnsembleLoss("unif")
        self.all_reduce = all_reduce or dist_all_reduce

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, num_heads={self.num_heads}, temperature={self.temperature}, "
                f"teacher_temperature={self.teacher_temperature}, me_max_weight={self.me_max_weight}, "
                f"sinkhorn_iterations={self.sinkhorn_iterations}")

    @torch.no_grad()
    def target_probs(self, target_logits: Sequence[torch.Tensor] | torch.Tensor, epoch: float | None = None,
                     teacher_temp: float | None = None) -> torch.Tensor:
        """Sharpened (and optionally Sinkhorn-normalised) targets ``(views, batch, heads, codes)``."""
        z = stack_views(target_logits, "target_logits", self.num_heads, self.num_codes)
        temp = self.teacher_temperature(epoch, override=teacher_temp)
        v, b, h, k = z.shape
        # normalised first: Sinkhorn's result depends on each sample's scale, and MSN starts from probabilities
        log_p = torch.log_softmax(z.reshape(v * b, h, k) / temp, dim=-1)
        return sinkhorn_knopp(log_p, self.sinkhorn_iterations, self.all_reduce).reshape(v, b, h, k)

    def _anchor_views(self, anchor_logits: Sequence[torch.Tensor] | torch.Tensor, batch: int) -> torch.Tensor:
        if isinstance(anchor_logits, torch.Tensor):
            n = anchor_logits.shape[0]
            if n == 0 or n % batch:
                raise UserError(f"anchor_logits has {n} rows, not a whole number of views of the target "
                                f"batch {batch}")
            anchor_logits = list(anchor_logits.split(batch))  # view-major, as lightly and MSN stack them
        views = stack_views(anchor_logits, "anchor_logits", self.num_heads, self.num_codes)
        if views.shape[1] != batch:
            raise UserError(f"anchor views have batch {views.shape[1]} but the target has {batch}")
        return views

    def forward(self, anchor_logits: Sequence[torch.Tensor] | torch.Tensor,
                target_logits: Sequence[torch.Tensor] | torch.Tensor, epoch: float | None = None,
                teacher_temp: float | None = None) -> torch.Tensor:
        """``anchor_logits``: a list of views or one ``(views·batch, ...)`` tensor stacked view-major;
        ``target_logits``: one view ``(batch, codes)`` / ``(batch, heads, codes)`` (MSN) or a list of
        teacher views (MSN* on DINO's multi-crop); ``epoch`` drives the teacher-temperature warm-up and
        γ's schedule; ``teacher_temp`` overrides the schedule."""
        targets_in = [target_logits] if isinstance(target_logits, torch.Tensor) else list(target_logits)
        if not targets_in:
            raise UserError("target_logits: no views given")
        device = targets_in[0].device if isinstance(targets_in[0], torch.Tensor) else torch.device("cpu")
        with torch.autocast(device.type, enabled=False):
            targets = self.target_probs(targets_in, epoch=epoch, teacher_temp=teacher_temp)
            anchors = self._anchor_views(anchor_logits, targets.shape[1])
            cross = len(targets_in) > 1 and self.pairing == "cross"
            if cross and anchors.shape[0] < targets.shape[0]:
                raise UserError(f"the student needs every teacher view and more: got {targets.shape[0]} target "
                                f"view(s) but {anchors.shape[0]} anchor view(s)")
            log_probs = torch.log_softmax(anchors / self.temperature, dim=-1)  # (V, B, H, K)
            loss = cross_view_loss(targets, log_probs, self.ensemble, epoch=epoch, skip_same=cross)
            probs = log_probs.exp().flatten(0, 1)  # (V·B, H, K)
            if self.me_max_weight > 0:
                loss = loss + self.me_max_weight * mean_entropy_regularizer(probs, self.all_reduce)
            if self.entropy_weight > 0:
                loss = loss + self.entropy_weight * code_entropy(probs, log_probs.flatten(0, 1)).mean()
        return loss
