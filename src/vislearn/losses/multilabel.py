"""Multilabel annotation losses: softmax, pairwise ranking and WARP (Gong et al., arXiv 1312.4894).

Gong, Jia, Leung, Toshev & Ioffe, "Deep Convolutional Ranking for Multilabel Image Annotation",
Sec. 3 compares three objectives on the same network's C label scores ``f(x) ∈ R^C``:

* **softmax** (Sec. 3.1): the target distribution puts mass ``1/c+`` on each of the image's ``c+``
  positive labels, and the loss is the cross-entropy ``−Σ_j p̄_j log softmax(f)_j``;
* **pairwise ranking** (Sec. 3.2): a hinge ``max(0, m − f_j + f_k)`` summed over every positive
  label ``j`` and negative label ``k`` of the image (margin ``m = 1`` in the paper);
* **WARP**, weighted approximate ranking (Sec. 3.3, after Weston et al.'s WSABIE): the pairwise
  hinge over *every* violating negative, weighted per positive by ``L(r_j) = Σ_{i≤r_j} 1/i``,
  where ``r_j`` is the rank of positive ``j``::

      J = Σ_images Σ_{j∈C+} Σ_{k∈C−} L(r_j) · max(0, 1 − f_j + f_k)

  The rank is estimated by sampling: negatives are drawn at random until one violates the margin;
  after ``N`` draws ``r_j = ⌊(C − 1)/N⌋``. A positive that is already ranked well needs many
  draws, gets a small weight, and costs little: the loss spends its effort on the top of the
  ranking, which is what precision/recall at top-k measure. This is the default
  (``form="paper"``). Weston et al.'s stochastic estimator, where only the one sampled violator
  enters the loss (``L(r_j) · max(0, 1 − f_j + f_k̂)``), is available as ``form="sampled_pair"``.

Conventions shared by the three losses (``loss(scores, targets)``):

* ``scores`` N×C float (any real values), ``targets`` N×C in {0, 1} (bool, integer or float).
  A shape mismatch or a target outside {0, 1} is a :class:`~vislearn.errors.UserError`.
* **Rows without a positive label are skipped and counted**: they carry no ranking information
  (and the softmax target ``y / c+`` is undefined). The ranking losses also skip rows with no
  negative label (nothing can be ranked above a positive). The loss is the **mean over the valid
  rows** of each row's sum over its positives (``reduction="mean"``; ``"sum"`` sums the rows,
  ``"none"`` returns the N row losses with 0 for skipped rows). When no row is valid the loss is
  0 (still connected to ``scores`` so ``backward`` works). The module classes record the counts
  of the last call in ``last_stats`` (``valid_rows``, ``skipped_rows``; WARP adds the number of
  (row, positive) pairs, how many found a violating negative and the mean number of draws).
  The paper sums over images; the mean over rows only rescales the gradient by the batch size.

WARP sampling, vectorised and exact: give every (row, positive) pair an independent uniformly random
order of its row's ``n`` negatives, i.e. i.i.d. uniform keys, and draw in key order until one of
the ``v`` violators appears. The first violator is the violator with the smallest key, so it is
uniform among the violators; its key ``U_min`` is the minimum of ``v`` uniforms
(``1 − U^{1/v}``) and independent of which one it is; the number of draws ``N`` is one plus the
number of the ``n − v`` non-violators whose key is below ``U_min``, i.e. ``1 + Binomial(n − v,
U_min)``. Sampling these three quantities directly gives exactly the distribution of the
draw-one-by-one procedure with two random numbers per pair and no loop: one comparison of each
pair's threshold with its row's scores and a running count find the violators, and a binary search
in the running count picks the chosen one. The draws are capped at
``max_trials`` (default: all the row's negatives); a pair that finds no violator within the cap
contributes nothing. WSABIE draws with replacement; drawing without replacement (a random order)
never wastes a draw on a label already seen.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError

__all__ = [
    "MultilabelSoftmaxLoss",
    "PairwiseRankingLoss",
    "WARPLoss",
    "multilabel_softmax_loss",
    "pairwise_ranking_loss",
    "warp_loss",
    "warp_rank_weights",
    "warp_sample",
]

_REDUCTIONS = ("mean", "sum", "none")


def _check_inputs(scores: torch.Tensor, targets: torch.Tensor, where: str) -> torch.Tensor:
    """Validate shapes and {0, 1} targets; return the positives as a bool N×C tensor."""
    if not isinstance(scores, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise UserError(f"{where}: scores and targets must be tensors, got {type(scores).__name__} "
                        f"and {type(targets).__name__}")
    if scores.dim() != 2:
        raise UserError(f"{where}: scores must be N×C, got shape {tuple(scores.shape)}")
    if not torch.is_floating_point(scores):
        raise UserError(f"{where}: scores must be a float tensor, got dtype {scores.dtype}")
    if targets.shape != scores.shape:
        raise UserError(f"{where}: targets shape {tuple(targets.shape)} does not match scores shape "
                        f"{tuple(scores.shape)} (expected N×C multi-hot targets)")
    if targets.dtype == torch.bool:
        return targets
    bad = (targets != 0) & (targets != 1)
    if bool(bad.any()):
        value = targets[bad][0].item()
        raise UserError(f"{where}: targets must be in {{0, 1}} (multi-hot), found {value!r}")
    return targets != 0


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise UserError(f"reduction must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")


def _check_margin(margin: float) -> float:
    try:
        m = float(margin)
    except (TypeError, ValueError):
        raise UserError(f"margin must be a number, got {margin!r}") from None
    if not m >= 0 or m == float("inf"):
        raise UserError(f"margin must be a finite number >= 0, got {margin!r}")
    return m


def _reduce(row_loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    row_loss = torch.where(valid, row_loss, torch.zeros((), dtype=row_loss.dtype, device=row_loss.device))
    if reduction == "none":
        return row_loss
    total = row_loss.sum()
    if reduction == "sum":
        return total
    return total / valid.sum().clamp(min=1)


# ------------------------------------------------------------------------------------------ softmax
def _softmax_rows(scores: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n_pos = pos.sum(1)
    valid = n_pos > 0
    logp = F.log_softmax(scores.float(), dim=1)
    target = pos.to(logp.dtype) / n_pos.clamp(min=1).unsqueeze(1).to(logp.dtype)
    return -(target * logp).sum(1), valid


def multilabel_softmax_loss(scores: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against ``targets / (number of positives)`` (Gong et al. Sec. 3.1).

    Row loss ``−Σ_j (y_j / c+) log softmax(scores)_j``; rows without a positive are skipped (module
    docstring). Example: scores ``[0, 0]`` with target ``[1, 1]`` give ``log 2``.
    """
    _check_reduction(reduction)
    pos = _check_inputs(scores, targets, "MultilabelSoftmaxLoss")
    row, valid = _softmax_rows(scores, pos)
    return _reduce(row, valid, reduction)


# ------------------------------------------------------------------------------------------ pairwise
def _pairwise_rows(scores: torch.Tensor, pos: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ_{j∈pos, k∈neg} max(0, m − s_j + s_k) per row (see :func:`_pairwise_per_label`)."""
    per_label, valid = _pairwise_per_label(scores, pos, margin)
    return torch.where(pos, per_label, torch.zeros((), dtype=per_label.dtype, device=per_label.device)).sum(1), valid


def _pairwise_per_label(scores: torch.Tensor, pos: torch.Tensor, margin: float
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """N×C hinge totals ``Σ_{k∈neg} max(0, m − s_j + s_k)`` for every label ``j`` in O(C log C) per row,
    without the N×C×C tensor (only the positives' entries are meaningful).

    Sort each row's negative scores ascending (positives pushed to the front as −inf). For a
    positive with score ``s_j`` the violating negatives are those above ``t = s_j − m``; with ``i``
    the first sorted position above ``t`` their count is ``C − i`` and their sum is a suffix sum,
    so the row's hinge total is ``Σ_j (C − i_j)(m − s_j) + suffix_j``. Autograd flows through the
    sorted values, so each violating pair contributes exactly its hinge gradient.
    """
    n, c = scores.shape
    s = scores.float()
    n_pos = pos.sum(1)
    valid = (n_pos > 0) & (n_pos < c)
    neg_sorted, _ = s.masked_fill(pos, float("-inf")).sort(dim=1)
    # the first n_pos sorted entries are the masked positives: exclude them from the sums
    masked = torch.arange(c, device=s.device).unsqueeze(0) < n_pos.unsqueeze(1)
    vals = neg_sorted.masked_fill(masked, 0.0)
    suffix = torch.cat([vals.flip(1).cumsum(1).flip(1), vals.new_zeros(n, 1)], dim=1)  # N×(C+1)
    thresh = (s - margin).detach().contiguous()
    search = neg_sorted.detach().masked_fill(masked, float("-inf")).contiguous()
    first = torch.searchsorted(search, thresh, right=True)  # first sorted index with value > s_j − m
    count = (c - first).to(s.dtype)
    return count * (margin - s) + suffix.gather(1, first), valid


def pairwise_ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0,
                          reduction: str = "mean") -> torch.Tensor:
    """Hinge over every positive–negative pair: ``Σ_j Σ_k max(0, m − s_j + s_k)`` (Sec. 3.2)."""
    _check_reduction(reduction)
    m = _check_margin(margin)
    pos = _check_inputs(scores, targets, "PairwiseRankingLoss")
    row, valid = _pairwise_rows(scores, pos, m)
    return _reduce(row, valid, reduction)


# ---------------------------------------------------------------------------------------------- WARP
def warp_rank_weights(num_labels: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The table ``L(r) = Σ_{j=1..r} 1/j`` for ``r = 0 .. num_labels − 1`` (``L(0) = 0``), Sec. 3.3."""
    if int(num_labels) != num_labels or num_labels < 2:
        raise UserError(f"num_labels must be an integer >= 2, got {num_labels!r}")
    r = torch.arange(1, int(num_labels), dtype=torch.float64)
    return torch.cat([torch.zeros(1, dtype=torch.float64), (1.0 / r).cumsum(0)]).to(dtype)


_CHUNK = 1 << 24  # pair×label elements processed at once (bounds the memory of huge batches)


def warp_sample(scores: torch.Tensor, pos: torch.Tensor, margin: float = 1.0, max_trials: int | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Sample, for every (row, positive) pair at once, the first margin violator of a random order.

    Equivalent in distribution to shuffling the row's ``n`` negatives and drawing them one by one
    until one of the ``v`` violators (``s_k > s_j − margin``) appears (module docstring), with two
    random numbers per pair: the chosen violator is uniform among the ``v`` (found by a binary
    search in the running count of violators), and the number of draws is
    ``N = 1 + Binomial(n − v, U_min)`` with ``U_min = 1 − U^{1/v}`` the smallest of ``v`` uniform keys.

    Args:
        scores: N×C scores (only their values are used: no gradient flows through the sampling).
        pos: N×C bool positives.
        margin: a negative ``k`` violates positive ``j`` when ``m − s_j + s_k > 0``.
        max_trials: cap on the draws per pair (``None``: all the row's negatives).
        generator: the ``torch.Generator`` the draws come from (reproducibility).

    Returns:
        dict of 1-D tensors over the P pairs (in row-major order of ``pos.nonzero()``): ``row``,
        ``positive``, ``negative`` (the chosen violator; meaningless where not ``found``),
        ``found``, ``violators`` (``v``), ``draws`` (``N``; where nothing was found, the draws made:
        ``min(n, max_trials)``) and ``rank`` (``⌊(C − 1)/N⌋``, 0 where not found).
    """
    pos = _check_inputs(scores, pos, "warp_sample")
    s = scores.detach().float()
    n, c = s.shape
    device = s.device
    if generator is not None and generator.device.type != device.type:
        raise UserError(f"WARPLoss generator is on {generator.device}, scores are on {device}")
    rows, positives = pos.nonzero(as_tuple=True)
    p = rows.numel()
    u = torch.rand(2, p, generator=generator, device=device, dtype=torch.float64)
    neg_scores = s.masked_fill(pos, float("-inf"))  # positives never violate
    thresh = s[rows, positives] - margin
    violators = torch.empty(p, dtype=torch.long, device=device)
    negative = torch.empty(p, dtype=torch.long, device=device)
    step = max(1, _CHUNK // max(c, 1))
    for a in range(0, p, step):  # one chunk unless P×C exceeds _CHUNK elements
        b = min(p, a + step)
        viol = neg_scores[rows[a:b]] > thresh[a:b, None]
        running = viol.view(torch.uint8).cumsum(1, dtype=torch.int32)  # (a uint8 view: no bool copy)
        v = running[:, -1].long()
        # the (r+1)-th violator, r uniform in 0..v−1: first slot where the running count reaches r + 1
        r = torch.minimum((u[0, a:b] * v).floor().long(), (v - 1).clamp(min=0))
        slot = torch.searchsorted(running, (r + 1).to(torch.int32).unsqueeze(1)).squeeze(1)
        violators[a:b], negative[a:b] = v, slot.clamp(max=c - 1)
    negatives = (c - pos.sum(1))[rows]
    found = violators > 0
    u_min = 1.0 - u[1].pow(1.0 / violators.clamp(min=1).to(torch.float64))  # smallest of v uniform keys
    skipped = torch.binomial((negatives - violators).to(torch.float64), u_min, generator=generator)
    draws = 1 + skipped.long()
    cap = negatives if max_trials is None else negatives.clamp(max=max_trials)
    if max_trials is not None:
        found = found & (draws <= max_trials)
    draws = torch.where(found, draws, cap)
    rank = torch.where(found, (c - 1) // draws.clamp(min=1), torch.zeros_like(draws))
    return {"row": rows, "positive": positives, "negative": negative, "found": found, "violators": violators,
            "draws": draws, "rank": rank}


WARP_FORMS = ("paper", "sampled_pair")


def _warp_rows(scores: torch.Tensor, pos: torch.Tensor, margin: float, max_trials: int | None,
               generator: torch.Generator | None, table: torch.Tensor | None = None, form: str = "paper"
               ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    n, c = scores.shape
    s = scores.float()
    n_pos = pos.sum(1)
    valid = (n_pos > 0) & (n_pos < c)
    draw = warp_sample(s, pos, margin, max_trials, generator)
    if table is None:
        table = warp_rank_weights(c)
    weight = table.to(device=s.device, dtype=s.dtype)[draw["rank"]]  # 0 where no violator was found
    if form == "paper":  # L(r_j) times the hinge summed over every negative of the row
        per_label, _ = _pairwise_per_label(s, pos, margin)
        pair_loss = weight * per_label[draw["row"], draw["positive"]]
    else:  # WSABIE: L(r_j) times the sampled violator's hinge only
        hinge = margin - s[draw["row"], draw["positive"]] + s[draw["row"], draw["negative"]]
        pair_loss = weight * hinge.clamp(min=0)
    row = torch.zeros(n, dtype=s.dtype, device=s.device).index_add(0, draw["row"], pair_loss)
    found = draw["found"]
    stats = {"pairs": torch.tensor(found.numel()), "violated_pairs": found.sum(),
             "mean_draws": draw["draws"][found].float().mean() if bool(found.any()) else torch.tensor(0.0)}
    return row, valid, stats


def _check_form(form: str) -> str:
    if form not in WARP_FORMS:
        raise UserError(f"WARP form must be one of {', '.join(WARP_FORMS)}, got {form!r}")
    return form


def warp_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 1.0, max_trials: int | None = None,
              generator: torch.Generator | None = None, reduction: str = "mean", form: str = "paper") -> torch.Tensor:
    """WARP (Sec. 3.3): ``Σ_j L(⌊(C−1)/N_j⌋) · Σ_k max(0, m − s_j + s_k)`` (``form="paper"``), or with the
    sampled violator's hinge ``max(0, m − s_j + s_k̂_j)`` in place of the sum (``form="sampled_pair"``)."""
    _check_reduction(reduction)
    m = _check_margin(margin)
    pos = _check_inputs(scores, targets, "WARPLoss")
    row, valid, _ = _warp_rows(scores, pos, m, _check_trials(max_trials), generator, form=_check_form(form))
    return _reduce(row, valid, reduction)


def _check_trials(max_trials: int | None) -> int | None:
    if max_trials is None:
        return None
    if isinstance(max_trials, bool) or int(max_trials) != max_trials or max_trials < 1:
        raise UserError(f"max_trials must be a positive integer or None, got {max_trials!r}")
    return int(max_trials)


# ------------------------------------------------------------------------------------------ modules
class _MultilabelLoss(nn.Module):
    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        _check_reduction(reduction)
        self.reduction = reduction
        self.last_stats: dict[str, torch.Tensor] = {}

    def _finish(self, row: torch.Tensor, valid: torch.Tensor, extra: dict | None = None) -> torch.Tensor:
        n_valid = valid.sum()
        self.last_stats = {"valid_rows": n_valid, "skipped_rows": valid.numel() - n_valid, **(extra or {})}
        return _reduce(row, valid, self.reduction)


class MultilabelSoftmaxLoss(_MultilabelLoss):
    """Softmax cross-entropy with target ``y / (number of positives)`` (Gong et al. Sec. 3.1).

    Example::

        >>> loss = MultilabelSoftmaxLoss()
        >>> float(loss(torch.zeros(1, 2), torch.ones(1, 2)))   # log 2
        0.6931...

    Rows without a positive label are skipped; ``last_stats["skipped_rows"]`` counts them.
    """

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = _check_inputs(scores, targets, type(self).__name__)
        return self._finish(*_softmax_rows(scores, pos))


class PairwiseRankingLoss(_MultilabelLoss):
    """``Σ_{j∈pos} Σ_{k∈neg} max(0, margin − s_j + s_k)`` per image, mean over images (Sec. 3.2).

    Args:
        margin: hinge margin (paper: 1).
        reduction: ``mean`` over valid rows (default), ``sum`` or ``none``.
    """

    def __init__(self, margin: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.margin = _check_margin(margin)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = _check_inputs(scores, targets, type(self).__name__)
        return self._finish(*_pairwise_rows(scores, pos, self.margin))


class WARPLoss(_MultilabelLoss):
    """Weighted Approximate Ranking loss (Gong et al. Sec. 3.3; Weston et al. 2011).

    For each positive label ``j`` of an image, negatives are drawn in random order until one
    violates the margin (``s_k > s_j − margin``); after ``N`` draws the rank of ``j`` is estimated
    as ``r_j = ⌊(C − 1)/N⌋`` and weighted by ``L(r_j) = Σ_{i≤r_j} 1/i`` (precomputed table).
    With ``form="paper"`` (default, Gong et al.'s objective) the positive costs
    ``L(r_j) · Σ_{k∈neg} max(0, margin − s_j + s_k)``: every violating negative receives gradient.
    With ``form="sampled_pair"`` (Weston et al.'s WSABIE estimator) only the sampled violator ``k̂``
    does: ``L(r_j) · (margin − s_j + s_k̂)``. All pairs of the batch are sampled at once (module
    docstring); the draws come from ``generator``.

    Args:
        num_labels: C, the number of labels (the weight table is precomputed for it).
        margin: hinge margin (paper: 1).
        max_trials: cap on draws per positive; ``None`` (default) allows all the row's negatives,
            so a pair is skipped only when no negative violates. A pair that finds no violator within
            the cap contributes 0 (its rank estimate is 0, ``L(0) = 0``), in both forms.
        generator: a ``torch.Generator`` on the scores' device, for reproducible sampling
            (``None``: torch's global generator).
        reduction: ``mean`` over valid rows (default), ``sum`` or ``none``.
        form: ``"paper"`` or ``"sampled_pair"`` (above).

    Example::

        >>> g = torch.Generator().manual_seed(0)
        >>> loss = WARPLoss(num_labels=5, generator=g)
        >>> loss(torch.zeros(1, 5), torch.tensor([[1., 0, 0, 0, 0]]))  # every negative violates: N = 1
        tensor(8.3333)                                       # L(4) · 4 hinges of 1 = (1 + 1/2 + 1/3 + 1/4) · 4
    """

    def __init__(self, num_labels: int, margin: float = 1.0, max_trials: int | None = None,
                 generator: torch.Generator | None = None, reduction: str = "mean", form: str = "paper") -> None:
        super().__init__(reduction)
        if generator is not None and not isinstance(generator, torch.Generator):
            raise UserError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.num_labels = int(num_labels) if not isinstance(num_labels, bool) else 0
        self.register_buffer("rank_weights", warp_rank_weights(num_labels), persistent=False)
        self.margin = _check_margin(margin)
        self.max_trials = _check_trials(max_trials)
        self.generator = generator
        self.form = _check_form(form)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos = _check_inputs(scores, targets, type(self).__name__)
        if scores.shape[1] != self.num_labels:
            raise UserError(f"WARPLoss was built for {self.num_labels} labels, scores have {scores.shape[1]}")
        row, valid, stats = _warp_rows(scores, pos, self.margin, self.max_trials, self.generator,
                                       self.rank_weights, self.form)
        return self._finish(row, valid, stats)

    def extra_repr(self) -> str:
        return f"num_labels={self.num_labels}, margin={self.margin}, max_trials={self.max_trials}, form={self.form!r}"
