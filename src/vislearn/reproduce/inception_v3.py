"""Reproduction ``inception_v3``: the architecture's size and cost, and the recipe's ablations at small scale.

(a) Architecture table (paper Sec. 1 and 10; PAPERS.md §2): parameters and multiply-adds of our
    network at 299×299 against the paper ("< 25M parameters", "about 5 billion multiply-adds") and
    against timm's ``inception_v3`` counted with the same counter (timm lists 5.73 GMACs).
(b) Small-scale ablation of two of the paper's Table 3 steps with the ``inception_v3`` recipe:
    label smoothing ε = 0.1 (paper: −0.3% top-1 error on ImageNet) and the BN-auxiliary head (−0.4%),
    each removed from the full recipe, 3 seeds each, on scikit-learn's digits upscaled to 75×75 RGB
    with a 0.125-width network, 250 steps of batch 32, bf16 autocast + channels_last (the ``quick``
    preset). The optimiser here is NOT the paper's: RMSProp with ε = 1.0 at lr 0.045 (Sec. 8) is set
    for 50 replicas × batch 32 over 100 ImageNet epochs and barely leaves chance in a few hundred
    small-batch steps (an earlier version of this reproduction: mean top-1 0.18-0.22 after 100 steps
    at width 0.25). For this ablation every run uses SGD with Nesterov momentum 0.9, lr 0.05 with a
    cosine decay, no gradient clipping and no weight averaging (a 250-step run has no horizon for
    it); label smoothing 0.1, aux weight 0.4, dropout, weight decay and the BN decay stay the recipe's.
    Both arms of each comparison use identical settings apart from the ablated component. Gains of a
    few tenths of a percent on ImageNet after 100 epochs are not expected to be resolvable here; we
    report top-1 and calibration error (ECE, 15 bins) per condition and whether each difference
    exceeds the spread over seeds.
"""

from __future__ import annotations

import statistics

import torch

from vislearn.reproduce import Outcome, ReproContext, register_reproduction

# The small-scale training settings shared by every run (module docstring (b): not the paper's optimiser).
SMALL_SCALE = {"width": 0.125, "optimizer": "sgd", "momentum": 0.9, "nesterov": True, "lr": 0.05,
               "schedule": "cosine", "clip_grad": 0.0, "ema_decay": 0.0,
               "precision": "bf16", "channels_last": True}
STEPS = 250  # 300 until 2026-12-02 (mean top-1 0.92-0.96); cut for the demo budget
LEARN_BAR = 0.8  # mean top-1 per condition (chance 0.1); fixed before the final run

CONDITIONS = {
    "full (LS 0.1 + aux 0.4)": {},
    "no label smoothing": {"label_smoothing": 0.0},
    "no aux head": {"aux_logits": False},
}


def architecture_table() -> dict:
    """Parameters and multiply-adds at 299 px: ours, timm's (same counter), the paper's statements."""
    from vislearn.models import create_model
    from vislearn.models.inception_v3 import InceptionV3
    from vislearn.nn.profile import count_macs

    ours = {aux: sum(p.numel() for p in create_model("inception_v3", aux_logits=aux).parameters())
            for aux in (False, True)}
    with torch.device("meta"):  # shapes only: counting computes nothing
        macs = count_macs(InceptionV3(aux_logits=False, normalization=None), 299)
        try:
            import timm

            peer = timm.create_model("inception_v3")
            timm_macs = count_macs(peer, 299)
            timm_params = sum(p.numel() for p in peer.parameters())
        except ImportError:  # timm is a test dependency, not a runtime one
            timm_macs = timm_params = None
    return {"params_no_aux": ours[False], "params_aux": ours[True], "gmacs_299": macs / 1e9,
            "timm_params": timm_params, "timm_gmacs_299_same_counter": None if timm_macs is None else timm_macs / 1e9,
            "timm_gmacs_299_listed": 5.73, "paper_params": "< 25M", "paper_gmacs": "about 5"}


def _train(ctx: ReproContext, overrides: dict, seed: int, steps: int) -> dict:
    from vislearn import recipes

    result = recipes.run("inception_v3", "quick", {**SMALL_SCALE, "steps": steps, "seed": seed, "log_every": 0,
                                                   "eval_batch_size": 450, **overrides}, progress=False)
    return {k: float(result.final_metrics[k]) for k in ("top1", "ece", "loss")}


@register_reproduction(
    "inception_v3", paper="Szegedy et al. 2016, Rethinking the Inception Architecture, Sec. 8-10, Table 3",
    claim="Inception-v3 has < 25M parameters and ~5G multiply-adds at 299 px; label smoothing (Sec. 7) "
          "and the BN-auxiliary head (Sec. 4) each improve ImageNet top-1 (by 0.3 and 0.4 points, Table 3)",
    criterion="(a) our counts equal torchvision's 23,834,568 / 27,161,264 parameters (< 25M without aux) and "
              "timm's multiply-adds under the same counter, 4.5-6.0 G at 299 px; (b) all 3 small-scale conditions "
              "(digits 75 px, width 0.125, 250 steps SGD-Nesterov lr 0.05 cosine for every run, not the paper's "
              "RMSProp; 3 conditions x 3 seeds) learn well above chance: mean top-1 > 0.8 in each "
              "(chance 0.1). The +0.3/+0.4 ImageNet gains are NOT expected to show at this scale: their "
              "sign and size vs the seed spread are reported, not judged")
def run(ctx: ReproContext) -> Outcome:
    arch = architecture_table()
    ctx.log(f"  params {arch['params_no_aux']:,} (no aux) / {arch['params_aux']:,} (aux); "
            f"{arch['gmacs_299']:.3f} GMACs at 299 (timm, same counter: {arch['timm_gmacs_299_same_counter']})")
    a_ok = (arch["params_no_aux"] == 23_834_568 and arch["params_aux"] == 27_161_264
            and arch["params_no_aux"] < 25_000_000 and 4.5 <= arch["gmacs_299"] <= 6.0
            and arch["timm_gmacs_299_same_counter"] in (None, arch["gmacs_299"]))
    steps = ctx.steps(STEPS, minimum=2)
    runs: dict[str, list[dict]] = {}
    for name, overrides in CONDITIONS.items():
        runs[name] = []
        for seed in ctx.seeds:
            r = _train(ctx, overrides, seed, steps)
            runs[name].append(r)
            ctx.log(f"  {name:26s} seed {seed}: top-1 {r['top1']:.3f}  ECE {r['ece']:.3f}")
    summary = {}
    for name, rs in runs.items():
        t, e = [r["top1"] for r in rs], [r["ece"] for r in rs]
        summary[name] = {"top1_mean": statistics.fmean(t), "top1_std": statistics.pstdev(t),
                         "ece_mean": statistics.fmean(e), "ece_std": statistics.pstdev(e), "runs": rs}
    full = summary["full (LS 0.1 + aux 0.4)"]
    effects = {}
    for name, label in (("no label smoothing", "label_smoothing"), ("no aux head", "aux_head")):
        other = summary[name]
        d_top1 = full["top1_mean"] - other["top1_mean"]
        d_ece = full["ece_mean"] - other["ece_mean"]
        spread = max(full["top1_std"], other["top1_std"])
        effects[label] = {"top1_gain": d_top1, "ece_change": d_ece, "top1_seed_spread": spread,
                          "top1_gain_exceeds_spread": abs(d_top1) > spread}
    b_ok = all(s["top1_mean"] > LEARN_BAR for s in summary.values())
    notes = "; ".join(f"{k}: top-1 {v['top1_gain']:+.3f} (seed spread {v['top1_seed_spread']:.3f}), "
                      f"ECE {v['ece_change']:+.3f}" for k, v in effects.items())
    return Outcome(passed=bool(a_ok and b_ok),
                   numbers={"architecture": arch, "architecture_ok": a_ok, "steps_per_run": steps,
                            "small_scale_settings": SMALL_SCALE, "learn_bar_top1": LEARN_BAR,
                            "conditions": summary, "effects_full_minus_ablated": effects, "all_learn": b_ok},
                   figure=_figure(summary, arch), notes=notes)


def _figure(summary: dict, arch: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    names = list(summary)
    for ax, key, label in ((axes[0], "top1", "top-1 accuracy"), (axes[1], "ece", "ECE (15 bins)")):
        means = [summary[n][f"{key}_mean"] for n in names]
        ax.bar(range(len(names)), means, color=["tab:blue", "tab:orange", "tab:green"], alpha=0.6)
        for i, n in enumerate(names):
            ax.scatter([i] * len(summary[n]["runs"]), [r[key] for r in summary[n]["runs"]], color="k", s=12)
        ax.set_xticks(range(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
        ax.set_ylabel(label)
    fig.suptitle(f"Inception-v3: {arch['params_no_aux'] / 1e6:.2f}M params, {arch['gmacs_299']:.2f} GMACs at 299; "
                 "ablations on digits 75 px (width 0.125, SGD, 3 seeds)", fontsize=9)
    fig.tight_layout()
    return fig
