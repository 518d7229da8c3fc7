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
_INSET_SCALE = np.array([{"star": 0.45, "cross": 0.6, "arrow": 0.5}.get(n, 1.0) for n in SHAPES])


def _halfplanes(u: np.ndarray, v: np.ndarray, k: int, lim: float, inset) -> list[np.ndarray]:
    """For k edge normals spread evenly, whether (u, v) lies inside each half-plane ``n·p <= lim - inset``."""
    out = []
    for j in range(k):
        a = 2 * np.pi * j / k + np.pi / k - np.pi / 2
        out.append(u * np.float32(np.cos(a)) + v * np.float32(np.sin(a)) <= lim - inset)
    return out


def _polygon(u: np.ndarray, v: np.ndarray, k: int, inset) -> np.ndarray:
    """Regular k-gon of circumradius 1; ``inset`` moves every edge inwards (exact erosion)."""
    inside = np.ones(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
    for h in _halfplanes(u, v, k, np.cos(np.pi / k), inset):
        inside &= h
    return inside


def _star(u: np.ndarray, v: np.ndarray, inset) -> np.ndarray:
    """Regular pentagram of circumradius 1: the points inside at least 4 of its 5 edge lines (the inner
    pentagon is inside all 5, each spike is outside exactly one). The edge lines lie at cos(72°) from the
    centre; ``inset`` moves them inwards."""
    count = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=np.uint8)
    for h in _halfplanes(u, v, 5, np.cos(2 * np.pi / 5), inset):
        count += h
    return count >= 4


def shape_mask(kind: int, u: np.ndarray, v: np.ndarray, inset=0.0) -> np.ndarray:
    """Boolean mask of shape ``SHAPES[kind]`` at frame coordinates (u, v); the shape fits the unit disc.

    ``inset`` (a scalar or an array broadcasting against u) shrinks the shape by that distance in frame
    units: exact erosion for discs, polygons and their intersections, erosion of each part for unions
    (cross, arrow, star) and a scaling about its centre for the heart. ``mask & ~mask(inset)`` is an
    outline of width ``inset``.
    """
    name = SHAPES[kind]
    t = inset
    if name == "circle":
        return u * u + v * v <= (0.85 - t) ** 2
    if name == "triangle":
        return _polygon(u, v, 3, t)
    if name == "square":
        return _polygon(u, v, 4, t)
    if name == "pentagon":
        return _polygon(u, v, 5, t)
    if name == "star":
        return _star(u, v, t)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.85 - t) & (av <= 0.28 - t)) | ((au <= 0.28 - t) & (av <= 0.85 - t))
    if name == "crescent":  # disc A minus disc B: erode A, dilate B
        return (u * u + v * v <= (0.88 - t) ** 2) & ((u - 0.42) ** 2 + v * v > (0.7 + t) ** 2)
    if name == "heart":
        sc = np.float32(1.26) / (1 - np.asarray(t, np.float32) / np.float32(0.9))
        x, y = u * sc, (np.float32(0.08) - v) * sc + np.float32(0.15)
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 <= 0
    if name == "semicircle":
        return (u * u + (v + 0.4) ** 2 <= (0.9 - t) ** 2) & (v >= -0.4 + t)
    if name == "arrow":
        # shaft rectangle ∪ head triangle {u >= 0.1, |v| <= 0.75 (0.9 - u)}, whose slanted edges have the
        # unit normal (0.6, 0.8)·(u, |v|) <= 0.54; each part eroded on its own
        shaft = (np.abs(v) <= 0.2 - t) & (u >= -0.9 + t) & (u <= 0.15)
        head = (u >= 0.1 + t) & (0.6 * u + 0.8 * np.abs(v) <= 0.54 - t)
        return shaft | head
    raise ValueError(f"unknown shape kind {kind}")


def object_masks(kind: np.ndarray, cx: np.ndarray, cy: np.ndarray, radius: np.ndarray, angle: np.ndarray,
                 aspect: np.ndarray, size: int, supersample: int = 1, outline: np.ndarray | None = None,
                 thickness: float | np.ndarray = 0.22) -> torch.Tensor:
    """Draw M objects, each on its own ``size``×``size`` canvas.

    Each object is evaluated only inside a square window that holds it (window sides are bucketed to
    multiples of 4 pixels and processed bucket by bucket), then pasted onto its canvas with one scatter.

    Args:
        kind: (M,) index into ``SHAPES``.
        cx, cy: (M,) centre in output pixels (pixel i covers [i, i+1)).
        radius: (M,) half-extent of the unit frame in output pixels.
        angle: (M,) rotation in radians.
        aspect: (M,) width/height stretch (1 keeps the shape's proportions).
        supersample: draw at this factor and average, giving anti-aliased coverage in [0, 1].
        outline: (M,) bool; keep only a band inside the boundary, ``thickness × radius`` output pixels
            wide (at least one), as ``mask & ~shape_mask(..., inset)``.

    Returns:
        (M, size, size) float32 coverage in [0, 1], or a bool mask when ``supersample == 1``.
    """
    m = len(kind)
    ss = supersample
    out = torch.zeros(m, size, size, dtype=torch.bool if ss == 1 else torch.float32)
    if m == 0:
        return out
    kind = np.asarray(kind)
    cx, cy = np.asarray(cx, np.float64), np.asarray(cy, np.float64)
    radius, angle = np.asarray(radius, np.float64), np.asarray(angle, np.float64)
    aspect = np.asarray(aspect, np.float64)
    outline = np.zeros(m, bool) if outline is None else np.asarray(outline, bool)
    # outline width in frame units: ``thickness`` of the radius, but at least one output pixel
    # (thin-limbed shapes get a thinner band so that the outline keeps a visible hole)
    inset = np.maximum(np.broadcast_to(np.asarray(thickness, np.float64), (m,)) * _INSET_SCALE[kind],
                       1.0 / radius)
    sq = np.sqrt(aspect)
    ext = radius * np.maximum(sq, 1 / sq)  # the shape lies in the disc of this radius
    win = np.minimum(size, 4 * np.ceil((2 * ext + 2) / 4)).astype(np.int64)
    x0 = np.clip(np.floor(cx - win / 2), 0, size - win).astype(np.int64)
    y0 = np.clip(np.floor(cy - win / 2), 0, size - win).astype(np.int64)
    for w in np.unique(win):
        sel = np.nonzero(win == w)[0]
        g = (np.arange(w * ss, dtype=np.float32) + 0.5) / ss
        local = np.zeros((len(sel), w * ss, w * ss), dtype=bool)
        for k in np.unique(kind[sel]):
            j = np.nonzero(kind[sel] == k)[0]
            i = sel[j]
            c = np.cos(angle[i]).astype(np.float32)[:, None, None]
            sn = np.sin(angle[i]).astype(np.float32)[:, None, None]
            ru = (radius[i] * sq[i]).astype(np.float32)[:, None, None]
            rv = (radius[i] / sq[i]).astype(np.float32)[:, None, None]
            dx = g[None, None, :] + (x0[i] - cx[i]).astype(np.float32)[:, None, None]  # (n, 1, w)
            dy = g[None, :, None] + (y0[i] - cy[i]).astype(np.float32)[:, None, None]  # (n, w, 1)
            u = dx * (c / ru) + dy * (sn / ru)
            v = dy * (c / rv) - dx * (sn / rv)
            mk = shape_mask(int(k), u, v)
            o = outline[i]
            if o.any():
                tau = np.where(o, inset[i], 0).astype(np.float32)[:, None, None]
                mk &= ~shape_mask(int(k), u, v, tau) | ~o[:, None, None]
            local[j] = mk
        cov = torch.from_numpy(local)
        if ss > 1:
            cov = F.avg_pool2d(cov.float().unsqueeze(1), ss).squeeze(1)
        ar = torch.arange(int(w))
        flat = ((torch.from_numpy(sel * size + y0[sel])[:, None, None] + ar[None, :, None]) * size
                + torch.from_numpy(x0[sel])[:, None, None] + ar[None, None, :])
        out.view(-1)[flat.flatten()] = cov.flatten()
    return out


def textured_backgrounds(rng: np.random.Generator, n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) low-saturation textured backgrounds: a tinted grey level, smooth blotches
    (luminance and a little chroma), oriented stripes on about half of them and fine pixel noise."""
    f32 = np.float32
    base = torch.from_numpy((rng.uniform(0.12, 0.55, (n, 1, 1, 1)) + rng.normal(0, 0.05, (n, 3, 1, 1))).astype(f32))
    lum_amp = torch.from_numpy(rng.uniform(0.03, 0.12, (n, 1, 1, 1)).astype(f32))
    lum = torch.from_numpy(rng.standard_normal((n, 1, 4, 4), dtype=f32))
    chroma = torch.from_numpy(rng.standard_normal((n, 3, 3, 3), dtype=f32))
    theta = torch.from_numpy(rng.uniform(0, np.pi, (n, 1, 1)).astype(f32))
    freq = torch.from_numpy(rng.uniform(3, 10, (n, 1, 1)).astype(f32))
    phase = torch.from_numpy(rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(f32))
    stripe_amp = torch.from_numpy((rng.uniform(0.02, 0.09, (n, 1, 1, 1)) * (rng.random((n, 1, 1, 1)) < 0.5))
                                  .astype(f32))
    noise_gen = torch.Generator().manual_seed(int(rng.integers(0, 2 ** 62)))
    g = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    stripes = torch.sin(2 * np.pi * freq * (g[None, None, :] * torch.cos(theta) + g[None, :, None] * torch.sin(theta))
                        + phase).unsqueeze(1)
    bg = F.interpolate(lum, size=(size, size), mode="bicubic", align_corners=False).mul_(lum_amp)
    bg = bg + base + stripe_amp * stripes
    bg += 0.035 * F.interpolate(chroma, size=(size, size), mode="bilinear", align_corners=False)
    bg += 0.015 * torch.randn(bg.shape, generator=noise_gen)
    return bg.clamp_(0, 1)


def jittered_colours(rng: np.random.Generator, colour: np.ndarray) -> torch.Tensor:
    """(M, 3) palette colours with a random brightness and a small per-channel jitter."""
    c = PALETTE[colour] * rng.uniform(0.82, 1.05, (len(colour), 1)) + rng.normal(0, 0.035, (len(colour), 3))
    return torch.from_numpy(np.clip(c, 0, 1).astype(np.float32))
