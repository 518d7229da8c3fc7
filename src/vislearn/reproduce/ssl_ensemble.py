"""Reproduction ``ssl_ensemble``: DINO* with one head vs a weighted ensemble of heads (UNIF, PROB, ENT).

Ruan et al., "Weighted Ensemble Self-Supervised Learning", ICLR 2023 (PAPERS.md §9; wave2-methods.md
§1.3, §1.8). On ImageNet with ViT-S/16 (Table 1, 300 epochs, 16 heads, 3 seeds), ENT raises 1-shot
accuracy from 40.6 (one head) to 44.0, PROB to 41.9, while UNIF (the plain mean of the heads' losses)
gives 40.4: no gain. The ensemble is over (projection head, codebook) pairs on one shared backbone;
evaluation uses the backbone alone, on frozen features (App. B.3).

What we run (a small CPU version of Table 1's design: same backbone, budget, seeds and evaluation
for every arm; the only change is the number of heads and the scheme):

* four arms through the ``dino`` recipe (``recipes.run("dino", "quick", ...)``), each one a
  ``vislearn train dino --set ...`` command line: ``1 head`` (the DINO* baseline), and ``HEADS``
  heads combined by ``unif``, ``prob`` and ``ent`` (γ decayed from 0.5 to 0.05 in ``log c`` units over
  the first part of the run, the paper's values, the ramp shortened with the run). Codebooks follow
  the paper's ratio: 4× as many codes for the one-head baseline as per ensemble head (App. B.1:
  4096 vs 1024); ``SMALL_SCALE`` lists every setting shared by the arms;
* 3 seeds per arm (the seed sets the initialisation, the views and the batches);
* pre-training on the embedded shapes of classes 0..9 (``train`` split, labels unused);
* evaluation on **held-out classes** 10..19, never seen in pre-training, by frozen teacher-backbone
  features (:func:`vislearn.metrics.frozen.backbone_features`): 1-shot and 5-shot logistic regression
  (mean over 3 random draws of the shots, L2 strength from the paper's grid chosen on held-out
  training examples, :func:`vislearn.metrics.fewshot.nshot_accuracy`) and DINO's weighted 20-NN,
  with the held-out classes' ``train`` split as the labelled pool and their ``test`` split as the
  test set;
* the same evaluation of each seed's randomly initialised backbone (before training), to check that
  every arm learns at all.

Tuning, equal for all arms, done once on the one-head arm (seed 0) scored on separate **check
classes** 20..29 (never the evaluation classes), then fixed for every arm before the final run
(``TUNING`` holds every measured setting; 20-NN on fill-shape labels, teacher backbone):

* the views are made for a whole batch at once (:class:`~vislearn.data.multicrop.TensorMultiCrop`,
  bilinear crops, a fixed jitter order): 60 steps of the former setting cost 4.2 s of CPU instead
  of 10.4 s (one thread, back to back on the loaded machine), which pays for more steps;
* **evaluation labels = fill × shape** (``EVAL_LABELS``; the held-out classes' colour is dropped,
  10 classes -> 6 labels): BYOL's colour jitter and grayscale teach invariance to colour, which is
  one of the three attributes of a shapes class, so the class labels contradict the augmentation;
  the images and the held-out classes are the same;
* **24 px, 2 global views of (0.4, 1) of the image, no local view** (``num_local=0``): at 32 px with
  (0.25, 1) crops and a 16 px local view (60 steps: 0.475 -> 0.465) or at 24 px with those crops
  (150 steps: 0.46 -> 0.485), or at 16 px (300 steps: 0.51 -> 0.43), the backbone did not learn;
  a crop of a quarter of a 24 px image often cuts the one shape away;
* **200 steps** (about 6 epochs), **lr 1e-3** and **teacher momentum 0.98 -> 1**: the paper's 0.996
  is meant for ~10^5 steps; over 60 steps it leaves the teacher ~80% its initialisation. With these
  values the check classes' 20-NN rose 0.46 -> 0.53 (5-shot 0.365 -> 0.473); the same crops with a
  local view, lr 5e-4 and momentum 0.99 gave 0.525 at a higher cost.

Outcome (measured after the first final run, which failed gate (i); nothing was changed after it):
the seed-0 gain on the check classes was chance. Seeds 1 and 2 of the chosen setting on the check
classes went 0.46 -> 0.40 and 0.495 -> 0.39, and on the evaluation classes the 1-head arm lost
0.048 of 20-NN against random init (unif -0.007, prob -0.025, ent -0.027). The setting also costs
about 1.5x the former CPU (418 s vs 269 s user CPU for the whole reproduction: 200 steps of two
24 px views against 60 steps of two 32 px and one 16 px view). So within the demo budget we found
no setting in which every arm's backbone learns; the comparison of the arms (ii)/(iii) is reported
but says nothing for or against the paper. For the ``make demo`` budget (20 minutes for every
reproduction) the default run then went from 200 to 120 steps (``--scale 1.67`` gives the 200-step
run): a budget change made after the result, which cannot rescue gate (i) (the longer run failed it).

Nothing was tuned per arm. The teacher-temperature warm-up and γ's decay run over the first 2 of
the run's ~6 epochs (the paper: 30 of 300). History: the first version (60 steps, 32 px, class
labels) failed its gate: 20-NN 0.452 at init, 0.437-0.448 after.

What to expect: at this budget (the paper trains 300 ImageNet epochs) DINO moves the frozen
features of a small convnet on held-out shape classes only a little away from their random
initialisation, so criterion (i) is the gate: when it fails, (ii) and (iii) compare arms that have
not learned, and the result says nothing for or against the paper. The same check on held-out
photo textures was useless: random features already score 0.98. It is reported as measured
either way.
"""

from __future__ import annotations

import statistics
import time

from vislearn.reproduce import Outcome, ReproContext, register_reproduction

HEADS = 4
CODES = 256  # per ensemble head; the baseline gets 4x (the paper's 1024 vs 4096)
STEPS = 120  # the tuning ran 200 (docstring); cut to fit make demo's 20 minutes, after the failed final run
LEARN_MARGIN = 0.03  # every arm's mean k-NN must beat the random-init backbone's by this much (fixed before the run)
PRETRAIN_CLASSES = (0, 10)
EVAL_CLASSES = (10, 20)
CHECK_CLASSES = (20, 30)
POOL_PER_CLASS, TEST_PER_CLASS = 50, 20
SHOTS = (1, 5)
EVAL_LABELS = "fill shape"  # the class name without its colour (module docstring)

# Every setting the arms share (recipe fields of `dino`; the arms add heads/scheme/codes/seed/steps).
SMALL_SCALE = {
    "backbone": "small_convnet", "vit_dim": 0, "vit_depth": 0, "vit_heads": 0,
    "dataset": "shapes", "num_classes": PRETRAIN_CLASSES[1], "samples_per_class": 100, "image_size": 24,
    "global_size": 24, "local_size": 12, "num_local": 0, "global_scale": (0.4, 1.0),
    "head_hidden": 256, "head_dim": 64, "head_layers": 3, "momentum_start": 0.98,
    "batch_size": 32, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.04, "schedule": "cosine",
    "warmup_steps": 6, "clip_grad": 3.0, "gamma_epochs": 2, "warmup_teacher_temp_epochs": 2,
    "log_every": 0, "eval_every": 0, "num_workers": 0,  # views in the main process (as in the scale-1 run)
}
# The tuning runs (one-head arm, seed 0, CHECK classes, fill-shape labels): 20-NN of the teacher backbone before ->
# after, and the process CPU of the run (1 thread, loaded machine; includes 6 scorings). Module docstring.
TUNING = {
    "32 px, crops (0.25, 1), 1 local, lr 5e-4, momentum 0.996, 60 steps (former)": (0.475, 0.465, 11.5),
    "24 px, crops (0.25, 1), 1 local, lr 5e-4, momentum 0.99, 150 steps": (0.46, 0.485, 13.7),
    "24 px, crops (0.25, 1), 1 local, lr 2e-3, momentum 0.99, 150 steps": (0.46, 0.46, 13.4),
    "16 px, crops (0.25, 1), 1 local, lr 1e-3, momentum 0.99, 300 steps": (0.51, 0.43, 16.0),
    "24 px, crops (0.4, 1), 1 local (0.15, 0.4), lr 5e-4, momentum 0.99, 200 steps": (0.46, 0.525, 15.9),
    "24 px, crops (0.4, 1), no local, lr 1e-3, momentum 0.98, 200 steps (chosen)": (0.46, 0.53, 13.7),
    # after the first final run: the chosen setting's other seeds (seed 1, seed 2)
    "chosen, seed 1": (0.46, 0.40, 12.5), "chosen, seed 2": (0.495, 0.39, 12.5),
}

ARMS = {
    "1 head": {"heads": 1, "scheme": "unif", "codes": 4 * CODES},
    f"unif ({HEADS})": {"heads": HEADS, "scheme": "unif", "codes": CODES},
    f"prob ({HEADS})": {"heads": HEADS, "scheme": "prob", "codes": CODES},
    f"ent ({HEADS})": {"heads": HEADS, "scheme": "ent", "codes": CODES},
}
BASE, UNIF, PROB, ENT = ARMS


def eval_label_names(classes: tuple[int, int] = EVAL_CLASSES, labels: str = "class") -> list[str]:
    """The label of each shapes class in ``[lo, hi)``: its name, or with ``"fill shape"`` the name without the
    colour (the attributes the colour augmentation leaves), e.g. ``"solid green star" -> "solid star"``."""
    from vislearn.data.embedded import SHAPE_CLASSES

    names = list(SHAPE_CLASSES[classes[0]:classes[1]])
    if labels == "fill shape":
        return [f"{n.split()[0]} {n.split()[-1]}" for n in names]
    if labels != "class":
        raise ValueError(f"labels must be 'class' or 'fill shape', got {labels!r}")
    return names


def eval_sets(classes: tuple[int, int] = EVAL_CLASSES, labels: str | None = None):
    """``((pool images, labels), (test images, labels))`` of the shapes classes ``[lo, hi)``, labels from 0
    (``labels``: see :func:`eval_label_names`; default ``EVAL_LABELS``)."""
    import torch

    from vislearn.data.embedded import shapes_classification

    lo, hi = classes
    names = eval_label_names(classes, labels or EVAL_LABELS)
    groups = list(dict.fromkeys(names))  # first-appearance order: class labels stay the class indices
    index = torch.tensor([groups.index(n) for n in names])
    size = SMALL_SCALE["image_size"]
    out = []
    for split, n in (("train", POOL_PER_CLASS), ("test", TEST_PER_CLASS)):
        ds = shapes_classification(split, num_classes=hi, samples_per_class=n, image_size=size)
        keep = ds.targets >= lo
        out.append((ds.images[keep], index[ds.targets[keep] - lo]))
    return tuple(out)


def score(backbone, sets) -> dict[str, float]:
    """1-shot, 5-shot (mean over 3 draws) and 20-NN accuracy of frozen ``backbone`` features."""
    from vislearn.data.embedded import TensorImageDataset
    from vislearn.metrics.fewshot import knn_accuracy, nshot_accuracy
    from vislearn.metrics.frozen import extract_features

    (xp, yp), (xt, yt) = [extract_features(backbone, TensorImageDataset(x, y), batch_size=256) for x, y in sets]
    out = {f"{n}shot": nshot_accuracy(xp, yp, xt, yt, shots=n, splits=3, seed=0)[0] for n in SHOTS}
    out["knn"] = knn_accuracy(xp, yp, xt, yt, k=20, temperature=0.07)
    return out


def train_arm(arm: dict, seed: int, steps: int, sets, overrides: dict | None = None) -> tuple[dict, dict]:
    """``(trained scores, random-init scores)`` of one arm and seed, trained by the ``dino`` recipe."""
    from vislearn import recipes

    init: dict = {}
    run = recipes.run("dino", "quick", {**SMALL_SCALE, **arm, "steps": steps, "seed": seed, **(overrides or {})},
                      progress=False, on_build=lambda cfg, task: init.update(score(task.model, sets)))
    return score(run.task.model, sets), init


def lr_check(lrs=(3e-4, 1e-3, 3e-3), seed: int = 0, steps: int = STEPS) -> dict[float, float]:
    """The one tuning step: k-NN on the check classes of the one-head baseline at each ``lr``."""
    sets = eval_sets(CHECK_CLASSES)
    return {lr: train_arm(ARMS[BASE], seed, steps, sets, {"lr": lr})[0]["knn"] for lr in lrs}


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@register_reproduction(
    "ssl_ensemble", paper="Ruan et al. 2023, Weighted Ensemble Self-Supervised Learning, Table 1 (DINO*, ViT-S/16)",
    claim="an ENT-weighted ensemble of (projection head, codebook) pairs on one backbone improves DINO*'s 1-shot "
          "accuracy over one head (40.6 -> 44.0 on ImageNet, 16 heads), while the uniform mean (UNIF) does not "
          "(40.4); PROB is in between (41.9)",
    criterion=f"small scale (the dino recipe; small convnet, 24 px shapes, {STEPS} steps of batch 32, 2 global "
              f"views; 1 head vs "
              f"{HEADS} heads x unif/prob/ent, 3 seeds, the same settings, tuned once on the 1-head arm on check "
              "classes; frozen features on 10 held-out classes, labelled by fill and shape): (i) every arm learns: "
              f"mean 20-NN above the random-init backbone's by > {LEARN_MARGIN}; (ii) ent's mean 1-shot exceeds "
              "the 1-head arm's by more than the seed spread "
              "(the larger sample std over seeds of the two arms); (iii) unif's mean 1-shot does not exceed "
              "the 1-head arm's by more than its seed spread. Passed = (i) and (ii) and (iii); prob, 5-shot and "
              "k-NN are reported")
def run(ctx: ReproContext) -> Outcome:
    t0, c0 = time.time(), time.process_time()
    steps = ctx.steps(STEPS, minimum=2)
    sets = eval_sets()
    runs: dict[str, list[dict]] = {name: [] for name in ARMS}
    init_runs: list[dict] = []
    for seed in ctx.seeds:
        for name, arm in ARMS.items():
            r, init = train_arm(arm, seed, steps, sets)
            runs[name].append({"seed": seed, **r})
            if name == BASE:
                init_runs.append({"seed": seed, **init})
            ctx.log(f"  seed {seed} {name:9s}: 1-shot {r['1shot']:.3f}  5-shot {r['5shot']:.3f}  k-NN {r['knn']:.3f}"
                    + (f"   (random init: 1-shot {init['1shot']:.3f}, k-NN {init['knn']:.3f})" if name == BASE else ""))
    metrics = ("1shot", "5shot", "knn")
    summary = {}
    for name, rs in {**runs, "random init": init_runs}.items():
        summary[name] = {"runs": rs}
        for m in metrics:
            summary[name][f"{m}_mean"], summary[name][f"{m}_std"] = _stats([r[m] for r in rs])
    init_knn = summary["random init"]["knn_mean"]
    learns = {name: summary[name]["knn_mean"] - init_knn for name in ARMS}
    all_learn = all(v > LEARN_MARGIN for v in learns.values())
    effects = {}
    for name in (UNIF, PROB, ENT):
        gain = summary[name]["1shot_mean"] - summary[BASE]["1shot_mean"]
        spread = max(summary[name]["1shot_std"], summary[BASE]["1shot_std"])
        effects[name] = {"1shot_gain_over_1_head": gain, "seed_spread": spread, "exceeds_spread": gain > spread,
                         "5shot_gain_over_1_head": summary[name]["5shot_mean"] - summary[BASE]["5shot_mean"],
                         "knn_gain_over_1_head": summary[name]["knn_mean"] - summary[BASE]["knn_mean"]}
    ent_ok = effects[ENT]["exceeds_spread"]
    unif_ok = not effects[UNIF]["exceeds_spread"]
    wall, cpu = time.time() - t0, time.process_time() - c0
    verdicts = {"(i) every arm learns": all_learn, "(ii) ent beats 1 head by > seed spread": ent_ok,
                "(iii) unif does not": unif_ok}
    notes = "; ".join(f"{k}: {'yes' if v else 'no'}" for k, v in verdicts.items()) + "; " + "; ".join(
        f"{name} 1-shot {e['1shot_gain_over_1_head']:+.3f} vs 1 head (spread {e['seed_spread']:.3f})"
        for name, e in effects.items()) + f"; wall {wall:.0f}s, process CPU {cpu:.0f}s"
    return Outcome(passed=bool(all_learn and ent_ok and unif_ok),
                   numbers={"arms": ARMS, "small_scale_settings": SMALL_SCALE, "steps_per_run": steps,
                            "tuning_knn_before_after_cpu": TUNING, "eval_labels": EVAL_LABELS,
                            "pretrain_classes": PRETRAIN_CLASSES,
                            "eval_classes": EVAL_CLASSES, "learn_margin_knn": LEARN_MARGIN,
                            "summary": summary, "knn_gain_over_random_init": learns,
                            "effects_vs_1_head": effects, "verdicts": verdicts,
                            "paper_table1_1shot": {"1 head": 40.6, "unif (16)": 40.4, "prob (16)": 41.9,
                                                   "ent (16)": 44.0},
                            "wall_s": wall, "process_cpu_s": cpu},
                   figure=_figure(summary, steps), notes=notes)


def _figure(summary: dict, steps: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(ARMS)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8))
    colours = ["tab:gray", "tab:blue", "tab:orange", "tab:green"]
    for ax, (m, label) in zip(axes, (("1shot", "1-shot accuracy"), ("5shot", "5-shot accuracy"),
                                     ("knn", "20-NN accuracy")), strict=True):
        ax.bar(range(len(arms)), [summary[a][f"{m}_mean"] for a in arms],
               yerr=[summary[a][f"{m}_std"] for a in arms], color=colours, alpha=0.6, capsize=3)
        for i, a in enumerate(arms):
            ax.scatter([i] * len(summary[a]["runs"]), [r[m] for r in summary[a]["runs"]], color="k", s=12, zorder=3)
        ax.axhline(summary["random init"][f"{m}_mean"], color="tab:red", ls="--", lw=1, label="random init")
        ax.set_xticks(range(len(arms)), arms, fontsize=8)
        ax.set_ylabel(label)
        lo = min(min(r[m] for r in summary[a]["runs"]) for a in [*arms, "random init"])
        hi = max(max(r[m] for r in summary[a]["runs"]) for a in arms)
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, hi + 0.05))
    axes[0].legend(fontsize=8)
    fig.suptitle(f"DINO* 1 head vs {HEADS}-head ensembles on 10 held-out shape classes (small convnet, {steps} "
                 "steps, 3 seeds; bars: mean ± std, dots: seeds)", fontsize=9)
    fig.tight_layout()
    return fig
