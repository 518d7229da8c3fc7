"""Recipe ``proxy_nca`` and reproduction ``proxy_nca``: they run end to end at a tiny scale."""

import pytest
import torch

from vislearn.data.collate import group_collate
from vislearn.data.samplers import ClassGroups
from vislearn.errors import UserError
from vislearn.recipes import get_recipe
from vislearn.recipes.classification import num_classes_of
from vislearn.recipes.proxy_nca import MetricLearningModule
from vislearn.train import Trainer


def _tiny(**over):
    r = get_recipe("proxy_nca")
    base = {"steps": "3", "num_classes": "8", "shapes_per_class": "6", "image_size": "16", "eval_every": "0",
            "log_every": "1", "batch_size": "8", "embedding_dim": "8"}
    return r, r.config("quick", {**base, **over})


def _embed_one_by_one(trainer, task):
    """The eval set embedded one item at a time by the trained model, L2-normalised, and its labels."""
    model = trainer.inference_model(use_ema=trainer.cfg.ema_eval).eval()
    with torch.no_grad():
        x = torch.cat([torch.nn.functional.normalize(model(img[None]).float(), dim=1) for img, _ in task.eval_set])
    return x, torch.tensor([int(label) for _, label in task.eval_set])


def _recall_by_hand(x, y, k):
    """Recall@k counted by hand: a same-class item among the k nearest others."""
    d = torch.cdist(x.double(), x.double()).fill_diagonal_(float("inf"))
    return float((y[d.topk(k, largest=False).indices] == y[:, None]).any(1).double().mean())


def test_proxy_nca_recipe_trains_and_evaluates():
    r, cfg = _tiny()
    task = r.build(cfg)
    assert isinstance(task.module, MetricLearningModule)
    # proxies are inside the module (DDP syncs them) and in their own group at the higher lr
    names = [n for n, _ in task.module.named_parameters()]
    assert "loss.proxies" in names
    assert task.param_groups[-1]["params"][0] is task.module.loss.proxies
    assert task.param_groups[-1]["lr_mult"] == cfg.proxy_lr_mult
    trainer = Trainer(cfg, task, None, progress=False)
    m = trainer.fit().final_metrics
    assert set(m) >= {"recall@1", "recall@8", "map@r", "r_precision"}
    # the held-out classes embedded one image at a time, L2-normalised: recall@k counted by hand (a
    # same-class image among the k nearest others), MAP@R and R-precision from pytorch-metric-learning
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    x, y = _embed_one_by_one(trainer, task)
    for k in (1, 8):
        assert m[f"recall@{k}"] == pytest.approx(_recall_by_hand(x, y, k), abs=1e-6), k
    calc = AccuracyCalculator(include=("mean_average_precision_at_r", "r_precision"), k="max_bin_count",
                              device=torch.device("cpu"), knn_func=CustomKNN(LpDistance(normalize_embeddings=False)))
    ref = calc.get_accuracy(x, y)
    assert m["map@r"] == pytest.approx(ref["mean_average_precision_at_r"], abs=1e-6)
    assert m["r_precision"] == pytest.approx(ref["r_precision"], abs=1e-6)


def test_triplet_with_grouped_batches():
    r, cfg = _tiny(loss="triplet", samples_per_class="3", batch_size="4")
    task = r.build(cfg)
    assert isinstance(task.train_set, ClassGroups)
    x, y = group_collate([task.train_set[0], task.train_set[1]])
    assert x.shape == (6, 3, 16, 16) and (y[:3] == y[0]).all() and (y[3:] == y[3]).all()
    res = Trainer(cfg, task, None, progress=False).fit()
    assert [h["step"] for h in res.history if h["split"] == "train"] == [1, 2, 3]


def test_recipe_errors():
    r = get_recipe("proxy_nca")
    with pytest.raises(UserError, match="needs --data"):
        r.build(r.config("quick", {"dataset": "cub200"}))
    with pytest.raises(UserError, match="unknown dataset"):
        r.build(r.config("quick", {"dataset": "imagenet"}), data="/tmp")
    with pytest.raises(UserError, match="loss must be"):
        _, cfg = _tiny(loss="contrastive")
        r.build(cfg)
    assert r.config("paper").backbone == "bn_inception" and r.config("paper").embedding_dim == 64
    assert r.config("paper").batch_size == 32 and r.config("paper").optimizer == "rmsprop"
    assert r.config("paper").proxy_lr_mult > 1


def test_validation_classes_hold_out_the_last_training_classes():
    r, cfg = _tiny(validation_classes="2")
    task = r.build(cfg)
    full = r.build(_tiny()[1]).train_set  # the 4 training classes of the 8-class split
    # trained on training classes 0-1, evaluated on training classes 2-3 renumbered 0-1; no test class used
    assert task.module.loss.num_classes == num_classes_of(task.train_set) == 2
    assert sorted(set(task.train_set.targets.tolist())) == [0, 1]
    assert sorted(set(task.eval_set.targets.tolist())) == [0, 1]
    assert len(task.train_set) + len(task.eval_set) == len(full)
    for k in (0, len(task.eval_set) - 1):
        x, y = task.eval_set[k]
        base_i = int(task.eval_set.indices[k])
        assert torch.equal(x, full[base_i][0]) and int(full.targets[base_i]) == int(y) + 2
    with pytest.raises(UserError, match="validation_classes=3 leaves fewer than 2 of the 4"):
        r.build(_tiny(validation_classes="3")[1])


def test_frozen_backbone_trains_a_head_on_the_backbone_maps():
    from vislearn.models import create_model
    from vislearn.models.embedding import EmbeddingHead

    r, cfg = _tiny(frozen_backbone="true", feature_stage="2", head_width="12", backbone_seed="3",
                   samples_per_class="2", batch_size="4")
    task = r.build(cfg)
    head = task.module.model
    assert isinstance(head, EmbeddingHead) and head.stage.conv.out_channels == 12
    assert all(not n.startswith("model.backbone") for n, _ in task.module.named_parameters())
    # oracle: the same backbone drawn with seed 3, run on the images directly
    torch.manual_seed(3)
    backbone = create_model("small_convnet").eval()
    images = get_recipe("proxy_nca").build(_tiny()[1]).train_set
    x = torch.stack([images[i][0] for i in range(len(images))])
    with torch.no_grad():
        want = backbone.forward_features(x)[2]
    maps = task.train_set.base.images
    assert maps.shape == want.shape == (len(images), 64, 4, 4)  # stage 2 at 16 px: stride 4
    torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-5)
    assert r.build(cfg).train_set.base.images is maps  # cached: a second run reuses the maps
    trainer = Trainer(cfg, task, None, progress=False)
    res = trainer.fit()
    x, y = _embed_one_by_one(trainer, task)  # through the head on the cached maps
    assert res.final_metrics["recall@1"] == pytest.approx(_recall_by_hand(x, y, 1), abs=1e-6)
    with pytest.raises(UserError, match="feature_stage=7 is outside the 4 stages"):
        r.build(_tiny(frozen_backbone="true", feature_stage="7")[1])


def test_frozen_backbone_reads_backbone_weights(tmp_path):
    from vislearn.io import save_weights
    from vislearn.models import create_model

    torch.manual_seed(11)
    net = create_model("small_convnet")
    save_weights(net, tmp_path / "b.safetensors")
    r, cfg = _tiny(frozen_backbone="true", backbone_weights=str(tmp_path / "b.safetensors"), backbone_seed="0")
    maps = r.build(cfg).eval_set.images
    images = get_recipe("proxy_nca").build(_tiny()[1]).eval_set
    with torch.no_grad():
        want = net.eval().forward_features(torch.stack([images[i][0] for i in range(len(images))]))[-1]
    torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-5)


def test_recipe_on_a_cub_layout(tmp_path):
    from torchvision.io import write_png

    root = tmp_path / "CUB_200_2011"
    lines, labels = [], []
    for i, c in enumerate([1, 1, 2, 101, 101, 150], 1):
        rel = f"{c:03d}.B/{i}.png"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        write_png(torch.randint(0, 255, (3, 20, 24), dtype=torch.uint8), str(root / "images" / rel))
        lines.append(f"{i} {rel}")
        labels.append(f"{i} {c}")
    (root / "images.txt").write_text("\n".join(lines))
    (root / "image_class_labels.txt").write_text("\n".join(labels))
    r = get_recipe("proxy_nca")
    task = r.build(r.config("quick", {"dataset": "cub200", "image_size": "16", "embedding_dim": "8"}), str(tmp_path))
    x, y = task.train_set[0]
    assert x.shape == (3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert task.module.loss.num_classes == 2 and len(task.eval_set) == 3
    assert task.module.model(x[None]).shape == (1, 8)
