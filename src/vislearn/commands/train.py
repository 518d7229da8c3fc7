"""``vislearn train RECIPE``: run a recipe through the one engine (``torchrun`` for many processes)."""


def register(sub) -> None:
    p = sub.add_parser("train", help="train a recipe (launch with torchrun for several processes)", add_help=False)
    p.add_argument("recipe", nargs="?", help="recipe name (`vislearn train --help` lists them)")
    p.add_argument("-h", "--help", action="store_true", help="this help; with a recipe, also its settings")
    p.add_argument("--preset", default="quick", help="quick (CPU, minutes, embedded data) or paper")
    p.add_argument("--data", default=None, help="dataset path (default: the recipe's embedded data)")
    p.add_argument("--out", default="runs/latest", help="output directory (checkpoints, metrics, weights)")
    p.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"], metavar="auto",
                   help="continue from the newest checkpoint in --out; '--resume auto' continues when there is one "
                        "and starts fresh otherwise (the command torchrun --max-restarts reruns)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field (repeatable), e.g. --set lr=0.1 --set steps=500")
    p.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run, parser=p)


def run(args) -> int:
    import json
    from pathlib import Path

    from vislearn import recipes
    from vislearn.errors import UserError
    from vislearn.recipes.describe import resolved_config, settings_table

    if args.help:
        args.parser.print_help()
        print("\n" + (settings_table(args.recipe, args.preset) if args.recipe else
                      "recipes: " + ", ".join(recipes.list_recipes())))
        return 0
    if not args.recipe:
        raise UserError("name a recipe: " + ", ".join(recipes.list_recipes()))
    if args.show_config:
        print(json.dumps(resolved_config(args.recipe, args.preset, args.overrides, args.data), indent=2, default=str))
        return 0
    result = recipes.run(args.recipe, args.preset, args.overrides, data=args.data, out=args.out,
                         resume=args.resume)
    if result.interrupted:
        print(f"interrupted at step {result.step}; checkpoint saved, continue with --resume")
        return 130
    # the final metrics are those of the EMA weights when an EMA is kept and evaluated
    ema = result.cfg.ema_decay > 0 and result.cfg.ema_eval
    print(json.dumps({"step": result.step, **result.final_metrics}))
    print(f"weights: {Path(args.out) / ('model_ema.safetensors' if ema else 'model.safetensors')}")
    return 0
