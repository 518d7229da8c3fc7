"""``vislearn train RECIPE``: run a recipe through the one engine (``torchrun`` for many processes)."""

import dataclasses
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("train", help="train a recipe (launch with torchrun for several processes)")
    p.add_argument("recipe", help="recipe name; see --list")
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes, embedded data) or paper")
    p.add_argument("--data", default=None, help="dataset path (default: the recipe's embedded data)")
    p.add_argument("--out", default="runs/latest", help="output directory (checkpoints, metrics, weights)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set lr=0.1 --set steps=500")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from vislearn.errors import UserError
    from vislearn.recipes import get_recipe
    from vislearn.train import Trainer, seed_everything

    recipe = get_recipe(args.recipe)
    cfg = recipe.config(args.preset, args.overrides)
    record = {"recipe": args.recipe, "preset": args.preset, "data": args.data, **dataclasses.asdict(cfg)}
    if args.show_config:
        print(json.dumps(record, indent=2, default=str))
        return 0
    out = Path(args.out)
    if not args.resume and (out / "checkpoints").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    seed_everything(cfg.seed)  # model initialisation is part of the run: make it reproducible
    task = recipe.build(cfg, args.data)
    result = Trainer(cfg, task, out, resume=args.resume, config_record=record).fit()
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved, continue with --resume")
        return 130
    print(json.dumps({"step": result.step, **result.final_metrics}))
    print(f"weights: {out / 'model.safetensors'}")
    return 0
