"""Weighted-ensemble cross-entropy for self-supervised heads (the paper's contribution).

Ruan, Singh, Morningstar, Alemi, Ioffe, Fischer, Dillon, "Weighted Ensemble Self-Supervised
Learning", ICLR 2023 (arXiv 2211.09981). ``m`` (projection head, codebook) pairs share one encoder;
teacher head ``i`` gives ``t_i(·|x)``, student head ``j`` gives ``s_j(·|x)``. The loss (Eqs. 4-5) is

    L = (1/n) Σ_x Σ_{i,j} H×[ w_ij ⊙ t_i(·|x), s_j(·|x) ],   w_ij = softmax_{(i,j)}( f_ij(stopgrad θ, x) / γ )

with stop-gradient weights that sum to 1 per sample, so the loss has the scale of one head's loss.
``H×[p, q] = -Σ p log q + Σ q - 1`` is the paper's unnormalised cross-entropy; every ``q`` here is
a normalised student distribution, so it equals the ordinary ``-Σ p log q`` that we compute.

Schemes (Sec. 3.3, App. A Alg. 1), all returning the mean over the batch:

* ``"unif"`` (Eq. 6): ``f_ij = log δ(i-j)``: the mean over heads of each head's own cross-entropy.
  The paper finds no gain over one head.
* ``"prob"`` (Eq. 7, γ = 1): cross-entropy between the mean teacher ``(1/m) Σ_i t_i`` and the mean
  student ``(1/m) Σ_j s_j``. The mean student is the arithmetic mean of the heads' *probabilities*
  (not of their logits or log-probabilities), formed in log space as
  ``logsumexp_j(log s_j) - log m`` as in Alg. 1. The paper shows this loss has the gradient of
  Eq. 4 with ``f_ij = log s_j`` at γ = 1 (App. D.1); the closed form only holds at γ = 1, so
  ``gamma`` other than 1 is refused for this scheme.
* ``"ent"`` (Eqs. 8-9): ``f_ij = -H[t_i] + log δ(i-j)``: per sample, the weight of head ``i`` is
  ``softmax_i(-H[t_i(·|x)] / γ)`` (stop-gradient), times head ``i``'s own cross-entropy. The
  lowest-entropy (most confident) teacher head weighs most. The paper's best scheme.
* ``"ent_st"``: the same with the *student's* entropy ``-H[s_i]`` (stop-gradient) in place of the
  teacher's; the paper's negative control (worse than one head, Table 1). Sec. 5.1 defines it as
  Eq. 12 (``f_ij = -H[s_j]``) *with* the ``log δ(i-j)`` term, so, like ENT, only the aligned pairs
  count, and ENT-ST differs from ENT in exactly one thing: whose entropy is used.

Entropies use ``0·log 0 = 0``. Teacher probabilities must already be renormalised (DINO's centering
or Sinkhorn-Knopp, MSN's sharpening): the paper takes the entropy after that step (App. A, Alg. 2).

γ (Sec. 5.1; App. B.2.1 and Tables 7-8): for DINO the final value is ``0.05·log c`` (0.06 for
ViT-B/8), chosen from {0.0125, ..., 0.2}·log c; for MSN 0.01 (0.005 for ViT-B/16); for both "γ is
linearly decayed from 0.5 to the specified value" over the first 30 epochs (the tables' "γ init."
and "γ decay epoch"). Sec. 5.1 gives the DINO values in ``log c`` units ("the scale log(c) gives the
maximum entropy"); that the tables' 0.5 and MSN's values are in the same units is our reading (the
paper does not say), and :func:`gamma_schedule` takes every value in ``log c`` units. The decay
follows DINO's ``np.linspace(start, final, ramp_epochs)`` convention at whole epochs (the final
value is reached at epoch ``ramp_epochs - 1``) and interpolates linearly in between, so a per-step
caller may pass a fractional epoch. PROB keeps γ = 1 (Sec. 5.1).

Example::

    loss_fn = WeightedEnsembleLoss("ent", schedule=lambda epoch: gamma_schedule(epoch, num_codes=1024))
    student_log_probs = torch.log_softmax(student_logits / 0.1, dim=-1)     # (batch, heads, codes)
    teacher_probs = torch.softmax(teacher_logits / 0.025, dim=-1)           # after centering/Sinkhorn
    loss = loss_fn(student_log_probs, teacher_probs, epoch=3.5)
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["ENSEMBLE_SCHEMES", "WeightedEnsembleLoss", "code_entropy", "gamma_schedule", "head_weights", "linear_ramp",
           "weighted_ensemble_loss"]

ENSEMBLE_SCHEMES = ("unif", "prob", "ent", "ent_st")


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`ENSEMBLE_SCHEMES`; otherwise a UserError suggesting the closest name."""
    if scheme in ENSEMBLE_SCHEMES:
        return scheme
    close = difflib.get_close_matches(str(scheme), ENSEMBLE_SCHEMES, n=1, cutoff=0.3)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown ensemble scheme {scheme!r}{hint} (choose one of {', '.join(ENSEMBLE_SCHEMES)})")


def check_positive(name: str, value: float) -> float:
    """``value`` as a float if it is a finite number > 0; otherwise a UserError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise UserError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def linear_ramp(epoch: float, start: float, end: float, ramp_epochs: int) -> float:
    """``start`` at epoch 0, linear to ``end`` at epoch ``ramp_epochs - 1``, then constant.

    Equal to DINO's ``np.linspace(start, end, ramp_epochs)[epoch]`` at whole epochs (the teacher
    temperature warm-up of the official code and of lightly); fractional epochs interpolate.
    ``ramp_epochs`` ≤ 1 means no ramp (``end`` throughout).
    """
    if epoch < 0:
        raise UserError(f"epoch must be >= 0, got {epoch!r}")
    if ramp_epochs <= 1:
        return float(end)
    t = min(float(epoch) / (ramp_epochs - 1), 1.0)
    return float(start + (end - start) * t)


def gamma_schedule(epoch: float, num_codes: int, final: float = 0.05, start: float = 0.5,
                   ramp_epochs: int = 30) -> float:
    """The ENT weighting temperature γ at ``epoch``, in nats: ``log(num_codes) ×`` a linear decay.

    Defaults are the paper's DINO setting (0.5 → 0.05, in ``log c`` units, over 30 epochs;
    Table 7). MSN*: ``final=0.01`` (0.005 for ViT-B/16), the same decay (Table 8).
    """
    if isinstance(num_codes, bool) or not isinstance(num_codes, int) or num_codes < 2:
        raise UserError(f"num_codes must be an int >= 2 (log c is the maximum entropy), got {num_codes!r}")
    check_positive("final gamma", final)
    check_positive("start gamma", start)
    return math.log(num_codes) * linear_ramp(epoch, start, final, ramp_epochs)


def code_entropy(probs: torch.Tensor, log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Shannon entropy over the last axis, with ``0·log 0 = 0`` (nats)."""
    if not isinstance(probs, torch.Tensor) or not torch.is_floating_point(probs):
        raise UserError(f"code_entropy: probs must be a real floating-point tensor, got "
                        f"{getattr(probs, 'dtype', type(probs).__name__)}")
    if log_probs is None:
        return -torch.special.xlogy(probs, probs).sum(-1)
    return -(probs * log_probs).masked_fill(probs == 0, 0.0).sum(-1)


def _check_inputs(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor) -> None:
    for name, t in (("student_log_probs", student_log_probs), ("teacher_probs", teacher_probs)):
        if not isinstance(t, torch.Tensor) or not torch.is_floating_point(t):
            raise UserError(f"{name} must be a float tensor, got {getattr(t, 'dtype', type(t).__name__)}")
        if t.dim() != 3:
            raise UserError(f"{name} must be shaped (batch, heads, codes), got shape {tuple(t.shape)}")
    (b, h, c), (bt, ht, ct) = student_log_probs.shape, teacher_probs.shape
    if c != ct:
        raise UserError(f"codes do not match: the student has {c} codes, the teacher {ct}")
    if h != ht:
        raise UserError(f"heads do not match: the student has {h} heads, the teacher {ht}")
    if b != bt:
        raise UserError(f"batch sizes do not match: the student has {b} samples, the teacher {bt}")
    if h < 1:
        raise UserError(f"heads must be >= 1, got {h}")
    if b < 1 or c < 1:
        raise UserError(f"empty input: batch {b}, codes {c}")


def head_weights(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor, scheme: str,
                 gamma: float | None = None) -> torch.Tensor:
    """Per-sample weights over heads ``(batch, heads)``, summing to 1, with no gradient.

    Defined for the aligned schemes (``"unif"``, ``"ent"``, ``"ent_st"``); ``"prob"`` has no
    per-head form (its weights depend on the code, App. D.1), so it is refused here.
    """
    scheme = check_scheme(scheme)
    _check_inputs(student_log_probs, teacher_probs)
    b, h, _ = teacher_probs.shape
    if scheme == "prob":
        raise UserError("the 'prob' scheme has per-code weights, not per-head ones; use weighted_ensemble_loss")
    if scheme == "unif":
        return teacher_probs.new_full((b, h), 1.0 / h)
    gamma = check_positive("gamma", gamma) if gamma is not None else None
    if gamma is None:
        raise UserError(f"scheme {scheme!r} needs gamma (the weighting temperature), got None")
    with torch.no_grad():
        if scheme == "ent":
            ent = code_entropy(teacher_probs.detach())
        else:
            ent = code_entropy(student_log_probs.detach().exp(), student_log_probs.detach())
        return torch.softmax(-ent / gamma, dim=1)


def weighted_ensemble_loss(student_log_probs: torch.Tensor, teacher_probs: torch.Tensor, scheme: str,
                           gamma: float | None = None) -> torch.Tensor:
    """The weighted-ensemble cross-entropy (Eqs. 4-9), averaged over the batch.

    Args:
        student_log_probs: ``(batch, heads, codes)`` log-softmax outputs of the student heads.
        teacher_probs: ``(batch, heads, codes)`` teacher probabilities after renormalisation
            (centering/Sinkhorn/sharpening); treated as constants (no gradient flows into them).
        scheme: ``"unif"``, ``"prob"``, ``"ent"`` or ``"ent_st"`` (module docstring).
        gamma: the weighting temperature in nats; required for ``"ent"`` and ``"ent_st"``,
            ignored by ``"unif"``, and must be None or 1 for ``"prob"``.

    With one head every scheme reduces to the plain cross-entropy ``-Σ t log s``.
    """
    scheme = check_scheme(scheme)
    _check_inputs(student_log_probs, teacher_probs)
    if gamma is not None:
        check_positive("gamma", gamma)
    teacher_probs = teacher_probs.detach()
    if scheme == "prob":
        if gamma is not None and gamma != 1:
            raise UserError(f"the 'prob' scheme is defined at gamma = 1 (Eq. 7), got gamma={gamma!r}")
        m = student_log_probs.shape[1]
        log_mean_student = torch.logsumexp(student_log_probs, dim=1) - math.log(m)
        mean_teacher = teacher_probs.mean(dim=1)
        return -(mean_teacher * log_mean_student).sum(-1).mean()
    per_head = -(teacher_probs * student_log_probs).sum(-1)  # (batch, heads)
    weights = head_weights(student_log_probs, teacher_probs, scheme, gamma)
    return (weights * per_head).sum(1).mean()


class WeightedEnsembleLoss(nn.Module):
    """:func:`weighted_ensemble_loss` with a fixed γ or a γ schedule (a function of the epoch).

    Args:
        scheme: ``"unif"``, ``"prob"``, ``"ent"`` or ``"ent_st"``.
        gamma: a fixed weighting temperature in nats (``"ent"``/``"ent_st"``).
        schedule: ``epoch -> gamma`` (e.g. ``partial(gamma_schedule, num_codes=1024)``); the epoch
            may be fractional. Give ``gamma`` or ``schedule`` for the entropy schemes, not both.

    ``forward(student_log_probs, teacher_probs, epoch=None)``: the epoch is required when a
    schedule is set. ``gamma_at(epoch)`` reports the γ in use.
    """

    def __init__(self, scheme: str, gamma: float | None = None,
                 schedule: Callable[[float], float] | None = None) -> None:
        super().__init__()
        self.scheme = check_scheme(scheme)
        if gamma is not None and schedule is not None:
            raise UserError("give gamma or schedule, not both")
        if gamma is not None:
            gamma = check_positive("gamma", gamma)
        if schedule is not None and not callable(schedule):
            raise UserError(f"schedule must be a function of the epoch, got {schedule!r}")
        if self.scheme in ("ent", "ent_st") and gamma is None and schedule is None:
            raise UserError(f"scheme {self.scheme!r} needs gamma or schedule")
        if self.scheme == "prob" and gamma is not None and gamma != 1:
            raise UserError(f"the 'prob' scheme is defined at gamma = 1 (Eq. 7), got gamma={gamma!r}")
        if self.scheme in ("unif", "prob") and schedule is not None:
            raise UserError(f"scheme {self.scheme!r} has no weighting temperature to schedule")
        self.gamma, self.schedule = gamma, schedule

    def extra_repr(self) -> str:
        return f"scheme={self.scheme!r}, gamma={self.gamma}, schedule={self.schedule is not None}"

    def gamma_at(self, epoch: float | None = None) -> float | None:
        if self.schedule is None:
            return self.gamma
        if epoch is None:
            raise UserError("this WeightedEnsembleLoss has a gamma schedule: pass epoch=")
        return check_positive("scheduled gamma", self.schedule(epoch))

    def forward(self, student_log_probs: torch.Tensor, teacher_probs: torch.Tensor,
                epoch: float | None = None) -> torch.Tensor:
        return weighted_ensemble_loss(student_log_probs, teacher_probs, self.scheme, self.gamma_at(epoch))
