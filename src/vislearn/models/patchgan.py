"""The PatchGAN discriminator of pix2pix (Isola et al. 2017, "Image-to-Image Translation with Conditional
Adversarial Networks", Sec. 3.2.2), as SD-VAE / taming-transformers use it for the GAN autoencoder.

An N-layer fully convolutional classifier of overlapping patches::

    Conv4×4/2(3 → ndf) · LeakyReLU(0.2)
    n_layers − 1 times: Conv4×4/2(→ ndf·min(2^k, 8), no bias) · Norm · LeakyReLU(0.2)
    Conv4×4/1(→ ndf·min(2^n, 8), no bias) · Norm · LeakyReLU(0.2)
    Conv4×4/1(→ 1)                                       one logit per patch

All convolutions have padding 1; with ``n_layers = 3`` (the default, pix2pix's "70×70 PatchGAN")
each logit sees a 70×70 receptive field. Weights are drawn from N(0, 0.02) and the norm's scale from
N(1, 0.02) (pix2pix's ``init_weights(init_type="normal")``, which taming copies).

Our choices: ``norm="batch"`` (pix2pix and SD-VAE's default ``use_actnorm=False``) or ``"group"``
(GroupNorm(32 groups or fewer), independent of the batch composition); the input is the
autoencoder's network scale (``[−1, 1]`` for SWYCC), as SD feeds its discriminator. It is not a
registered model (it is not a backbone); :class:`vislearn.losses.autoencoder.GANAutoencoderLoss`
owns one.

Example::

    disc = PatchDiscriminator(ndf=64, n_layers=3)
    logits = disc(images_in_minus1_1)          # N×1×h×w patch logits
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from vislearn.errors import UserError

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """pix2pix's N-layer PatchGAN: ``forward(x) -> N×1×h×w`` patch logits (module docstring).

    Args:
        in_chans: image channels.
        ndf: width of the first layer.
        n_layers: stride-2 layers (3: 70×70 patches).
        norm: ``"batch"`` or ``"group"``.
    """

    def __init__(self, in_chans: int = 3, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        for name, v in (("in_chans", in_chans), ("ndf", ndf), ("n_layers", n_layers)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"PatchDiscriminator: {name} must be a positive int, got {v!r}")
        if norm not in ("batch", "group"):
            raise UserError(f"PatchDiscriminator: norm must be 'batch' or 'group', got {norm!r}")
        self.n_layers = n_layers

        def norm_layer(c: int) -> nn.Module:
            return nn.BatchNorm2d(c) if norm == "batch" else nn.GroupNorm(math.gcd(32, c), c)

        layers: list[nn.Module] = [nn.Conv2d(in_chans, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        prev = ndf
        for k in range(1, n_layers + 1):
            out = ndf * min(2**k, 8)
            stride = 2 if k < n_layers else 1
            layers += [nn.Conv2d(prev, out, 4, stride, 1, bias=False), norm_layer(out), nn.LeakyReLU(0.2, True)]
            prev = out
        layers.append(nn.Conv2d(prev, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    @property
    def min_input_size(self) -> int:
        """The smallest square input that leaves at least one patch logit."""
        size = 1
        for _ in range(2):  # the two stride-1 4×4 convolutions, padding 1: each removes one pixel
            size += 1
        for _ in range(self.n_layers):  # stride-2 4×4, padding 1: out = floor(in / 2)
            size *= 2
        return size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise UserError(f"PatchDiscriminator: expected N×C×H×W images, got shape {tuple(x.shape)}")
        if min(x.shape[-2:]) < self.min_input_size:
            raise UserError(f"PatchDiscriminator: images {tuple(x.shape[-2:])} are smaller than the "
                            f"{self.min_input_size}×{self.min_input_size} that {self.n_layers} layers need")
        return self.main(x)
