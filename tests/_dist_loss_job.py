"""Cross-rank losses under torchrun (or alone), for tests/test_losses_distributed.py.

``python _dist_loss_job.py`` gives each process its block of one fixed global batch (process r of W takes
rows r, r + W, ..., as the engine's sampler does), embeds it with a DDP-wrapped linear layer and prints,
on the main process, one JSON line per loss: the loss (the mean of the processes' values) and the gradients
DDP leaves on the layer and the loss's own parameters (Proxy-NCA's proxies). One process computes the same
over the whole batch. ``pml_*`` entries: pytorch-metric-learning's ``DistributedLossWrapper`` around its
triplet loss with an all-triplets miner, on the same blocks (an oracle for ``triplet_all``).
"""

from __future__ import annotations

import json
import os

import torch
import torch.distributed as dist
import torch.nn as nn
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.utils.distributed import DistributedLossWrapper, DistributedMinerWrapper

from vislearn.losses import ProxyNCALoss, TripletLoss
from vislearn.train.distributed import init_distributed

B, D_IN, D = 24, 6, 4


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(B, D_IN, generator=g), torch.randint(0, 5, (B,), generator=g)


def losses() -> dict[str, nn.Module]:
    torch.manual_seed(3)
    return {"triplet_semihard": TripletLoss(margin=0.2), "triplet_all": TripletLoss(margin=0.2, mining="all",
                                                                                       squared=False),
            "triplet_hard": TripletLoss(margin=0.5, mining="hard"),
            "proxy_nca_dynamic": ProxyNCALoss(5, D, num_proxies=3, scale=3.0)}


class Net(nn.Module):
    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.embed, self.loss = nn.Linear(D_IN, D), loss

    def forward(self, x, y):
        return self.loss(self.embed(x), y)


def main() -> dict[str, dict]:
    info = init_distributed("cpu")
    x, y = batch()
    x, y = x[info.rank::info.world_size], y[info.rank::info.world_size]
    out = {}
    for name, loss_fn in losses().items():
        net = Net(loss_fn)
        wrapped = nn.parallel.DistributedDataParallel(net) if info.enabled else net
        loss = wrapped(x, y)
        loss.backward()
        value = loss.detach().clone()
        if info.enabled:
            dist.all_reduce(value)
            value /= info.world_size
        out[name] = {"loss": float(value), **{k: p.grad.flatten().tolist() for k, p in net.named_parameters()}}
    # the oracle: PML's all-triplets miner and triplet loss, each gathered across processes
    torch.manual_seed(11)
    embed = nn.Linear(D_IN, D)
    wrapped = nn.parallel.DistributedDataParallel(embed) if info.enabled else embed
    miner = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="all")
    loss_fn = pml_losses.TripletMarginLoss(margin=0.2)
    if info.enabled:
        miner, loss_fn = DistributedMinerWrapper(miner), DistributedLossWrapper(loss_fn)
    e = wrapped(x)
    loss = loss_fn(e, y, miner(e, y))  # PML returns world_size × the loss (its gradient scale)
    loss.backward()
    value = loss.detach().clone() / info.world_size
    if info.enabled:
        dist.all_reduce(value)
        value /= info.world_size
    out["pml_triplet_all"] = {"loss": float(value), **{f"embed.{k}": p.grad.flatten().tolist()
                                                       for k, p in embed.named_parameters()}}
    return out


if __name__ == "__main__":
    torch.set_num_threads(1)
    result = main()
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(result), flush=True)
