"""The ``swycc`` reproduction runs end to end at a tiny scale and writes its criteria and numbers (not its verdict)."""

from __future__ import annotations

import json

import pytest

from vislearn.reproduce import get_reproduction, run_reproduction
from vislearn.reproduce import swycc as repro


def test_claim_and_criterion_are_stated_at_registration():
    rep = get_reproduction("swycc")
    assert rep.seeds == (0, 1, 2)
    for word in ("(a)", "(b)", "(c)", "(d)", "PSNR", "hf_ratio", "fd", "Nyquist"):
        assert word in rep.criterion


@pytest.mark.slow
def test_runs_end_to_end_tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("VISLEARN_CACHE", str(tmp_path / "cache"))
    from vislearn.recipes import feature_network

    monkeypatch.setitem(feature_network.SHAPES32, "steps", 5)
    # a tiny budget: few images, 1 seed, tiny grids, 2 decoder samples
    monkeypatch.setattr(repro, "SMALL_SCALE", {**repro.SMALL_SCALE, "num_train": 32, "num_eval": 16,
                                               "batch_size": 8, "width": 8, "refine_width": 8, "eval_steps": 1,
                                               "disc_ndf": 8})
    monkeypatch.setattr(repro, "LDM_SCALE", {**repro.LDM_SCALE, "width": 8, "num_train": 32, "num_eval": 16,
                                             "eval_samples": 8, "sample_steps": 1, "decode_steps": 1,
                                             "batch_size": 8, "scale_sample": 32})
    # one extra grid point for SWYCC only (each recipe run costs seconds of fixed set-up)
    monkeypatch.setattr(repro, "GRID", {"swycc": ("lambda_mse", (1.0, 3.0)), "gan": ("disc_weight", (0.5,))})
    monkeypatch.setattr(repro, "VAR_SAMPLES", 2)
    monkeypatch.setattr(repro, "VAR_IMAGES", 4)
    out = run_reproduction("swycc", tmp_path, scale=0.01, seeds=(0,), log=lambda s: None)
    saved = json.loads((tmp_path / "swycc.json").read_text())
    assert (tmp_path / "swycc.png").stat().st_size > 0
    assert saved["criterion"] == get_reproduction("swycc").criterion
    n = saved["numbers"]
    assert set(n["criteria"]) == {"a_hf_closer_to_1_than_mse", "a_fd_lower_than_mse", "b_hf_closer_to_1_than_gan",
                                  "b_fd_lower_than_gan", "b_smaller_fd_spread_over_weight_grid",
                                  "c_ldm_fd_lower_on_swycc_latents", "d_variance_in_high_frequencies"}
    for arm in ("swycc", "mse", "gan"):
        assert len(n["arms_per_seed"][arm]) == 1
        assert set(n["arms_per_seed"][arm][0]) >= {"psnr", "hf_ratio", "fd", "mmd"}
    assert len(n["ldm_per_seed"]["swycc"]) == 1 and "prior_fd" in n["ldm_per_seed"]["gan"][0]
    assert {k: len(v) for k, v in n["grid"].items()} == {"swycc": 2, "gan": 1}
    assert n["grid"]["swycc"][0] == {"lambda_mse": 1.0, **n["arms_per_seed"]["swycc"][0]}  # the default reuses seed 0
    d = n["variance_per_seed"][0]
    assert set(d) >= {"hf_fraction_of_variance", "hf_fraction_of_image", "mean_pixel_std"}
    assert n["feature_network"]["network"] == "shapes32"
    assert n["settings"]["ae_steps"] == 3 and isinstance(out["passed"], bool)


class _StubDecoder:
    """encode = identity; each decode adds ``a · pattern`` with ``a`` drawn from the generator."""

    def __init__(self, pattern):
        self.pattern = pattern

    def encode(self, x):
        return x

    def decode(self, z, steps, generator):
        import torch

        return z + torch.randn(len(z), 1, 1, 1, generator=generator) * self.pattern


@pytest.mark.parametrize("where, expected", [("high", 1.0), ("low", 0.0)])
def test_variance_fraction_is_the_hand_computed_band_share(where, expected):
    import math

    import torch

    side = 16
    i = torch.arange(side)
    checker = ((-1.0) ** (i.view(-1, 1) + i.view(1, -1))).expand(3, side, side)  # (0.5, 0.5) cycles/px: all above 0.25
    ramp = torch.cos(2 * math.pi * i / side).view(1, 1, side).expand(3, side, side)  # 1/16 cycles/px: all below
    # images: 0.5 + 0.1 checker + 0.2 cos -> centred energy 0.01 HW (high) + 0.04 HW / 2 (low): 1/3 above
    images = (0.5 + 0.1 * checker + 0.2 * ramp).expand(4, 3, side, side).contiguous()
    d = repro._variance_in_high_frequencies(_StubDecoder(checker if where == "high" else ramp), images, seed=0)
    assert d["hf_fraction_of_variance"] == pytest.approx(expected, abs=1e-6)  # float32 images
    assert d["hf_fraction_of_image"] == pytest.approx(1 / 3, rel=1e-6)
