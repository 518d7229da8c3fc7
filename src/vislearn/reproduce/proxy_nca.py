"""Reproduction ``proxy_nca``: does Proxy-NCA converge faster than triplet loss with semi-hard mining?

Movshovitz-Attias et al. 2017, abstract and Fig. 1: the proxy loss converges "three times as fast as
other triplet-based losses" and ends with a higher Recall@1. A fair test needs both arms tuned the
same way, a curve fine enough to resolve a 3x difference, and a target both arms reach. This one:

* **Data**: the embedded class-disjoint shapes split (100 classes, 30 images each, 32 px): train on
  the first 50 classes, retrieve among the other 50 (the paper's zero-shot protocol).
* **Network (a CPU stand-in for fine-tuning)**: the paper fine-tunes an ImageNet BN-Inception. We
  freeze a randomly initialised ``small_convnet`` (one fixed draw, ``backbone_seed`` 0) up to its
  third stage and precompute its 8x8x64 maps once; each run trains a fresh head on them: a 3x3/2
  Conv-BN-ReLU stage of 128 channels (the network's last stage), global average pooling and the
  linear 64-d embedding (the recipe's ``frozen_backbone`` mode). A run then costs seconds, so both
  arms can be tuned and run with 5 seeds within the demo's budget. What it cannot show is how each
  loss fine-tunes a deep pretrained trunk: the ``--weights`` run below is the closer test. Without
  pretraining, the untrained head's Recall@1 is far below the trained one's (about 0.2 vs 0.4),
  so both arms have a curve to climb; with the whole network frozen and only the linear layer
  trained (tried while designing this test, random or classification-pretrained trunk) neither arm
  improved on the raw features by more than a few points, which would test nothing.
* **Same for both arms**: batches (8 classes x 4 images = 32 per step, P x K sampling), RMSProp,
  the proxies at 100x the base lr (not tuned; the paper's "much higher" rate), steps, seeds, head
  initialisation (a function of the seed only) and evaluation.
* **Tuning on held-out training classes** (never the test classes): the 50 training classes are
  split into 35 to train and 15 to validate (the recipe's ``validation_classes``). Each arm gets the
  same 3 x 4 grid: lr in {3e-4, 1e-3, 3e-3} x Proxy-NCA's ``scale`` (inverse softmax temperature on
  squared distances; 1 is Eq. 9 as printed, 9 the reference re-implementation's) in {0.3, 1, 3, 9},
  or triplet's margin in {0.1, 0.2, 0.4, 0.8} (FaceNet's 0.2), one tuning seed (100, not a final
  one). The first grid (scale 1-9, margin 0.1-0.4) put both arms' choice on its edge, so each was
  extended by one value beyond it. The selection score is the mean of the smoothed validation Recall@1 curve (evaluated
  every 50 steps) over the run (its normalised area), which rewards getting high *and* getting there
  early: each arm is tuned for exactly the two things the claim compares, so the speed-up is not
  inflated by a slow choice for the baseline. The sweep costs more than the demo's budget for this
  reproduction, so it was run once at full scale (``python -m vislearn.reproduce.proxy_nca_sweep``);
  its table is ``results/proxy_nca_sweep.json`` and :data:`CHOSEN` holds its choice (a test checks
  they agree). The demo runs only the 5 final seeds per arm with those values.
* **Curves**: Recall@1 on the 1500 test images every 25 steps (60 points in 1500 steps) and at step
  0 (the untrained head). Each seed's curve is smoothed by a centred moving average over 5
  evaluations (+-50 steps; the window is cut at the ends), which removes the evaluation noise
  without shifting the curve in time (a causal average would delay both arms by the same amount and
  shrink their ratio).
* **Plateau and target**: an arm's plateau is the mean of its smoothed curve over the last 20 % of
  the run, averaged over seeds. The target is 90 % of the way from the untrained head's Recall@1
  (``r0``, the mean over all runs at step 0) to the *lower* of the two plateaus: a target relative to
  the plateau alone (e.g. 0.9 x plateau) would sit close to ``r0`` when the untrained head already
  scores half the plateau, and the first evaluation would reach it. Steps-to-target of a seed is the
  first evaluation step at which its smoothed curve reaches the target.

``--weights FILE`` (an ImageNet BN-Inception file, e.g. TF-slim's ``inception_v2`` or the Caffe port;
read by ``vislearn.models.create_model``): the same protocol with that backbone frozen up to its
``inception4`` block (576 channels) at 128 px and a trainable 256-channel head stage, and the sweep
run inside the reproduction (the default backbone's choice does not transfer). It is slow on a CPU.
MAP@R and R-precision (Musgrave et al. 2020) are reported beside Recall@1. Independent trainings
run in :data:`WORKERS` processes of one thread each; every run is seeded by its own config, so the
numbers do not depend on the process count (a test checks it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

from vislearn.reproduce import Outcome, ReproContext, register_reproduction

STEPS = 1500  # per run at scale 1
EVALS = 60  # evaluations per run after step 0 (every 25 steps at scale 1)
FINAL_SEEDS = (0, 1, 2, 3, 4)
TUNE_SEEDS = (100,)
SWEEP_EVAL_EVERY = 2  # x the final runs' interval: the selection score needs fewer points than steps-to-target
VALIDATION_CLASSES = 15  # of the 50 training classes, held out for tuning
LRS = (3e-4, 1e-3, 3e-3)
ARMS = {"proxy_nca": ("scale", (0.3, 1.0, 3.0, 9.0)), "triplet": ("margin", (0.1, 0.2, 0.4, 0.8))}
LOSS = {"proxy_nca": {"loss": "proxy_nca"}, "triplet": {"loss": "triplet", "mining": "semihard"}}
# Chosen by the sweep at full scale (results/proxy_nca_sweep.json; tests/test_reproduce_proxy_nca.py checks it).
CHOSEN = {"proxy_nca": {"lr": 1e-3, "scale": 1.0}, "triplet": {"lr": 3e-3, "margin": 0.8}}
SMOOTH = 5  # evaluations in the centred moving average
TAIL = 0.2  # fraction of the run whose mean is the plateau
TARGET_FRACTION = 0.9  # of the way from r0 to the lower plateau
LEARN_BAR = 0.10  # every arm's plateau must exceed r0 by this much (absolute Recall@1); fixed before the run
SPEEDUP_BAR = 2.5  # "about 3x": the ratio of mean steps-to-target must be at least this
WORKERS = 5  # processes (one thread each) for the final runs; the numbers do not depend on it

COMMON = {"samples_per_class": 4, "batch_size": 8, "optimizer": "rmsprop", "proxy_lr_mult": 100.0,
          "eval_nmi": False, "log_every": 0, "eval_batch_size": 500, "embedding_dim": 64, "frozen_backbone": True}
STAND_IN = {"backbone": "small_convnet", "backbone_seed": 0, "feature_stage": 2, "head_width": 128, "image_size": 32}
PRETRAINED = {"backbone": "bn_inception", "feature_stage": 3, "head_width": 256, "image_size": 128}


def smooth(values: Sequence[float], width: int = SMOOTH) -> list[float]:
    """Centred moving average over ``width`` points (odd), the window cut at both ends."""
    h = width // 2
    return [statistics.fmean(values[max(0, i - h): i + h + 1]) for i in range(len(values))]


def plateau(curve: Sequence[float], tail: float = TAIL) -> float:
    """Mean of the last ``tail`` fraction of ``curve`` (at least one point)."""
    n = max(1, int(round(len(curve) * tail)))
    return statistics.fmean(curve[-n:])


def first_reach(steps: Sequence[int], curve: Sequence[float], target: float) -> int | None:
    """The first step at which ``curve`` is at least ``target`` (``None`` if never)."""
    for s, v in zip(steps, curve, strict=True):
        if v >= target - 1e-12:
            return s
    return None


def _scaled(ctx: ReproContext) -> dict[str, Any]:
    """Budget and data of this scale; tiny scales (the tests) only check that everything runs."""
    steps = ctx.steps(STEPS, minimum=4)
    full = ctx.scale >= 0.25
    return {"steps": steps, "eval_every": max(1, steps // EVALS),
            "data": {"dataset": "shapes", "num_classes": 100 if full else 20, "shapes_per_class": 30 if full else 8},
            "validation_classes": VALIDATION_CLASSES if full else 3,
            "grid_lrs": LRS if full else LRS[:2], "grid_size": None if full else 1,
            "tune_seeds": TUNE_SEEDS if full else TUNE_SEEDS[:1]}


def _setting(ctx: ReproContext) -> dict[str, Any]:
    if ctx.weights is None:
        return dict(STAND_IN)
    return {**PRETRAINED, "backbone_weights": ctx.weights, **({} if ctx.scale >= 0.25 else {"image_size": 32})}


def train_curve(overrides: dict[str, Any]) -> dict[str, Any]:
    """One run of the ``proxy_nca`` recipe: Recall@1 at step 0 and every ``eval_every`` steps, final metrics."""
    from torch.utils.data import DataLoader

    from vislearn import recipes

    start: dict[str, float] = {}

    def at_step0(cfg, task) -> None:  # the untrained head (the engine seeds the run's stream afterwards)
        task.model.eval()
        loader = DataLoader(task.eval_set, batch_size=cfg.eval_batch_size or cfg.batch_size)
        start.update(task.evaluate(task.model, loader))
        task.model.train()

    # = vislearn train proxy_nca --set k=v for every key of overrides
    res = recipes.run("proxy_nca", "quick", overrides, progress=False, on_build=at_step0)
    if res.interrupted:
        raise KeyboardInterrupt(f"interrupted at step {res.step}")
    evals = [h for h in res.history if h["split"] == "eval"]
    return {"steps": [0] + [h["step"] for h in evals], "recall@1": [start["recall@1"]] + [h["recall@1"] for h in evals],
            "final": {k: evals[-1][k] for k in ("recall@1", "map@r", "r_precision")}}


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def run_all(overrides: Sequence[dict[str, Any]], workers: int = 1) -> list[dict[str, Any]]:
    """:func:`train_curve` of each override set, in order; ``workers > 1``: in that many processes of one
    thread each (each run is seeded by its own config, so the results do not depend on ``workers``)."""
    if workers <= 1 or len(overrides) <= 1:
        return [train_curve(o) for o in overrides]
    from concurrent.futures import ProcessPoolExecutor

    from vislearn import recipes

    # Build once here so the data and the frozen maps are cached before the workers fork and inherit them
    # (each would otherwise draw the images and run the trunk again).
    recipes.build("proxy_nca", "quick", dict(overrides[0]))
    with ProcessPoolExecutor(min(workers, len(overrides)), initializer=_one_thread) as pool:
        return list(pool.map(train_curve, overrides))


def sweep(ctx: ReproContext, setting: dict[str, Any] | None = None, workers: int = 1) -> dict[str, Any]:
    """The per-arm grid on held-out training classes; returns the table and each arm's choice.

    ``workers > 1`` runs the grid's trainings in that many processes (the results do not depend on it).
    """
    sc = _scaled(ctx)
    setting = _setting(ctx) if setting is None else setting
    jobs = [(arm, param, lr, v, seed) for arm, (param, values) in ARMS.items() for lr in sc["grid_lrs"]
            for v in values[: sc["grid_size"]] for seed in sc["tune_seeds"]]
    overrides = [{**COMMON, **setting, **sc["data"], **LOSS[arm], "lr": lr, param: v,
                  "validation_classes": sc["validation_classes"], "steps": sc["steps"],
                  "eval_every": sc["eval_every"] * SWEEP_EVAL_EVERY, "seed": seed}
                 for arm, param, lr, v, seed in jobs]
    results = run_all(overrides, workers)
    cells: dict[tuple, list[list[float]]] = {}
    for (arm, param, lr, v, _), c in zip(jobs, results, strict=True):
        cells.setdefault((arm, param, lr, v), []).append(smooth(c["recall@1"]))
    rows, chosen = [], {}
    for (arm, param, lr, v), ss in cells.items():
        scores = [statistics.fmean(s) for s in ss]
        row = {"arm": arm, "lr": lr, param: v, "score_mean_smoothed_val_recall@1": statistics.fmean(scores),
               "val_plateau_recall@1": statistics.fmean(plateau(s) for s in ss), "per_seed_score": scores,
               "val_recall@1_start": statistics.fmean(s[0] for s in ss)}
        rows.append(row)
        ctx.log(f"  sweep {arm:9s} lr {lr:g} {param} {v:g}: score {row['score_mean_smoothed_val_recall@1']:.3f}"
                f" plateau {row['val_plateau_recall@1']:.3f}")
    for arm, (param, values) in ARMS.items():
        best = max((r for r in rows if r["arm"] == arm), key=lambda r: r["score_mean_smoothed_val_recall@1"])
        grids = (("lr", sc["grid_lrs"]), (param, values[: sc["grid_size"]]))
        chosen[arm] = {"lr": best["lr"], param: best[param],
                       "on_grid_edge": [k for k, grid in grids if len(grid) > 1 and best[k] in (grid[0], grid[-1])]}
    return {"grid": {"lr": list(sc["grid_lrs"]), **{p: list(v) for p, v in ARMS.values()}},
            "selection": "mean over the run of the smoothed validation Recall@1 (15 held-out training classes), "
                         "mean over the tuning seeds",
            "tune_seeds": list(sc["tune_seeds"]), "steps": sc["steps"],
            "eval_every": sc["eval_every"] * SWEEP_EVAL_EVERY,
            "setting": setting, "rows": rows, "chosen": chosen}


def _welch_se(a: Sequence[float], b: Sequence[float]) -> float:
    var = (statistics.variance(a) / len(a) if len(a) > 1 else 0.0) + (statistics.variance(b) / len(b)
                                                                         if len(b) > 1 else 0.0)
    return math.sqrt(var)


@register_reproduction(
    "proxy_nca",
    paper="Movshovitz-Attias et al., ICCV 2017 (No Fuss DML), abstract and Fig. 1",
    claim="Proxy-NCA converges about 3x faster than triplet loss with semi-hard mining and reaches a higher "
          "Recall@1 on held-out classes",
    criterion="shapes zero-shot split (50 train / 50 test classes), frozen random small_convnet trunk + trained "
              "head (CPU stand-in for fine-tuning), lr and scale/margin tuned per arm on a 3x4 grid on 15 held-out "
              "training classes, same batches/optimizer/steps, 5 seeds, test Recall@1 every 25 of 1500 steps, "
              "each seed's curve smoothed (centred 5-point mean). Learning bar: each arm's plateau (mean of the "
              "last 20%) exceeds the untrained head's Recall@1 r0 by >= 0.10. Target: r0 + 0.9 x (lower plateau - "
              "r0). Reproduced iff both arms clear the bar, every seed reaches the target, triplet's mean "
              "steps-to-target is >= 2.5x Proxy-NCA's, and Proxy-NCA's plateau is higher by more than 2 standard "
              "errors (Welch) over seeds",
    seeds=FINAL_SEEDS, inputs=("weights",))
def run(ctx: ReproContext) -> Outcome:
    sc = _scaled(ctx)
    setting = _setting(ctx)
    ctx.log(f"  setting: {setting}; {sc['steps']} steps per run, Recall@1 every {sc['eval_every']}")
    if ctx.weights is None:
        tuned = {"chosen": CHOSEN, "source": "results/proxy_nca_sweep.json (python -m "
                                             "vislearn.reproduce.proxy_nca_sweep), not re-run here"}
    else:
        tuned = sweep(ctx, setting, WORKERS if ctx.scale >= 0.25 else 1)
        tuned["source"] = "swept in this run (held-out training classes)"
    chosen = {arm: {k: v for k, v in c.items() if k != "on_grid_edge"} for arm, c in tuned["chosen"].items()}
    curves: dict[str, list[list[float]]] = {arm: [] for arm in ARMS}
    finals: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    jobs = [(seed, arm) for seed in ctx.seeds for arm in ARMS]
    results = run_all([{**COMMON, **setting, **sc["data"], **LOSS[arm], **chosen[arm], "steps": sc["steps"],
                        "eval_every": sc["eval_every"], "seed": seed} for seed, arm in jobs],
                      WORKERS if ctx.scale >= 0.25 else 1)
    steps: list[int] = []
    for (seed, arm), c in zip(jobs, results, strict=True):
        steps = c["steps"]
        curves[arm].append(c["recall@1"])
        finals[arm].append(c["final"])
        shown = c["recall@1"][:: max(1, EVALS // 10)]
        ctx.log(f"  seed {seed} {arm:9s}: R@1 " + " ".join(f"{v:.2f}" for v in shown)
                + f" | final MAP@R {c['final']['map@r']:.3f}")
    smoothed = {arm: [smooth(c) for c in cs] for arm, cs in curves.items()}
    r0 = statistics.fmean(c[0] for cs in curves.values() for c in cs)
    per_seed_plateau = {arm: [plateau(s) for s in ss] for arm, ss in smoothed.items()}
    plat = {arm: statistics.fmean(p) for arm, p in per_seed_plateau.items()}
    target = r0 + TARGET_FRACTION * (min(plat.values()) - r0)
    reach = {arm: [first_reach(steps, s, target) for s in ss] for arm, ss in smoothed.items()}
    learned = {arm: plat[arm] - r0 >= LEARN_BAR for arm in ARMS}
    all_reach = all(s is not None for rs in reach.values() for s in rs)
    mean_steps = {arm: statistics.fmean(rs) if all(s is not None for s in rs) else None for arm, rs in reach.items()}
    std_steps = {arm: statistics.pstdev(rs) if mean_steps[arm] is not None else None for arm, rs in reach.items()}
    speedup = (mean_steps["triplet"] / mean_steps["proxy_nca"]
               if mean_steps["triplet"] is not None and mean_steps["proxy_nca"] else None)
    diff = plat["proxy_nca"] - plat["triplet"]
    se = _welch_se(per_seed_plateau["proxy_nca"], per_seed_plateau["triplet"])
    higher = diff > 2 * se
    faster = speedup is not None and speedup >= SPEEDUP_BAR
    passed = bool(all(learned.values()) and all_reach and faster and higher)
    verdict = None if all(learned.values()) else "not tested: an arm did not clear the learning bar"

    def ms(values: Sequence[float]) -> dict[str, float]:
        return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}

    numbers = {
        "setting": setting, "chosen": tuned["chosen"], "tuning_source": tuned["source"],
        **({"sweep": tuned} if ctx.weights is not None else {}),
        "steps_per_run": sc["steps"], "eval_every": sc["eval_every"], "seeds": list(ctx.seeds),
        "r0_untrained_recall@1": r0, "learn_bar": LEARN_BAR, "learned": learned,
        "plateau_recall@1": {arm: ms(p) for arm, p in per_seed_plateau.items()},
        "plateau_recall@1_per_seed": per_seed_plateau,
        "plateau_difference": diff, "plateau_difference_welch_se": se, "proxy_plateau_higher_by_2se": higher,
        "target_recall@1": target, "steps_to_target_per_seed": reach,
        "steps_to_target": {arm: {"mean": mean_steps[arm], "std": std_steps[arm]} for arm in ARMS},
        "speedup_triplet_over_proxy": speedup, "speedup_bar": SPEEDUP_BAR,
        "final": {arm: {k: ms([f[k] for f in fs]) for k in ("recall@1", "map@r", "r_precision")}
                  for arm, fs in finals.items()},
        "eval_steps": steps,
        "mean_smoothed_recall@1": {arm: [statistics.fmean(v) for v in zip(*ss, strict=True)]
                                   for arm, ss in smoothed.items()},
    }
    sp = "n/a" if speedup is None else f"{speedup:.2f}x"
    notes = (f"r0 {r0:.3f}; plateau R@1 Proxy-NCA {plat['proxy_nca']:.3f} vs triplet {plat['triplet']:.3f} "
             f"(difference {diff:+.3f}, 2 SE {2 * se:.3f}); target {target:.3f} reached at "
             + ", ".join(f"{arm} {_fmt(mean_steps[arm], std_steps[arm])}" for arm in ARMS)
             + f" steps; speed-up {sp} (bar {SPEEDUP_BAR}x); chosen {chosen}.")
    ctx.log("  " + notes)
    return Outcome(passed=passed, numbers=numbers, figure=_figure(steps, smoothed, target, reach, len(ctx.seeds)),
                   notes=notes, verdict=verdict)


def _fmt(mean: float | None, std: float | None) -> str:
    return "not reached (some seeds)" if mean is None else f"{mean:.0f} +- {std:.0f}"


def _figure(steps, smoothed, target, reach, n_seeds):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"proxy_nca": "tab:blue", "triplet": "tab:orange"}
    labels = {"proxy_nca": "Proxy-NCA", "triplet": "triplet, semi-hard"}
    for arm, ss in smoothed.items():
        mean = [statistics.fmean(v) for v in zip(*ss, strict=True)]
        sd = [statistics.pstdev(v) for v in zip(*ss, strict=True)]
        axes[0].plot(steps, mean, color=colours[arm], label=f"{labels[arm]} (mean of smoothed)")
        axes[0].fill_between(steps, [m - s for m, s in zip(mean, sd, strict=True)],
                             [m + s for m, s in zip(mean, sd, strict=True)], color=colours[arm], alpha=0.2)
        ys = [s for s in reach[arm] if s is not None]
        axes[1].scatter([list(smoothed).index(arm)] * len(ys), ys, color=colours[arm])
        if ys:
            axes[1].bar(list(smoothed).index(arm), statistics.fmean(ys), color=colours[arm], alpha=0.3)
    axes[0].axhline(target, color="grey", ls="--", lw=0.8, label="target")
    axes[0].set_xlabel("training steps (batch 32)")
    axes[0].set_ylabel("Recall@1 (held-out test classes)")
    axes[0].set_title(f"smoothed Recall@1, {n_seeds} seeds (band: +-1 std)")
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3)
    axes[1].set_xticks(range(len(smoothed)), [labels[a] for a in smoothed])
    axes[1].set_ylabel("steps to target (per seed; bar: mean)")
    axes[1].set_title("steps to target")
    fig.tight_layout()
    return fig
