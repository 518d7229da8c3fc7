"""Recipe ``multilabel``: each loss trains a few steps through the engine on every data source."""

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.errors import UserError
from vislearn.recipes import get_recipe
from vislearn.recipes.multilabel import MultilabelModule, build_multilabel_loss, evaluate_multilabel
from vislearn.train import Trainer

TINY = ["steps=2", "batch_size=8", "num_samples=24", "num_labels=6", "log_every=1", "image_size=16"]

METRICS = {"per_class_precision", "per_class_recall", "overall_precision", "overall_recall", "n_plus",
           "mean_average_precision", "num_labels_evaluated"}


@pytest.mark.parametrize("loss", ["softmax", "pairwise", "warp"])
def test_quick_recipe_trains_each_loss(loss):
    r = get_recipe("multilabel")
    cfg = r.config("quick", TINY + [f"loss={loss}"])
    task = r.build(cfg)
    assert task.module.model.label_names == list(task.train_set.classes)
    res = Trainer(cfg, task, None, progress=False).fit()
    assert set(res.final_metrics) == METRICS
    assert res.final_metrics["num_labels_evaluated"] <= 6
    train = [h for h in res.history if h["split"] == "train"]
    assert len(train) == 2 and all(np.isfinite(h["loss"]) for h in train)


def test_evaluate_matches_topk_scores_on_model_outputs():
    from torch.utils.data import DataLoader

    from vislearn.metrics import topk_scores

    r = get_recipe("multilabel")
    cfg = r.config("quick", TINY)
    task = r.build(cfg)
    module = task.module.eval()
    loader = DataLoader(task.eval_set, batch_size=5)
    with torch.no_grad():
        ours = evaluate_multilabel(module.model, loader, k=2)
        scores = module.model(task.eval_set.images)
    assert ours == topk_scores(scores, task.eval_set.targets, k=2)


def test_presets_and_bad_settings():
    r = get_recipe("multilabel")
    paper = r.config("paper")
    assert (paper.model, paper.loss, paper.margin, paper.k, paper.width) == ("multilabel_net", "warp", 1.0, 3, 1.0)
    with pytest.raises(UserError, match="needs --data"):
        r.build(paper)
    with pytest.raises(UserError, match="unknown loss"):
        r.build(r.config("quick", TINY + ["loss=hinge"]))
    with pytest.raises(UserError, match="k must be"):
        r.build(r.config("quick", TINY + ["k=7"]))
    with pytest.raises(UserError):
        build_multilabel_loss("logistic", 5)
    with pytest.raises(UserError, match="neither"):
        r.build(r.config("quick", TINY), data=str(__import__("pathlib").Path(__file__).parent))


def test_module_logs_skipped_rows_and_violations():
    model = torch.nn.Linear(5, 5)  # the identity: the input rows are the scores
    with torch.no_grad():
        model.weight.copy_(torch.eye(5)), model.bias.zero_()
    module = MultilabelModule(model, build_multilabel_loss("warp", 5))
    y = torch.tensor([[1.0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [1, 1, 0, 1, 0], [0, 1, 1, 0, 0], [0, 0, 1, 0, 1]])
    s = torch.tensor([[3.0, 0.5, 1.2, -1, 0], [0, 0, 0, 0, 0], [2.5, 0.3, 0.2, 1.1, -0.4],
                      [0.1, 2.0, 0.7, -0.3, 0.4], [1.6, -2, 0.4, 0.3, 3.1]])
    out = module((s, y))
    assert float(out["skipped_rows"]) == 1.0
    # by hand: the (row, positive) pairs of the valid rows, and those with a negative inside the margin 1
    pairs = [(i, j) for i in range(5) for j in range(5) if y[i, j] and 0 < y[i].sum() < 5]
    violated = [(i, j) for i, j in pairs if any(1 - s[i, j] + s[i, k] > 0 for k in range(5) if not y[i, k])]
    assert len(pairs) == 8 and 0 < len(violated) < len(pairs)
    assert float(out["violated_frac"]) == pytest.approx(len(violated) / len(pairs))


def _png(path, rng, size=20):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size, size + 3, 3), dtype=np.uint8)).save(path)


def test_csv_folder_data(tmp_path):
    rng = np.random.default_rng(0)
    labels = ["cat|dog", "dog", "sky|cat", "sky", "cat", "dog|sky", "cat", "sky"]
    for split in ("train", "val"):
        lines = ["path,labels"]
        for i, lab in enumerate(labels):
            _png(tmp_path / split / f"{i}.png", rng)
            lines.append(f"{split}/{i}.png,{lab}")
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    r = get_recipe("multilabel")
    cfg = r.config("quick", ["steps=2", "batch_size=4", "image_size=16", "k=1", "log_every=0"])
    task = r.build(cfg, data=str(tmp_path))
    assert task.train_set.classes == ["cat", "dog", "sky"] == task.module.model.label_names
    x, y = task.train_set[0]
    assert x.shape == (3, 16, 16) and y.tolist() == [1, 1, 0]
    res = Trainer(cfg, task, None, progress=False).fit()
    assert set(res.final_metrics) == METRICS


def test_nuswide_folder_data(tmp_path):
    from test_data_nuswide import make_layout

    make_layout(tmp_path)
    r = get_recipe("multilabel")
    cfg = r.config("quick", ["steps=1", "batch_size=2", "image_size=16", "k=2", "loss=pairwise", "log_every=0"])
    task = r.build(cfg, data=str(tmp_path))
    assert task.module.model.label_names == ["animal", "sky", "water"]
    res = Trainer(cfg, task, None, progress=False).fit()
    assert res.final_metrics["num_labels_evaluated"] == 2  # the fake test split has "animal" and "water"


def test_reproduction_runs_at_tiny_scale(tmp_path):
    import json

    from vislearn.reproduce import run_reproduction

    record = run_reproduction("multilabel", tmp_path, scale=0.01, seeds=(0,), log=lambda m: None)
    assert (tmp_path / "multilabel.json").exists() and (tmp_path / "multilabel.png").exists()
    saved = json.loads((tmp_path / "multilabel.json").read_text())
    assert saved["passed"] == record["passed"]
    numbers = saved["numbers"]
    assert set(numbers["table"]) == {"softmax", "pairwise", "warp", "warp_sampled_pair"}
    assert numbers["budget"] == {"steps": 40, "val_every": 2, "num_samples": 300, "test_samples": 150}
    assert len(numbers["label_frequency_train"]) == 81
    for arm in numbers["table"].values():  # every arm converged (early-stopped) or ran the whole budget
        assert 2 <= arm["best_step"]["mean"] <= arm["stop_step"]["mean"] <= 40
