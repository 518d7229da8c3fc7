"""``vislearn models [PATTERN]``: list registered models with their parameter counts."""


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'inception*'")
    p.add_argument("--params", action="store_true", help="build each model and print its parameter count")
    p.set_defaults(func=run)


def run(args) -> int:
    from vislearn.errors import UserError
    from vislearn.models import create_model, get_entry, list_models

    names = list_models(args.pattern)
    if not names:
        raise UserError(f"no model matches {args.pattern!r}; `vislearn models` lists all {len(list_models())}")
    for name in names:
        e = get_entry(name)
        line = f"{name:32s} input {e.input_size[1]}x{e.input_size[2]}  {e.paper}"
        if args.params:
            try:  # a model that needs a file to be built (lpips_vgg: lin_weights) says so instead
                n = sum(p.numel() for p in create_model(name).parameters())
                line += f"  {n:,} params"
            except UserError as e:
                line += f"  (needs options: {e})"
        print(line)
    return 0
