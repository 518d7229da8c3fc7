"""Inception-v4 paper (Szegedy et al. 2017), two training claims about residual Inception networks.

Both parts run on ``shapes_classification`` (10 classes, 75×75, the smallest input these networks
accept). The 1000 training images are split once (fixed permutation) into 800 for training and 200
held out for **tuning**; the 300 test images are used only by the final runs, never by a sweep.

Optimiser. Every run uses SGD with Nesterov momentum 0.9 at a constant learning rate, no weight
averaging (an EMA would delay every curve by its horizon), label smoothing, weight decay and dropout as
the recipes' ``quick`` presets; bf16 + channels_last. The paper's RMSProp (ε = 1, lr 0.045, clip 2.0) is
not used, for the reason found when diagnosing the old version of this reproduction, in which the
Inception-v4 arm never left chance: at initialisation the plain (non-residual) Inception-v4 has a
gradient norm that grows by ≈1.45× per Inception-B block from the classifier down (≈2 at the head,
≈900 at the stem, total ≈1600 at width 0.125 on one batch of 32), the known gradient explosion of deep
batch-normalised stacks without shortcuts. This is the architecture's, not an initialisation or BN
placement bug: timm's ``inception_v4`` at 75 px under its own initialisation shows the same profile
(the scale-free quantity ‖g‖·‖w‖ of a BN-followed convolution is ≈200× larger at the stem than near
the head in both), and it is ≈2.7× milder at 150 px (BN statistics over larger maps). Clipping the
global norm at 2.0 therefore shrinks every update ≈800×, so the classifier never moves; RMSProp
(ε = 1) and Adam give the chaotic early layers a per-parameter step as large as the head's, which
re-randomises the features each step. Plain SGD learns: the large stem gradients grow the stem
weights' norm, which lowers their effective learning rate (BN makes them scale-invariant). The
Inception-ResNet-v2 arm has a total gradient norm of ≈20 at initialisation. Which of the two arms
profits from clipping or from which learning rate is settled by the sweep below, not assumed.

(a) Sec. 5 / Figs. 21-26: "residual connections accelerate the training of Inception networks
significantly". Inception-ResNet-v2 in the paper's layout (width 0.14) against Inception-v4 (width
0.125) of similar cost (multiply-adds at 75 px and parameters are reported). Each arm's learning rate
and gradient clipping are tuned on the same grid (:data:`A_GRID_LR` × :data:`A_GRID_CLIP`, seed 0, a
budget of :data:`A_STEPS` steps): the chosen setting reaches :data:`TARGET` held-out top-1 (evaluated
every 10 steps) in the fewest steps. The sweep is run once (``python -m
vislearn.reproduce.inception_residual_sweep``) and its table committed as
``results/inception_residual_sweep.json``; the demo runs with the chosen values (:data:`A_CHOSEN`,
checked against the table by the tests). The final runs (3 seeds per arm) train on the same 800 images
and evaluate test top-1 every 10 steps; measured: the first step at which test top-1 reaches
:data:`TARGET` (a run stops there: the rest of its curve is not measured, which keeps the demo within
its budget). An arm *learns* when every seed reaches :data:`LEARN_BAR` (= the target, 3.5× chance)
within the budget; the speed-up is judged only when both arms learn.

(b) Sec. 3.3: "if the number of filters exceeded 1000, the residual variants started to exhibit
instabilities and the network has just 'died' early in the training, meaning that the last layer
before the average pooling started to produce only zeros after a few tens of thousands of
iterations ... could not be prevented, neither by lowering the learning rate, nor by adding an extra
batch-normalization to this layer ... scaling down the residuals before adding them ... seemed to
stabilize the training". A wide Inception-ResNet-v2 (paper layout, width 0.5: 1072 filters in the last
stage; 2/4/2 residual blocks to fit a CPU) with every residual scale 1.0 against the same net with
scales 0.2, without gradient clipping so that the scale is the only stabiliser. Each arm's maximum
stable learning rate is found by the committed sweep (the largest of :data:`B_GRID_LR` at which seed 0
stays finite, never dies and reaches :data:`B_LEARNED` held-out top-1 within :data:`B_STEPS` steps);
the final runs train each arm at its own maximum stable rate and track death every 10 steps on 64
held-out images in eval mode: the fraction of exactly-zero stage-4 activations (the layer before the
average pooling, after its ReLU), the spread of the logits across images, and held-out top-1. A run
*dies* when its activations or logits become non-finite, when ≥ 99% of the pre-pool activations are
zero or the logits are the same for every image (spread < 1e-4) at the last check, or when it had
learned (top-1 ≥ :data:`B_LEARNED`) and fell back to chance (≤ 0.15) at the end. The paper's deaths
come after tens of thousands of ImageNet iterations; a CPU run of a few hundred steps cannot reach
that horizon, and a run in which neither arm dies is reported as "not observed at this scale", not as
a refutation. ``--scale N`` multiplies every step budget (a GPU-sized run of the same protocol).

The final runs (and the sweep's grid points) are independent, so they run in a pool of single-threaded
processes, one per available core (``VISLEARN_REPRO_PROCESSES=N`` overrides); the numbers do not depend
on it.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

import torch

from vislearn.reproduce import Outcome, ReproContext, register_reproduction
from vislearn.train.hooks import Hook

SWEEP_FILE = "inception_residual_sweep.json"
PROCESSES_ENV = "VISLEARN_REPRO_PROCESSES"
N_VAL = 200  # held out from the 1000 training images for tuning
SPLIT_SEED = 1234
EVAL_EVERY = 10
SGD = {"optimizer": "sgd", "momentum": 0.9, "nesterov": True, "schedule": "constant", "ema_decay": 0.0,
       "warmup_steps": 0}

# (a)
V4 = ("inception_v4", "inception_v4", {"width": 0.125})  # (recipe, model, options)
IRV2 = ("inception_resnet_v2", "inception_resnet_v2_paper", {"width": 0.14})
A_STEPS = 150  # a budget; each (a) run stops at its first evaluation at or above TARGET
# 0.001 added (both arms) after the first final run, where v4's choice was the grid's lowest lr; the choices
# did not change (v4 at 0.001: 35% only at step 150 vs 110 at 0.003), so the grid now brackets them
A_GRID_LR = (0.001, 0.003, 0.01, 0.03, 0.1)
A_GRID_CLIP = (0.0, 2.0)  # 0: no clipping; 2.0: the paper's threshold
# the committed sweep's choices (a test checks them against the table)
A_CHOSEN = {"inception_v4": {"lr": 0.003, "clip_grad": 0.0},
            "inception_resnet_v2_paper": {"lr": 0.1, "clip_grad": 2.0}}
# top-1 (chance 0.1): held-out in the sweep, test in the final runs. The sweep ran with 0.5; Inception-v4
# reached it at no grid point (best 0.425 held-out), so it was lowered to 0.35 on the held-out table
# (steps recomputed from its stored curves) before any final run.
TARGET = 0.35
LEARN_BAR = TARGET  # an arm learns when every seed's best test top-1 reaches this (3.5x chance)
SPEEDUP = 0.75  # IR-v2's median steps-to-target at most this fraction of v4's

# (b)
WIDE = {"model": "inception_resnet_v2_paper", "width": 0.5, "depths": (2, 4, 2), "clip_grad": 0.0}
B_SCALES = (1.0, 0.2)
B_STEPS = 40
B_GRID_LR = (0.03, 0.1, 0.3, 1.0)
# maximum stable lr per residual scale, from the committed sweep; None: no grid lr was stable (the run then
# uses the grid's lowest lr, the most favourable to it)
B_CHOSEN: dict[float, float | None] = {1.0: None, 0.2: 0.1}
B_LEARNED = 0.3  # held-out top-1 (3x chance)
DEAD_ZERO_FRACTION = 0.99
DEAD_LOGIT_SPREAD = 1e-4
CHANCE_BAND = 0.15


def _criterion() -> str:
    return (
        f"(a) with each arm's lr and clipping chosen on held-out data by the same sweep (grid lr {list(A_GRID_LR)} x "
        f"clip {list(A_GRID_CLIP)}, SGD-Nesterov, not the paper's RMSProp), both arms learn (every seed's best test "
        f"top-1 >= {LEARN_BAR}; chance 0.1) and Inception-ResNet-v2 (paper layout, width 0.14) reaches {TARGET:.0%} "
        f"test top-1 in fewer steps than Inception-v4 (width 0.125, similar multiply-adds) in at least 2 of 3 seeds "
        f"with median steps-to-{TARGET:.0%} at most {SPEEDUP}x Inception-v4's (a run that never reaches it counts "
        f"as its budget + {EVAL_EVERY}); if an arm does not learn, (a) is 'untested', not reproduced. (b) wide "
        f"Inception-ResNet-v2 (width 0.5, 1072 filters), no clipping, each arm at its maximum stable lr from the "
        f"sweep (grid {list(B_GRID_LR)}; the grid's lowest where none was stable): the unscaled net (residual "
        f"scale 1.0) dies (non-finite, >= 99% zero "
        f"pre-pool activations or constant logits at the end, or learned then fell back to chance) in at least 2 of "
        f"3 seeds while the scaled one (0.2) dies in none. The paper's deaths come after tens of thousands of "
        f"iterations: if neither arm dies, (b) is 'not observed at this scale' (untested), not refuted."
    )


def _split(train_set) -> tuple[list[int], list[int]]:
    g = torch.Generator().manual_seed(SPLIT_SEED)
    idx = torch.randperm(len(train_set), generator=g).tolist()
    return idx[N_VAL:], idx[:N_VAL]


class _StopAtTarget(Hook):
    """Ends an (a) run at its first evaluation with top-1 >= TARGET: the rest of the curve is not measured."""

    def should_stop(self, step: int, metrics: dict[str, float]) -> bool:
        return metrics.get("eval/top1", 0.0) >= TARGET


def _train(recipe: str, overrides: dict[str, Any], steps: int, seed: int, evaluate_on: str,
           probe_death: bool = False, stop_at_target: bool = False) -> dict[str, Any]:
    """One run of ``recipe``'s ``quick`` preset on the 800 training images; ``evaluate_on`` is ``"val"``
    (the 200 held-out images) or ``"test"``; held-out top-1 every :data:`EVAL_EVERY` steps."""
    from torch.utils.data import Subset

    from vislearn import recipes
    from vislearn.nn.profile import count_macs

    out: dict[str, Any] = {"deaths": []}
    seen: dict[str, Any] = {}

    def on_build(cfg: Any, task: Any) -> None:
        seen["model"] = model = task.module.model
        out.update(params=sum(p.numel() for p in model.parameters()), mmacs_75=count_macs(model, 75) / 1e6)
        train_idx, val_idx = _split(task.train_set)
        seen["val"] = Subset(task.train_set, val_idx)
        if evaluate_on == "val":
            task.eval_set = seen["val"]
        task.train_set = Subset(task.train_set, train_idx)
        if stop_at_target:
            task.hooks.append(_StopAtTarget())

    def watch(trainer: Any, step: int) -> None:
        seen["trainer"] = trainer
        if probe_death and (step % EVAL_EVERY == 0 or step == steps):
            out["deaths"].append({"step": step, **_death_probe(seen["model"], seen["val"])})

    try:  # = vislearn train RECIPE --set k=v for each override
        res = recipes.run(recipe, "quick", {**SGD, **overrides, "steps": steps, "seed": seed, "log_every": EVAL_EVERY,
                                            "eval_every": EVAL_EVERY, "ckpt_every": 0}, progress=False,
                          on_build=on_build, callbacks=[watch])
        history = res.history  # its eval records end with the engine's final evaluation
        out["nonfinite"] = False
    except FloatingPointError as e:  # the engine stops on a non-finite loss
        history = seen["trainer"].history if "trainer" in seen else []
        out.update(nonfinite=True, error=str(e))
    curve = [(h["step"], h["top1"]) for h in history if h["split"] == "eval"]
    out["curve"] = curve
    out["train_curve"] = [(h["step"], h["acc"], h["loss"]) for h in history if h["split"] == "train"]
    out["steps_to_target"] = next((s for s, a in curve if a >= TARGET), None)
    out["best_top1"] = max((a for _, a in curve), default=float("nan"))
    out["final_top1"] = curve[-1][1] if curve else float("nan")
    if probe_death:
        out.update(_death_verdict(out))
    return out


@torch.no_grad()
def _death_probe(model: torch.nn.Module, val) -> dict[str, Any]:
    """Death statistics on the first 64 held-out images, model in eval mode (then back to train)."""
    x = torch.stack([val[i][0] for i in range(min(64, len(val)))])
    was = model.training
    model.eval()
    try:
        feats = model.forward_features(x)[-1].float()
        logits = model.forward_head(feats).float()
    finally:
        model.train(was)
    finite = bool(torch.isfinite(feats).all() and torch.isfinite(logits).all())
    return {"zero_fraction": float((feats == 0).float().mean()), "logit_spread": float(logits.std(0).mean()),
            "finite": finite}


def _death_verdict(r: dict[str, Any]) -> dict[str, Any]:
    last = r["deaths"][-1] if r["deaths"] else {"zero_fraction": 0.0, "logit_spread": 1.0, "finite": True}
    collapsed = last["zero_fraction"] >= DEAD_ZERO_FRACTION or last["logit_spread"] < DEAD_LOGIT_SPREAD
    relapsed = r["best_top1"] >= B_LEARNED and r["final_top1"] <= CHANCE_BAND
    nonfinite = r["nonfinite"] or not all(d["finite"] for d in r["deaths"])
    return {"dead": bool(nonfinite or collapsed or relapsed), "collapsed": collapsed, "relapsed": relapsed,
            "any_nonfinite": nonfinite, "learned": r["best_top1"] >= B_LEARNED}


def _b_lr(scale: float) -> float:
    """The (b) arm's lr: its maximum stable lr from the sweep, else the grid's lowest."""
    return B_CHOSEN[scale] or min(B_GRID_LR)


def _wide(scale: float, lr: float) -> dict[str, Any]:
    return {**WIDE, "scale_a": scale, "scale_b": scale, "scale_c": scale, "lr": lr}


# ------------------------------------------------------------------------------------ the sweep
def _sweep_point(job: tuple) -> dict[str, Any]:
    """One grid point of the sweep (a process-pool job): seed 0, evaluated on the held-out split."""
    torch.set_num_threads(1)
    part, name, value, lr, steps = job
    if part == "a":
        recipe, model, opts = next(arm for arm in (V4, IRV2) if arm[1] == name)
        r = _train(recipe, {"model": model, **opts, "lr": lr, "clip_grad": value}, steps, 0, "val",
                   stop_at_target=True)
        return {"part": "a", "model": model, "lr": lr, "clip_grad": value,
                **{k: r[k] for k in ("best_top1", "final_top1", "steps_to_target", "nonfinite", "curve")}}
    r = _train("inception_resnet_v2", _wide(value, lr), steps, 0, "val", probe_death=True)
    return {"part": "b", "scale": value, "lr": lr, "stable": bool(not r["dead"] and r["learned"]),
            **{k: r[k] for k in ("dead", "learned", "best_top1", "final_top1", "curve", "deaths")}}


def sweep(scale: float = 1.0, jobs: int = 1, log=print) -> dict[str, Any]:
    """The one-off tuning run (held-out data, seed 0): (a) each arm over lr x clip, (b) each residual
    scale over lr. Returns the table with the chosen values; ``jobs`` runs grid points in parallel
    processes (each single-threaded; the numbers do not depend on it)."""
    steps_a, steps_b = max(2, round(A_STEPS * scale)), max(2, round(B_STEPS * scale))
    grid = [("a", arm[1], clip, lr, steps_a) for arm in (V4, IRV2) for clip in A_GRID_CLIP for lr in A_GRID_LR]
    grid += [("b", "wide", s, lr, steps_b) for s in B_SCALES for lr in B_GRID_LR]
    results = _map(_sweep_point, grid, jobs)
    for r in results:
        what = f"{r['model']} clip {r['clip_grad']}" if r["part"] == "a" else f"wide scale {r['scale']}"
        tail = f"steps to {TARGET:.0%} {r['steps_to_target']}" if r["part"] == "a" else \
            f"dead {r['dead']}, stable {r['stable']}"
        log(f"  sweep ({r['part']}) {what} lr {r['lr']}: best held-out top-1 {r['best_top1']:.3f}, {tail}")
    table: dict[str, Any] = {"a": {"steps": steps_a, "grid_lr": list(A_GRID_LR), "grid_clip": list(A_GRID_CLIP),
                                   "score": "steps to the held-out target (then best top-1)", "runs": {}},
                             "b": {"steps": steps_b, "grid_lr": list(B_GRID_LR), "runs": {}}}
    for model in (V4[1], IRV2[1]):
        rows = [r for r in results if r["part"] == "a" and r["model"] == model]
        table["a"]["runs"][model] = {"rows": rows, "chosen": choose_a(rows, steps_a)}
    for s in B_SCALES:
        rows = [r for r in results if r["part"] == "b" and r["scale"] == s]
        best = max_stable_lr(rows)
        table["b"]["runs"][str(s)] = {"rows": rows, "max_stable_lr": best,
                                      "max_stable_at_grid_edge": best is not None and best == max(B_GRID_LR)}
    return table


def choose_a(rows: list[dict[str, Any]], steps: int) -> dict[str, float]:
    """The (a) setting that reaches the held-out target in the fewest steps (never: ``steps`` + one
    evaluation interval); ties go to the higher best top-1, then to the first row of the grid."""
    best = min(rows, key=lambda x: (x["steps_to_target"] or steps + EVAL_EVERY, -x["best_top1"]))
    return {"lr": best["lr"], "clip_grad": best["clip_grad"]}


def max_stable_lr(rows: list[dict[str, Any]]) -> float | None:
    """The largest learning rate whose (b) sweep run was stable (learned, never dead); None if none was."""
    ok = [x["lr"] for x in rows if x["stable"]]
    return max(ok) if ok else None


def _final_point(job: tuple) -> dict[str, Any]:
    """One final run (a process-pool job): (a) an arm at its chosen setting on the test split, or (b) a
    residual scale at its maximum stable lr with death tracking."""
    torch.set_num_threads(1)  # tiny-width nets at 75 px: a second thread mostly adds synchronisation
    part, what, seed, steps = job
    if part == "a":
        recipe, model, opts = next(arm for arm in (V4, IRV2) if arm[1] == what)
        return _train(recipe, {"model": model, **opts, **A_CHOSEN[model]}, steps, seed, "test", stop_at_target=True)
    return _train("inception_resnet_v2", _wide(what, _b_lr(what)), steps, seed, "val", probe_death=True)


def _map(fn, jobs: list[tuple], processes: int | None = None) -> list[dict[str, Any]]:
    """``[fn(j) for j in jobs]`` in a pool of single-threaded processes: ``processes``, else the environment's
    ``VISLEARN_REPRO_PROCESSES``, else one per available core. The runs are independent and seeded, so the
    numbers do not depend on the number of processes."""
    n = processes or int(os.environ.get(PROCESSES_ENV) or 0) or len(os.sched_getaffinity(0))
    n = min(len(jobs), n)
    if n <= 1:
        return [fn(j) for j in jobs]
    import multiprocessing as mp

    with mp.get_context("fork").Pool(n) as pool:
        return pool.map(fn, jobs, chunksize=1)


# ------------------------------------------------------------------------------------ the reproduction
@register_reproduction(
    "inception_residual",
    paper="Szegedy, Ioffe, Vanhoucke, Alemi 2017 (arXiv 1602.07261), Sec. 3.3 and 5, Figs. 21-26",
    claim="(a) residual connections accelerate the training of Inception networks; (b) scaling the residuals "
          "by 0.1-0.3 keeps very wide (>1000 filters) residual Inception networks from dying",
    criterion=_criterion(),
)
def run(ctx: ReproContext) -> Outcome:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny-width nets at 75 px: a second thread mostly adds synchronisation
    try:
        return _run_all(ctx)
    finally:
        torch.set_num_threads(threads)


def _run_all(ctx: ReproContext) -> Outcome:
    steps_a, steps_b = ctx.steps(A_STEPS, minimum=2), ctx.steps(B_STEPS, minimum=2)
    ctx.log(f"  lr/clip per arm and max stable lr per residual scale from the committed sweep ({SWEEP_FILE}, "
            f"held-out split, seed 0; rerun with `python -m vislearn.reproduce.inception_residual_sweep`): "
            f"(a) {A_CHOSEN}, (b) {B_CHOSEN}")
    a_runs: dict[str, list[dict[str, Any]]] = {V4[1]: [], IRV2[1]: []}
    b_runs: dict[str, list[dict[str, Any]]] = {f"scale_{s}": [] for s in B_SCALES}
    jobs = [("a", arm[1], seed, steps_a) for arm in (V4, IRV2) for seed in ctx.seeds]
    jobs += [("b", s, seed, steps_b) for s in B_SCALES for seed in ctx.seeds]
    for (part, what, seed, _), r in zip(jobs, _map(_final_point, jobs), strict=True):
        if part == "a":
            a_runs[what].append(r)
            ctx.log(f"  (a) seed {seed} {what} ({r['mmacs_75']:.1f} MMACs, {r['params'] / 1e6:.2f}M params, "
                    f"{A_CHOSEN[what]}): steps to {TARGET:.0%} test top-1 {r['steps_to_target']}, best "
                    f"{r['best_top1']:.3f}")
        else:
            b_runs[f"scale_{what}"].append(r)
            last = r["deaths"][-1] if r["deaths"] else {}
            ctx.log(f"  (b) seed {seed} wide, scale {what}, lr {_b_lr(what)}: best held-out top-1 "
                    f"{r['best_top1']:.3f}, final {r['final_top1']:.3f}, last zero fraction "
                    f"{last.get('zero_fraction', float('nan')):.3f}, logit spread "
                    f"{last.get('logit_spread', float('nan')):.2g} -> dead {r['dead']}")
    need = math.ceil(2 * len(ctx.seeds) / 3)

    # (a): both arms must learn before a speed-up can be judged
    censored = steps_a + EVAL_EVERY
    learns = {m: all(r["best_top1"] >= LEARN_BAR for r in runs) for m, runs in a_runs.items()}
    v4_steps = [r["steps_to_target"] or censored for r in a_runs[V4[1]]]
    ir_steps = [r["steps_to_target"] or censored for r in a_runs[IRV2[1]]]
    faster = sum(i < v for i, v in zip(ir_steps, v4_steps, strict=True))
    ratio = statistics.median(ir_steps) / statistics.median(v4_steps)
    tested_a = all(learns.values())
    passed_a = tested_a and faster >= need and ratio <= SPEEDUP
    numbers: dict[str, Any] = {
        "a": {"steps": steps_a, "target_test_top1": TARGET, "learn_bar": LEARN_BAR, "chosen": A_CHOSEN,
              "both_learn": tested_a, "learns": learns, "median_steps_irv2": statistics.median(ir_steps),
              "median_steps_v4": statistics.median(v4_steps), "median_ratio": ratio, "seeds_irv2_faster": faster,
              "passed": passed_a, "runs": {m: {"mmacs_75": rs[0]["mmacs_75"], "params": rs[0]["params"],
                                               **{k: [r[k] for r in rs] for k in
                                                  ("steps_to_target", "best_top1", "final_top1", "curve")}}
                                           for m, rs in a_runs.items()}},
    }
    # (b)
    unscaled, scaled = b_runs[f"scale_{B_SCALES[0]}"], b_runs[f"scale_{B_SCALES[1]}"]
    dead_u, dead_s = sum(r["dead"] for r in unscaled), sum(r["dead"] for r in scaled)
    passed_b = dead_u >= need and dead_s == 0
    observed_b = dead_u + dead_s > 0
    numbers["b"] = {"steps": steps_b, "max_stable_lr": {str(k): v for k, v in B_CHOSEN.items()},
                    "seeds_dead_unscaled": dead_u, "seeds_dead_scaled": dead_s, "passed": passed_b,
                    "runs": {k: {"params": rs[0]["params"], "mmacs_75": rs[0]["mmacs_75"],
                                 **{f: [r[f] for r in rs] for f in ("dead", "collapsed", "relapsed", "any_nonfinite",
                                                                    "learned", "best_top1", "final_top1", "curve",
                                                                    "deaths")}}
                             for k, rs in b_runs.items()}}
    verdict_a = "reproduced" if passed_a else ("not reproduced" if tested_a else "untested (an arm did not learn)")
    verdict_b = ("reproduced" if passed_b else "not reproduced") if observed_b else \
        f"not observed at this scale ({steps_b} steps; the paper's deaths come after tens of thousands)"
    notes = (f"(a) lr/clip from the held-out sweep {A_CHOSEN}; both arms learn: {tested_a} ({learns}); median steps "
             f"to {TARGET:.0%} test top-1: IR-v2 {statistics.median(ir_steps)} vs v4 {statistics.median(v4_steps)} "
             f"(ratio {ratio:.2f}; IR-v2 faster in {faster}/{len(ctx.seeds)} seeds; costs "
             f"{a_runs[IRV2[1]][0]['mmacs_75']:.1f} vs {a_runs[V4[1]][0]['mmacs_75']:.1f} MMACs at 75 px): "
             f"{verdict_a}. (b) sweep (seed 0, {B_STEPS} steps): max stable lr {B_CHOSEN} (None: no grid lr stable); "
             f"final runs at lr {({s: _b_lr(s) for s in B_SCALES})}: unscaled dies in {dead_u}/{len(ctx.seeds)} "
             f"seeds, scaled in {dead_s}/{len(ctx.seeds)}: {verdict_b}.")
    verdict = None if (passed_a and passed_b) else f"(a) {verdict_a}; (b) {verdict_b}"
    return Outcome(passed=passed_a and passed_b, numbers=numbers, figure=_figure(a_runs, b_runs), notes=notes,
                   verdict=verdict)


def _figure(a_runs: dict[str, list[dict[str, Any]]], b_runs: dict[str, list[dict[str, Any]]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    for (name, runs), color in zip(a_runs.items(), ("tab:blue", "tab:red"), strict=True):
        for i, r in enumerate(runs):
            ax[0].plot([c[0] for c in r["curve"]], [c[1] for c in r["curve"]], color=color, alpha=0.8,
                       label=f"{name} ({r['mmacs_75']:.1f} MMACs)" if i == 0 else None)
    ax[0].axhline(TARGET, color="gray", ls=":")
    ax[0].set(xlabel="step", ylabel="test top-1", title="(a) residual vs plain Inception, similar cost, tuned lr")
    ax[0].legend(fontsize=8)
    for (name, runs), color in zip(b_runs.items(), ("tab:red", "tab:green"), strict=True):
        for i, r in enumerate(runs):
            ax[1].plot([c[0] for c in r["curve"]], [c[1] for c in r["curve"]], color=color, alpha=0.8,
                       label=name if i == 0 else None)
            ax[2].plot([d["step"] for d in r["deaths"]], [d["zero_fraction"] for d in r["deaths"]], color=color,
                       alpha=0.8, label=name if i == 0 else None)
    ax[1].set(xlabel="step", ylabel="held-out top-1", title="(b) wide IR-v2 (width 0.5), each at its max stable lr")
    ax[1].legend(fontsize=8)
    ax[2].axhline(DEAD_ZERO_FRACTION, color="gray", ls=":")
    ax[2].set(xlabel="step", ylim=(0, 1.02), ylabel="fraction of zero pre-pool activations",
              title="(b) death tracked over training (dead above the line)")
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    return fig
