"""The multibox recipe, the `vislearn propose` command and the reproduction, end to end at tiny scale."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vislearn.cli import main
from vislearn.io import save_weights
from vislearn.models import create_model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    m = create_model("msc_multibox", backbone="multibox_tiny", image_size=64, head_width=16, context_width=8,
                     backbone_kwargs={"widths": [8, 8, 8, 8, 8]})
    path = tmp_path_factory.mktemp("w") / "mb.safetensors"
    save_weights(m, path)
    return path


def test_propose_command_json_and_draw(weights, tmp_path, capsys):
    img = tmp_path / "img.png"
    Image.new("RGB", (80, 60), (10, 200, 30)).save(img)
    out = tmp_path / "boxes.png"
    assert main(["propose", "--weights", str(weights), str(img), "--top", "7", "--json", "--draw", str(out)]) == 0
    text = capsys.readouterr().out
    data = json.loads(text.splitlines()[0])
    props = data["proposals"]
    assert len(props) == 7 and data["size"] == [60, 80]
    assert all(0 <= p["box"][0] <= p["box"][2] <= 80 and 0 <= p["box"][1] <= p["box"][3] <= 60 for p in props)
    assert [p["score"] for p in props] == sorted((p["score"] for p in props), reverse=True)
    assert Image.open(out).size == (80, 60)


def test_propose_command_errors(weights, tmp_path, capsys):
    assert main(["propose", "--weights", str(tmp_path / "none.safetensors"), "x.png"]) == 2
    other = tmp_path / "other.safetensors"
    save_weights(create_model("multibox_tiny", widths=[4, 4, 4, 4, 4]), other)
    img = tmp_path / "img.png"
    Image.new("RGB", (40, 40)).save(img)
    assert main(["propose", "--weights", str(other), str(img)]) == 2
    assert "not msc_multibox" in capsys.readouterr().err
    assert main(["propose", "--weights", str(weights), str(tmp_path / "missing.png")]) == 2
    assert main(["propose", "--weights", str(weights), str(img), "--top", "0"]) == 2


def test_recipe_builds_fits_priors_and_trains(tmp_path):
    from vislearn.recipes import get_recipe
    from vislearn.train import Trainer

    r = get_recipe("multibox")
    cfg = r.config("quick", {"steps": 2, "batch_size": 8, "num_train_images": 16, "num_eval_images": 8,
                             "image_size": 64, "head_width": 16, "context_width": 8, "log_every": 1})
    task = r.build(cfg)
    model = task.module.model
    assert model.priors.shape == (1420, 4)
    # the coder statistics, by hand: each training image's boxes (normalised by the image size) assigned
    # one-to-one to the priors at the least total squared corner distance (scipy's Hungarian solver, the
    # MultiBox matching without confidences); then the mean and the population std (ddof 0) of box − prior
    from scipy.optimize import linear_sum_assignment

    priors = model.priors.double().numpy()
    offsets = []
    for i in range(len(task.train_set)):
        image, target = task.train_set[i]
        h, w = image.shape[-2:]
        g = (target["boxes"].double() / torch.tensor([w, h, w, h], dtype=torch.float64)).numpy()
        rows, cols = linear_sum_assignment(((g[:, None, :] - priors[None, :, :]) ** 2).sum(-1))
        offsets.append(g[rows] - priors[cols])
    offsets = np.concatenate(offsets)
    assert len(offsets) > 50
    np.testing.assert_allclose(model.coder_mean.numpy(), offsets.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(model.coder_std.numpy(), offsets.std(0, ddof=0), rtol=1e-5)
    res = Trainer(cfg, task, out_dir=tmp_path / "run", progress=False).fit()
    assert {"recall@10", "recall@100", "proposal_ap50"} <= set(res.final_metrics)
    assert res.history[0]["loss"] > 0
    # the exported weights carry the fitted priors
    from vislearn.models import create_model_from_weights

    m2 = create_model_from_weights(tmp_path / "run" / "model.safetensors")
    assert torch.equal(m2.priors, model.priors)
    paper = r.config("paper")
    assert paper.alpha == 0.3 and paper.grids == (8, 6, 4, 3, 2, 1) and paper.backbone == "inception_v3"


def test_reproduction_runs_at_tiny_scale(tmp_path):
    from vislearn.reproduce import run_reproduction

    rec = run_reproduction("multibox", tmp_path, scale=0.01, seeds=(0,), log=lambda m: None)
    nums = rec["numbers"]
    assert set(nums["learned"]) == {"1", "2", "5", "10", "20", "50", "100"}
    assert (tmp_path / "multibox.png").exists()
    # sliding-window recall by hand: the reproduction's held-out scenes rebuilt from its recipe settings at
    # scale 0.01, seed 0; each ground-truth box is taken by the first window (in the windows' order, which
    # is their score order) that overlaps it at IoU >= 0.5 most among the boxes still free (COCOeval's rule)
    from torchvision.ops import box_iou

    from vislearn.detection.proposals import sliding_window_proposals
    from vislearn.recipes import get_recipe

    r = get_recipe("multibox")
    cfg = r.config("quick", {"steps": 3, "seed": 0, "data_seed": 0, "num_train_images": 32,
                             "num_eval_images": 10, "eval_top_k": 100})
    eval_set = r.build(cfg).eval_set
    gts = [eval_set[i][1]["boxes"].reshape(-1, 4).float() for i in range(len(eval_set))]
    assert (nums["eval_images"], nums["eval_boxes"]) == (10, sum(len(g) for g in gts))
    for n in (10, 100):
        windows = sliding_window_proposals(n, (cfg.image_size, cfg.image_size))
        found = 0
        for g in gts:
            iou, free = box_iou(windows, g), torch.ones(len(g), dtype=torch.bool)
            for row in iou:
                cand = torch.where(free & (row >= 0.5), row, torch.tensor(-1.0))
                if cand.max() >= 0.5:
                    free[cand.argmax()] = False
            found += int((~free).sum())
        assert nums["sliding"][str(n)] == pytest.approx(found / nums["eval_boxes"], abs=1e-6), n  # stored to 7 digits


def test_draw_to_a_path_without_extension_writes_and_names_a_png(weights, tmp_path, capsys):
    img = tmp_path / "img.png"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(img)
    assert main(["propose", "--weights", str(weights), str(img), "--top", "3", "--draw", str(tmp_path / "boxes")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(f"-> {tmp_path / 'boxes.png'}")
    assert Image.open(tmp_path / "boxes.png").size == (50, 40)
    assert main(["propose", "--weights", str(weights), str(img), "--draw", str(tmp_path / "no" / "b.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_propose_command_boxes_are_model_propose_mapped_back_by_the_scale_factors(weights, tmp_path, capsys):
    import torch.nn.functional as F

    from vislearn.data.formats import load_image
    from vislearn.models import create_model_from_weights

    g = torch.Generator().manual_seed(0)
    pixels = (torch.rand(60, 80, 3, generator=g) * 255).to(torch.uint8).numpy()
    img = tmp_path / "noise.png"
    Image.fromarray(pixels).save(img)
    assert main(["propose", "--weights", str(weights), str(img), "--top", "5", "--nms", "0.5", "--json"]) == 0
    got = torch.tensor([p["box"] for p in json.loads(capsys.readouterr().out.splitlines()[0])["proposals"]])
    # the oracle: the model's own proposals on the 64×64 resized image, x scaled by 80/64 and y by 60/64
    model = create_model_from_weights(weights).eval()
    x = F.interpolate(load_image(img)[None], size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        boxes, _ = model.propose(x.clamp(0, 1), top_k=5, nms_iou=0.5)
    expected = boxes[0] * torch.tensor([80 / 64, 60 / 64, 80 / 64, 60 / 64])
    assert got.shape == (5, 4)
    torch.testing.assert_close(got, expected, atol=0.006, rtol=0)  # the command rounds to 0.01 px
