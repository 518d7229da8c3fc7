"""SIGTERM/SIGINT as "checkpoint and stop": the engine's handlers, installed whatever was inherited.

A process started from a background shell inherits SIGINT *ignored*; the engine installs its own
handler anyway while a run with an output folder trains, and puts the inherited disposition
(ignored, default or another handler) back when training ends.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator

__all__ = ["STOP_SIGNALS", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals(on_signal: Callable[[int], None], enabled: bool = True) -> Iterator[None]:
    """Call ``on_signal(signum)`` on SIGTERM/SIGINT inside the block (main thread only; nothing when disabled)."""
    previous = {}
    if enabled:
        for sig in STOP_SIGNALS:
            try:
                previous[sig] = signal.signal(sig, lambda signum, frame: on_signal(signum))
            except ValueError:  # not the main thread
                pass
    try:
        yield
    finally:
        for sig, h in previous.items():
            signal.signal(sig, h)
