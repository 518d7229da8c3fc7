"""Triplet loss with in-batch mining: the baseline Proxy-NCA is compared against.

Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face Recognition and Clustering",
CVPR 2015: embeddings on the unit hypersphere (Sec. 3), the loss ``[d(a,p) - d(a,n) + margin]_+`` over
squared Euclidean distances with margin α = 0.2 (Eq. 1-2, Sec. 3), and *semi-hard* negatives
(Sec. 3.2): "we use all anchor-positive pairs in a mini-batch while still selecting the hard
negatives", the semi-hard ones being those with ``d(a,p) < d(a,n) < d(a,p) + α``.

Mining modes (all vectorised over the batch, no Python loop over triplets):

* ``"semihard"`` (FaceNet, as in TensorFlow's ``triplet_semihard_loss``): for every anchor-positive
  pair, the negative is the *closest negative farther than the positive*; when the anchor has no
  such negative, the farthest negative is used. The loss is the mean over all anchor-positive pairs
  (pairs whose chosen negative already satisfies the margin contribute 0). Cost O(B² log B): each
  anchor's negative distances are sorted once and the positives located with ``searchsorted``.
* ``"all"``: every valid triplet; mean over the triplets with a positive loss (pytorch-metric-learning's
  ``TripletMarginMiner(type_of_triplets="all")`` + ``TripletMarginLoss``, whose reducer averages the
  non-zero losses). Builds a B × B × B tensor.
* ``"hard"``: triplets whose negative is at least as close as the positive (PML's ``"hard"`` type);
  mean of their losses. Builds a B × B × B tensor.

pytorch-metric-learning's ``"semihard"`` miner differs from FaceNet's: it keeps *every* triplet with
``0 < d(a,n) - d(a,p) <= margin`` instead of one negative per pair; for ``"all"``/``"hard"`` this
module equals PML (with ``squared=False``, PML's default ``LpDistance``).

Under ``torchrun`` (``cross_rank=True``, the default) the mining sees the embeddings of every process: each
process gathers all of them (its own rows keep their gradient, the others' are copies: the all-gather of
pytorch-metric-learning's ``DistributedLossWrapper``), computes the loss of the whole global batch, and
scales its gradient (not its value) by the number of processes, which DDP's gradient averaging divides
out again: N processes give the value and the gradients of one process holding the global batch. Every
process must then call the loss once per step (it is a collective).

Degenerate batches: a batch without any anchor-positive pair (or whose anchors have no negative)
gives a zero loss that is still connected to the graph (so DDP and backward work) — random sampling
produces such batches. A batch whose samples all share **one** class (and more than one sample) is an
error: it has no negative at all, which means the sampler is misconfigured.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from vislearn.errors import UserError
from vislearn.losses._tensors import index_vector, real_matrix
from vislearn.losses.proxy_nca import squared_distances
from vislearn.train.distributed import gather_rows, world

__all__ = ["TripletLoss", "pairwise_distances", "triplet_loss"]

MININGS = ("semihard", "all", "hard")


def pairwise_distances(x: torch.Tensor, squared: bool = True) -> torch.Tensor:
    """B × B Euclidean distances between rows (squared by default), via one matmul; exact 0 on the diagonal."""
    d = squared_distances(x, x).clamp_min_(0.0)
    d = d * (1 - torch.eye(len(x), dtype=d.dtype, device=d.device))  # remove rounding residue on the diagonal
    if not squared:
        # sqrt has an infinite slope at 0; the clamp keeps the gradient finite for coincident points.
        d = d.clamp_min(1e-16).sqrt()
    return d


def triplet_loss(embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, mining: str = "semihard",
                 squared: bool = True, normalize: bool = True) -> torch.Tensor:
    """Stateless triplet loss with in-batch mining (see the module docstring for the modes)."""
    real_matrix(embeddings, "embeddings", "triplet_loss")
    labels = index_vector(labels, embeddings.shape[0], "labels", "triplet_loss")
    if normalize:
        embeddings = F.normalize(embeddings, dim=1)
    d = pairwise_distances(embeddings, squared=squared)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    pos = same & ~eye
    neg = ~same
    zero = embeddings.sum() * 0.0
    if mining == "semihard":
        n_neg = neg.sum(1)
        neg_d = d.masked_fill(~neg, float("inf"))
        sorted_neg, _ = neg_d.sort(dim=1)  # ascending; +inf (non-negatives) at the end
        # index of the first negative strictly farther than each candidate positive distance
        first_far = torch.searchsorted(sorted_neg.detach(), d.detach().contiguous(), right=True)
        has_far = first_far < n_neg.unsqueeze(1)
        choice = torch.where(has_far, first_far, (n_neg - 1).clamp_min(0).unsqueeze(1).expand_as(first_far))
        d_an = sorted_neg.gather(1, choice.clamp_max(len(labels) - 1))
        valid = pos & (n_neg > 0).unsqueeze(1)
        if not bool(valid.any()):
            return zero
        return F.relu(d - d_an + margin)[valid].mean()
    if mining in ("all", "hard"):
        valid = pos.unsqueeze(2) & neg.unsqueeze(1)  # [a, p, n]
        violation = d.unsqueeze(2) - d.unsqueeze(1) + margin  # d(a,p) - d(a,n) + margin
        if mining == "hard":
            valid = valid & (d.unsqueeze(1) <= d.unsqueeze(2))
        losses = F.relu(violation)[valid]
        losses = losses[losses > 0]
        if losses.numel() == 0:
            return zero
        return losses.mean()
    raise UserError(f"mining must be one of {', '.join(MININGS)}, got {mining!r}")


class TripletLoss(nn.Module):
    """Triplet margin loss with in-batch mining (FaceNet semi-hard by default).

    Args:
        margin: α in ``[d(a,p) - d(a,n) + α]_+`` (FaceNet: 0.2 on squared distances of unit vectors).
        mining: ``"semihard"`` (FaceNet), ``"all"`` or ``"hard"``.
        squared: squared Euclidean distances (FaceNet) or plain Euclidean (pytorch-metric-learning).
        normalize: L2-normalise the embeddings first (FaceNet's unit hypersphere).
        cross_rank: under ``torchrun``, mine over the embeddings of every process (see the module docstring).

    ``forward(embeddings B×D, labels B) -> scalar``. It has no parameters; ``embedding_dim`` is only
    checked when given.
    """

    def __init__(self, margin: float = 0.2, mining: str = "semihard", squared: bool = True,
                 normalize: bool = True, embedding_dim: int | None = None, cross_rank: bool = True) -> None:
        super().__init__()
        if not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
            raise UserError(f"margin must be a finite number >= 0, got {margin!r}")
        if mining not in MININGS:
            raise UserError(f"mining must be one of {', '.join(MININGS)}, got {mining!r}")
        if embedding_dim is not None and (not isinstance(embedding_dim, int) or embedding_dim < 1):
            raise UserError(f"embedding_dim must be a positive int or None, got {embedding_dim!r}")
        self.margin, self.mining, self.squared, self.normalize = float(margin), mining, squared, normalize
        self.embedding_dim, self.cross_rank = embedding_dim, bool(cross_rank)

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, squared={self.squared}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not isinstance(embeddings, torch.Tensor) or not torch.is_floating_point(embeddings) \
                or embeddings.dim() != 2:
            raise UserError(f"TripletLoss: embeddings must be a float B×D tensor, got "
                            f"{getattr(embeddings, 'dtype', type(embeddings).__name__)} "
                            f"shape {tuple(getattr(embeddings, 'shape', ()))}")
        if self.embedding_dim is not None and embeddings.shape[1] != self.embedding_dim:
            raise UserError(f"TripletLoss: embeddings must be B×{self.embedding_dim}, got {tuple(embeddings.shape)}")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype.is_floating_point:
            raise UserError("TripletLoss: labels must be a 1-D integer tensor")
        if len(labels) != len(embeddings):
            raise UserError(f"TripletLoss: {len(embeddings)} embeddings but {len(labels)} labels")
        if len(labels) == 0:
            raise UserError("TripletLoss: empty batch")
        if not bool(torch.isfinite(embeddings.detach()).all()):
            raise UserError("TripletLoss: embeddings contain NaN or inf")
        labels = labels.to(embeddings.device)
        size = world()[1] if self.cross_rank else 1
        if size > 1:  # the global batch: every process's rows, this process's with their gradient
            embeddings, labels = gather_rows(embeddings)[0], gather_rows(labels)[0]
        if len(labels) > 1 and bool((labels == labels[0]).all()):
            raise UserError(f"TripletLoss: all {len(labels)} samples of the batch have label {int(labels[0])}; "
                            "a triplet needs a negative (sample at least two classes per batch)")
        with torch.autocast(embeddings.device.type, enabled=False):
            loss = triplet_loss(embeddings.float(), labels, self.margin, self.mining, self.squared, self.normalize)
        # each process's gradient reaches only its own rows and DDP averages over processes: scale the gradient
        # by the world size, keep the value
        return loss * size - loss.detach() * (size - 1) if size > 1 else loss
