"""Stop a training loop cleanly on SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption).

Inside :func:`stop_requests` the first signal only raises a flag: the loop finishes the epoch
it is in, waits for the checkpoint being written, saves the state at the end of that epoch and
stops (``darec_jax.errors.RunInterrupted``). A second signal while it does so gets the default
behaviour (Ctrl-C: KeyboardInterrupt; SIGTERM: the process ends), for a user who cannot wait.
Outside the main thread (where Python cannot install handlers) nothing is installed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = {signal.SIGINT: ("SIGINT", 130), signal.SIGTERM: ("SIGTERM", 143)}


class StopRequest:
    """The first signal received inside :func:`stop_requests` (None: none)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return SIGNALS[self.signum][0] if self.signum is not None else ""

    @property
    def exit_code(self) -> int:
        return SIGNALS[self.signum][1] if self.signum is not None else 0


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}

    def handle(signum, frame):
        request.signum = signum
        for s in SIGNALS:  # a second signal: the default behaviour
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)

    for s in SIGNALS:
        signal.signal(s, handle)
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
