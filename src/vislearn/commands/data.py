"""``vislearn data pack|verify``: write a dataset as WebDataset tar shards, check packed shards."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("data", help="pack a dataset into WebDataset shards (--data then streams them); verify shards")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    pack = actions.add_parser("pack", help="write SRC as tar shards with an index.json (image bytes untouched)")
    pack.add_argument("src", help="the dataset folder")
    pack.add_argument("--format", required=True, choices=["imagefolder", "coco", "csv", "nuswide"],
                      help="imagefolder: train/ and val/ class folders; coco: annotations/instances_<split>*.json "
                           "and image folders; csv: train.csv and val.csv; nuswide: the NUS-WIDE folder")
    pack.add_argument("--out", required=True, help="new (or empty) folder for the shards and index.json")
    pack.add_argument("--shard-size", default="1GB", help="largest shard, e.g. 1GB, 500MB, 2GiB (default 1GB)")
    pack.set_defaults(func=run_pack)
    verify = actions.add_parser("verify", help="check every shard's size and SHA-256 against index.json")
    verify.add_argument("data", help="the packed folder (or its index.json)")
    verify.set_defaults(func=run_verify)
    p.set_defaults(func=lambda args: _usage(p))


def _usage(parser) -> int:
    parser.print_help()
    return 2


def _say(text: str) -> None:
    print(f"vislearn: {text}", file=sys.stderr, flush=True)


def run_pack(args) -> int:
    from vislearn.data.pack import pack_dataset, parse_size

    index = pack_dataset(args.src, args.format, args.out, shard_size=parse_size(args.shard_size), progress=_say)
    for name, entry in index["splits"].items():
        print(f"{name}: {entry['samples']} samples in {len(entry['shards'])} shard(s)")
    print(f"wrote {args.out}/index.json ({args.format}, {len(index['classes'])} classes); "
          f"train with --data {args.out}")
    return 0


def run_verify(args) -> int:
    from vislearn.data.shards import verify_shards

    n = verify_shards(args.data, progress=_say)
    print(f"{n} shard(s) match {args.data}'s index")
    return 0
