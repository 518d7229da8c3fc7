"""MSC-MultiBox model, proposals, post-classifier, weights round trip and the propose command."""


import pytest
import torch
from torchvision.ops import nms

from vislearn.detection import (
    BoxCoder,
    decode_boxes,
    grid_priors,
    select_proposals,
    shaped_window_proposals,
    sliding_window_proposals,
)
from vislearn.errors import UserError
from vislearn.io import save_weights
from vislearn.models import create_model, create_model_from_weights
from vislearn.models.multibox import ProposalClassifier

SMALL = dict(backbone="multibox_tiny", head_width=16, context_width=8, backbone_kwargs={"widths": [8, 8, 8, 8, 8]})


def test_model_shapes_prior_order_and_stage_assignment():
    m = create_model("msc_multibox", num_priors=1420, **SMALL)
    assert m.num_priors == 1420 and m.priors.shape == (1420, 4)
    assert m.grid_stage == [2, 2, 3, 3, 4, 4]  # 128 px: grids 8, 6 from stride 8; 4, 3 from 16; 2, 1 from 32
    x = torch.rand(2, 3, 128, 128)
    out = m(x)
    assert out["loc"].shape == (2, 1420, 4) and out["logits"].shape == (2, 1420)
    # initial objectness ≈ π = 0.01
    assert abs(float(out["logits"].detach().sigmoid().mean()) - 0.01) < 0.005
    # the heads' output order is the priors' order: perturb one output channel of the 2×2 grid
    head = m.heads[4][-1]
    with torch.no_grad():
        head.bias.view(-1, 5)[3, 4] += 50.0  # ratio 3 of every cell of grid 2
    logits = m(x)["logits"]
    start = 11 * (64 + 36 + 16 + 9)
    hot = (logits[0] > 10).nonzero().flatten().tolist()
    assert hot == [start + cell * 11 + 3 for cell in range(4)]
    with pytest.raises(UserError, match="num_priors"):
        create_model("msc_multibox", num_priors=1000, **SMALL)
    with pytest.raises(UserError, match="range|values"):
        m(torch.rand(1, 3, 64, 64) * 3)


def test_priors_and_coder_saved_with_weights(tmp_path):
    m = create_model("msc_multibox", **SMALL)
    priors = grid_priors(aspect_ratios=[0.3 + 0.2 * i for i in range(11)])
    m.set_priors(priors)
    m.set_coder(torch.tensor([0.01, 0.02, -0.01, 0.0]), torch.tensor([0.1, 0.1, 0.2, 0.2]))
    path = tmp_path / "mb.safetensors"
    save_weights(m, path)
    m2 = create_model_from_weights(path)
    assert torch.equal(m2.priors, priors) and torch.allclose(m2.coder_std, torch.tensor([0.1, 0.1, 0.2, 0.2]))
    x = torch.rand(1, 3, 96, 96)
    m.eval(), m2.eval()
    torch.testing.assert_close(m(x)["loc"], m2(x)["loc"])
    with pytest.raises(UserError, match="priors must be"):
        m.set_priors(torch.zeros(3, 4))


def test_select_proposals_equals_per_image_nms_topk():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(3, 200, 2, generator=g) * 80
    boxes = torch.cat([xy, xy + torch.rand(3, 200, 2, generator=g) * 40 + 1], -1)
    scores = torch.rand(3, 200, generator=g)
    b, s, i = select_proposals(boxes, scores, top_k=20, nms_iou=0.5)
    for n in range(3):
        keep = nms(boxes[n], scores[n], 0.5)[:20]
        assert torch.equal(i[n], keep) and torch.equal(b[n], boxes[n][keep])
        assert (s[n][:-1] >= s[n][1:]).all()
    b, s, i = select_proposals(boxes, scores, top_k=5, nms_iou=None, pre_nms_top_k=50)
    assert torch.equal(i[0], scores[0].topk(5).indices)


def test_decode_is_pixel_scaled_and_clipped():
    priors = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.8, 0.8, 1.0, 1.0]])
    loc = torch.tensor([[[0.0, 0, 0, 0], [0, 0, 1, 1]]])
    out = decode_boxes(loc, priors, BoxCoder(std=(0.1, 0.1, 0.1, 0.1)), (100, 200))
    torch.testing.assert_close(out[0], torch.tensor([[20.0, 10, 100, 50], [160, 80, 200, 100]]))


def test_sliding_windows_count_and_inside():
    for n in (1, 10, 37, 100):
        w = sliding_window_proposals(n, (96, 128))
        assert w.shape == (n, 4)
        assert (w[:, 0] >= -1e-4).all() and (w[:, 2] <= 128 + 1e-4).all() and (w[:, 3] <= 96 + 1e-4).all()


def test_shaped_windows_by_hand():
    # two shapes (w, h) = (0.5, 0.25) and (0.1, 0.1) of a 100×200 (h×w) image, 3 windows: the larger
    # shape first gets 2 (a 2-column grid), the smaller 1 (centred)
    w = shaped_window_proposals(3, (100, 200), torch.tensor([[0.1, 0.1], [0.5, 0.25]]))
    expected = torch.tensor([[0.0, 37.5, 100.0, 62.5], [100.0, 37.5, 200.0, 62.5], [90.0, 45.0, 110.0, 55.0]])
    torch.testing.assert_close(w, expected)
    sizes = (w[:, 2:] - w[:, :2])
    torch.testing.assert_close(sizes, torch.tensor([[100.0, 25.0], [100.0, 25.0], [20.0, 10.0]]))
    with pytest.raises(UserError):
        shaped_window_proposals(3, (100, 200), torch.zeros(0, 2))
    with pytest.raises(UserError):
        shaped_window_proposals(0, (100, 200), torch.ones(1, 2))


@pytest.mark.parametrize("mode", ["roi", "crop"])
def test_post_classifier_detections(mode):
    m = create_model("msc_multibox", **SMALL).eval()
    kw = {"classifier": create_model("multibox_tiny", num_classes=4, widths=[8, 8, 8, 8, 8])} if mode == "crop" else {}
    pc = ProposalClassifier(m, num_classes=3, mode=mode, **kw).eval()
    x = torch.rand(2, 3, 96, 96)
    dets = pc.detect(x, top_k=10, max_dets=7)
    assert len(dets) == 2
    for d in dets:
        assert d["boxes"].shape[1] == 4 and len(d["boxes"]) <= 7 and (d["labels"] < 3).all()
        assert (d["scores"][:-1] >= d["scores"][1:]).all() if len(d["scores"]) > 1 else True
    logits = pc(x, [torch.tensor([[0.0, 0, 20, 20]]), torch.zeros(0, 4)])
    assert logits.shape == (1, 4)
    assert not any(p.requires_grad for p in pc.proposal_model.parameters())


def test_training_module_drops_degenerate_and_handles_empty_images():
    from vislearn.losses import MultiBoxLoss
    from vislearn.recipes.multibox import MultiBoxModule

    m = create_model("msc_multibox", image_size=64, **SMALL)
    mod = MultiBoxModule(m, MultiBoxLoss())
    x = torch.rand(3, 3, 64, 64)
    targets = [{"boxes": torch.tensor([[5.0, 5, 30, 40], [10, 10, 10, 20], [70, 70, 90, 90], [-10, 50, 20, 80]])},
               {"boxes": torch.zeros(0, 4)}, {"boxes": torch.tensor([[0.0, 0, 64, 64]])}]
    out = mod((x, targets))
    # kept: the first box, the clipped fourth one and the whole-image box; dropped: zero width, outside
    assert float(out["matched"]) == 3 and torch.isfinite(out["loss"])
    out["loss"].backward()


def test_crowd_regions_are_left_out_of_training_targets():
    from vislearn.losses import MultiBoxLoss
    from vislearn.recipes.multibox import MultiBoxModule, PostClassifierModule

    torch.manual_seed(0)
    m = create_model("msc_multibox", image_size=64, **SMALL).eval()
    mod = MultiBoxModule(m, MultiBoxLoss())
    x = torch.rand(2, 3, 64, 64)
    regular = [torch.tensor([[5.0, 5, 30, 40]]), torch.tensor([[10.0, 12, 50, 60], [0, 0, 20, 20]])]
    crowd_box = torch.tensor([[0.0, 0, 64, 40]])
    plain = [{"boxes": b, "labels": torch.zeros(len(b), dtype=torch.long)} for b in regular]
    flagged = [{**t, "iscrowd": torch.zeros(len(t["boxes"]), dtype=torch.bool)} for t in plain]
    with_crowd = [{"boxes": torch.cat([crowd_box, regular[0]]), "labels": torch.zeros(2, dtype=torch.long),
                   "iscrowd": torch.tensor([True, False])}, flagged[1]]
    with torch.no_grad():
        ref = mod((x, plain))
        for targets in (flagged, with_crowd):  # no crowd: as before; a crowd region: as if absent
            out = mod((x, targets))
            assert float(out["matched"]) == 3 and torch.equal(out["loss"], ref["loss"])
        assert float(mod((x, [{"boxes": with_crowd[0]["boxes"]}, plain[1]]))["matched"]) == 4  # unflagged: a box
    clf = ProposalClassifier(m, num_classes=2).eval()
    post = PostClassifierModule(clf, num_proposals=4)
    with torch.no_grad():
        assert torch.equal(post((x, with_crowd))["loss"], post((x, plain))["loss"])


def test_evaluate_proposals_ignores_proposals_on_crowds_and_resize_scales_areas():
    from torch.utils.data import DataLoader

    from vislearn.data.collate import detection_collate
    from vislearn.recipes.multibox import ResizedDetection, evaluate_proposals

    class FixedProposals(torch.nn.Module):  # a hit (IoU 0.9) and, scored higher, one on the crowd region
        priors = torch.zeros(1, 4)

        def propose(self, images, top_k, nms_iou):
            n = len(images)
            return [torch.tensor([[60.0, 60, 90, 90], [0, 0, 40, 36]])] * n, [torch.tensor([0.9, 0.5])] * n

    class Items(torch.utils.data.Dataset):  # 50×25 images: ×4 in x, ×2 in y when resized to 100×100
        def __init__(self, crowd):
            self.crowd = crowd

        def __len__(self):
            return 2

        def __getitem__(self, i):
            t = {"boxes": torch.tensor([[0.0, 0, 10, 20], [12.5, 25, 25, 50]]), "labels": torch.zeros(2).long(),
                 "area": torch.tensor([150.0, 300.0], dtype=torch.float64)}
            if self.crowd:
                t["iscrowd"] = torch.tensor([False, True])
            return torch.rand(3, 50, 25), t

    _, t = ResizedDetection(Items(True), 100)[0]
    assert t["boxes"].tolist() == [[0.0, 0, 40, 40], [50, 50, 100, 100]]
    assert t["area"].tolist() == [1200.0, 2400.0] and t["area"].dtype == torch.float64
    loaders = {c: DataLoader(ResizedDetection(Items(c), 100), batch_size=2, collate_fn=detection_collate)
               for c in (True, False)}
    out = {c: evaluate_proposals(FixedProposals(), loaders[c], top_k=2, num_proposals=(2,)) for c in (True, False)}
    # flagged: the proposal inside the region has crowd IoU 1 and is ignored; the region is not a box to find
    assert out[True] == {"recall@2": 1.0, "proposal_ap50": 1.0}
    # unflagged, the region is a box that the proposal misses (IoU 900/2500) and the proposal a false positive
    # ranked first: precision 1/2 up to recall 1/2
    assert out[False]["recall@2"] == 0.5 and out[False]["proposal_ap50"] == pytest.approx(0.5 * 51 / 101)
