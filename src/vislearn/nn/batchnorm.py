"""Batch Normalization as in Ioffe & Szegedy 2015 (arXiv 1502.03167), written out in plain tensor ops.

This is the *reference* implementation: it follows the paper line by line so that it can be read
next to it and tested against torch. Models use torch's fused ``nn.BatchNorm*`` kernels by default
(issue 3, item 3); every function here accepts torch's layers as well as ours.

* :class:`BatchNorm1d` / :class:`BatchNorm2d` — Algorithm 1 in training mode: the mini-batch mean and
  the *biased* mini-batch variance, per activation for fully-connected inputs and per feature map
  (over the batch and all spatial positions, Sec. 3.2) for convolutional ones; then
  ``y = γ·x̂ + β``. The backward pass is the paper's chain rule (Sec. 3, the equations below
  Alg. 1), not autograd through the forward ops. In eval mode, Algorithm 2: the layer is the fixed
  affine map ``y = γ/√(Var[x]+ε) · x + (β − γ·E[x]/√(Var[x]+ε))``.
* Population statistics ``E[x]``, ``Var[x]`` are held in the buffers ``running_mean`` and
  ``running_var`` (the names torch uses, so state dicts interchange). They come from one of two
  estimators: the usual exponential running average during training (``momentum``; ``None`` gives
  the cumulative average), or the paper's estimator (Alg. 2, lines 8–10),
  :func:`recompute_population_statistics`, which averages ``μ_B`` and the unbiased
  ``m/(m−1)·σ²_B`` over mini-batches processed with fixed weights.

Bad input: a training batch with one value per channel (variance undefined) raises
:class:`~vislearn.errors.UserError` as torch does; a training batch with NaN/inf raises before the
running statistics are touched, so a bad batch never poisons them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["BatchNorm1d", "BatchNorm2d", "batch_norm_train", "recompute_population_statistics",
           "is_batchnorm"]


class _BatchNormTrain(torch.autograd.Function):
    """Algorithm 1 with the paper's hand-derived backward pass (Sec. 3)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                eps: float, dims: tuple[int, ...]):
        shape = [1] * x.dim()
        shape[1] = x.shape[1]
        m = x.numel() // x.shape[1]
        mu = x.mean(dims, keepdim=True)                       # μ_B ← 1/m Σ x_i
        xc = x - mu
        var = (xc * xc).mean(dims, keepdim=True)              # σ²_B ← 1/m Σ (x_i − μ_B)²  (biased)
        inv_std = torch.rsqrt(var + eps)
        x_hat = xc * inv_std                                  # x̂_i ← (x_i − μ_B)/√(σ²_B + ε)
        y = x_hat
        if weight is not None:
            y = y * weight.reshape(shape)                     # y_i ← γ x̂_i + β
        if bias is not None:
            y = y + bias.reshape(shape)
        ctx.save_for_backward(xc, inv_std, weight)
        ctx.m, ctx.dims, ctx.has_bias = m, dims, bias is not None
        return y, mu.reshape(-1), var.reshape(-1)

    @staticmethod
    def backward(ctx, gy: torch.Tensor, _gmu, _gvar):
        xc, inv_std, weight = ctx.saved_tensors
        m, dims = ctx.m, ctx.dims
        shape = inv_std.shape
        x_hat = xc * inv_std
        gx_hat = gy * weight.reshape(shape) if weight is not None else gy          # ∂ℓ/∂x̂ = ∂ℓ/∂y · γ
        g_var = (gx_hat * xc).sum(dims, keepdim=True) * (-0.5) * inv_std ** 3      # ∂ℓ/∂σ²_B
        g_mu = (-(gx_hat.sum(dims, keepdim=True)) * inv_std                        # ∂ℓ/∂μ_B
                + g_var * (-2.0 / m) * xc.sum(dims, keepdim=True))
        gx = gx_hat * inv_std + g_var * (2.0 / m) * xc + g_mu / m                  # ∂ℓ/∂x_i
        g_w = (gy * x_hat).sum(dims) if (weight is not None and ctx.needs_input_grad[1]) else None  # ∂ℓ/∂γ
        g_b = gy.sum(dims) if (ctx.has_bias and ctx.needs_input_grad[2]) else None                  # ∂ℓ/∂β
        return gx, g_w, g_b, None, None


def batch_norm_train(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                     eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 1 on an N×C(×…) batch: returns ``(y, μ_B, σ²_B)`` with the biased variance per channel.

    Differentiable with respect to ``x``, ``weight`` (γ) and ``bias`` (β) by the paper's backward
    equations. ``weight``/``bias`` of ``None`` mean γ = 1 / β = 0.
    """
    dims = (0, *range(2, x.dim()))
    return _BatchNormTrain.apply(x, weight, bias, float(eps), dims)


class _ReferenceBatchNorm(nn.Module):
    """Shared code of :class:`BatchNorm1d` and :class:`BatchNorm2d` (torch's argument names and buffers)."""

    _accepted_dims: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(num_features, int) or num_features < 1:
            raise UserError(f"num_features must be a positive int, got {num_features!r}")
        if not eps > 0:
            raise UserError(f"eps must be > 0, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise UserError(f"momentum must be in [0, 1] or None (cumulative average), got {momentum!r}")
        self.num_features, self.eps, self.momentum = num_features, float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        kw = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **kw))   # γ
            self.bias = nn.Parameter(torch.zeros(num_features, **kw))    # β
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **kw))  # E[x]
            self.register_buffer("running_var", torch.ones(num_features, **kw))    # Var[x]
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")

    def _check(self, x: torch.Tensor) -> None:
        if x.dim() not in self._accepted_dims:
            want = " or ".join(f"{d}D" for d in self._accepted_dims)
            raise UserError(f"{type(self).__name__}: expected {want} input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise UserError(f"{type(self).__name__}({self.num_features}): input has {x.shape[1]} channels "
                            f"(shape {tuple(x.shape)})")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        in_dtype = x.dtype
        if in_dtype in (torch.float16, torch.bfloat16):  # statistics in float32, as torch's kernels keep them
            x = x.float()
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats:
            return self._inference(x).to(in_dtype)
        m = x.numel() // x.shape[1]
        if self.training and m <= 1:
            raise UserError(f"{type(self).__name__}: expected more than 1 value per channel when training, "
                            f"got input of shape {tuple(x.shape)} (the mini-batch variance is undefined; "
                            "use a batch of at least 2 or call model.eval())")
        weight = self.weight.to(x.dtype) if self.weight is not None else None
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        y, mu, var = batch_norm_train(x, weight, bias, self.eps)
        if self.training and self.track_running_stats:
            if not bool(torch.isfinite(mu).all() & torch.isfinite(var).all()):
                bad = int((~torch.isfinite(mu) | ~torch.isfinite(var)).sum())
                raise UserError(f"{type(self).__name__}: the training batch has NaN/inf values in {bad} of "
                                f"{self.num_features} channels; running statistics were not updated")
            self._update_running(mu.detach(), var.detach(), m)
        return y.to(in_dtype)

    @torch.no_grad()
    def _update_running(self, mu: torch.Tensor, var: torch.Tensor, m: int) -> None:
        self.num_batches_tracked += 1
        factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
        unbiased = var * (m / (m - 1))                        # the population estimate uses m/(m−1)·σ²_B
        self.running_mean.mul_(1 - factor).add_(mu.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)

    def _inference(self, x: torch.Tensor) -> torch.Tensor:
        # Algorithm 2, line 11: y = γ/√(Var[x]+ε) · x + (β − γ E[x]/√(Var[x]+ε)), a fixed affine map.
        shape = [1] * x.dim()
        shape[1] = self.num_features
        scale = torch.rsqrt(self.running_var.to(x.dtype) + self.eps)
        if self.weight is not None:
            scale = scale * self.weight.to(x.dtype)
        shift = -self.running_mean.to(x.dtype) * scale
        if self.bias is not None:
            shift = shift + self.bias.to(x.dtype)
        return x * scale.reshape(shape) + shift.reshape(shape)


class BatchNorm1d(_ReferenceBatchNorm):
    """BN over N×C or N×C×L inputs (per activation; for N×C×L, per channel over N and L).

    Same arguments, parameters and buffers as :class:`torch.nn.BatchNorm1d`; see the module docstring.
    """

    _accepted_dims = (2, 3)


class BatchNorm2d(_ReferenceBatchNorm):
    """BN over N×C×H×W inputs, one γ/β and one set of statistics per feature map (Sec. 3.2).

    Same arguments, parameters and buffers as :class:`torch.nn.BatchNorm2d`; see the module docstring.
    """

    _accepted_dims = (4,)


_TORCH_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def is_batchnorm(module: nn.Module) -> bool:
    """True for our BN layers and torch's (``BatchNorm1d/2d/3d``, ``SyncBatchNorm`` and subclasses)."""
    return isinstance(module, (_ReferenceBatchNorm, *_TORCH_BN))


def _batch_inputs(item: Any) -> Any:
    if isinstance(item, torch.Tensor):
        return item
    if isinstance(item, (tuple, list)) and item and isinstance(item[0], torch.Tensor):
        return item[0]
    if isinstance(item, dict) and isinstance(item.get("image", None), torch.Tensor):
        return item["image"]
    raise UserError("the loader must yield input tensors or (input, target) pairs, got "
                    f"{type(item).__name__}")


@torch.no_grad()
def recompute_population_statistics(model: nn.Module, loader: Iterable[Any], num_batches: int) -> dict[str, int]:
    """Set every BN layer's ``running_mean``/``running_var`` with the paper's estimator (Alg. 2, lines 8–10).

    The model is run on ``num_batches`` mini-batches from ``loader`` with its weights fixed and every BN
    layer normalising with mini-batch statistics (the training network ``N^tr_BN``); all other modules
    are in eval mode (no dropout noise). For each BN layer, with ``m`` values per channel in a batch::

        E[x]   ← E_B[μ_B]
        Var[x] ← E_B[m/(m−1) · σ²_B]

    This also re-estimates statistics after weight averaging or any other change of weights.
    Works for our :class:`BatchNorm1d`/:class:`BatchNorm2d` and torch's BatchNorm layers; each
    module's train/eval mode and ``num_batches_tracked`` are restored afterwards.

    Args:
        model: any module containing BN layers (with ``track_running_stats=True``).
        loader: an iterable of input tensors or ``(input, target)`` pairs.
        num_batches: how many mini-batches to average (fewer if the loader ends sooner).

    Returns:
        ``{"layers": number of BN layers updated, "batches": mini-batches averaged}``.
    """
    if not isinstance(num_batches, int) or num_batches < 1:
        raise UserError(f"num_batches must be a positive int, got {num_batches!r}")
    bns = [(name, m) for name, m in model.named_modules() if is_batchnorm(m) and m.track_running_stats]
    if not bns:
        raise UserError(f"{type(model).__name__} has no BatchNorm layer with running statistics")
    modes = {m: m.training for m in model.modules()}
    counts = {m: m.num_batches_tracked.clone() for _, m in bns if m.num_batches_tracked is not None}
    backup = {m: (m.running_mean.clone(), m.running_var.clone()) for _, m in bns}
    sums: dict[nn.Module, list] = {m: [0.0, 0.0] for _, m in bns}
    current: dict[str, Any] = {}

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach().double()
        c = x.shape[1]
        m = x.numel() // c
        if m <= 1:
            raise UserError(f"recompute_population_statistics: a mini-batch gives {m} value per channel "
                            f"at {current['names'][module]} (input shape {tuple(x.shape)}); use batches of ≥ 2")
        dims = (0, *range(2, x.dim()))
        mu = x.mean(dims)
        var = x.var(dims, unbiased=False) * (m / (m - 1))    # m/(m−1) · σ²_B
        if not bool(torch.isfinite(mu).all() & torch.isfinite(var).all()):
            raise UserError(f"recompute_population_statistics: NaN/inf activations at "
                            f"{current['names'][module]} in batch {current['batch']}; statistics unchanged")
        s = sums[module]
        s[0] = s[0] + mu
        s[1] = s[1] + var

    current["names"] = {m: name or type(model).__name__ for name, m in bns}
    handles = [m.register_forward_pre_hook(hook) for _, m in bns]
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.eval()
        for _, m in bns:
            m.train()
        seen = 0
        for item in loader:
            if seen >= num_batches:
                break
            current["batch"] = seen
            model(_batch_inputs(item).to(device))
            seen += 1
        if seen == 0:
            raise UserError("recompute_population_statistics: the loader yielded no batches")
        for _, m in bns:
            s = sums[m]
            if not isinstance(s[0], torch.Tensor):
                continue  # a layer this model did not use on these inputs keeps its statistics
            m.running_mean.copy_((s[0] / seen).to(m.running_mean.dtype))
            m.running_var.copy_((s[1] / seen).to(m.running_var.dtype))
    except BaseException:
        for m, (rm, rv) in backup.items():  # the passes moved torch's running averages: undo them
            m.running_mean.copy_(rm)
            m.running_var.copy_(rv)
        raise
    finally:
        for h in handles:
            h.remove()
        for mod, training in modes.items():
            mod.training = training
        for m, n in counts.items():
            m.num_batches_tracked.copy_(n)
    return {"layers": sum(isinstance(sums[m][0], torch.Tensor) for _, m in bns), "batches": seen}
