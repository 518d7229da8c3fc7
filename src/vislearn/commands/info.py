"""``vislearn info``: versions, device and threads."""

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="versions, device and threads")
    p.set_defaults(func=run)


def run(args) -> int:
    import vislearn
    from vislearn.reproduce.results import machine_info

    info = {"vislearn": vislearn.__version__, **machine_info()}
    import torch

    info["cpu_bf16"] = torch.backends.mkldnn.is_available()
    info["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    print(json.dumps(info, indent=2))
    return 0
