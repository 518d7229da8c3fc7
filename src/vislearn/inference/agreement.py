"""How close a fast model's outputs are to the fp32 reference's, in numbers that mean something.

Top-1 agreement alone misleads on random weights: an untrained network predicts one or two classes
for every input, so two very different logit vectors still agree on the argmax. So :func:`agreement`
reports the logits' own distance first (max relative error, cosine similarity per sample) and the
top-1 agreement beside it, which is meaningful on a trained model; given labels it adds the top-1
accuracy of both and the drop (in percentage points).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

from vislearn.errors import UserError

__all__ = ["agreement"]


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise UserError(f"agreement needs N×C logits, got {getattr(out, 'shape', type(out).__name__)}")
    return out.detach().float().cpu()


def agreement(reference: Callable[[torch.Tensor], Any], candidate: Callable[[torch.Tensor], Any],
              batches: Iterable[Any]) -> dict[str, float]:
    """Compare ``candidate``'s logits with ``reference``'s on every batch.

    Args:
        reference: the fp32 model (eval mode; called under ``no_grad``).
        candidate: the model under test (e.g. ``optimize(model, precision="int8", ...)``).
        batches: input batches, or ``(images, labels)`` pairs (labels add the accuracy entries).

    Returns:
        ``max_rel_error``: max over batches of ``max|c - r| / max|r|``; ``mean_cosine`` and
        ``min_cosine``: cosine similarity of each sample's logit vectors; ``top1_agreement``: the
        fraction of samples whose argmax is the same; ``n``: samples seen; with labels also
        ``top1_reference``, ``top1_candidate`` and ``top1_drop_points`` (100 × the difference).

    Example::

        >>> import torch, torch.nn as nn
        >>> m = nn.Linear(4, 3)
        >>> agreement(m, m, [torch.randn(5, 4)])["top1_agreement"]
        1.0
    """
    max_rel, cosines, same, hits_r, hits_c, n, labelled = 0.0, [], 0, 0, 0, 0, True
    for batch in batches:
        x, y = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        with torch.no_grad():
            r, c = _logits(reference(x)), _logits(candidate(x))
        if r.shape != c.shape:
            raise UserError(f"reference and candidate logits differ in shape: {tuple(r.shape)} vs {tuple(c.shape)}")
        max_rel = max(max_rel, float((c - r).abs().max() / r.abs().max().clamp_min(1e-12)))
        cosines.append(F.cosine_similarity(c, r, dim=1))
        pr, pc = r.argmax(1), c.argmax(1)
        same += int((pr == pc).sum())
        n += len(r)
        if y is None:
            labelled = False
        else:
            y = torch.as_tensor(y).cpu()
            hits_r += int((pr == y).sum())
            hits_c += int((pc == y).sum())
    if n == 0:
        raise UserError("agreement: batches gave no samples")
    cos = torch.cat(cosines)
    out = {"max_rel_error": max_rel, "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
           "top1_agreement": same / n, "n": n}
    if labelled:
        out.update(top1_reference=hits_r / n, top1_candidate=hits_c / n, top1_drop_points=100 * (hits_r - hits_c) / n)
    return out
