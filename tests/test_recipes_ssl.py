"""The SSL training module of the ``dino``/``msn`` recipes: the teacher's once-per-optimizer-step update and
its momentum schedule, accumulation equal to a large batch, backbone-only export, and bad settings."""

import math

import pytest
import torch
from safetensors import safe_open

from vislearn import recipes
from vislearn.cli import main
from vislearn.models import create_model_from_weights
from vislearn.recipes.ssl import backbone_features
from vislearn.train import schedules

# a tiny ViT, small heads and two views of 16 px images: a step is a few milliseconds
TINY = {"vit_dim": 24, "vit_depth": 1, "vit_heads": 3, "codes": 16, "head_hidden": 16, "head_dim": 8,
        "num_local": 1, "global_size": 16, "local_size": 8, "image_size": 16, "samples_per_class": 4,
        "num_classes": 4, "batch_size": 8, "log_every": 1, "eval_every": 0, "warmup_steps": 0, "knn_k": 3,
        "num_workers": 0, "dataset": "shapes"}


def _run(name="dino", **over):
    return recipes.run(name, "quick", {**TINY, **over}, progress=False)


def test_teacher_update_count_and_momentum_schedule():
    steps = 3
    seen = []
    r = recipes.run("dino", "quick", {**TINY, "steps": steps, "heads": 2}, progress=False,
                    callbacks=[lambda trainer, step: seen.append(
                        {k: v.detach().clone() for k, v in trainer.module.teacher.module.state_dict().items()})])
    module = r.task.module
    assert int(module.teacher.n_averaged) == steps and int(module.steps_done) == steps
    # DINO's schedule: m_i = 1 - (1 - 0.996)(cos(π i / T) + 1) / 2 at the i-th update (i from 0)
    expected = [1 - (1 - 0.996) * (math.cos(math.pi * i / steps) + 1) / 2 for i in range(steps)]
    assert [module.teacher.decay_at(i) for i in range(steps)] == pytest.approx(expected, rel=1e-12)
    assert expected[0] == pytest.approx(0.996)
    logged = [h["momentum"] for h in r.history if h["split"] == "train"]
    assert logged == pytest.approx(expected, rel=1e-6)  # the momentum of the update after each step
    # the last update is teacher_3 = m_2 teacher_2 + (1 - m_2) student_3 (the hooks run in order: ours first)
    student = module.student.state_dict()
    for k, t3 in module.teacher.module.state_dict().items():
        if t3.is_floating_point():
            torch.testing.assert_close(t3, expected[2] * seen[1][k] + (1 - expected[2]) * student[k],
                                       rtol=1e-5, atol=1e-7)
    assert not torch.equal(module.teacher.module.heads.codebook, module.student.heads.codebook)


def test_gradient_accumulation_equals_the_large_batch():
    # centering (not Sinkhorn: it normalises each micro-batch) and the center updated once per optimizer step
    over = {"steps": 3, "heads": 2, "normalization": "center", "optimizer": "sgd", "lr": 0.5, "clip_grad": 0.0}
    one, four = _run(**over), _run(**over, grad_accum_steps=4)
    l1 = [h["loss"] for h in one.history if h["split"] == "train"]
    l4 = [h["loss"] for h in four.history if h["split"] == "train"]
    assert len(l1) == len(l4) == 3 and l1[0] != l1[-1]
    assert l4 == pytest.approx(l1, rel=1e-5)
    m1, m4 = one.task.module, four.task.module
    assert int(m4.teacher.n_averaged) == 3  # once per optimizer step, not per micro-batch (12)
    assert m1.loss.center.abs().sum() > 0
    s1, s4 = m1.state_dict(), m4.state_dict()
    for k in s1:
        torch.testing.assert_close(s4[k], s1[k], rtol=1e-4, atol=1e-6, msg=k)


def test_export_is_the_teacher_backbone_only(tmp_path):
    r = recipes.run("dino", "quick", {**TINY, "steps": 2, "heads": 4}, out=tmp_path / "run", progress=False)
    path = tmp_path / "run" / "model.safetensors"
    with safe_open(str(path), "pt") as f:
        exported = sum(f.get_tensor(k).numel() for k in f.keys())
    module = r.task.module
    backbone = module.teacher.module.backbone
    assert exported == sum(p.numel() for p in backbone.parameters())
    assert exported < sum(p.numel() for p in module.student.parameters())  # the 4 heads are not exported
    # the file rebuilds the backbone by name, with the teacher's weights
    model = create_model_from_weights(path).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model(x), backbone_features(backbone.eval(), x))
    assert set(r.final_metrics) == {"knn_top1"}
    # DINO's weighted k-NN by hand on the exported backbone, one held-out image at a time: cosine similarity
    # to every bank image, the k = 3 most similar vote exp(similarity / 0.07) for their class
    feats, labels, query = [], [], []
    with torch.no_grad():
        for image, label, flag in r.task.eval_set:
            feats.append(torch.nn.functional.normalize(model(image[None]).double(), dim=1)[0])
            labels.append(int(label)), query.append(bool(flag))
    feats, labels, query = torch.stack(feats), torch.tensor(labels), torch.tensor(query)
    bank, bank_y = feats[~query], labels[~query]
    correct = 0
    for q, label in zip(feats[query], labels[query], strict=True):
        sim = bank @ q
        top = sim.topk(TINY["knn_k"]).indices
        votes = {}
        for i in top.tolist():
            votes[int(bank_y[i])] = votes.get(int(bank_y[i]), 0.0) + math.exp(float(sim[i]) / 0.07)
        correct += max(votes, key=votes.get) == int(label)
    assert query.sum() > 0 and (~query).sum() >= TINY["knn_k"]
    assert r.final_metrics["knn_top1"] == pytest.approx(correct / int(query.sum()), abs=1e-9)


def test_student_groups_views_like_one_forward_per_view():
    cfg, task = recipes.build("dino", "quick", {**TINY, "heads": 3, "num_local": 2})
    views, _ = task.collate_fn([task.train_set[i] for i in range(4)])
    student = task.module.student.eval()
    with torch.no_grad():
        grouped = student(views)
        for v, g in zip(views, grouped, strict=True):
            torch.testing.assert_close(g, student.heads(backbone_features(student.backbone, v)), rtol=1e-5,
                                       atol=1e-6)
    assert [tuple(g.shape) for g in grouped] == [(4, 3, 16)] * 4


def test_schedules_follow_the_fractional_epoch():
    # 16 images / batch 8 = 2 steps per epoch; DINO's linspace convention: the final value at epoch ramp - 1 = 3
    r = _run(steps=6, heads=2, warmup_teacher_temp_epochs=4, gamma_epochs=4)
    rows = [h for h in r.history if h["split"] == "train"]
    t = [min(i / 2 / 3, 1.0) for i in range(6)]  # ramp progress at the epoch of each step
    assert [h["teacher_temp"] for h in rows] == pytest.approx([0.05 + (0.025 - 0.05) * f for f in t], rel=1e-6)
    log_c = math.log(16)  # γ in log c units: 0.5 -> 0.05
    assert [h["gamma"] for h in rows] == pytest.approx([log_c * (0.5 + (0.05 - 0.5) * f) for f in t], rel=1e-6)
    assert r.task.module.clock.epoch == 3  # 6 steps done: the next views are drawn for epoch 3


def test_msn_trains_with_masked_student_views():
    r = _run("msn", steps=2, heads=2, mask_ratio=0.5)
    losses = [h["loss"] for h in r.history if h["split"] == "train"]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    masks = r.task.module._masks([torch.zeros(8, 3, 16, 16)] * 2 + [torch.zeros(8, 3, 8, 8)])
    assert [m.sum(1).tolist() if m is not None else None for m in masks] == [[8] * 8, [8] * 8, None]


def test_a_registered_convnet_backbone_trains():
    r = _run(steps=2, backbone="small_convnet")
    backbone = r.task.module.student.backbone
    assert type(backbone).__name__ == "SmallConvNet" and isinstance(backbone.classifier, torch.nn.Identity)
    assert r.task.module.student.heads.in_dim == backbone.feature_info[-1].channels
    assert all(math.isfinite(h["loss"]) for h in r.history if h["split"] == "train")


def test_digits_dataset_is_the_embedded_split_upscaled_to_rgb():
    from vislearn.data.embedded import digits

    _, task = recipes.build("dino", "quick", {**TINY, "dataset": "digits", "backbone": "small_convnet"})
    want_train, want_test = digits("train", size=16, channels=3), digits("test", size=16, channels=3)
    views = task.train_set[0][0]
    assert len(task.train_set) == len(want_train) == 1347 and len(views) == 2 + TINY["num_local"]
    assert [tuple(v.shape) for v in views] == [(3, 16, 16)] * 2 + [(3, 8, 8)]
    image, label, flag = task.eval_set[len(want_train)]  # the first held-out image, after the k-NN bank
    assert torch.equal(image, want_test.images[0]) and label == int(want_test.targets[0]) and flag == 1


def test_weight_decay_skips_biases_and_norms():
    cfg, task = recipes.build("dino", "quick", TINY)
    decayed, plain = task.param_groups
    assert "weight_decay" not in decayed and plain["weight_decay"] == 0.0
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() <= 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(task.module.student.parameters()))
    assert schedules.cosine(0, 10, 0.996, 1.0) == pytest.approx(0.996)


@pytest.mark.parametrize("recipe, setting, message", [
    ("dino", "heads=0", "heads must be an int >= 1, got 0"),
    ("dino", "scheme=entropy", "unknown ensemble scheme 'entropy'"),
    ("dino", "gamma=0", "gamma must be a finite number > 0"),
    ("dino", "teacher_temp=-0.1", "teacher_temp must be a finite number > 0"),
    ("dino", "student_temp=0", "student_temp must be a finite number > 0"),
    ("dino", "codes=1", "codes must be an int >= 2"),
    ("dino", "normalization=zca", "normalization must be 'center' or 'sinkhorn'"),
    ("dino", "momentum_start=1.5", "momentum_start <= momentum_end <= 1"),
    ("dino", "backbone=vit_tiny", "unknown model 'vit_tiny'"),
    ("msn", "mask_ratio=1", "mask_ratio must be in [0, 1)"),
    ("msn", "heads=-2", "heads must be an int >= 1, got -2"),
])
def test_bad_settings_are_one_line_and_exit_2(recipe, setting, message, capsys, tmp_path):
    code = main(["train", recipe, "--out", str(tmp_path / "o"), "--set", setting])
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_resumed_run_continues_views_schedules_and_teacher(tmp_path):
    """Killed after step 2 (its checkpoint is the newest) and resumed: the same weights as straight through.
    The step counter comes back with the module, so the views of epoch 1 (2 steps per epoch) and the
    temperature/γ/momentum schedules continue where they were."""
    import shutil

    over = {**TINY, "steps": 4, "heads": 2, "ckpt_every": 2, "keep_checkpoints": 3}
    straight = recipes.run("dino", "quick", over, out=tmp_path / "a", progress=False).task.module.state_dict()
    recipes.run("dino", "quick", over, out=tmp_path / "b", progress=False)
    shutil.rmtree(tmp_path / "b" / "checkpoints" / "step_00000004")
    resumed = recipes.run("dino", "quick", over, out=tmp_path / "b", resume=True, progress=False)
    module = resumed.task.module
    assert int(module.steps_done) == 4 and module.clock.epoch == 2 and int(module.teacher.n_averaged) == 4
    state = module.state_dict()
    for k in straight:
        torch.testing.assert_close(state[k], straight[k], rtol=1e-5, atol=1e-7, msg=k)
