"""``vislearn reconstruct --weights PATH IMAGE... --steps N --samples K --out DIR``: SWYCC reconstructions.

For each image writes ``DIR/<stem>_reconstruct.png``: a grid with a title row, one column each for
the original, the deterministic D_initial reconstruction, ``K`` sampled SWYCC reconstructions
(D_refine with ``--sampler`` in ``--steps`` steps, one seeded generator, so a rerun gives the same
images) and, for ``K >= 2``, the per-pixel standard deviation over the samples (mean over RGB) as a
heat map: where the decoder *samples* what the latent could not hold. A baseline autoencoder from
``vislearn train swycc --set objective=mse|gan`` (no D_refine) gives the original and its
reconstruction only. Prints one line per image with the PSNRs and where it wrote.

Image sides must divide by the model's downsampling factor (8 or 16); ``--crop`` centre-crops each
image to the largest multiple instead of failing.
"""

from __future__ import annotations

__all__ = ["reconstruction_grid", "register", "run"]


def register(sub) -> None:
    p = sub.add_parser("reconstruct", help="SWYCC reconstructions of images: D_initial, K samples, their std")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--weights", required=True, help="model.safetensors of a swycc model (vislearn train swycc)")
    p.add_argument("--steps", type=int, default=8, help="sampler steps (default 8)")
    p.add_argument("--samples", type=int, default=4, help="sampled reconstructions per image (default 4)")
    p.add_argument("--sampler", default="ddim", help="ddim | ddpm | heun (default ddim, η = 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampling generator (default 0)")
    p.add_argument("--crop", action="store_true", help="centre-crop images to a multiple of the downsampling")
    p.add_argument("--out", required=True, help="output folder (created if missing)")
    p.set_defaults(func=run)


def reconstruction_grid(model, image, steps: int, samples: int, sampler: str = "ddim", seed: int = 0):
    """``(columns, titles)`` for one 3×H×W [0, 1] image: original, D_initial, samples, std (as above).

    Each column is a 3×H×W image, except the std map (H×W). Runs under ``no_grad``.
    """
    import torch

    from vislearn.metrics.generative import psnr

    with torch.no_grad():
        x = image[None]
        z = model.encode(x)
        initial = model.decode_initial(z)
        cols, titles = [image, initial[0]], ["original", f"D_initial\n{psnr(initial, x).item():.2f} dB"]
        if not model.has_refine:
            titles[1] = f"reconstruction\n{psnr(initial, x).item():.2f} dB"
            return cols, titles
        gen = torch.Generator(device=z.device).manual_seed(seed)
        draws = model.decode(z.expand(samples, *z.shape[1:]), steps=steps, sampler=sampler, generator=gen)
        for k, d in enumerate(draws):
            cols.append(d)
            titles.append(f"sample {k + 1}\n{psnr(d[None], x).item():.2f} dB")
        if samples >= 2:
            std = draws.std(0, unbiased=True).mean(0)
            cols.append(std)
            titles.append(f"std over samples\nmean {std.mean().item():.4f}")
        return cols, titles


def run(args) -> int:
    import os
    from pathlib import Path

    from vislearn.data.formats import load_image
    from vislearn.diffusion.samplers import check_steps, get_sampler
    from vislearn.errors import UserError
    from vislearn.models import create_model_from_weights
    from vislearn.models.convert import weights_metadata

    try:
        check_steps(args.steps)
    except UserError:
        raise UserError(f"--steps must be >= 1, got {args.steps}") from None
    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    get_sampler(args.sampler)
    if not os.path.isfile(args.weights):
        raise UserError(f"--weights: no file {args.weights}")
    stored = weights_metadata(args.weights).get("model")
    if stored != "swycc":
        raise UserError(f"{args.weights} holds {stored or 'no vislearn model'!r}, not swycc weights "
                        "(train them with `vislearn train swycc`)")
    missing = [p for p in args.images if not os.path.isfile(p)]
    if missing:
        raise UserError(f"no such image file: {', '.join(missing)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    model = create_model_from_weights(args.weights).eval()
    images = [(p, _fit(load_image(p), model.downsample, args.crop, p)) for p in args.images]
    out.mkdir(parents=True, exist_ok=True)
    for path, image in images:
        cols, titles = reconstruction_grid(model, image, args.steps, args.samples, args.sampler, args.seed)
        dest = out / f"{Path(path).stem}_reconstruct.png"
        _save_grid(cols, titles, dest, f"{Path(path).name}: {args.samples} {args.sampler} samples, "
                                       f"{args.steps} steps, seed {args.seed}" if model.has_refine else
                   f"{Path(path).name}: autoencoder without a diffusion decoder")
        print(f"{path} -> {dest}  ({'; '.join(t.replace(chr(10), ' ') for t in titles[1:])})")
    return 0


def _fit(image, downsample: int, crop: bool, path: str):
    """``image`` unchanged, or centre-cropped to multiples of ``downsample`` with ``--crop``."""
    from vislearn.errors import UserError

    h, w = image.shape[-2:]
    if not crop or (h % downsample == 0 and w % downsample == 0):
        return image
    nh, nw = h // downsample * downsample, w // downsample * downsample
    if nh == 0 or nw == 0:
        raise UserError(f"{path} is {h}×{w}, smaller than the downsample factor {downsample}")
    top, left = (h - nh) // 2, (w - nw) // 2
    return image[:, top:top + nh, left:left + nw]


def _save_grid(cols, titles, dest, suptitle: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = cols[0].shape[-2:]
    fig, axes = plt.subplots(1, len(cols), figsize=(2.4 * len(cols) * w / h, 2.4 + 0.9), squeeze=False)
    for ax, col, title in zip(axes[0], cols, titles, strict=True):
        if col.dim() == 2:
            im = ax.imshow(col.numpy(), cmap="magma", vmin=0)
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        else:
            ax.imshow(col.clamp(0, 1).permute(1, 2, 0).numpy())
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(dest, dpi=100, bbox_inches="tight")
    plt.close(fig)
