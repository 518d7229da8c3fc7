"""``vislearn reproduce NAME|all``: run paper claims at small scale and write ``results/``; no name lists them."""

import time


def register(sub) -> None:
    p = sub.add_parser("reproduce", help="reproduce a paper claim (or all) and write results/")
    p.add_argument("name", nargs="?", default="list", help="a reproduction name, 'all', or 'list' (the default)")
    p.add_argument("--results", default="results", help="output folder (default: results)")
    p.add_argument("--scale", type=float, default=1.0, help="budget multiplier (below 1: faster, rougher)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="override the seeds")
    p.add_argument("--data", default=None, help="a dataset for reproductions that accept one (see 'list')")
    p.add_argument("--weights", default=None, help="a weights file for reproductions that accept one (see 'list')")
    p.set_defaults(func=run)


def run(args) -> int:
    from vislearn.errors import UserError
    from vislearn.reproduce import get_reproduction, list_reproductions, run_reproduction, write_results_table

    if args.scale <= 0:
        raise UserError(f"--scale must be positive, got {args.scale}")
    if args.name == "list":
        for n in list_reproductions():
            r = get_reproduction(n)
            extra = f" [accepts {', '.join('--' + k for k in r.inputs)}]" if r.inputs else ""
            print(f"{n:22s} {r.paper}: {r.claim}{extra}")
        print("run one with `vislearn reproduce NAME` (`--scale 0.05` for a quick look), or all with "
              "`vislearn reproduce all`")
        return 0
    if args.name == "all" and (args.data or args.weights):
        raise UserError("--data and --weights go with one reproduction name, not 'all'")
    names = list_reproductions() if args.name == "all" else [get_reproduction(args.name).name]
    t0 = time.time()
    for i, n in enumerate(names, 1):
        print(f"=== [{i}/{len(names)}] reproduce {n}", flush=True)
        run_reproduction(n, args.results, scale=args.scale, seeds=tuple(args.seeds) if args.seeds else None,
                         log=lambda m: print(m, flush=True), data=args.data, weights=args.weights)
    table = write_results_table(args.results)
    print(table)
    print(f"{len(names)} reproduction(s) in {time.time() - t0:.0f}s; plots and JSON in {args.results}/")
    return 0
