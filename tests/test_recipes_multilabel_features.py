"""Fixed-feature multilabel training: the frozen random conv features, the validation split, early stopping."""

import pytest
import torch
import torch.nn.functional as F

from vislearn import recipes
from vislearn.data.embedded import TensorImageDataset
from vislearn.errors import UserError
from vislearn.metrics import topk_scores
from vislearn.recipes.multilabel_features import (
    FeatureHead,
    ValidationStopping,
    _random_conv_net,
    random_conv_features,
    split_validation,
)


def test_features_are_the_frozen_nets_pooled_map():
    x = torch.rand(5, 3, 16, 16)
    f = random_conv_features(x, width=4, seed=3, batch=2)
    assert f.shape == (5, 16 * 5)
    assert torch.equal(f, random_conv_features(x, width=4, seed=3, batch=2))  # deterministic from the seed
    torch.testing.assert_close(f, random_conv_features(x, width=4, seed=3))  # batching changes nothing
    assert not torch.allclose(f, random_conv_features(x, width=4, seed=4))
    net = _random_conv_net(4, 3)
    conv = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    h = (x - 0.5) / 0.25
    h = F.max_pool2d(F.relu(F.conv2d(h, conv[0].weight, conv[0].bias, padding=1)), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, conv[1].weight, conv[1].bias, padding=1)), 2)
    h = F.relu(F.conv2d(h, conv[2].weight, conv[2].bias, padding=1))  # 16 channels on a 4x4 grid
    quadrants = torch.stack([h[:, :, :2, :2], h[:, :, :2, 2:], h[:, :, 2:, :2], h[:, :, 2:, 2:]], -1)
    expected = torch.cat([quadrants.amax((2, 3)).flatten(1), h.mean((2, 3))], 1)
    torch.testing.assert_close(f, expected)
    assert conv[1].weight.std().item() == pytest.approx((2 / (4 * 9)) ** 0.5, rel=0.25)  # He-normal


def test_split_validation_is_a_fixed_partition():
    ds = TensorImageDataset(torch.arange(20.0)[:, None], torch.arange(20)[:, None], classes=["a"])
    tr, va = split_validation(ds, 0.25, seed=1)
    assert len(tr) == 15 and len(va) == 5 and tr.classes == va.classes == ["a"]
    assert sorted(tr.images[:, 0].tolist() + va.images[:, 0].tolist()) == list(range(20))
    assert torch.equal(tr.images[:, 0].long(), tr.targets[:, 0])  # rows stay paired with their targets
    assert torch.equal(split_validation(ds, 0.25, seed=1)[1].images, va.images)
    with pytest.raises(UserError, match="val_fraction"):
        split_validation(ds, 1.0, seed=0)
    with pytest.raises(UserError, match="empty"):
        split_validation(ds, 0.01, seed=0)


class _Scripted(ValidationStopping):
    """Validation scores from a script, so the best step and the stop are known by hand."""

    def __init__(self, scores, **kw):
        head = FeatureHead(2, 3)
        val = TensorImageDataset(torch.zeros(1, 2), torch.zeros(1, 3))
        super().__init__(head, val, k=1, **kw)
        self.scores = list(scores)

    def _score(self):
        return {"per_class_recall": self.scores.pop(0)}


def test_stopping_keeps_the_best_weights_and_stops_after_patience():
    hook = _Scripted([0.1, 0.3, 0.2, 0.3, 0.25], val_every=10, steps=100, patience=3)
    seen = {}
    for step in range(1, 51):
        with torch.no_grad():
            hook.model.fc.weight.fill_(step)  # "training" moves the weights every step
        hook.after_optimizer_step(hook.model, step)
        if step % 10 == 0:
            seen[step] = hook.since_best
        if hook.should_stop(step, {}):
            break
    assert step == 50 and hook.best_step == 20 and hook.best == 0.3  # a tie (step 40) is not an improvement
    assert seen == {10: 0, 20: 0, 30: 1, 40: 2, 50: 3}
    assert torch.all(hook.model.fc.weight == 20)  # the step-20 weights are back
    assert [h["step"] for h in hook.history] == [10, 20, 30, 40, 50]


def test_stopping_restores_the_best_at_the_last_step_too():
    hook = _Scripted([0.5, 0.1], val_every=3, steps=5, patience=9)
    for step in range(1, 6):
        with torch.no_grad():
            hook.model.fc.weight.fill_(step)
        hook.after_optimizer_step(hook.model, step)
    assert hook.best_step == 3 and torch.all(hook.model.fc.weight == 3)
    with pytest.raises(UserError, match="patience"):
        ValidationStopping(hook.model, hook.val, 1, val_every=5, steps=10, patience=0)


def test_features_preset_trains_a_head_and_early_stops_on_validation(tmp_path):
    over = {"num_samples": 200, "test_samples": 60, "num_labels": 12, "feature_width": 4, "steps": 400,
            "val_every": 5, "patience": 2, "lr": 0.05, "batch_size": 32}
    res = recipes.run("multilabel", "features", over, progress=False)
    task = res.task
    hook = next(h for h in task.hooks if isinstance(h, ValidationStopping))
    assert isinstance(task.model, FeatureHead) and task.model.fc.in_features == 4 * 4 * 5
    assert len(task.train_set) == 160 and len(hook.val) == 40 and len(task.eval_set) == 60
    assert res.stopped_early and res.step == hook.best_step + 2 * 5
    with torch.no_grad():  # the head left in the model is the best validation one
        val = topk_scores(task.model(hook.val.images), hook.val.targets, k=3)
        test = topk_scores(task.model(task.eval_set.images), task.eval_set.targets, k=3)
    assert float(val["per_class_recall"]) == pytest.approx(hook.best)
    assert res.final_metrics["per_class_recall"] == pytest.approx(float(test["per_class_recall"]))
    for name in ("train.csv", "val.csv"):
        (tmp_path / name).write_text("path,labels\n")
    with pytest.raises(UserError, match="val_fraction needs"):
        recipes.build("multilabel", "quick", {"val_fraction": 0.2}, data=str(tmp_path))
