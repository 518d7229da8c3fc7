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
