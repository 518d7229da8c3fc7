"""Decoding image files and bytes: to uint8 RGB 3×H×W where the file is 8-bit, to float in [0, 1] otherwise.

The fast path (:func:`decode_image_bytes`, :func:`read_image`) keeps 8-bit images as ``uint8`` so
that crops and resizes run on a quarter of the bytes and the conversion to float comes last, on the
small crop (:func:`to_float_image`). 8-bit JPEG and PNG files in RGB or grey mode are decoded by
``torchvision.io.decode_image`` (libjpeg-turbo / libpng): on this project's machine 1.3× PIL's
speed for a 500×375 JPEG and the same for PNG, bit-identical output (``benchmarks/data.py``
measures it again); every other file goes through PIL. The header is always read by PIL first, for
the mode and the pixel-limit check below.

The float convention (:func:`pil_to_tensor`): float RGB 3×H×W in [0, 1].

``Image.convert("RGB")`` is right for 8-bit modes (grey, palette, CMYK, alpha dropped) but clips
high-bit-depth modes: a 16-bit PNG (mode ``I;16``) comes out all white. So the sample values are read
as they are stored and divided by the largest value the stored type can hold:

* ``I;16`` / ``I;16B`` / ``I;16L`` (16-bit grey PNG, TIFF): ``/ 65535``.
* ``I`` (32-bit integer, e.g. a TIFF): ``/ (2**31 - 1)`` for signed samples (TIFF SampleFormat 2,
  Pillow's ``I;32S``) and ``/ (2**b - 1)`` for ``b``-bit unsigned ones (TIFF BitsPerSample); a PNG read as
  ``I`` (older Pillow) is 16-bit. Without such a tag: signed 32-bit. A negative sample is an error,
  not a silent clip.
* ``F`` (32-bit float TIFF): taken as already on the [0, 1] scale; a non-finite sample or one outside
  [0, 1] by more than :data:`FLOAT_TOLERANCE` is an error (DESIGN.md: outside [0, 1] is an error, not a
  silent rescale); values within the tolerance are clipped.

Grey results are repeated to three channels. Multi-channel 16-bit files are decoded by Pillow itself
(it keeps the high byte of each sample, which is the right scale to 8 bits).

Image size is checked against ``PIL.Image.MAX_IMAGE_PIXELS`` before any pixel is decoded:
:func:`check_pixel_limit` refuses more pixels than the limit (Pillow itself only warns between one
and two times the limit), so a decompression bomb costs no memory. The limit is Pillow's; we never
disable it — a user with truly huge images raises ``PIL.Image.MAX_IMAGE_PIXELS`` themselves.
"""

from __future__ import annotations

import io
import os

import numpy as np
import torch

from vislearn.errors import UserError

__all__ = ["FLOAT_TOLERANCE", "check_pixel_limit", "pil_to_tensor", "decode_image_bytes", "read_image",
           "to_float_image"]

FLOAT_TOLERANCE = 1e-3


def check_pixel_limit(im, where: str) -> None:
    """``UserError`` naming ``where`` when ``im`` (opened, not decoded) has more pixels than PIL's limit."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    w, h = im.size
    if limit is not None and w * h > limit:
        raise UserError(f"image {where} is {w}×{h} = {w * h} pixels, more than PIL.Image.MAX_IMAGE_PIXELS = "
                        f"{limit} (a decompression bomb or a huge image; raise that limit to read it)")


def _integer_scale(im) -> int:
    if im.mode.startswith("I;16"):
        return 2**16 - 1
    tags = getattr(im, "tag_v2", None)
    if tags is not None:
        bits, fmt = tags.get(258), tags.get(339, 1)
        bits = int(bits[0] if isinstance(bits, tuple) else bits or 32)
        fmt = int(fmt[0] if isinstance(fmt, tuple) else fmt)
        return 2 ** (bits - 1) - 1 if fmt == 2 else 2**bits - 1
    if im.format == "PNG":
        return 2**16 - 1
    return 2**31 - 1


def pil_to_tensor(im, where: str) -> torch.Tensor:
    """A loaded PIL image as a float32 RGB tensor 3×H×W in [0, 1] (see the module docstring)."""
    mode = im.mode
    if mode.startswith("I"):
        arr = np.asarray(im).astype(np.float64)
        if arr.size and arr.min() < 0:
            raise UserError(f"image {where} has negative samples (min {arr.min():.0f}); expected unsigned intensities")
        arr = arr / _integer_scale(im)
    elif mode == "F":
        arr = np.asarray(im).astype(np.float64)
        if not np.isfinite(arr).all():
            raise UserError(f"image {where} holds non-finite (NaN or inf) samples")
        if arr.size and (arr.min() < -FLOAT_TOLERANCE or arr.max() > 1 + FLOAT_TOLERANCE):
            raise UserError(f"float image {where} has samples in [{arr.min():.4g}, {arr.max():.4g}]; "
                            "expected the [0, 1] scale")
        arr = arr.clip(0.0, 1.0)
    else:
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if t.ndim == 2:
        t = t[None].expand(3, -1, -1).contiguous()
    else:
        t = t.permute(2, 0, 1).contiguous()
    return t


_TORCHVISION_FORMATS = {"JPEG", "PNG"}
_EIGHT_BIT_MODES = {"RGB", "L"}


def _decode_opened(im, data: bytes | None, where: str) -> torch.Tensor:
    check_pixel_limit(im, where)
    if data is not None and im.format in _TORCHVISION_FORMATS and im.mode in _EIGHT_BIT_MODES:
        import warnings

        with warnings.catch_warnings():  # torchvision 0.29 announces the move of its decoders to torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_image
        try:
            out = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError:
            out = None  # e.g. a file libjpeg rejects that PIL reads: PIL decides below
        if out is not None and out.dtype == torch.uint8:
            return out
    im.load()
    if im.mode.startswith("I") or im.mode == "F":
        return pil_to_tensor(im, where)
    return torch.from_numpy(np.array(im.convert("RGB"), dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_image_bytes(data: bytes, where: str) -> torch.Tensor:
    """Encoded image bytes as RGB 3×H×W: ``uint8`` for 8-bit images, float32 in [0, 1] for 16-bit,
    32-bit and float ones (the module docstring). Errors are ``UserError`` naming ``where``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return _decode_opened(im, data, where)
    except UserError:
        raise
    except Image.DecompressionBombError as e:  # Pillow's own check at open, over twice the limit
        raise UserError(f"cannot read image {where}: {e} (PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}; "
                        "raise that limit to read it)") from None
    except Exception as e:  # PIL's plugins raise OSError, SyntaxError, ValueError, struct.error, EOFError...
        raise UserError(f"cannot read image {where}: {type(e).__name__}: {str(e)[:200]}") from None


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """An image file as :func:`decode_image_bytes` returns it (``uint8`` when 8-bit); ``UserError`` naming
    the path when it is missing, not a file, truncated, not an image or too large."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UserError(f"image file not found: {p}" if not p.exists() else f"not an image file: {p}")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read image {p}: {e}") from None
    return decode_image_bytes(data, str(p))


def to_float_image(image: torch.Tensor) -> torch.Tensor:
    """``uint8`` images (any shape) divided by 255 to float32; a float image is returned as it is."""
    if image.dtype == torch.uint8:
        return image.float().div_(255.0)
    return image
