"""Recipe ``multibox``: train MSC-MultiBox proposals (and, via :func:`train_post_classifier`, the
post-classifier) with the one engine.

Presets:

* ``quick``: embedded ``shapes`` detection scenes (128 px, 5 categories, 0–10 objects) with the
  small ``multibox_tiny`` backbone, a couple of minutes on 2 CPU cores.
* ``paper``: Szegedy et al., arXiv 1412.1441 / Erhan et al. 2014 settings where they are stated:
  Inception backbone (``inception_v3`` here; the paper used an Inception network of its time) at
  299 px, the 8/6/4/3/2/1 tree of grids with 11 aspect ratios (≈1,420 priors, PAPERS.md §4),
  bipartite matching with α = 0.3 (Erhan et al. 2014, Sec. 3), context features and the loss robust
  to missing labels. The optimiser and schedule are not given in PAPERS.md (the paper trained with
  asynchronous distributed SGD); ours are marked as such.

``build`` fits the priors' aspect ratios by k-means (IoU distance) on the training boxes and the box
coder's mean/std on the bipartite matches of the training boxes to those priors, and stores both in
the model (persistent buffers, saved with the weights).

Data: ``dataset="shapes"`` (default, embedded), ``"voc"`` (``--data`` = a VOC folder with
``ImageSets/Main/train.txt`` and ``val.txt``) or ``"coco"`` (``--data`` = a folder with
``annotations/instances_train*.json``/``instances_val*.json`` and the image folders named by the same
suffix, COCO's layout). Images are resized to ``image_size``² and boxes scaled with them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from vislearn.data.collate import detection_collate
from vislearn.detection.boxes import sanitize_boxes
from vislearn.detection.coding import fit_coder_stats
from vislearn.detection.matching import match_batch
from vislearn.detection.priors import grid_priors, kmeans_aspect_ratios
from vislearn.errors import UserError
from vislearn.losses.multibox import MultiBoxLoss
from vislearn.metrics.detection import proposal_ap, proposal_recall
from vislearn.recipes import PAPER_LOADING, Recipe, register_recipe
from vislearn.train.engine import Task, TrainConfig
from vislearn.train.evaluation import ShardedEvaluation
from vislearn.train.rules import Rule, at_least, between, one_of

__all__ = ["MultiBoxConfig", "MultiBoxModule", "MultiBoxRecipe", "PostClassifierModule", "ResizedDetection",
           "build_model", "detection_datasets", "evaluate_proposals", "fit_priors_and_coder", "proposal_evaluation",
           "train_post_classifier"]


@dataclass
class MultiBoxConfig(TrainConfig):
    backbone: str = "multibox_tiny"
    backbone_weights: str = ""  # optional weights file for the backbone (e.g. ImageNet Inception-v3)
    image_size: int = 128
    grids: tuple[int, ...] = (8, 6, 4, 3, 2, 1)
    num_aspect_ratios: int = 11
    head_width: int = 64
    context_width: int = 32
    head_stages: int = 3
    prior_scale: float = 1.0
    coder_mode: str = "corner"
    alpha: float = 0.3
    matching: str = "bipartite"  # bipartite | iou
    match_on: str = "priors"  # priors | predictions
    iou_threshold: float = 0.5
    missing_label_weight: float = 1.0  # 1: off
    missing_label_iou: float = 0.0
    dataset: str = "shapes"  # shapes | voc | coco
    num_train_images: int = 600
    num_eval_images: int = 150
    num_categories: int = 5
    max_objects: int = 10
    data_seed: int = 0
    eval_top_k: int = 100
    nms_iou: float = 0.5
    RULES: ClassVar[dict[str, Rule]] = {
        "image_size": at_least(1), "grids": at_least(1), "num_aspect_ratios": at_least(1), "head_width": at_least(1),
        "context_width": at_least(0), "head_stages": at_least(1), "prior_scale": Rule(lambda v: v > 0, "> 0"),
        "alpha": at_least(0), "matching": one_of("bipartite", "iou"), "match_on": one_of("priors", "predictions"),
        "iou_threshold": between(0, 1), "missing_label_weight": between(0, 1), "missing_label_iou": between(0, 1),
        "dataset": one_of("shapes", "voc", "coco"), "num_train_images": at_least(1), "num_eval_images": at_least(1),
        "num_categories": at_least(1), "max_objects": at_least(1), "eval_top_k": at_least(1),
        "nms_iou": between(0, 1)}


class ResizedDetection(Dataset):
    """Wraps a detection dataset: images resized to ``size×size`` (bilinear, antialiased), boxes (and an
    ``area`` entry, e.g. COCO's segment areas) scaled with them."""

    def __init__(self, dataset: Dataset, size: int) -> None:
        self.dataset, self.size = dataset, size
        self.classes = getattr(dataset, "classes", None)
        if hasattr(dataset, "distributed_sampler"):  # a packed dataset's shard order (vislearn.data.shards)
            self.distributed_sampler = dataset.distributed_sampler

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        image, target = self.dataset[i]
        h, w = image.shape[-2:]
        if (h, w) != (self.size, self.size):
            image = F.interpolate(image[None].float(), size=(self.size, self.size), mode="bilinear",
                                  align_corners=False, antialias=True)[0].clamp(0, 1)
            scale = torch.tensor([self.size / w, self.size / h, self.size / w, self.size / h])
            target = {**target, "boxes": target["boxes"].reshape(-1, 4).float() * scale}
            if "area" in target:
                target["area"] = target["area"] * (self.size / w * self.size / h)
        return image, target


def _coco_split(root: Path, split: str) -> Dataset:
    from vislearn.data.formats import CocoDetection

    anns = sorted((root / "annotations").glob(f"instances_{split}*.json"))
    if not anns:
        raise UserError(f"no annotations/instances_{split}*.json under {root} (COCO layout expected)")
    suffix = anns[0].stem.removeprefix("instances_")
    images = root / suffix
    if not images.is_dir():
        raise UserError(f"image folder {images} for {anns[0].name} not found")
    return CocoDetection(str(anns[0]), str(images))


def detection_datasets(cfg: MultiBoxConfig, data: str | None) -> tuple[Dataset, Dataset, list[str]]:
    """(train, eval, class names) for the config's dataset, resized to ``cfg.image_size``."""
    if cfg.dataset == "shapes":
        from vislearn.data.shapes_detection import shapes_detection

        kw = dict(image_size=cfg.image_size, num_categories=cfg.num_categories, max_objects=cfg.max_objects,
                  seed=cfg.data_seed)
        train = shapes_detection("train", num_images=cfg.num_train_images, **kw)
        test = shapes_detection("test", num_images=cfg.num_eval_images, **kw)
        classes = list(getattr(train, "classes", None) or range(cfg.num_categories))
        names = [str(c) for c in classes]
        return ResizedDetection(train, cfg.image_size), ResizedDetection(test, cfg.image_size), names
    if data is None:
        raise UserError(f"dataset {cfg.dataset!r} needs --data PATH")
    root = Path(data)
    from vislearn.data.shards import is_packed, packed_splits

    if cfg.dataset == "coco" and is_packed(data):  # `vislearn data pack --format coco` shards
        train, test = packed_splits(data, "train", "val", fmt="coco")
    elif cfg.dataset == "voc":
        from vislearn.data.voc import VOCDetection

        train, test = VOCDetection(root, "train"), VOCDetection(root, "val")
    elif cfg.dataset == "coco":
        train, test = _coco_split(root, "train"), _coco_split(root, "val")
    else:
        raise UserError(f"unknown dataset {cfg.dataset!r}; choose shapes, voc or coco")
    classes = [str(c) for c in (getattr(train, "classes", None) or [])]
    return ResizedDetection(train, cfg.image_size), ResizedDetection(test, cfg.image_size), classes


def _regular(target: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mask of the target's boxes that are not crowd regions (COCO ``iscrowd``; training leaves those out,
    evaluation ignores detections on them)."""
    crowd = target.get("iscrowd")
    n = len(target["boxes"].reshape(-1, 4))
    return torch.ones(n, dtype=torch.bool) if crowd is None else ~crowd.reshape(-1).bool().cpu()


def _normalised_boxes(targets: list[dict[str, torch.Tensor]], h: int, w: int) -> list[torch.Tensor]:
    """Ground truth in normalised coordinates, clipped to the image; crowd regions and degenerate boxes
    dropped (:func:`vislearn.detection.sanitize_boxes`: zero/negative size, non-finite, outside the image)."""
    scale = torch.tensor([w, h, w, h], dtype=torch.float32)
    return [sanitize_boxes(t["boxes"].reshape(-1, 4).float().cpu()[_regular(t)], (h, w))[0] / scale
            for t in targets]


def fit_priors_and_coder(model: nn.Module, dataset: Dataset, max_images: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Set ``model``'s priors (k-means aspect ratios of the training boxes) and coder statistics.

    Returns what was fitted (ratios, coder mean/std, boxes used) for logging.
    """
    boxes = []
    for i in range(min(len(dataset), max_images)):
        image, target = dataset[i]
        boxes += _normalised_boxes([target], *image.shape[-2:])
    allb = torch.cat(boxes) if boxes else torch.zeros(0, 4)
    allb = allb[((allb[:, 2:] - allb[:, :2]) > 0).all(1)]
    k = max(model.per_cell)
    if len(allb) < k:
        raise UserError(f"need at least {k} training boxes to fit the priors, found {len(allb)}")
    ratios = kmeans_aspect_ratios(allb, k, seed=seed)
    priors = grid_priors(model.grids, ratios, scale=getattr(model, "prior_scale", 1.0))
    model.set_priors(priors)
    matches = match_batch(priors, boxes, "bipartite")
    gt, pr = [], []
    for n, b in enumerate(boxes):
        m = matches[n]
        sel = m >= 0
        gt.append(b[m[sel]]), pr.append(priors[sel])
    mean, std = fit_coder_stats(torch.cat(gt), torch.cat(pr), model.coder_mode)
    model.set_coder(mean, std)
    return {"aspect_ratios": list(ratios), "coder_mean": mean.tolist(), "coder_std": std.tolist(),
            "train_boxes": len(allb)}


class MultiBoxModule(nn.Module):
    """Training module: ``forward((images, targets))`` → MultiBox loss on boxes normalised by image size."""

    def __init__(self, model: nn.Module, loss: MultiBoxLoss) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        out = self.model(images)
        gts = [g.to(images.device) for g in _normalised_boxes(targets, *images.shape[-2:])]
        return self.loss(out["loc"].float(), out["logits"].float(), self.model.priors, gts, self.model.coder)


def proposal_predictions(model: nn.Module, loader: DataLoader, top_k: int = 100,
                         nms_iou: float = 0.5) -> dict[str, list]:
    """Per image: the ranked proposals and scores, and the ground truth (boxes, ``iscrowd``, ``area``)."""
    device = model.priors.device
    boxes, scores, gts, crowd, areas = [], [], [], [], []
    for images, targets in loader:
        b, s = model.propose(images.to(device), top_k=top_k, nms_iou=nms_iou)
        boxes += [x.cpu() for x in b]
        scores += [x.cpu() for x in s]
        gts += [t["boxes"].reshape(-1, 4).cpu() for t in targets]
        crowd += [t.get("iscrowd") for t in targets]
        areas += [t.get("area") for t in targets]
    return {"boxes": boxes, "scores": scores, "gt_boxes": gts, "gt_iscrowd": crowd, "gt_areas": areas}


def proposal_metrics(columns: dict[str, list], top_k: int = 100,
                     num_proposals: tuple[int, ...] = (10, 100)) -> dict[str, float]:
    """Proposal recall@n (IoU 0.5) and class-agnostic proposal AP@0.5 of the whole set; crowd regions and
    annotation areas go to the evaluator as COCOeval uses them."""
    ns = tuple(n for n in num_proposals if n <= top_k) or (top_k,)
    boxes, scores, gts = columns["boxes"], columns["scores"], columns["gt_boxes"]
    kw = dict(gt_iscrowd=columns["gt_iscrowd"], gt_areas=columns["gt_areas"])
    rec = proposal_recall(boxes, scores, gts, iou=0.5, num_proposals=ns, **kw)
    out = {f"recall@{n}": v for n, v in rec.items()}
    out["proposal_ap50"] = proposal_ap(boxes, scores, gts, iou=0.5, max_dets=top_k, **kw)
    return out


def proposal_evaluation(top_k: int = 100, nms_iou: float = 0.5,
                        num_proposals: tuple[int, ...] = (10, 100)) -> ShardedEvaluation:
    """Proposal recall@n and AP@0.5 as an evaluation every process runs on its share of the images."""
    return ShardedEvaluation(functools.partial(proposal_predictions, top_k=top_k, nms_iou=nms_iou),
                             functools.partial(proposal_metrics, top_k=top_k, num_proposals=num_proposals))


def evaluate_proposals(model: nn.Module, loader: DataLoader, top_k: int = 100, nms_iou: float = 0.5,
                       num_proposals: tuple[int, ...] = (10, 100)) -> dict[str, float]:
    """Proposal recall@n (IoU 0.5) and class-agnostic proposal AP@0.5 over the loader, on one process."""
    return proposal_evaluation(top_k, nms_iou, num_proposals)(model, loader)


def build_model(cfg: MultiBoxConfig) -> nn.Module:
    from vislearn.models import create_model

    return create_model("msc_multibox", backbone=cfg.backbone, grids=list(cfg.grids),
                        num_aspect_ratios=cfg.num_aspect_ratios, image_size=cfg.image_size,
                        head_stages=cfg.head_stages, head_width=cfg.head_width, context_width=cfg.context_width,
                        coder_mode=cfg.coder_mode, prior_scale=cfg.prior_scale,
                        backbone_weights=cfg.backbone_weights or None)


@register_recipe("multibox")
class MultiBoxRecipe(Recipe):
    """MSC-MultiBox class-agnostic proposals (Szegedy et al. 2014) on shapes scenes, VOC or COCO."""

    description = "MSC-MultiBox learned object proposals (bipartite matching, MultiBox loss)"
    Config = MultiBoxConfig
    data_formats = {"voc": "voc", "coco": "coco"}
    presets = {
        "quick": MultiBoxConfig(steps=300, batch_size=32, lr=2e-3, optimizer="adamw", weight_decay=1e-4,
                                schedule="cosine", warmup_steps=20, log_every=50, clip_grad=10.0),
        "paper": MultiBoxConfig(
            **PAPER_LOADING,
            backbone="inception_v3", image_size=299,  # Inception backbone at its 299 px input
            grids=(8, 6, 4, 3, 2, 1), num_aspect_ratios=11,  # tree of priors, ≈1,420 (PAPERS.md §4)
            head_width=256, context_width=128,  # context features (Sec. 3); widths are ours
            alpha=0.3, matching="bipartite",  # Erhan et al. 2014, Sec. 3
            missing_label_weight=0.1,  # robust to missing labels (Sec. 3); the weight is ours
            coder_mode="corner",  # offsets from priors, per-coordinate mean/std (Erhan et al. 2014)
            # not stated in PAPERS.md (the paper used asynchronous distributed SGD): our choices
            steps=100_000, batch_size=32, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=4e-5,
            schedule="cosine", warmup_steps=1000, clip_grad=10.0, num_train_images=10_000,
            num_eval_images=1000, log_every=100, eval_every=5000),
    }

    def build(self, cfg: MultiBoxConfig, data: str | None = None) -> Task:
        train, test, _ = detection_datasets(cfg, data)
        model = build_model(cfg)
        fit_priors_and_coder(model, train, seed=cfg.seed)
        loss = MultiBoxLoss(alpha=cfg.alpha, matching=cfg.matching, match_on=cfg.match_on,
                            iou_threshold=cfg.iou_threshold, missing_label_weight=cfg.missing_label_weight,
                            missing_label_iou=cfg.missing_label_iou)
        evaluate = proposal_evaluation(top_k=cfg.eval_top_k, nms_iou=cfg.nms_iou)
        return Task(MultiBoxModule(model, loss), train, test, evaluate=evaluate, collate_fn=detection_collate,
                    model=model)


class PostClassifierModule(nn.Module):
    """Trains a :class:`~vislearn.models.multibox.ProposalClassifier` on proposals of a frozen MultiBox model.

    Each image contributes its top ``num_proposals`` proposals plus its ground-truth boxes; a box is
    labelled with the category of the ground truth it overlaps most if that IoU is ``>= fg_iou``,
    otherwise background. The loss is cross-entropy.
    """

    def __init__(self, classifier: nn.Module, num_proposals: int = 32, fg_iou: float = 0.5,
                 nms_iou: float = 0.5) -> None:
        super().__init__()
        self.model, self.num_proposals, self.fg_iou, self.nms_iou = classifier, num_proposals, fg_iou, nms_iou

    def forward(self, batch) -> dict[str, torch.Tensor]:
        from torchvision.ops import box_iou

        images, targets = batch
        pm = self.model.proposal_model
        with torch.no_grad():
            props, _ = pm.propose(images, top_k=self.num_proposals, nms_iou=self.nms_iou)
            feats = pm.backbone.forward_features(images) if self.model.mode == "roi" else None
        boxes, labels = [], []
        bg = self.model.num_classes
        for p, t in zip(props, targets, strict=True):
            keep = _regular(t).to(t["boxes"].device)
            g, lab = t["boxes"].reshape(-1, 4).float()[keep], t["labels"].reshape(-1)[keep]
            b = torch.cat([p.float(), g])
            y = torch.full((len(b),), bg, dtype=torch.long, device=b.device)
            if len(g):
                iou, j = box_iou(b, g).max(1)
                y = torch.where(iou >= self.fg_iou, lab[j], y)
            boxes.append(b), labels.append(y)
        logits = self.model(images, boxes, feats)
        y = torch.cat(labels)
        loss = F.cross_entropy(logits.float(), y)
        return {"loss": loss, "acc": (logits.argmax(1) == y).float().mean().detach()}


def train_post_classifier(proposal_model: nn.Module, train_set: Dataset, num_classes: int, steps: int,
                          batch_size: int = 16, lr: float = 2e-3, seed: int = 0, mode: str = "roi",
                          num_proposals: int = 32, **classifier_kwargs: Any) -> nn.Module:
    """Train a post-classifier on a frozen proposal model with the engine; returns it in eval mode."""
    from vislearn.models.multibox import ProposalClassifier
    from vislearn.train import Trainer

    clf = ProposalClassifier(proposal_model, num_classes, mode=mode, **classifier_kwargs)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, optimizer="adamw", weight_decay=1e-4,
                      schedule="cosine", log_every=max(1, steps), seed=seed)
    module = PostClassifierModule(clf, num_proposals=num_proposals)
    Trainer(cfg, Task(module, train_set, collate_fn=detection_collate), out_dir=None, progress=False).fit()
    return clf.eval()
