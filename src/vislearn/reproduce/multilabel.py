"""Reproduction ``multilabel``: WARP vs softmax vs pairwise ranking (Gong et al., arXiv 1312.4894, Table 1).

The paper trains one network with each loss on NUS-WIDE (81 concepts) and reports, at top-3
annotations, per-class recall and precision, overall recall and precision and N+ (labels with
recall > 0). Its claim: WARP gives the best per-class recall, i.e. it serves rare labels best
(reported values below are copied from PAPERS.md and marked unverified there).

A fair test at CPU scale (issue 17 item 7), every choice fixed before the final run:

* Data: the embedded ``shapes`` scenes with 81 labels (as NUS-WIDE's 81 concepts) and a heavy tail
  (label i drawn with weight (i+1)^-1.2: the most frequent label is on ~200x more images than the
  rarest; NUS-WIDE's range is wider still), 6,000 training images of which 20% are held out for
  validation, 3,000 test images, 1-4 labels per image.
* Model: the ``multilabel`` recipe's ``features`` preset (:mod:`vislearn.recipes.multilabel_features`):
  a linear scoring layer trained on FIXED features of a small random conv net. The paper trains the
  whole CNN with each loss; training only the top layer on shared frozen features is our CPU-scale
  stand-in that makes 4 arms x 5 seeds (and the learning-rate sweep) affordable. It tests how the
  losses shape the label scores, not what they would do to the representation.
* Each arm to convergence: Adam at a constant learning rate, validation per-class recall@3 checked
  every 50 steps, stopping after 6 checks without improvement (at most 4,000 steps of 128), the
  best validation weights scored on the test set.
* Learning rate per arm: the same 6-point grid 1e-4..3e-2 for every arm, chosen by the validation
  per-class recall@3 of one sweep seed (:func:`lr_sweep`; :func:`write_sweep` writes
  ``results/multilabel_sweep.json``). The first sweep stopped at 1e-2, where pairwise and WARP
  peaked, so 3e-2 was added for every arm; each arm's choice is now inside the grid. The sweep costs
  ~210 s of CPU, more than the demo's budget, so the demo uses the chosen values recorded in
  :data:`CHOSEN_LR` (copied from that file). The validation curves are flat within ~0.01 over the
  grid for the ranking losses: their choice is within one seed's noise.
* Arms: softmax, pairwise, WARP in the paper's form (L(r_j) on the hinge summed over every negative,
  ``warp_form="paper"``) and in WSABIE's single sampled pair (``warp_form="sampled_pair"``); 5 seeds.
* Learning bar (an arm that fails it makes the comparison void): mean per-class recall@3 at least
  3x, and overall recall@3 at least 0.1 above, the frequency prior's (the 3 most frequent training
  labels for every image).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from vislearn.reproduce import Outcome, ReproContext, register_reproduction

__all__ = ["ARMS", "CHOSEN_LR", "LR_GRID", "PAPER_TABLE", "lr_sweep", "run", "write_sweep"]

MAX_STEPS = 4000
NUM_SAMPLES, TEST_SAMPLES = 6000, 3000
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)  # Adam; the same grid for every arm
SWEEP_SEEDS = (100,)  # distinct from the evaluation seeds
ARMS = {"softmax": {"loss": "softmax"}, "pairwise": {"loss": "pairwise"},
        "warp": {"loss": "warp", "warp_form": "paper"},
        "warp_sampled_pair": {"loss": "warp", "warp_form": "sampled_pair"}}
# chosen by lr_sweep at scale 1 (results/multilabel_sweep.json): best mean validation per-class recall@3
CHOSEN_LR = {"softmax": 1e-3, "pairwise": 1e-2, "warp": 1e-2, "warp_sampled_pair": 3e-3}
PRIOR_FACTOR, PRIOR_MARGIN = 3.0, 0.1  # the learning bar (module docstring)
METRICS = ("per_class_recall", "per_class_precision", "overall_recall", "overall_precision", "n_plus",
           "mean_average_precision")
# Gong et al. Table 1, NUS-WIDE, k = 3, percentages (PAPERS.md §5: unverified)
PAPER_TABLE = {
    "warp": {"per_class_recall": 35.60, "per_class_precision": 31.65, "overall_recall": 60.49,
             "overall_precision": 48.59, "n_plus": 81},
    "softmax": {"per_class_recall": 31.22, "per_class_precision": 31.68, "overall_recall": 59.52,
                "overall_precision": 47.82, "n_plus": 80},
    "pairwise": {"per_class_recall": 26.83, "per_class_precision": 31.93, "overall_recall": 58.00,
                 "overall_precision": 46.59, "n_plus": 80},
}


def _budget(scale: float) -> dict[str, Any]:
    """Steps, check period and data size at ``scale`` (below 1 the data shrinks too, for the tests)."""
    steps = max(20, int(round(MAX_STEPS * scale)))
    shrink = min(1.0, scale)
    return {"steps": steps, "val_every": max(2, min(50, steps // 20)),
            "num_samples": max(300, int(round(NUM_SAMPLES * shrink))),
            "test_samples": max(150, int(round(TEST_SAMPLES * shrink)))}


def _train(arm: str, lr: float, seed: int, budget: dict[str, Any]) -> dict[str, Any]:
    from vislearn import recipes
    from vislearn.metrics.multilabel import MultilabelTopK
    from vislearn.recipes.multilabel_features import ValidationStopping

    result = recipes.run("multilabel", "features", {**ARMS[arm], **budget, "lr": lr, "seed": seed}, progress=False)
    task = result.task
    stopper = next(h for h in task.hooks if isinstance(h, ValidationStopping))
    metric = MultilabelTopK(result.cfg.k)
    with torch.no_grad():
        metric.update(task.model.eval()(task.eval_set.images), task.eval_set.targets)
    return {"metrics": {k: float(result.final_metrics[k]) for k in METRICS},
            "val_per_class_recall": stopper.best, "best_step": stopper.best_step, "stop_step": result.step,
            "stopped_early": result.stopped_early,
            "label_recall": metric.compute(per_label=True)["label_recall"].tolist()}


def lr_sweep(scale: float = 1.0, arms: tuple[str, ...] | None = None, log=print) -> dict[str, Any]:
    """Every arm (of ``arms``; default all) at every :data:`LR_GRID` value and :data:`SWEEP_SEEDS` seed:
    validation per-class recall@3 (mean over seeds) and the chosen (best) learning rate per arm."""
    budget = _budget(scale)
    table: dict[str, Any] = {}
    for arm in arms or tuple(ARMS):
        rows = {}
        for lr in LR_GRID:
            rs = [_train(arm, lr, seed, budget) for seed in SWEEP_SEEDS]
            rows[f"{lr:g}"] = {"val_per_class_recall": statistics.fmean(r["val_per_class_recall"] for r in rs),
                               "best_step": statistics.fmean(r["best_step"] for r in rs),
                               "stopped_early": all(r["stopped_early"] for r in rs)}
            log(f"  sweep {arm:18s} lr {lr:g}: val per-class R {rows[f'{lr:g}']['val_per_class_recall']:.4f} "
                f"best step {rows[f'{lr:g}']['best_step']:.0f}")
        best = max(LR_GRID, key=lambda v: rows[f"{v:g}"]["val_per_class_recall"])
        table[arm] = {"by_lr": rows, "chosen_lr": best, "chosen_on_grid_edge": best in (LR_GRID[0], LR_GRID[-1])}
    return {"grid": list(LR_GRID), "seeds": list(SWEEP_SEEDS), "budget": budget,
            "selection": "mean over seeds of the best validation per-class recall@3 (early-stopped run)",
            "arms": table}


def _prior(budget: dict[str, Any]) -> dict[str, float]:
    """The frequency prior: the 3 most frequent training labels for every test image."""
    from vislearn.metrics import topk_scores
    from vislearn.recipes import build

    _, task = build("multilabel", "features", {**budget, "loss": "softmax"})
    freq = task.train_set.targets.sum(0)
    scores = (freq - 1e-3 * torch.arange(len(freq))).expand(len(task.eval_set), -1)  # ties: the lower index
    out = topk_scores(scores, task.eval_set.targets, k=3)
    return {"per_class_recall": float(out["per_class_recall"]), "overall_recall": float(out["overall_recall"]),
            "label_frequency_train": freq.tolist()}


def _stats(vals: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "per_seed": vals}


def _beats(a: dict[str, Any], b: dict[str, Any]) -> tuple[bool, float, float]:
    """a's mean exceeds b's by more than 2 standard errors of the difference (n seeds each)."""
    n = len(a["per_seed"])
    se = math.sqrt(a["std"] ** 2 / n + b["std"] ** 2 / n)
    diff = a["mean"] - b["mean"]
    return diff > 2 * se, diff, se


@register_reproduction(
    "multilabel",
    paper="Gong et al. 2013 (arXiv 1312.4894), Table 1",
    claim="WARP gives the highest per-class recall at top-3 annotations (it serves rare labels best); "
          "NUS-WIDE, reported (unverified): per-class recall WARP 35.60 vs softmax 31.22 vs pairwise 26.83",
    criterion="embedded shapes scenes, 81 labels with a heavy tail (Zipf 1.2, ~200x frequency range); a linear "
              "head on fixed random-conv features for every arm (a CPU stand-in for the paper's end-to-end CNN); "
              "each arm early-stopped on a 20% validation split at its own Adam lr, chosen from the same 6-point "
              "grid 1e-4..3e-2 by validation per-class recall@3; 5 seeds. Learning bar: every arm's mean "
              "per-class recall@3 >= 3x and overall recall@3 >= 0.1 + the frequency prior's (else void). "
              "Reproduced if WARP (paper form) mean per-class recall@3 exceeds softmax's and pairwise's each by "
              "more than 2 standard errors of the difference; WARP's sampled-pair form is reported and judged "
              "the same way, apart from the verdict",
    seeds=(0, 1, 2, 3, 4),
)
def run(ctx: ReproContext) -> Outcome:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a linear head on 640 features: the 2 cores' threads mostly synchronise
    try:
        return _run(ctx)
    finally:
        torch.set_num_threads(threads)


def _run(ctx: ReproContext) -> Outcome:
    budget = _budget(ctx.scale)
    prior = _prior(budget)
    freq = prior.pop("label_frequency_train")
    ctx.log(f"  frequency prior: per-class R {prior['per_class_recall']:.3f}  overall R {prior['overall_recall']:.3f}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for arm in ARMS:
        runs[arm] = []
        for seed in ctx.seeds:
            r = _train(arm, CHOSEN_LR[arm], seed, budget)
            runs[arm].append(r)
            m = r["metrics"]
            ctx.log(f"  {arm:18s} seed {seed}: per-class R {m['per_class_recall']:.3f} P "
                    f"{m['per_class_precision']:.3f}  overall R {m['overall_recall']:.3f} P "
                    f"{m['overall_precision']:.3f}  N+ {m['n_plus']:.0f}  best step {r['best_step']} "
                    f"(stopped at {r['stop_step']})")
    table = {arm: {**{k: _stats([r["metrics"][k] for r in rs]) for k in METRICS},
                   "best_step": _stats([float(r["best_step"]) for r in rs]),
                   "stop_step": _stats([float(r["stop_step"]) for r in rs]),
                   "stopped_early_all": all(r["stopped_early"] for r in rs), "lr": CHOSEN_LR[arm]}
             for arm, rs in runs.items()}
    pcr = {arm: table[arm]["per_class_recall"] for arm in table}
    bar = {arm: pcr[arm]["mean"] >= PRIOR_FACTOR * prior["per_class_recall"]
           and table[arm]["overall_recall"]["mean"] >= prior["overall_recall"] + PRIOR_MARGIN for arm in table}
    comparisons = {}
    for form in ("warp", "warp_sampled_pair"):
        for other in ("softmax", "pairwise"):
            ok, diff, se = _beats(pcr[form], pcr[other])
            comparisons[f"{form}_vs_{other}"] = {"passes": ok, "diff": diff, "se_diff": se}
    all_learn = all(bar.values())
    passed = all_learn and comparisons["warp_vs_softmax"]["passes"] and comparisons["warp_vs_pairwise"]["passes"]
    rare = sorted(range(len(freq)), key=lambda j: freq[j])[: len(freq) // 2]
    label_recall_mean = {arm: [statistics.fmean(r["label_recall"][j] for r in rs) for j in range(len(freq))]
                         for arm, rs in runs.items()}
    rare_recall = {arm: statistics.fmean(label_recall_mean[arm][j] for j in rare) for arm in runs}
    order = sorted(pcr, key=lambda a: pcr[a]["mean"], reverse=True)
    ws, wp = comparisons["warp_vs_softmax"], comparisons["warp_vs_pairwise"]
    notes = (f"per-class recall@3 (mean±std of {len(ctx.seeds)} seeds): "
             + ", ".join(f"{a} {pcr[a]['mean']:.3f}±{pcr[a]['std']:.3f}" for a in order)
             + f"; WARP (paper form) − softmax {ws['diff']:+.3f} (2 SE {2 * ws['se_diff']:.3f}), − pairwise "
             + f"{wp['diff']:+.3f} (2 SE {2 * wp['se_diff']:.3f})."
             + f" Rarest {len(rare)} labels' mean recall: " + ", ".join(f"{a} {rare_recall[a]:.3f}" for a in order)
             + f". Learning bar {'cleared by every arm' if all_learn else 'FAILED: ' + str(bar)}. "
             + "Differences to the paper: synthetic scenes, a linear head on frozen random-conv features instead "
               "of an end-to-end CNN, learning rates from a validation sweep (results/multilabel_sweep.json).")
    numbers = {"table": table, "comparisons": comparisons, "learning_bar": {"prior": prior, "passes": bar,
                                                                            "factor": PRIOR_FACTOR,
                                                                            "margin": PRIOR_MARGIN},
               "rare_half_recall": rare_recall, "budget": budget, "chosen_lr": CHOSEN_LR, "lr_grid": list(LR_GRID),
               "label_frequency_train": freq, "label_recall_mean": label_recall_mean,
               "paper_unverified_percent": PAPER_TABLE}
    verdict = None if all_learn else "void: an arm did not clear the learning bar"
    return Outcome(passed=passed, numbers=numbers, figure=_figure(table, numbers, freq), notes=notes, verdict=verdict)


def _figure(table: dict[str, dict[str, Any]], numbers: dict[str, Any], freq: list[float]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(table)
    shown = ("per_class_recall", "per_class_precision", "overall_recall", "overall_precision",
             "mean_average_precision")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.2))
    width = 0.2
    for i, arm in enumerate(arms):
        means = [table[arm][k]["mean"] for k in shown]
        stds = [table[arm][k]["std"] for k in shown]
        ax.bar([x + (i - 1.5) * width for x in range(len(shown))], means, width, yerr=stds, capsize=3,
               label=f"{arm} lr {table[arm]['lr']:g} (N+ {table[arm]['n_plus']['mean']:.1f}/{len(freq)})")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(["per-class R", "per-class P", "overall R", "overall P", "mAP"])
    ax.set_ylabel("value at k = 3 (mean ± std over seeds)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.set_title("Top-3 annotation metrics, 81-label shapes, linear head on fixed features", fontsize=9)
    rank = sorted(range(len(freq)), key=lambda j: -freq[j])
    for arm in arms:
        ax2.plot(range(len(rank)), [numbers["label_recall_mean"][arm][j] for j in rank], lw=1, label=arm)
    ax2.set_xlabel("label, most frequent → rarest")
    ax2.set_ylabel("recall@3 (mean over seeds)")
    ax2.set_ylim(0, 1.02)
    ax2.legend(fontsize=8)
    ax2.set_title("Per-label recall (Gong et al. Fig. 2 analogue)", fontsize=9)
    fig.tight_layout()
    return fig


def write_sweep(out: str = "results/multilabel_sweep.json", scale: float = 1.0, arms: tuple[str, ...] | None = None,
                log=print) -> dict[str, Any]:
    """Run :func:`lr_sweep` (single-threaded) and write its table to ``out`` (JSON)::

        python -c "from vislearn.reproduce.multilabel import write_sweep; write_sweep()"
    """
    from vislearn.io import atomic_write_json

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = lr_sweep(scale, arms, log)
    finally:
        torch.set_num_threads(threads)
    atomic_write_json(out, result)
    log(f"wrote {out}: chosen " + ", ".join(f"{a} {v['chosen_lr']:g}" for a, v in result["arms"].items()))
    return result
