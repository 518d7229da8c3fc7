"""``vislearn eval RECIPE --weights PATH``: the recipe's evaluation on saved weights."""


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate saved weights with a recipe's evaluation")
    p.add_argument("recipe")
    p.add_argument("--weights", required=True, help="a model.safetensors written by `vislearn train`")
    p.add_argument("--preset", default="quick")
    p.add_argument("--data", default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from vislearn import recipes

    metrics = recipes.evaluate(args.recipe, args.weights, args.preset, args.overrides, data=args.data)
    print(json.dumps(metrics))
    return 0
