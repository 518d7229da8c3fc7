"""What this machine's CPU can do fast, and the autocast dtype a ``precision=`` name stands for."""

from __future__ import annotations

import functools

import torch

from vislearn.errors import UserError

__all__ = ["PRECISIONS", "cpu_flags", "cpu_supports_bf16", "cpu_supports_int8", "resolve_precision"]

PRECISIONS = ("auto", "bf16", "fp16", "fp32", "int8")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where that file is absent, e.g. not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX-512-BF16 or AMX-BF16), so bf16 autocast pays off.

    Reads the CPU flags on Linux; elsewhere trusts oneDNN's own check on an AVX-512 capable torch build.
    """
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:
        capability = torch.backends.cpu.get_cpu_capability()
        return capability.startswith("AVX512") and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # an old or unusual build: be conservative
        return False


def cpu_supports_int8() -> bool:
    """True when this CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX-INT8).

    Without them oneDNN's int8 convolutions emulate the dot products and are rarely faster than fp32."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``; ``None`` means plain fp32.

    ``"int8"`` resolves to ``None``: the quantized graph runs its convolutions in int8 and the
    operators it leaves unquantized in fp32 (see :mod:`vislearn.inference.int8`)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision in ("fp32", "int8"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if cpu_supports_bf16() else None
    return None
