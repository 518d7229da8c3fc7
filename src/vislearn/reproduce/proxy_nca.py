"""Reproduction ``proxy_nca``: Proxy-NCA converges faster than triplet loss with semi-hard mining.

Movshovitz-Attias et al. 2017, abstract and Fig. 1: the proxy loss converges "three times as fast
as other triplet-based losses" and ends higher. Small-scale check on the embedded class-disjoint
shapes split (100 classes: train on the first 50, retrieve among the other 50; 32 px), same
backbone (``small_convnet`` + linear 64-d embedding), same optimizer (RMSProp, lr 1e-3; the proxies
at 100× that lr), same batches (8 classes × 4 images = 32 per step), same steps and seeds. The only
difference is the loss: Proxy-NCA (paper's Eq. 9, scale 1, positive excluded from the denominator)
versus FaceNet's triplet loss with semi-hard negatives (margin 0.2, squared distances of unit
vectors). Recall@1 is measured on the held-out classes with normalised embeddings during training;
MAP@R and R-precision (Musgrave et al. 2020) are reported beside it.
"""

from __future__ import annotations

import statistics

from vislearn.reproduce import Outcome, ReproContext, register_reproduction

STEPS = 1800  # per run at scale 1 (2 losses × 3 seeds): about 2 minutes in all on an idle 2-core CPU
EVALS = 9  # evaluations per run (Recall@1 curve resolution)


def _median_curve(curves: list[list[float]]) -> list[float]:
    return [statistics.median(vals) for vals in zip(*curves, strict=True)]


def _first_reach(steps: list[int], curve: list[float], target: float) -> int | None:
    for s, v in zip(steps, curve, strict=True):
        if v >= target - 1e-12:
            return s
    return None


@register_reproduction(
    "proxy_nca",
    paper="Movshovitz-Attias et al., ICCV 2017 (No Fuss DML), abstract and Fig. 1",
    claim="Proxy-NCA converges about 3x faster than triplet loss with semi-hard mining and reaches a higher "
          "Recall@1 on held-out classes",
    criterion="on the embedded class-disjoint shapes split (50 train / 50 test classes), same backbone, batches, "
              "optimizer and steps, 3 seeds, median over seeds of Recall@1 evaluated 9 times per run: "
              "Proxy-NCA first reaches the best median Recall@1 that triplet reaches within at most 1/3 of the "
              "steps triplet needs to reach it, and ends with a higher final median Recall@1",
)
def run(ctx: ReproContext) -> Outcome:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vislearn import recipes

    steps = ctx.steps(STEPS, minimum=4)
    evals = EVALS if ctx.scale >= 0.25 else 3  # tiny scales (tests) only check that it runs
    every = max(1, steps // evals)
    per_class = 30 if ctx.scale >= 0.25 else 4
    data = {"dataset": "shapes", "num_classes": 100, "shapes_per_class": per_class, "image_size": 32}
    ctx.log(f"  data: the recipe's shapes split, {50 * per_class} train images (50 classes), {50 * per_class} test "
            f"images (50 held-out classes); {steps} steps per run, eval every {every}")
    methods = {"proxy_nca": {"loss": "proxy_nca"}, "triplet": {"loss": "triplet", "mining": "semihard"}}
    curves: dict[str, dict[str, list[list[float]]]] = {m: {"recall@1": [], "map@r": [], "r_precision": []}
                                                       for m in methods}
    eval_steps: list[int] = []
    for seed in ctx.seeds:
        for name, over in methods.items():
            # = vislearn train proxy_nca --set loss=... --set steps=... (every key below as --set)
            res = recipes.run("proxy_nca", "quick", {**data, **over, "steps": steps, "eval_every": every,
                                                     "seed": seed, "samples_per_class": 4, "batch_size": 8,
                                                     "log_every": 0, "eval_nmi": False, "lr": 1e-3,
                                                     "optimizer": "rmsprop", "proxy_lr_mult": 100.0},
                              progress=False)
            if res.interrupted:
                raise KeyboardInterrupt(f"{name} seed {seed} interrupted at step {res.step}")
            evals = [h for h in res.history if h["split"] == "eval"]
            eval_steps = [h["step"] for h in evals]
            for key in curves[name]:
                curves[name][key].append([h[key] for h in evals])
            ctx.log(f"  seed {seed} {name:9s}: R@1 " + " ".join(f"{h['recall@1']:.3f}" for h in evals)
                    + f" | final MAP@R {evals[-1]['map@r']:.3f}")
    med = {m: {k: _median_curve(v) for k, v in c.items()} for m, c in curves.items()}
    best_triplet = max(med["triplet"]["recall@1"])
    triplet_steps = _first_reach(eval_steps, med["triplet"]["recall@1"], best_triplet)
    proxy_steps = _first_reach(eval_steps, med["proxy_nca"]["recall@1"], best_triplet)
    faster = proxy_steps is not None and triplet_steps is not None and proxy_steps <= triplet_steps / 3
    final = {m: med[m]["recall@1"][-1] for m in methods}
    higher = final["proxy_nca"] > final["triplet"]
    passed = bool(faster and higher)
    speedup = (triplet_steps / proxy_steps) if proxy_steps else None

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colours = {"proxy_nca": "tab:blue", "triplet": "tab:orange"}
    labels = {"proxy_nca": "Proxy-NCA", "triplet": "triplet, semi-hard"}
    for ax, key in zip(axes, ("recall@1", "map@r"), strict=True):
        for m in methods:
            runs = curves[m][key]
            lo = [min(v) for v in zip(*runs, strict=True)]
            hi = [max(v) for v in zip(*runs, strict=True)]
            ax.plot(eval_steps, med[m][key], "-o", ms=3, color=colours[m], label=f"{labels[m]} (median)")
            ax.fill_between(eval_steps, lo, hi, color=colours[m], alpha=0.2)
        ax.set_xlabel("training steps (batch 32)")
        ax.set_ylabel(key.replace("map@r", "MAP@R").replace("recall@1", "Recall@1") + " (held-out classes)")
        ax.grid(alpha=0.3)
    axes[0].axhline(best_triplet, color="grey", ls="--", lw=0.8, label="best triplet median")
    if proxy_steps is not None:
        axes[0].axvline(proxy_steps, color=colours["proxy_nca"], ls=":", lw=0.8)
    axes[0].legend(fontsize=8)
    axes[0].set_title(f"Recall@1, {len(ctx.seeds)} seeds (band: min-max)")
    axes[1].set_title("MAP@R")
    fig.tight_layout()

    numbers = {
        "eval_steps": eval_steps,
        "median_recall@1": {m: med[m]["recall@1"] for m in methods},
        "median_map@r": {m: med[m]["map@r"] for m in methods},
        "final_recall@1_per_seed": {m: [c[-1] for c in curves[m]["recall@1"]] for m in methods},
        "final_map@r_per_seed": {m: [c[-1] for c in curves[m]["map@r"]] for m in methods},
        "final_r_precision_per_seed": {m: [c[-1] for c in curves[m]["r_precision"]] for m in methods},
        "final_median_recall@1": final,
        "final_median_map@r": {m: med[m]["map@r"][-1] for m in methods},
        "best_triplet_median_recall@1": best_triplet,
        "triplet_steps_to_best": triplet_steps,
        "proxy_nca_steps_to_triplet_best": proxy_steps,
        "speedup": speedup,
        "steps_per_run": steps,
    }
    notes = (f"Proxy-NCA reached triplet's best median R@1 ({best_triplet:.3f}) at step {proxy_steps} vs triplet at "
             f"step {triplet_steps} (speed-up {speedup if speedup is None else round(speedup, 2)}x, needed >= 3); "
             f"final median R@1 {final['proxy_nca']:.3f} vs {final['triplet']:.3f}; final median MAP@R "
             f"{numbers['final_median_map@r']['proxy_nca']:.3f} vs {numbers['final_median_map@r']['triplet']:.3f}.")
    ctx.log("  " + notes)
    return Outcome(passed=passed, numbers=numbers, figure=fig, notes=notes)
