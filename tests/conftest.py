"""Shared fixtures: deterministic seeds and one intra-op thread.

One thread: the suite's models are small, where a second spinning thread costs more than it gives,
and on a shared (oversubscribed) 2-core machine two spinning threads per process run many times
slower. Subprocess tests (DDP, resume) set OMP_NUM_THREADS themselves.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _thread_count_restored():
    """A test (or a library call in it) that changes torch's thread count does not leak it into later
    tests: forked children of a multi-threaded parent can deadlock in OpenMP."""
    n = torch.get_num_threads()
    yield
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _sigint_raises_keyboard_interrupt():
    """Tests see Python's usual SIGINT (KeyboardInterrupt) even when the suite was started with SIGINT
    ignored, as from a background shell (``cmd &``, ``nohup``): the inherited disposition is put back after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _png(path, colour, rng, size=16):
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (np.array(colour)[None, None] + rng.integers(0, 40, (size, size, 3))).clip(0, 255).astype("uint8")
    Image.fromarray(pixels).save(path)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """A user's own ImageFolder tree: ``train/`` (12 per class) and ``val/`` (4 per class), classes cat, dog."""
    import numpy as np

    root = tmp_path_factory.mktemp("pets")
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for cls, colour in (("cat", (200, 40, 40)), ("dog", (40, 40, 200))):
            for i in range(n):
                _png(root / split / cls / f"{i}.png", colour, rng)
    return root


@pytest.fixture(scope="session")
def coco_folder(tmp_path_factory):
    """A COCO-layout folder: ``annotations/instances_{train,val}2017.json`` and the two image folders."""
    import json

    import numpy as np

    root = tmp_path_factory.mktemp("coco")
    rng = np.random.default_rng(0)
    for split, n in (("train2017", 6), ("val2017", 3)):
        images, anns = [], []
        for i in range(n):
            _png(root / split / f"{i}.png", (90, 160, 90), rng, size=32)
            images.append({"id": i + 1, "file_name": f"{i}.png", "width": 32, "height": 32})
            for j, (w, h) in enumerate(((12, 10), (6 + i, 14 - i))):  # two boxes of varied shape per image
                anns.append({"id": 2 * i + j + 1, "image_id": i + 1, "category_id": 1, "bbox": [2 + 14 * j, 4, w, h],
                             "area": w * h, "iscrowd": 0})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}))
    return root
