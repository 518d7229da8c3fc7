"""Vision Transformers for small images: timm's ``VisionTransformer`` as a vislearn backbone.

Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; the backbones of DINO (Caron et al.
2021) and of the weighted-ensemble SSL paper (Ruan et al., ICLR 2023: ViT-S/16, ViT-B/16, ViT-B/8).
The transformer itself is timm's (``timm.models.vision_transformer.VisionTransformer``, kept as the
submodule ``vit``, so its state dict is timm's under the ``vit.`` prefix); this wrapper adds what
every vislearn model has: [0, 1] input validated and normalised inside, a ``forward_features`` map
and ``feature_info``, and MSN's patch masking.

For 32 px images the patch is 4 px (an 8×8 token grid, the same number of tokens as ViT/16 at
128 px); the registered widths follow timm's ViT-Tiny (192 wide, 3 heads) and ViT-Small (384, 6
heads), 12 blocks, and every size is an option (``embed_dim``, ``depth``, ``num_heads``, ...).
Inputs of any size work: the position embedding (learned for ``image_size``) is resampled to the
token grid (timm's ``dynamic_img_size``) and a side that is not a multiple of the patch is padded
(``dynamic_img_pad``), so a map has ``ceil(H / patch)`` rows.

* ``embed(x, patch_mask=None)``: the final-norm [CLS] token ``(N, embed_dim)``, the representation
  DINO and the paper evaluate (App. B.3: "[CLS] token"); ``patch_mask`` ``(N, patches)`` (``True`` =
  dropped, :func:`vislearn.data.multicrop.random_patch_mask`) drops patch tokens after the
  position embedding and before the blocks (MSN Sec. 3);
* ``forward(x)``: ``head(embed(x))``; with ``num_classes=0`` the head is the identity and
  ``forward`` returns the [CLS] features;
* ``forward_features(x)``: one map, the final-norm patch tokens as ``(N, embed_dim, H/p, W/p)``
  (stride = the patch size).

Normalisation: ImageNet mean/std by default (timm's ViTs use it too).
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import VisionTransformer as TimmVisionTransformer

from vislearn.data.multicrop import keep_patches
from vislearn.errors import UserError
from vislearn.models.base import IMAGENET_MEAN, IMAGENET_STD, FeatureInfo, VisionModel
from vislearn.models.registry import register_model

__all__ = ["ViT"]


class ViT(VisionModel):
    """A timm ``VisionTransformer`` (class token, learned position embedding, pre-norm blocks).

    Args:
        num_classes: linear classifier on the [CLS] token (0: none; ``forward`` returns features).
        image_size: the side the position embedding is learned for (other sizes are resampled).
        patch_size: patch side in pixels (4 for 32 px images).
        embed_dim, depth, num_heads, mlp_ratio: transformer sizes (ViT-S: 384, 12, 6, 4).
        drop_path_rate: stochastic depth (the paper's DINO*/MSN*: 0.1).
        normalization: ``(mean, std)`` applied to the [0, 1] input.
    """

    def __init__(self, num_classes: int = 1000, image_size: int = 32, patch_size: int = 4, embed_dim: int = 192,
                 depth: int = 12, num_heads: int = 3, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 normalization=(IMAGENET_MEAN, IMAGENET_STD)) -> None:
        super().__init__(normalization=normalization)
        for name, value in (("image_size", image_size), ("patch_size", patch_size), ("embed_dim", embed_dim),
                            ("depth", depth), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"ViT {name} must be a positive int, got {value!r}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
            raise UserError(f"ViT num_classes must be an int >= 0, got {num_classes!r}")
        if embed_dim % num_heads:
            raise UserError(f"ViT embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if image_size < patch_size:
            raise UserError(f"ViT image_size {image_size} is smaller than the patch {patch_size}")
        if not 0 <= drop_path_rate < 1:
            raise UserError(f"ViT drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        self.vit = TimmVisionTransformer(
            img_size=image_size, patch_size=patch_size, in_chans=self.in_chans, num_classes=num_classes,
            global_pool="token", embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            drop_path_rate=drop_path_rate, dynamic_img_size=True, dynamic_img_pad=True)
        self.num_classes, self.num_features, self.patch_size = num_classes, embed_dim, patch_size
        self.min_input_size = patch_size
        self.feature_info = [FeatureInfo("tokens", embed_dim, patch_size)]

    def _tokens(self, x: torch.Tensor, patch_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """Final-norm tokens ``(N, 1 + kept patches, D)`` and the token grid of ``x``."""
        v = self.vit
        t = v.patch_embed(self.prepare_input(x))  # (N, gh, gw, D): dynamic_img_size keeps the grid
        grid = (t.shape[1], t.shape[2])
        t = v._pos_embed(t)  # [CLS] prepended, position embedding resampled to the grid
        if patch_mask is not None:
            n_patches = grid[0] * grid[1]
            if patch_mask.shape != (t.shape[0], n_patches):
                raise UserError(f"patch_mask must be (batch, {n_patches}) for a {grid[0]}×{grid[1]} token grid, "
                                f"got {tuple(patch_mask.shape)}")
            prefix = v.num_prefix_tokens
            t = torch.cat([t[:, :prefix], keep_patches(t[:, prefix:], patch_mask.to(t.device))], dim=1)
        t = v.norm_pre(v.patch_drop(t))
        return v.norm(v.blocks(t)), grid

    def embed(self, x: torch.Tensor, patch_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The [CLS] token after the final norm, ``(N, embed_dim)``; ``patch_mask`` drops patches (MSN)."""
        return self._tokens(x, patch_mask)[0][:, 0]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens, (gh, gw) = self._tokens(x)
        patches = tokens[:, self.vit.num_prefix_tokens:]
        return [patches.transpose(1, 2).reshape(patches.shape[0], -1, gh, gw)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.head(self.vit.head_drop(self.embed(x)))


@register_model("vit_tiny_p4", input_size=(3, 32, 32), paper="Dosovitskiy et al. 2021; timm ViT-Tiny widths, patch 4")
def vit_tiny_p4(**kwargs) -> ViT:
    return ViT(**{"embed_dim": 192, "depth": 12, "num_heads": 3, **kwargs})


@register_model("vit_small_p4", input_size=(3, 32, 32), paper="Dosovitskiy et al. 2021; ViT-S widths (DINO, "
                "Ruan et al. 2023), patch 4")
def vit_small_p4(**kwargs) -> ViT:
    return ViT(**{"embed_dim": 384, "depth": 12, "num_heads": 6, **kwargs})


@register_model("vit_small_p16", input_size=(3, 224, 224), paper="Dosovitskiy et al. 2021; ViT-S/16 (DINO, "
                "Ruan et al. 2023 Table 2)")
def vit_small_p16(**kwargs) -> ViT:
    return ViT(**{"image_size": 224, "patch_size": 16, "embed_dim": 384, "depth": 12, "num_heads": 6, **kwargs})
