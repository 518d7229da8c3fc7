"""``vislearn eval RECIPE --weights PATH``: the recipe's evaluation on saved weights.

``--weights`` also takes a named remote source (``torchvision:IMAGENET1K_V1``,
``hf-hub:timm/inception_v3.tv_in1k``), whose data config sets the evaluation transform
(:func:`vislearn.recipes.evaluate`).
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate saved weights with a recipe's evaluation")
    p.add_argument("recipe")
    p.add_argument("--weights", required=True, help="a model.safetensors written by `vislearn train`, a peer's file, "
                   "or a named source (torchvision:TAG, hf-hub:ORG/NAME)")
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
