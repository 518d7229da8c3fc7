"""Vectorised drawing helpers for the procedural ``shapes`` datasets.

Every shape is an implicit region in a unit frame (it fits in the unit disc); a batch of M objects is
drawn at once as M boolean masks by mapping each pixel centre into the object's frame (translate,
rotate, anisotropic scale) with numpy broadcasting. No per-pixel or per-image Python loops: the only
loops run over shape kinds (10) and, when compositing, over object slots.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SHAPES: tuple[str, ...] = ("circle", "triangle", "square", "pentagon", "star", "cross", "crescent", "heart",
                           "semicircle", "arrow")
COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "magenta", "white")
PALETTE = np.array([[0.92, 0.12, 0.10], [1.00, 0.55, 0.05], [0.95, 0.90, 0.12], [0.12, 0.78, 0.20],
                    [0.10, 0.85, 0.92], [0.15, 0.30, 0.95], [0.88, 0.18, 0.85], [0.97, 0.97, 0.97]],
                   dtype=np.float32)
FILLS: tuple[str, ...] = ("solid", "outline")


def _polygon(u: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    """Regular k-gon of circumradius 1: inside every edge half-plane."""
    inside = np.ones(u.shape, dtype=bool)
    lim = np.cos(np.pi / k)
    for j in range(k):
        a = 2 * np.pi * j / k + np.pi / k - np.pi / 2
        inside &= (u * np.cos(a) + v * np.sin(a)) <= lim
    return inside


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    """Straight-edged star polygon: fold the angle into one half-spike and test against its edge."""
    rho = np.hypot(u, v)
    phi = np.arctan2(v, u) + np.pi / 2  # one spike points up
    half = np.pi / points
    psi = np.abs(np.mod(phi + half, 2 * half) - half)  # 0 at an outer vertex, half at an inner one
    px, py = rho * np.cos(psi), rho * np.sin(psi)
    ox, oy = 1.0, 0.0
    ix, iy = inner * np.cos(half), inner * np.sin(half)
    ex, ey = ix - ox, iy - oy
    # the origin lies on the positive side of edge O→I (cross(e, -O) = ey > 0); keep points on that side
    return ex * (py - oy) - ey * (px - ox) >= 0


def shape_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of shape ``SHAPES[kind]`` at frame coordinates (u, v); the shape fits the unit disc."""
    name = SHAPES[kind]
    if name == "circle":
        return u * u + v * v <= 0.85 ** 2
    if name == "triangle":
        return _polygon(u, v, 3)
    if name == "square":
        return _polygon(u, v, 4)
    if name == "pentagon":
        return _polygon(u, v, 5)
    if name == "star":
        return _star(u, v)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.85) & (av <= 0.28)) | ((au <= 0.28) & (av <= 0.85))
    if name == "crescent":
        return (u * u + v * v <= 0.88 ** 2) & ((u - 0.42) ** 2 + v * v > 0.7 ** 2)
    if name == "heart":
        x, y = u * 1.26, -v * 1.26 + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if name == "semicircle":
        return (u * u + (v + 0.4) ** 2 <= 0.9 ** 2) & (v >= -0.4)
    if name == "arrow":
        shaft = (np.abs(v) <= 0.2) & (u >= -0.9) & (u <= 0.15)
        head = (u >= 0.1) & (u <= 0.9) & (np.abs(v) <= 0.6 * (0.9 - u) / 0.8)
        return shaft | head
    raise ValueError(f"unknown shape kind {kind}")


def object_masks(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray,
                 aspect: np.ndarray, size: int, supersample: int = 1, outline: np.ndarray | None = None,
                 thickness: float = 2.0) -> torch.Tensor:
    """Draw M objects, each on its own ``size``×``size`` canvas.

    Args:
        kind: (M,) index into ``SHAPES``.
        cx, cy: (M,) centre in output pixels (pixel i covers [i, i+1)).
        radius: (M,) half-extent of the unit frame in output pixels.
        angle: (M,) rotation in radians.
        aspect: (M,) width/height stretch (1 keeps the shape's proportions).
        supersample: draw at this factor and average, giving anti-aliased coverage in [0, 1].
        outline: (M,) bool; keep only a band ``thickness`` output pixels wide inside the boundary
            (morphological erosion, so it works for non-convex shapes too).

    Returns:
        (M, size, size) float32 coverage (exactly 0/1 when ``supersample == 1``).
    """
    m = len(kind)
    s = size * supersample
    out = np.zeros((m, s, s), dtype=bool)
    g = (np.arange(s, dtype=np.float32) + 0.5) / supersample
    sq = np.sqrt(aspect).astype(np.float32)
    for k in np.unique(kind):
        idx = np.nonzero(kind == k)[0]
        dx = g[None, None, :] - cx[idx, None, None].astype(np.float32)
        dy = g[None, :, None] - cy[idx, None, None].astype(np.float32)
        c = np.cos(angle[idx]).astype(np.float32)[:, None, None]
        sn = np.sin(angle[idx]).astype(np.float32)[:, None, None]
        r = radius[idx].astype(np.float32)[:, None, None]
        u = (dx * c + dy * sn) / (r * sq[idx, None, None])
        v = (dy * c - dx * sn) * sq[idx, None, None] / r
        out[idx] = shape_mask(int(k), u, v)
    mask = torch.from_numpy(out)
    if outline is not None and outline.any():
        sel = torch.from_numpy(np.nonzero(outline)[0])
        t = max(1, int(round(thickness * supersample)))
        holes = (~mask[sel]).float().unsqueeze(1)
        eroded = F.max_pool2d(holes, 2 * t + 1, stride=1, padding=t).squeeze(1) == 0
        mask[sel] = mask[sel] & ~eroded
    cov = mask.float()
    if supersample > 1:
        cov = F.avg_pool2d(cov.unsqueeze(1), supersample).squeeze(1)
    return cov


def textured_backgrounds(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) low-saturation textured backgrounds: a tinted grey level, smooth blotches
    (luminance and a little chroma), oriented stripes on about half of them and fine pixel noise."""
    base = rng.uniform(0.12, 0.55, (n, 1, 1, 1)) + rng.normal(0, 0.05, (n, 3, 1, 1))
    lum = torch.from_numpy(rng.normal(0, 1, (n, 1, 4, 4)).astype(np.float32))
    chroma = torch.from_numpy(rng.normal(0, 1, (n, 3, 3, 3)).astype(np.float32))
    lum = F.interpolate(lum, size=(size, size), mode="bicubic", align_corners=False).numpy()
    chroma = F.interpolate(chroma, size=(size, size), mode="bilinear", align_corners=False).numpy()
    g = (np.arange(size, dtype=np.float32) + 0.5) / size
    theta = rng.uniform(0, np.pi, (n, 1, 1))
    freq = rng.uniform(3, 10, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    stripes = np.sin(2 * np.pi * freq * (g[None, None, :] * np.cos(theta) + g[None, :, None] * np.sin(theta))
                     + phase)[:, None]
    stripe_amp = rng.uniform(0.02, 0.09, (n, 1, 1, 1)) * (rng.random((n, 1, 1, 1)) < 0.5)
    bg = (base + rng.uniform(0.03, 0.12, (n, 1, 1, 1)) * lum + 0.035 * chroma + stripe_amp * stripes
          + rng.normal(0, 0.015, (n, 3, size, size)))
    return torch.from_numpy(np.clip(bg, 0, 1).astype(np.float32))


def jittered_colours(rng: np.random.Generator, colour: np.ndarray) -> torch.Tensor:
    """(M, 3) palette colours with a random brightness and a small per-channel jitter."""
    c = PALETTE[colour] * rng.uniform(0.82, 1.05, (len(colour), 1)) + rng.normal(0, 0.035, (len(colour), 3))
    return torch.from_numpy(np.clip(c, 0, 1).astype(np.float32))
