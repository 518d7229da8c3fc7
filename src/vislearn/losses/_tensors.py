"""Input checks shared by the stateless losses: one ``UserError`` naming the function, argument and value.

Each stateless loss calls these where it starts, so a wrong shape, dtype or label range reads as one line
instead of an ``IndexError`` or a matmul ``RuntimeError`` from deep inside torch. NaN and inf are not
refused here: they propagate into the loss as in torch, and the engine's non-finite-loss check reports them.
"""

from __future__ import annotations

import torch

from vislearn.errors import UserError


def real_matrix(x, name: str, where: str, dim: int | None = None, allow_empty: bool = False) -> torch.Tensor:
    """``x`` as it is, when it is a 2-D real floating tensor (with ``dim`` columns when given)."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise UserError(f"{where}: {name} must be a real floating-point tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() != 2 or (dim is not None and x.shape[1] != dim):
        want = f"N×{dim}" if dim is not None else "N×D"
        raise UserError(f"{where}: {name} must be {want}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 and not allow_empty:
        raise UserError(f"{where}: {name} is an empty batch")
    return x


def index_vector(t, n: int, name: str, where: str, high: int | None = None) -> torch.Tensor:
    """``t`` as long, when it is a 1-D integer tensor of length ``n`` (with values in [0, high) when given)."""
    if not isinstance(t, torch.Tensor) or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise UserError(f"{where}: {name} must be an integer tensor, got {getattr(t, 'dtype', type(t).__name__)}")
    if t.dim() != 1 or t.shape[0] != n:
        raise UserError(f"{where}: {name} must have shape ({n},), got {tuple(t.shape)}")
    if high is not None and t.numel() and (int(t.min()) < 0 or int(t.max()) >= high):
        bad = int(t.min()) if int(t.min()) < 0 else int(t.max())
        raise UserError(f"{where}: {name} holds {bad}, outside [0, {high})")
    return t.long()


def real_tensor(x, name: str, where: str, ndims: tuple[int, ...], allow_empty: bool = False) -> torch.Tensor:
    """``x`` as it is, when it is a real floating tensor with one of ``ndims`` dimensions."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise UserError(f"{where}: {name} must be a real floating-point tensor, got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() not in ndims:
        raise UserError(f"{where}: {name} must have {' or '.join(map(str, ndims))} dimensions, got shape "
                        f"{tuple(x.shape)}")
    if not allow_empty and x.numel() == 0:
        raise UserError(f"{where}: {name} is empty (shape {tuple(x.shape)})")
    return x
