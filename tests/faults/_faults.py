"""Shared by the fault tests: every recipe's quick preset shrunk to seconds, and a real SIGKILL by fork.

``SHRINK`` holds, per recipe, the ``--set`` values that make its quick preset train in about a second
(tiny widths, few images); a recipe missing from it still runs with :data:`COMMON` alone (the
SIGKILL test covers every ``list_recipes()`` name). :func:`run_until_killed` forks the test process
(imports are already paid) and the child SIGKILLs itself right after optimizer step ``kill_at``.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import torch

from vislearn import recipes
from vislearn.train.checkpoint import latest_checkpoint, load_safetensors

COMMON = {"steps": 8, "log_every": 2, "eval_every": 0, "ckpt_every": 3, "ckpt_minutes": 0}
SHRINK: dict[str, dict] = {
    "batchnorm": {"batch_size": 16, "hidden": (16, 16)},
    "classify": {"batch_size": 16},
    "inception_v3": {"batch_size": 4, "width": 0.05, "eval_batch_size": 150},  # digits already
    "inception_v4": {"batch_size": 4, "width": 0.05, "depths": (1, 1, 1), "eval_batch_size": 150,
                            "dataset": "digits"},
    "inception_resnet_v1": {"batch_size": 4, "width": 0.05, "depths": (1, 1, 1), "eval_batch_size": 150,
                            "dataset": "digits"},
    "inception_resnet_v2": {"batch_size": 4, "width": 0.05, "depths": (1, 1, 1), "eval_batch_size": 150,
                            "dataset": "digits"},
    "multibox": {"batch_size": 4, "num_train_images": 16, "num_eval_images": 8, "image_size": 64,
                 "grids": (4, 2, 1), "head_width": 16, "context_width": 8},
    "multilabel": {"batch_size": 8, "num_samples": 64, "image_size": 16},
    "perceptual": {"batch_size": 8, "synthetic_size": 32, "layers": ("relu1_2", "relu2_2"), "eval_every": 3},
    "proxy_nca": {"batch_size": 8, "num_classes": 10, "shapes_per_class": 4, "image_size": 16, "embedding_dim": 8},
}


def _autoencoder_file() -> str:
    """A (random-weight) swycc-family autoencoder file, written once: ``latent_diffusion`` trains on its latents."""
    import tempfile

    from vislearn.io import save_weights
    from vislearn.models import create_model

    path = Path(tempfile.gettempdir()) / f"vislearn-faults-{os.getpid()}" / "ae.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        save_weights(create_model("swycc", refine=False), path)
    return str(path)


def overrides(name: str, **extra) -> dict:
    needs = {"autoencoder": _autoencoder_file()} if name == "latent_diffusion" else {}
    return {**COMMON, **SHRINK.get(name, {}), **needs, **extra}


def run_until_killed(name: str, over: dict, out: Path, kill_at: int, resume: bool | str = False) -> None:
    """Train recipe ``name`` into ``out`` in a forked child that SIGKILLs itself after step ``kill_at``."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        torch.set_num_threads(1)  # it never enters an OpenMP team the parent may have left locked
        code = 3
        try:
            def bomb(trainer, step):
                if step == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            recipes.run(name, "quick", over, out=out, resume=resume, progress=False, callbacks=[bomb])
        except BaseException as e:  # noqa: BLE001 - reported through the exit status
            print(f"child failed: {type(e).__name__}: {e}", flush=True)
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"child exit status {status}"


def final_states(out: Path) -> dict[str, torch.Tensor]:
    """The training module's (and EMA's) tensors in the newest checkpoint of ``out``."""
    d = latest_checkpoint(out)
    states = {f"model:{k}": v for k, v in load_safetensors(d / "model.safetensors").items()}
    if (d / "ema.safetensors").is_file():
        states.update({f"ema:{k}": v for k, v in load_safetensors(d / "ema.safetensors").items()})
    return states


def assert_same_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-6, atol=1e-7, msg=k)


def strict_json_lines(path: Path) -> list[dict]:
    """Every line of ``path`` parsed by a reader that refuses NaN/Infinity (as strict JSON readers do)."""
    def refuse(token):
        raise ValueError(f"{path}: non-JSON token {token}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def finite(states: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in states.values() if v.is_floating_point())
