"""Distributed evaluation (issue 15.4): every process evaluates its share, the results are gathered exactly.

Two gloo processes (torchrun) give the metrics of one process for a classification (top-1 ... of the
``classify`` recipe), a retrieval (Recall@K of ``proxy_nca`` over the gathered embeddings) and a detection
metric (COCO mAP over the gathered detections); the process-group timeout comes from
``dist_timeout_minutes``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import _dist_eval_job as job  # noqa: E402
from _launch import job_env, run, start, torchrun_standalone, wait_all  # noqa: E402
from vislearn.errors import UserError  # noqa: E402
from vislearn.train.evaluation import merge_columns, shard_indices  # noqa: E402

JOB = str(HERE / "_dist_eval_job.py")


def test_shards_cover_every_sample_once_and_merge_restores_dataset_order():
    assert [shard_indices(5, r, 2) for r in (0, 1)] == [[0, 2, 4], [1, 3]]
    assert shard_indices(1, 1, 2) == []
    # a DistributedSampler-style padded split of 5 over 2: sample 0 repeated at the end of rank 1's share
    parts = [([0, 2, 4], {"x": torch.tensor([0., 2, 4]), "boxes": ["b0", "b2", "b4"]}),
             ([1, 3, 0], {"x": torch.tensor([1., 3, 99]), "boxes": ["b1", "b3", "dup"]})]
    merged = merge_columns(parts, 5)
    assert merged["x"].tolist() == [0, 1, 2, 3, 4] and merged["boxes"] == ["b0", "b1", "b2", "b3", "b4"]
    assert float(merged["x"].mean()) == 2.0  # the padded duplicate is not counted a second time
    with pytest.raises(UserError, match=r"no result for samples \[4\]"):
        merge_columns(parts[1:] + [([2], {"x": torch.tensor([2.]), "boxes": ["b2"]})], 5)
    with pytest.raises(UserError, match="2 rows of 'x' for 3 samples"):
        merge_columns([([0, 1, 2], {"x": torch.zeros(2)})], 3)


def test_two_process_evaluation_equals_one_process():
    one = job.evaluations()  # the same job in this process: one process, the whole set
    out, _ = run([*torchrun_standalone(2), JOB, "eval"], job_env(), timeout=240)
    [two] = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert one.keys() == two.keys() == {"classify", "proxy_nca", "detection"}
    for task in one:
        assert one[task].keys() == two[task].keys(), task
        for k, v in one[task].items():
            assert math.isclose(v, two[task][k], rel_tol=1e-6, abs_tol=1e-9), (task, k, v, two[task][k])
    # the metrics are informative numbers, not 0 or 1 that any split would reproduce
    assert 0.02 < one["classify"]["top1"] < 0.9 and 0 < one["classify"]["ece"]
    assert 0.05 < one["proxy_nca"]["recall@1"] < one["proxy_nca"]["recall@8"] < 1
    assert 0.05 < one["detection"]["coco_map"] < 0.95


def test_process_group_timeout_comes_from_the_config(tmp_path):
    p = start([*torchrun_standalone(2), JOB, "timeout", str(tmp_path / "gave_up")], job_env())
    [(rc, out, err)] = wait_all([p], timeout=180)
    assert rc == 0, err[-3000:]
    [record] = [json.loads(m) for m in re.findall(r"\{[^{}]*\}", out)]
    # dist_timeout_minutes=0.05: rank 1's barrier gives up after 3 s instead of waiting for ever
    assert 2.9 <= record["timed_out"] < 60, record
