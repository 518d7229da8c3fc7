"""Cross-rank losses (issue 15.5): triplet mining and Proxy-NCA's dynamic assignment see every process's
embeddings, so two gloo processes (torchrun, DDP) give the loss and the gradients of one process holding the
global batch; pytorch-metric-learning's DistributedLossWrapper is the oracle of the all-triplets loss."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _dist_loss_job as job  # noqa: E402
from _launch import job_env, run, torchrun_standalone  # noqa: E402
from vislearn.train.distributed import gather_rows  # noqa: E402


def _close(a: dict, b: dict, where: str) -> None:
    assert math.isclose(a["loss"], b["loss"], rel_tol=1e-5), (where, a["loss"], b["loss"])
    for k in a:
        if k != "loss":
            torch.testing.assert_close(torch.tensor(b[k]), torch.tensor(a[k]), rtol=1e-5, atol=1e-7, msg=where + k)


@pytest.fixture(scope="module")
def results():
    one = job.main()  # this process: no process group, the whole batch
    out, _ = run([*torchrun_standalone(2), str(HERE / "_dist_loss_job.py")], job_env(), timeout=240)
    [two] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return one, two


@pytest.mark.parametrize("name", ["triplet_semihard", "triplet_all", "triplet_hard", "proxy_nca_dynamic"])
def test_two_processes_give_the_one_process_loss_and_gradients(results, name):
    one, two = results
    assert one[name]["loss"] != 0 and any(v != 0 for v in one[name]["embed.weight"])  # a live loss and gradient
    _close(one[name], two[name], name)
    if name == "proxy_nca_dynamic":
        assert "loss.proxies" in one[name]  # the proxies' gradient matches too


def test_pml_distributed_wrapper_is_the_oracle_of_the_all_triplets_loss(results):
    for res in results:  # one process, and two under DDP
        _close(res["pml_triplet_all"], {k: v for k, v in res["triplet_all"].items() if k != "loss.proxies"},
               "pml")


def test_gather_rows_without_a_process_group_is_the_identity():
    x = torch.randn(3, 2, requires_grad=True)
    y, offset = gather_rows(x)
    assert y is x and offset == 0
