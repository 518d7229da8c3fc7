"""``vislearn train RECIPE``: run a recipe through the one engine (``torchrun`` for many processes)."""

import dataclasses


def register(sub) -> None:
    p = sub.add_parser("train", help="train a recipe (launch with torchrun for several processes)")
    p.add_argument("recipe", help="recipe name; see --list")
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes, embedded data) or paper")
    p.add_argument("--data", default=None, help="dataset path (default: the recipe's embedded data)")
    p.add_argument("--out", default="runs/latest", help="output directory (checkpoints, metrics, weights)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"], metavar="auto",
                   help="continue from the newest checkpoint in --out; '--resume auto' continues when there is one "
                        "and starts fresh otherwise (the command torchrun --max-restarts reruns)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set lr=0.1 --set steps=500")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    from pathlib import Path

    from vislearn import recipes

    if args.show_config:
        cfg = recipes.get_recipe(args.recipe).config(args.preset, args.overrides)
        record = {"recipe": args.recipe, "preset": args.preset, "data": args.data, **dataclasses.asdict(cfg)}
        print(json.dumps(record, indent=2, default=str))
        return 0
    result = recipes.run(args.recipe, args.preset, args.overrides, data=args.data, out=args.out,
                         resume=args.resume)
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved, continue with --resume")
        return 130
    print(json.dumps({"step": result.step, **result.final_metrics}))
    print(f"weights: {Path(args.out) / 'model.safetensors'}")
    return 0
