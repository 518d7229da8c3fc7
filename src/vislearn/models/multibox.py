"""MSC-MultiBox: multi-scale convolutional MultiBox proposals over any registry backbone, and a
post-classifier that turns the ranked proposals into detections.

Szegedy, Reed, Erhan, Anguelov, Ioffe, "Scalable, High-Quality Object Detection" (arXiv 1412.1441),
building on MultiBox (Erhan et al., CVPR 2014); PAPERS.md §4.

* :class:`MSCMultiBox` (registered ``"msc_multibox"``): a backbone from the registry (``backbone=
  "inception_v3"`` by default; any model with ``forward_features``/``feature_info`` works) feeds
  convolutional predictors laid out on the tree of grids of :mod:`vislearn.detection.priors` (8, 6,
  4, 3, 2, 1). Each grid ``g`` reads the coarsest of the last ``head_stages`` backbone stages whose
  map has at least ``2g`` cells per side at the registered input size (so fine grids read finer
  stages: the multi-scale part), average-pools it to ``g×g``, concatenates a *context* vector (the
  globally pooled coarsest stage, projected; Sec. 3's context features), and a 3×3 conv + 1×1 conv
  predict, per prior of each cell, 4 whitened box offsets (:class:`vislearn.detection.BoxCoder`) and
  one objectness logit. The priors (``P×4``, normalised xyxy) and the coder's mean/std are
  persistent buffers, saved and loaded with the weights (the recipe fills them from k-means over the
  training boxes). ``forward`` returns ``{"loc": N×P×4, "logits": N×P}``; :meth:`MSCMultiBox.propose`
  decodes, ranks, applies NMS and keeps the top boxes.
* :class:`ProposalClassifier`: the post-classification stage (Sec. 1/4: proposals are classified by a
  second network). ``mode="roi"`` crops each proposal from a shared backbone stage with
  :func:`torchvision.ops.roi_align` (the proposal network's features, frozen) and classifies it with a
  small MLP into ``num_classes`` + background; ``mode="crop"`` crops the image itself with
  ``roi_align`` and feeds a registry classifier. :meth:`ProposalClassifier.detect` gives per-image
  detections (boxes, scores, labels) after per-class NMS.
* ``multibox_tiny``: a small 5-stage ConvBNAct backbone (strides 2–32) for the ``quick`` recipe and
  the reproduction on 2 CPU cores, where a full Inception-v3 would be too slow. It is ours, not the
  paper's.

Where we differ from the paper (which does not give every detail): the heads' widths, the exact
stage each grid reads, the context projection and the objectness bias initialisation
(``log(π/(1−π))`` with ``π = 0.01`` so training starts from "no object", a modern trick from focal-loss
detectors) are our choices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import batched_nms, roi_align

from vislearn.detection.coding import BoxCoder
from vislearn.detection.priors import DEFAULT_GRIDS, grid_prior_counts, grid_priors
from vislearn.detection.proposals import decode_boxes, select_proposals
from vislearn.errors import UserError
from vislearn.models.base import IMAGENET_MEAN, IMAGENET_STD, FeatureInfo, VisionModel
from vislearn.models.registry import create_model, get_entry, register_model
from vislearn.nn.conv import ConvBNAct

__all__ = ["MSCMultiBox", "MultiBoxTiny", "ProposalClassifier"]

_HEAD_ATTRS = ("fc", "classifier", "head", "AuxLogits", "last_linear")


class MultiBoxTiny(VisionModel):
    """Five stages of two ConvBNAct each (the first with stride 2): strides 2, 4, 8, 16, 32.

    A small, fast backbone for the ``quick`` MultiBox recipe on CPU (not from the paper).
    """

    in_chans = 3
    min_input_size = 32

    def __init__(self, num_classes: int = 10, widths: Sequence[int] = (16, 32, 48, 64, 96),
                 normalization=(IMAGENET_MEAN, IMAGENET_STD), validate_inputs: bool = True) -> None:
        super().__init__(normalization=normalization, validate_inputs=validate_inputs)
        if len(widths) != 5 or any(w < 1 for w in widths):
            raise UserError(f"multibox_tiny needs 5 positive widths, got {list(widths)}")
        stages, c = [], 3
        for w in widths:
            stages.append(nn.Sequential(ConvBNAct(c, w, 3, stride=2, padding=1), ConvBNAct(w, w, 3, padding=1)))
            c = w
        self.stages = nn.ModuleList(stages)
        self.fc = nn.Linear(c, num_classes)
        self.num_features = c
        self.feature_info = [FeatureInfo(f"stage{i}", w, 2 ** (i + 1)) for i, w in enumerate(widths)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool2d(self.forward_features(x)[-1], 1).flatten(1))


@register_model("multibox_tiny", input_size=(3, 128, 128), paper="vislearn (small CPU backbone for MSC-MultiBox)")
def multibox_tiny(**kwargs: Any) -> MultiBoxTiny:
    return MultiBoxTiny(**kwargs)


class MSCMultiBox(VisionModel):
    """Multi-scale convolutional MultiBox over a registry backbone (see the module docstring).

    Args:
        backbone: registry name of the backbone (``inception_v3``, ``multibox_tiny``, ...).
        grids: the tree of grids (paper/PAPERS.md §4: 8, 6, 4, 3, 2, 1).
        num_aspect_ratios: priors per cell (11 in public re-implementations).
        num_priors: optional check: must equal the layout's count (1,420 by default).
        single_prior_grids: grids with one prior per cell (default: the 1×1 grid).
        image_size: nominal input side used to assign grids to stages (default: the backbone's
            registered input size).
        head_stages: how many of the last backbone stages the heads may read.
        head_width, context_width: channels of the heads and of the context vector (0: no context).
        coder_mode: box coding, ``"corner"`` (MultiBox) or ``"center"``.
        prior_scale: prior size factor of :func:`vislearn.detection.grid_priors`.
        backbone_weights: a weights file for the backbone (e.g. ImageNet-trained Inception-v3).
        backbone_kwargs: options passed to the backbone's builder.
    """

    def __init__(self, backbone: str = "inception_v3", grids: Sequence[int] = DEFAULT_GRIDS,
                 num_aspect_ratios: int = 11, num_priors: int | None = None,
                 single_prior_grids: Sequence[int] = (1,), image_size: int | None = None, head_stages: int = 3,
                 head_width: int = 256, context_width: int = 128, coder_mode: str = "corner",
                 prior_scale: float = 1.0, backbone_weights: str | None = None,
                 backbone_kwargs: dict[str, Any] | None = None, normalization=None,
                 validate_inputs: bool = True) -> None:
        self._backbone_ready = False
        super().__init__(normalization=None, validate_inputs=validate_inputs)
        entry = get_entry(backbone)
        self.in_chans = entry.input_size[0]
        self.backbone = create_model(backbone, weights=backbone_weights, **(backbone_kwargs or {}))
        if not hasattr(self.backbone, "forward_features") or not getattr(self.backbone, "feature_info", None):
            raise UserError(f"backbone {backbone!r} has no forward_features/feature_info")
        for name in _HEAD_ATTRS:  # classifier heads are unused here (and would idle under DDP)
            if isinstance(getattr(self.backbone, name, None), nn.Module):
                setattr(self.backbone, name, nn.Identity())
        self._backbone_ready = True
        if normalization is not None:
            self.normalization = normalization
        self.min_input_size = getattr(self.backbone, "min_input_size", 1)
        self.image_size = int(image_size or entry.input_size[-1])
        self.grids = tuple(int(g) for g in grids)
        self.per_cell = grid_prior_counts(self.grids, num_aspect_ratios, single_prior_grids)
        self.num_priors = sum(g * g * a for g, a in zip(self.grids, self.per_cell, strict=True))
        if num_priors is not None and num_priors != self.num_priors:
            raise UserError(f"num_priors={num_priors} does not fit grids {list(self.grids)} with "
                            f"{num_aspect_ratios} aspect ratios ({self.num_priors} priors); change "
                            "grids or num_aspect_ratios")
        info = list(self.backbone.feature_info)
        if not 1 <= head_stages <= len(info):
            raise UserError(f"head_stages must be in 1..{len(info)}, got {head_stages}")
        usable = list(range(len(info) - head_stages, len(info)))
        self.grid_stage = []
        for g in self.grids:
            ok = [s for s in usable if self.image_size / info[s].stride >= 2 * g]
            self.grid_stage.append(max(ok) if ok else usable[0])
        used = sorted(set(self.grid_stage))
        self.stage_ids = used
        self.lateral = nn.ModuleDict({str(s): ConvBNAct(info[s].channels, head_width, 1) for s in used})
        self.context_width = context_width
        if context_width > 0:
            self.context = nn.Sequential(nn.Linear(info[-1].channels, context_width), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList()
        for a in self.per_cell:
            self.heads.append(nn.Sequential(ConvBNAct(head_width + context_width, head_width, 3, padding=1),
                                            nn.Conv2d(head_width, a * 5, 1)))
        for head in self.heads:
            out = head[-1]
            nn.init.normal_(out.weight, std=0.01)
            bias = out.bias.data.view(-1, 5)
            bias.zero_()
            bias[:, 4] = math.log(0.01 / 0.99)
        self.coder_mode = coder_mode
        BoxCoder(mode=coder_mode)  # validates the mode
        # until the recipe fits k-means ratios: ratios spread geometrically over [1/4, 4]
        ratios = [2.0 ** (4.0 * i / max(num_aspect_ratios - 1, 1) - 2.0) for i in range(num_aspect_ratios)]
        if num_aspect_ratios == 1:
            ratios = [1.0]
        self.prior_scale = prior_scale
        self.register_buffer("priors", grid_priors(self.grids, ratios, prior_scale, single_prior_grids))
        self.register_buffer("coder_mean", torch.zeros(4))
        self.register_buffer("coder_std", torch.ones(4))
        # each head input is the lateral map with the context vector appended
        self.feature_info = [FeatureInfo(f"grid{g}", head_width + max(context_width, 0), max(1, self.image_size // g))
                             for g in self.grids]

    # normalisation belongs to the backbone, which applies it inside its forward_features
    @property
    def normalization(self):
        if not getattr(self, "_backbone_ready", False):
            return None
        return self.backbone.normalization

    @normalization.setter
    def normalization(self, value) -> None:
        if getattr(self, "_backbone_ready", False):
            self.backbone.normalization = value

    @property
    def coder(self) -> BoxCoder:
        return BoxCoder(self.coder_mean.detach().cpu(), self.coder_std.detach().cpu(), self.coder_mode)

    def set_priors(self, priors: torch.Tensor) -> None:
        """Replace the priors (``P×4`` normalised xyxy, in head order, e.g. from k-means ratios)."""
        if priors.shape != self.priors.shape:
            raise UserError(f"priors must be {tuple(self.priors.shape)}, got {tuple(priors.shape)}")
        self.priors.copy_(priors.to(self.priors))

    def set_coder(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the box coder's per-coordinate mean/std (fitted on training matches)."""
        BoxCoder(mean, std, self.coder_mode)  # validates
        self.coder_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.coder_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The per-grid head inputs (pooled stage map + context), one ``N×C×g×g`` map per grid."""
        if self.validate_inputs and not torch.compiler.is_compiling():
            from vislearn.models.base import check_images

            check_images(x, self.in_chans, self.min_input_size, where=type(self).__name__)
        feats = self.backbone.forward_features(x)
        lat = {s: self.lateral[str(s)](feats[s]) for s in self.stage_ids}
        ctx = self.context(F.adaptive_avg_pool2d(feats[-1], 1).flatten(1)) if self.context_width > 0 else None
        out = []
        for g, s in zip(self.grids, self.grid_stage, strict=True):
            m = lat[s]
            m = m if m.shape[-2:] == (g, g) else F.adaptive_avg_pool2d(m, g)
            if ctx is not None:
                m = torch.cat([m, ctx[:, :, None, None].expand(-1, -1, g, g).to(m.dtype)], 1)
            out.append(m)
        return out

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"loc": N×P×4 whitened offsets, "logits": N×P objectness logits}`` in prior order."""
        outs = []
        for m, head, a in zip(self.forward_features(x), self.heads, self.per_cell, strict=True):
            y = head(m)  # N×(a·5)×g×g
            n, _, g, _ = y.shape
            outs.append(y.permute(0, 2, 3, 1).reshape(n, g * g * a, 5))
        y = torch.cat(outs, 1)
        return {"loc": y[..., :4], "logits": y[..., 4]}

    @torch.no_grad()
    def propose(self, images: torch.Tensor, top_k: int = 100, nms_iou: float | None = 0.5,
                pre_nms_top_k: int | None = None, outputs: dict[str, torch.Tensor] | None = None,
                ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Ranked proposals per image: boxes ``k×4`` in pixels (xyxy) and objectness ``k`` in (0, 1)."""
        out = outputs if outputs is not None else self(images)
        boxes = decode_boxes(out["loc"], self.priors, self.coder, tuple(images.shape[-2:]))
        b, s, _ = select_proposals(boxes, out["logits"].float().sigmoid(), top_k=top_k, nms_iou=nms_iou,
                                   pre_nms_top_k=pre_nms_top_k)
        return b, s


@register_model("msc_multibox", input_size=(3, 299, 299),
                paper="Szegedy et al. 2014, Scalable High-Quality Object Detection (arXiv 1412.1441)")
def msc_multibox(**kwargs: Any) -> MSCMultiBox:
    kwargs.pop("num_classes", None)  # class-agnostic: one objectness per prior
    return MSCMultiBox(**kwargs)


class ProposalClassifier(nn.Module):
    """Post-classifier of MultiBox proposals: ``num_classes`` categories + background.

    Args:
        proposal_model: a trained :class:`MSCMultiBox` (kept frozen: its features are computed
            without gradient).
        num_classes: object categories (the background class is index ``num_classes``).
        mode: ``"roi"`` (RoIAlign on the proposal backbone's stage ``stage``) or ``"crop"``
            (RoIAlign crops of the image, ``crop_size`` pixels, through ``classifier``).
        stage: backbone stage index for ``"roi"`` (default: the second to last, stride 16).
        roi_size, hidden: RoIAlign output side and the MLP width for ``"roi"``.
        classifier: registry name or module for ``"crop"``; it must output ``num_classes + 1`` logits.
    """

    def __init__(self, proposal_model: MSCMultiBox, num_classes: int, mode: str = "roi", stage: int = -2,
                 roi_size: int = 5, hidden: int = 256, classifier: str | nn.Module | None = None,
                 crop_size: int = 32) -> None:
        super().__init__()
        if mode not in ("roi", "crop"):
            raise UserError(f"post-classifier mode must be 'roi' or 'crop', got {mode!r}")
        if num_classes < 1:
            raise UserError(f"num_classes must be >= 1, got {num_classes}")
        self.proposal_model = proposal_model.requires_grad_(False)
        self.num_classes, self.mode = num_classes, mode
        info = proposal_model.backbone.feature_info
        self.stage = stage % len(info)
        self.stride = info[self.stage].stride
        self.roi_size, self.crop_size = roi_size, crop_size
        if mode == "roi":
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(info[self.stage].channels * roi_size**2, hidden),
                                      nn.ReLU(inplace=True), nn.Linear(hidden, num_classes + 1))
        else:
            if classifier is None:
                raise UserError("mode='crop' needs a classifier (registry name or module)")
            self.head = create_model(classifier, num_classes=num_classes + 1) if isinstance(classifier, str) \
                else classifier

    def train(self, mode: bool = True) -> ProposalClassifier:
        super().train(mode)
        self.proposal_model.eval()  # frozen, BN statistics included
        return self

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor],
                features: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Class logits ``(Σk)×(num_classes+1)`` for the boxes (pixels, xyxy) of each image."""
        boxes = [b.to(images.dtype) for b in boxes]
        if self.mode == "roi":
            if features is None:
                with torch.no_grad():
                    features = self.proposal_model.backbone.forward_features(images)
            feat = features[self.stage].float()
            crops = roi_align(feat, [b.float() for b in boxes], self.roi_size, spatial_scale=1.0 / self.stride,
                              sampling_ratio=2, aligned=True)
        else:
            crops = roi_align(images.float(), [b.float() for b in boxes], self.crop_size, spatial_scale=1.0,
                              sampling_ratio=2, aligned=True).clamp(0, 1)
        return self.head(crops)

    @torch.no_grad()
    def detect(self, images: torch.Tensor, top_k: int = 100, nms_iou: float = 0.5, class_nms_iou: float = 0.5,
               max_dets: int = 100, score_threshold: float = 0.01) -> list[dict[str, torch.Tensor]]:
        """Detections per image: ``{"boxes": k×4, "scores": k, "labels": k}``.

        The top ``top_k`` proposals are classified; each (proposal, category) pair scores
        ``p(category)`` (softmax over categories + background); pairs above ``score_threshold`` go
        through per-category NMS and the best ``max_dets`` are kept.
        """
        out = self.proposal_model(images)
        boxes, _ = self.proposal_model.propose(images, top_k=top_k, nms_iou=nms_iou, outputs=out)
        feats = None
        if self.mode == "roi":
            feats = self.proposal_model.backbone.forward_features(images)
        counts = [len(b) for b in boxes]
        probs = self(images, boxes, feats).float().softmax(-1)[:, : self.num_classes] if sum(counts) else \
            torch.zeros(0, self.num_classes)
        results = []
        for b, p in zip(boxes, probs.split(counts), strict=True):
            k, c = p.shape
            s = p.reshape(-1)
            lab = torch.arange(c).repeat(k)
            bb = b.float().repeat_interleave(c, 0)
            keep = s > score_threshold
            bb, s, lab = bb[keep], s[keep], lab[keep]
            sel = batched_nms(bb, s, lab, class_nms_iou)[:max_dets]
            results.append({"boxes": bb[sel], "scores": s[sel], "labels": lab[sel]})
        return results
