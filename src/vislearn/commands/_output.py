"""Output paths the CLI writes images to: the name it reports is the file it writes."""

from __future__ import annotations

from pathlib import Path

from vislearn.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def image_output(path: str, option: str) -> Path:
    """``path`` as an image file to write: ``.png`` added when it has no extension, an unknown extension
    or a missing folder refused with one line naming ``option``."""
    out = Path(path)
    if out.is_dir():
        raise UserError(f"{option} {path} is a folder; name an image file inside it, e.g. {out / 'out.png'}")
    if not out.suffix:
        out = out.with_name(out.name + ".png")
    elif out.suffix.lower() not in IMAGE_SUFFIXES:
        raise UserError(f"{option} {path}: unknown image extension {out.suffix!r}; use one of "
                        f"{', '.join(IMAGE_SUFFIXES)}")
    if not out.parent.is_dir():
        raise UserError(f"{option}: folder {out.parent} does not exist")
    return out
