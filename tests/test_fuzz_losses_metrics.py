"""Every public loss and metric fed bad tensors (issue 16, item 2).

For each name in ``vislearn.losses.__all__`` and ``vislearn.metrics.__all__`` that takes tensors, a
valid call is written out below; every tensor argument is then mutated in turn — a wrong rank, a wrong
trailing size, a wrong dtype, NaN, inf, an empty batch, labels out of range — and the call must either
return or raise one ``ValueError`` (``UserError`` is one). A bare ``IndexError``/``RuntimeError``/
``KeyError``/``TypeError`` from deep inside torch is the failure this test exists to catch. NaN or inf
inputs may return a non-finite value (the documented result: non-finite inputs propagate, as in torch);
an empty batch may return an empty or zero result. Names that take no tensors (constants, schedules,
containers of results) or wrap a model are listed in ``NOT_TENSOR_FUNCTIONS`` with the reason; a new
public name must join one of the two tables.

The valid calls are checked to succeed first, so a mutation that fails is the mutation's fault. A
hypothesis test adds random batch sizes and dimensions for the losses (``tests/_fuzz.py`` budget).
"""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import vislearn.losses as L
import vislearn.metrics as M
from _fuzz import fuzz_settings

torch.manual_seed(0)
N, D, C = 6, 5, 4


def _emb(n=N, d=D):
    return torch.randn(n, d)


def _labels(n=N, c=3):
    return torch.arange(n) % c


def _multihot(n=N, c=C):
    t = torch.zeros(n, c)
    t[torch.arange(n), torch.arange(n) % c] = 1
    return t


def _probs(*shape):
    return torch.randn(*shape).softmax(-1)


def _boxes(k=3):
    xy = torch.rand(k, 2) * 20
    return torch.cat([xy, xy + 5 + torch.rand(k, 2) * 10], 1)


def _images(n=2, s=16):
    return torch.rand(n, 3, s, s)


def _ensemble():
    return L.WeightedEnsembleLoss("unif")


# name -> function building (callable, args, kwargs) for a valid call
CASES = {
    # ------------------------------------------------------------------------------------- losses
    "proxy_nca_loss": lambda: (L.proxy_nca_loss, [_emb(), torch.randn(3, D), _labels()], {}),
    "ProxyNCALoss": lambda: (L.ProxyNCALoss(3, D), [_emb(), _labels()], {}),
    "squared_distances": lambda: (L.squared_distances, [_emb(), torch.randn(3, D)], {}),
    "triplet_loss": lambda: (L.triplet_loss, [_emb(), _labels()], {}),
    "TripletLoss": lambda: (L.TripletLoss(), [_emb(), _labels()], {}),
    "pairwise_distances": lambda: (L.pairwise_distances, [_emb()], {}),
    "multilabel_softmax_loss": lambda: (L.multilabel_softmax_loss, [torch.randn(N, C), _multihot()], {}),
    "MultilabelSoftmaxLoss": lambda: (L.MultilabelSoftmaxLoss(), [torch.randn(N, C), _multihot()], {}),
    "pairwise_ranking_loss": lambda: (L.pairwise_ranking_loss, [torch.randn(N, C), _multihot()], {}),
    "PairwiseRankingLoss": lambda: (L.PairwiseRankingLoss(), [torch.randn(N, C), _multihot()], {}),
    "warp_loss": lambda: (L.warp_loss, [torch.randn(N, C), _multihot()], {}),
    "WARPLoss": lambda: (L.WARPLoss(C), [torch.randn(N, C), _multihot()], {}),
    "warp_sample": lambda: (L.warp_sample, [torch.randn(N, C), _multihot().bool()], {}),
    "x_prediction_loss": lambda: (L.x_prediction_loss, [_images(), _images(), torch.rand(2)], {}),
    "time_weight": lambda: (L.time_weight, [torch.rand(4)], {}),
    "hinge_d_loss": lambda: (L.hinge_d_loss, [torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)], {}),
    "hinge_g_loss": lambda: (L.hinge_g_loss, [torch.randn(2, 1, 4, 4)], {}),
    "gaussian_kl": lambda: (L.gaussian_kl, [torch.randn(2, 4, 2, 2), torch.randn(2, 4, 2, 2)], {}),
    "code_entropy": lambda: (L.code_entropy, [_probs(N, C)], {}),
    "head_weights": lambda: (L.head_weights, [_probs(N, 2, C).log(), _probs(N, 2, C), "ent"], {"gamma": 1.0}),
    "weighted_ensemble_loss": lambda: (L.weighted_ensemble_loss, [_probs(N, 2, C).log(), _probs(N, 2, C), "unif"],
                                       {}),
    "WeightedEnsembleLoss": lambda: (_ensemble(), [_probs(N, 2, C).log(), _probs(N, 2, C)], {}),
    "cross_view_loss": lambda: (L.cross_view_loss, [_probs(2, N, 2, C), _probs(3, N, 2, C).log(), _ensemble()], {}),
    "mean_entropy_regularizer": lambda: (L.mean_entropy_regularizer, [_probs(N, 2, C)], {}),
    "sinkhorn_knopp": lambda: (L.sinkhorn_knopp, [torch.randn(N, 2, C)], {}),
    "cosine_logits": lambda: (L.cosine_logits, [_emb(), torch.randn(3, D)], {}),
    "stack_views": lambda: (L.stack_views, [[torch.randn(N, C), torch.randn(N, C)], "v", 1, C], {}),
    "global_mean": lambda: (L.global_mean, [torch.tensor(3.0), 2], {}),
    "DINOLoss": lambda: (L.DINOLoss(C, 1), [[torch.randn(N, C)] * 2, [torch.randn(N, C)] * 3], {"epoch": 0}),
    "MSNLoss": lambda: (L.MSNLoss(C, 1), [[torch.randn(N, C)] * 2, [torch.randn(N, C)] * 2], {"epoch": 0}),
    # ------------------------------------------------------------------------------------ metrics
    "recall_at_k": lambda: (M.recall_at_k, [_emb(), _labels()], {"ks": (1, 2)}),
    "map_at_r": lambda: (M.map_at_r, [_emb(), _labels()], {}),
    "r_precision": lambda: (M.r_precision, [_emb(), _labels()], {}),
    "nmi": lambda: (M.nmi, [_emb(), _labels()], {}),
    "retrieval_metrics": lambda: (M.retrieval_metrics, [_emb(), _labels()], {"ks": (1,)}),
    "knn": lambda: (M.knn, [_emb(), 2], {}),
    "average_precision_per_label": lambda: (M.average_precision_per_label, [torch.randn(N, C), _multihot()], {}),
    "topk_scores": lambda: (M.topk_scores, [torch.randn(N, C), _multihot()], {"k": 2}),
    "psnr": lambda: (M.psnr, [_images(), _images()], {}),
    "ssim": lambda: (M.ssim, [_images(), _images()], {}),
    "high_frequency_energy": lambda: (M.high_frequency_energy, [_images()], {}),
    "high_frequency_ratio": lambda: (M.high_frequency_ratio, [_images(), _images()], {}),
    "frechet_distance": lambda: (M.frechet_distance, [torch.randn(12, 3), torch.randn(12, 3)], {}),
    "mmd": lambda: (M.mmd, [torch.randn(8, 3), torch.randn(8, 3)], {}),
    "plcc": lambda: (M.plcc, [torch.rand(10), torch.rand(10)], {}),
    "srocc": lambda: (M.srocc, [torch.rand(10), torch.rand(10)], {}),
    "krocc": lambda: (M.krocc, [torch.rand(10), torch.rand(10)], {}),
    "rank_average": lambda: (M.rank_average, [torch.rand(10)], {}),
    "two_afc_agreement": lambda: (M.two_afc_agreement, [torch.rand(10), torch.rand(10), torch.rand(10)], {}),
    "knn_accuracy": lambda: (M.knn_accuracy, [_emb(12), _labels(12), _emb(), _labels()], {"k": 3}),
    "linear_probe_accuracy": lambda: (M.linear_probe_accuracy, [_emb(12), _labels(12), _emb(), _labels()], {}),
    "nshot_accuracy": lambda: (M.nshot_accuracy, [_emb(12), _labels(12), _emb(), _labels()],
                               {"shots": 1, "splits": 1, "l2": 1e-3}),
    "nshot_split_accuracies": lambda: (M.nshot_split_accuracies, [_emb(12), _labels(12), _emb(), _labels()],
                                       {"shots": 1, "splits": 1, "l2": 1e-3}),
    "evaluate_detections": lambda: (M.evaluate_detections, [[_boxes()], [torch.rand(3)], [_boxes(2)]], {}),
    "proposal_recall": lambda: (M.proposal_recall, [[_boxes()], [torch.rand(3)], [_boxes(2)]],
                                {"num_proposals": (1, 3)}),
    "proposal_ap": lambda: (M.proposal_ap, [[_boxes()], [torch.rand(3)], [_boxes(2)]], {}),
    "detection_map": lambda: (M.detection_map, [[_boxes()], [torch.rand(3)], [torch.tensor([0, 1, 1])], [_boxes(2)],
                                                [torch.tensor([0, 1])]], {}),
    "coco_map": lambda: (M.coco_map, [[_boxes()], [torch.rand(3)], [torch.tensor([0, 1, 1])], [_boxes(2)],
                                      [torch.tensor([0, 1])]], {}),
    "evaluate_coco": lambda: (M.evaluate_coco, [[_boxes()], [torch.rand(3)], [_boxes(2)], [torch.tensor([0, 1, 1])],
                                                [torch.tensor([0, 1])]], {}),
}

NOT_TENSOR_FUNCTIONS = {
    "SWYCCLoss": "wraps a model (model, images); its math is x_prediction_loss and time_weight, fuzzed above",
    "swycc_loss": "same as SWYCCLoss",
    "SWYCCLossTerms": "a result container",
    "MSEAutoencoderLoss": "wraps an autoencoder and a perceptual network (images, recon, z, x_hat); its terms are "
                          "F.mse_loss and the perceptual distance",
    "mse_autoencoder_loss": "same as MSEAutoencoderLoss",
    "GANAutoencoderLoss": "owns a discriminator and needs the decoder's last layer; its math is hinge_d_loss, "
                          "hinge_g_loss, gaussian_kl and adaptive_weight",
    "adaptive_weight": "needs a graph from both losses to one parameter (autograd.grad); tested by hand and "
                       "against autograd in test_losses_autoencoder.py",
    "disc_factor": "a scalar schedule of step numbers",
    "denoising_loss": "takes a denoise(x_t, t, cond) callable; its math is x_prediction_loss and time_weight",
    "FeatureExtractor": "wraps a network", "feature_extractor": "loads a network by name or file",
    "feature_networks": "lists names", "register_feature_network": "a registry function",
    "cache_dir": "a path", "backbone_features": "runs a model over a loader", "extract_features": "same",
    "WEIGHTINGS": "a constant", "ENSEMBLE_SCHEMES": "a constant", "COCO_IOU_THRESHOLDS": "a constant",
    "PAPER_L2_GRID": "a constant", "NORM_EPS": "a constant", "VGG_STAGES": "a constant",
    "gamma_schedule": "a scalar schedule of numbers", "linear_ramp": "a scalar schedule of numbers",
    "TeacherTemperature": "a scalar schedule of numbers", "warp_rank_weights": "takes an int count",
    "AllReduce": "a type alias", "dist_all_reduce": "a collective over a process group",
    "MultiBoxLoss": "matching needs a BoxCoder and priors; its stateless form multibox_loss is in "
                    "tests/test_losses_multibox.py",
    "multibox_loss": "same as MultiBoxLoss",
    "DetectionEvaluation": "a result container", "CocoEvaluation": "a result container",
    "COCO_AREA_RANGES": "a constant", "DetectionEvaluator": "accumulates evaluate_detections (fuzzed)",
    "to_coco_json": "writes the COCO json the oracle reads; a test helper of detection metrics",
    "logistic4": "a closed-form curve over numbers", "MultilabelTopK": "accumulates topk_scores (fuzzed)",
    "RetrievalEvaluator": "accumulates retrieval_metrics (fuzzed)",
    "IQAEvaluation": "wraps a PerceptualMetric model", "TwoAFCEvaluation": "wraps a PerceptualMetric model",
    "LogisticMap": "a module over a distance", "PerceptualHead": "a model head", "PerceptualMetric": "a model",
    "ReferenceFeatures": "a container", "create_metric": "builds a model from weight files (tests/test_security.py)",
    "load_lpips_lin_weights": "reads a weights file (tests/test_security.py)",
    "overlay_map": "drawing", "region_ablation": "wraps a PerceptualMetric model",
    "sensitivity_map": "wraps a PerceptualMetric model",
}


def test_every_public_name_is_fuzzed_or_exempt():
    names = set(L.__all__) | set(M.__all__)
    assert not names - set(CASES) - set(NOT_TENSOR_FUNCTIONS), "add these to CASES or NOT_TENSOR_FUNCTIONS"
    assert not (set(CASES) | set(NOT_TENSOR_FUNCTIONS)) - names, "stale entries"


@pytest.mark.parametrize("name", sorted(CASES))
def test_valid_call_succeeds(name):
    fn, args, kwargs = CASES[name]()
    fn(*args, **kwargs)


def _tensor_slots(args):
    """(position, inner index or None) of every tensor argument, inside lists too."""
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            yield i, None
        elif isinstance(a, list) and a and isinstance(a[0], torch.Tensor):
            yield i, 0


def _mutations(t: torch.Tensor):
    if t.ndim >= 1 and t.shape[0] > 0:
        yield "empty batch", t[:0]
    yield "extra dim", t.unsqueeze(0)
    if t.ndim >= 1:
        yield "missing dim", t.reshape(-1)[0] if t.ndim == 1 else t[0]
    if t.ndim >= 2 and t.shape[-1] > 1:
        yield "wrong last size", t[..., :-1]
    if t.ndim >= 1 and t.shape[0] > 1:
        yield "wrong batch size", t[:-1]
    if t.is_floating_point() and t.numel():
        for v in (math.nan, math.inf):
            bad = t.clone()
            bad.view(-1)[0] = v
            yield f"{v}", bad
        yield "complex dtype", t.to(torch.complex64)
        yield "int dtype", t.round().long()
    elif t.numel():
        yield "float dtype", t.float() + 0.5
        if t.dtype in (torch.long, torch.int32, torch.int64):
            yield "label too large", t + 1000
            yield "negative label", t - 1000
        yield "string-like dtype (bool)", t.bool() if t.dtype != torch.bool else t.long() * 3


def _mutated_calls():
    for name in sorted(CASES):
        _, args, _ = CASES[name]()
        for pos, inner in _tensor_slots(args):
            t = args[pos] if inner is None else args[pos][inner]
            for what, _bad in _mutations(t):
                yield pytest.param(name, pos, inner, what, id=f"{name}-arg{pos}-{what}")


@pytest.mark.parametrize("name,pos,inner,what", list(_mutated_calls()))
def test_bad_tensor_gives_value_error_or_result(name, pos, inner, what):
    fn, args, kwargs = CASES[name]()
    t = args[pos] if inner is None else args[pos][inner]
    bad = dict(_mutations(t))[what]
    if inner is None:
        args[pos] = bad
    else:
        args[pos] = [bad] + list(args[pos][1:])
    try:
        fn(*args, **kwargs)
    except ValueError as e:  # UserError included: the one clear error
        assert str(e)
    # any other exception type propagates and fails the test with its traceback


@fuzz_settings(25)
@given(n=st.integers(0, 7), d=st.integers(1, 6), c=st.integers(1, 5), nan=st.booleans())
def test_losses_random_sizes(n, d, c, nan):
    emb = torch.randn(n, d)
    if nan and n:
        emb[0, 0] = math.nan
    labels = torch.randint(0, c, (n,))
    hot = (torch.rand(n, c) > 0.5).float()
    calls = [(L.proxy_nca_loss, emb, torch.randn(c, d), labels), (L.triplet_loss, emb, labels),
             (L.multilabel_softmax_loss, emb[:, :1].expand(n, c).contiguous(), hot),
             (L.pairwise_ranking_loss, torch.randn(n, c), hot), (L.warp_loss, torch.randn(n, c), hot),
             (M.recall_at_k, emb, labels), (M.average_precision_per_label, torch.randn(n, c), hot)]
    for fn, *args in calls:
        try:
            out = fn(*args)
        except ValueError:
            continue
        if not nan and isinstance(out, torch.Tensor) and out.numel() and out.dtype.is_floating_point:
            assert torch.isfinite(out).all() or fn is M.average_precision_per_label, fn.__name__
