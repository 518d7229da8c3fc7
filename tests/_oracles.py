"""Oracles shared by the tests: what a metric must equal, computed without the code under test (hand
counts, peer libraries set up like ours)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def top1_by_hand(trainer) -> float:
    """The fraction of ``trainer.task.eval_set`` whose argmax logit is the label, counted one sample at a
    time on the model the engine evaluates (the EMA copy when ``ema_eval``), under its precision."""
    from vislearn.train.device import autocast_context

    model = trainer.inference_model(use_ema=trainer.cfg.ema_eval).eval()
    correct = 0
    with torch.no_grad(), autocast_context(trainer.cfg.precision, trainer.device):
        for x, y in DataLoader(trainer.task.eval_set, batch_size=trainer.cfg.eval_batch_size or 64):
            correct += sum(int(row.argmax()) == int(label) for row, label in zip(model(x).float(), y, strict=True))
    return correct / len(trainer.task.eval_set)


def lpips_vgg_peer(features: torch.nn.Module, spatial: bool = False):
    """The ``lpips`` package's LPIPS-VGG (v0.1, its packaged linear layers) on the trunk ``features`` (a
    torchvision ``vgg16().features``). Set ``.lpips = False`` on it for the unweighted baseline distance
    (every channel weight 1), ``.spatial`` for the map; call it with ``normalize=True`` for [0, 1] images."""
    import copy
    from types import SimpleNamespace
    from unittest import mock

    import lpips
    import lpips.pretrained_networks as pn

    # pnet_rand=True: lpips builds torchvision's vgg16 without weights (nothing downloads); it keeps only
    # its trunk, so it is handed a copy of ``features`` instead of building the 120M-parameter classifier
    # too (slow); the weights are loaded below either way. pretrained=True loads its packaged linear layers.
    with mock.patch.object(pn.tv, "vgg16", lambda **kw: SimpleNamespace(features=copy.deepcopy(features))):
        ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, spatial=spatial, verbose=False)
    slices = {}
    for k, v in features.state_dict().items():
        i = int(k.split(".")[0])
        s = 1 if i < 4 else 2 if i < 9 else 3 if i < 16 else 4 if i < 23 else 5
        slices[f"slice{s}.{k}"] = v
    ref.net.load_state_dict(slices)
    return ref.eval()
