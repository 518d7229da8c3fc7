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

    import torch
    from torch.utils.data import DataLoader

    from vislearn.errors import UserError
    from vislearn.models.convert import load_weights
    from vislearn.recipes import get_recipe

    recipe = get_recipe(args.recipe)
    cfg = recipe.config(args.preset, args.overrides)
    task = recipe.build(cfg, args.data)
    if task.evaluate is None or task.eval_set is None:
        raise UserError(f"recipe {args.recipe!r} has no evaluation")
    model = task.model_of(task.module)
    load_weights(model, args.weights, model_name=getattr(model, "model_name", ""))
    task.module.eval()
    model.eval()
    loader = DataLoader(task.eval_set, batch_size=cfg.eval_batch_size or cfg.batch_size,
                        collate_fn=task.collate_fn)
    with torch.no_grad():
        print(json.dumps({k: float(v) for k, v in task.evaluate(model, loader).items()}))
    return 0
