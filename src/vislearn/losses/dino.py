"""DINO's self-distillation loss, multi-head aware for the weighted ensemble.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (DINO), and
the retuned DINO* of Ruan et al., ICLR 2023 (App. B.1). The teacher's logits of each *global* view
are renormalised and sharpened into targets; each student view (global and local) is trained to
match every teacher view except the one of the same index (DINO's "different views only")::

    L = mean over pairs (i, j), i ≠ j, of  mean_batch  H×[ t(·|x_i), s(·|x_j) ]

Teacher renormalisation (``normalization``):

* ``"center"`` (DINO): ``t = softmax((z - center) / τ_t)``; the center is an EMA of the batch
  mean of the teacher logits (momentum 0.9), averaged over all processes under DDP.
* ``"sinkhorn"`` (DINO*, the paper's default for its baselines and ensembles): Sinkhorn-Knopp on
  ``exp(z / τ_t)`` (computed in log space) over the teacher's views and batch, as DINOv2's
  ``sinkhorn_knopp_teacher`` and SwAV. The paper names the method but not its form or iteration
  count; we use this form with 3 iterations (SwAV's and DINOv2's default), summing over all processes.

Temperatures: student 0.1; teacher warmed linearly from ``warmup_teacher_temp`` to
``teacher_temp`` over ``warmup_teacher_temp_epochs`` epochs with DINO's convention
(``np.linspace``: the final value at epoch ``warmup_teacher_temp_epochs - 1``). Defaults are DINO*'s
(0.05 → 0.025 over 30 epochs, Sec. 4 / App. B.1); DINO's code defaults to 0.04 throughout with
centering (0.07 after a warm-up for long runs).

Heads: the logits of each view may be ``(batch, codes)`` (one head) or ``(batch, heads, codes)``.
Each head keeps its own center, and Sinkhorn runs per head. The per-pair, per-sample, per-head
cross-entropies go through ``ensemble`` (a :class:`~vislearn.losses.ensemble.WeightedEnsembleLoss`;
default: the mean over heads, "unif"), which is where the paper's weights enter; the teacher
probabilities it sees, and whose entropy ENT takes, are those after centering/Sinkhorn
(:meth:`DINOLoss.teacher_probs`). The paper's Alg. 2 uses one pair of views and does not say how the
weights combine over DINO's multi-crop pairs; we weight each (teacher view, student view) pair by its
own teacher view's entropy (its own student view's for ENT-ST) and average the pairs.

Center updates: ``center_update="forward"`` (DINO, lightly) updates the center inside every
``forward``. Under gradient accumulation that updates it once per *micro*-batch; with
``center_update="step"`` the forward only accumulates the teacher's sums and :meth:`step_center`
(call it from the engine's ``after_optimizer_step``) applies one momentum update with the mean
over all micro-batches of the step, all-reduced across processes: the same center as one large batch.
Pending sums are not part of the state dict (a checkpoint is taken at an optimizer step). In
``eval()`` mode the center is left alone (DINO only calls its loss while training).

With one head, ``normalization="center"`` and the same temperatures, the value and the center
updates equal lightly's ``DINOLoss`` (tested).

Example::

    loss_fn = DINOLoss(num_codes=1024, num_heads=16, ensemble=WeightedEnsembleLoss("ent", gamma=0.35))
    loss = loss_fn([teacher(g1), teacher(g2)], [student(v) for v in (g1, g2, *locals_)], epoch=epoch)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from vislearn.errors import UserError
from vislearn.losses.ensemble import WeightedEnsembleLoss, check_positive
from vislearn.losses.ssl_ops import (
    AllReduce,
    TeacherTemperature,
    cross_view_loss,
    dist_all_reduce,
    global_mean,
    sinkhorn_knopp,
    stack_views,
)

__all__ = ["DINOLoss"]


class DINOLoss(nn.Module):
    """DINO / DINO* loss over multi-crop views, with one center per head (module docstring).

    Args:
        num_codes: codebook size ``c`` (DINO* 4096 for one head, 1024 for ensembles; DINO 65536).
        num_heads: number of (projection head, codebook) pairs (DINO* ENT: 16).
        teacher_temp: final teacher temperature (DINO* 0.025).
        warmup_teacher_temp: teacher temperature at epoch 0 (DINO* 0.05); ``None``: no warm-up.
        warmup_teacher_temp_epochs: length of the warm-up (DINO* 30).
        student_temp: student temperature (0.1).
        normalization: ``"sinkhorn"`` (DINO*) or ``"center"`` (DINO).
        center_momentum: EMA momentum of the center (0.9), ``"center"`` only.
        center_update: ``"forward"`` or ``"step"`` (see the module docstring).
        sinkhorn_iterations: Sinkhorn-Knopp iterations (3; the paper does not say).
        ensemble: how heads combine; default mean over heads (UNIF; plain DINO for one head).
        all_reduce: the cross-process reduction (default ``torch.distributed`` when initialised).

    ``teacher_temperature(epoch)`` is the :class:`~vislearn.losses.ssl_ops.TeacherTemperature` schedule.
    """

    def __init__(self, num_codes: int, num_heads: int = 1, teacher_temp: float = 0.025,
                 warmup_teacher_temp: float | None = 0.05, warmup_teacher_temp_epochs: int = 30,
                 student_temp: float = 0.1, normalization: str = "sinkhorn", center_momentum: float = 0.9,
                 center_update: str = "forward", sinkhorn_iterations: int = 3,
                 ensemble: WeightedEnsembleLoss | None = None, all_reduce: AllReduce | None = None) -> None:
        super().__init__()
        for name, value in (("num_codes", num_codes), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be an int >= 1, got {value!r}")
        self.teacher_temperature = TeacherTemperature.checked(teacher_temp, warmup_teacher_temp,
                                                              warmup_teacher_temp_epochs)
        self.student_temp = check_positive("student_temp", student_temp)
        if normalization not in ("center", "sinkhorn"):
            raise UserError(f"normalization must be 'center' or 'sinkhorn', got {normalization!r}")
        if not isinstance(center_momentum, (int, float)) or not 0 <= center_momentum < 1:
            raise UserError(f"center_momentum must be in [0, 1), got {center_momentum!r}")
        if center_update not in ("forward", "step"):
            raise UserError(f"center_update must be 'forward' or 'step', got {center_update!r}")
        if isinstance(sinkhorn_iterations, bool) or not isinstance(sinkhorn_iterations, int) \
                or sinkhorn_iterations < 0:
            raise UserError(f"sinkhorn_iterations must be an int >= 0, got {sinkhorn_iterations!r}")
        if ensemble is not None and not isinstance(ensemble, WeightedEnsembleLoss):
            raise UserError(f"ensemble must be a WeightedEnsembleLoss, got {type(ensemble).__name__}")
        self.num_codes, self.num_heads = num_codes, num_heads
        self.normalization, self.center_momentum, self.center_update = normalization, float(center_momentum), \
            center_update
        self.sinkhorn_iterations = sinkhorn_iterations
        self.ensemble = ensemble if ensemble is not None else WeightedEnsembleLoss("unif")
        self.all_reduce = all_reduce or dist_all_reduce
        self.register_buffer("center", torch.zeros(num_heads, num_codes))
        self._pending_sum: torch.Tensor | None = None
        self._pending_count = 0

    def extra_repr(self) -> str:
        return (f"num_codes={self.num_codes}, num_heads={self.num_heads}, normalization={self.normalization!r}, "
                f"teacher_temperature={self.teacher_temperature}, student_temp={self.student_temp}")

    @torch.no_grad()
    def teacher_probs(self, teacher_out: Sequence[torch.Tensor] | torch.Tensor, epoch: float | None = None,
                      teacher_temp: float | None = None) -> torch.Tensor:
        """Teacher targets ``(views, batch, heads, codes)`` after centering or Sinkhorn (no center update)."""
        z = stack_views(teacher_out, "teacher_out", self.num_heads, self.num_codes)
        temp = self.teacher_temperature(epoch, override=teacher_temp)
        return self._renormalise(z, temp)

    @torch.no_grad()
    def _renormalise(self, z: torch.Tensor, temp: float) -> torch.Tensor:
        if self.normalization == "center":
            return torch.softmax((z - self.center) / temp, dim=-1)
        v, b, h, c = z.shape
        probs = sinkhorn_knopp(z.reshape(v * b, h, c) / temp, self.sinkhorn_iterations, self.all_reduce)
        return probs.reshape(v, b, h, c)

    def student_log_probs(self, student_out: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        """Student log-probabilities ``(views, batch, heads, codes)`` at the student temperature."""
        z = stack_views(student_out, "student_out", self.num_heads, self.num_codes)
        return torch.log_softmax(z / self.student_temp, dim=-1)

    def forward(self, teacher_out: Sequence[torch.Tensor], student_out: Sequence[torch.Tensor],
                epoch: float | None = None, teacher_temp: float | None = None) -> torch.Tensor:
        """The loss over all cross-view pairs; ``epoch`` drives the temperature warm-up and γ's schedule.

        ``teacher_out``: the teacher's logits of the global views; ``student_out``: the student's
        logits of every view, global views first in the teacher's order.
        """
        nt, ns = len(teacher_out), len(student_out)
        if ns < nt:
            raise UserError(f"the student needs every teacher view and more: got {nt} teacher view(s) "
                            f"but {ns} student view(s)")
        teacher = stack_views(teacher_out, "teacher_out", self.num_heads, self.num_codes)
        temp = self.teacher_temperature(epoch, override=teacher_temp)
        with torch.autocast(teacher.device.type, enabled=False):
            student = self.student_log_probs(student_out)
            if teacher.shape[1] != student.shape[1]:
                raise UserError(f"teacher views have batch {teacher.shape[1]} but student views {student.shape[1]}")
            loss = cross_view_loss(self._renormalise(teacher, temp), student, self.ensemble, epoch=epoch)
        if self.normalization == "center" and self.training:
            self._accumulate_center(teacher.detach())
        return loss

    @torch.no_grad()
    def _accumulate_center(self, teacher_views: torch.Tensor) -> None:
        v, b = teacher_views.shape[:2]
        local_sum = teacher_views.sum((0, 1))
        if self.center_update == "forward":
            self._update_center(local_sum, v * b)
            return
        self._pending_sum = local_sum if self._pending_sum is None else self._pending_sum + local_sum
        self._pending_count += v * b

    @torch.no_grad()
    def _update_center(self, local_sum: torch.Tensor, count: int) -> None:
        batch_center = global_mean(local_sum, count, self.all_reduce).to(self.center.dtype)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)

    @torch.no_grad()
    def step_center(self) -> None:
        """Apply the pending center update (``center_update="step"``): call once per optimizer step."""
        if self.center_update != "step" or self._pending_sum is None:
            return
        self._update_center(self._pending_sum, self._pending_count)
        self._pending_sum, self._pending_count = None, 0

