"""Ctrl-C for work running in threads.

Only the main thread sees KeyboardInterrupt; per-host work runs in a pool. On Ctrl-C the main
thread sets `CANCELLED`, and every wait loop calls `check()` on each poll, so each host stops
at its next poll by raising `Cancelled` through its own cleanup (a guard resumes the workers
it paused) instead of being cut off mid-command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

from ..errors import CommandFailed

CANCELLED = threading.Event()


class Cancelled(CommandFailed):
    """The user interrupted (Ctrl-C); raised inside per-host work at its next poll."""


def check(where: str = "") -> None:
    if CANCELLED.is_set():
        raise Cancelled(f"{where}: interrupted (Ctrl-C)" if where else "interrupted (Ctrl-C)")


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold further Ctrl-Cs off while cleanup puts hosts back (workers started again, locks
    removed): a second Ctrl-C there would leave exactly the half-changed server the first one
    was meant to avoid. Each one is answered on stderr with why it is ignored, by a bare
    os.write: the handler may run while the main thread holds the progress printer's lock.
    Only the main thread can set signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def answer(signum, frame):
        try:
            os.write(2, b"still putting the hosts back (workers, locks); Ctrl-C is ignored until that is done\n")
        except OSError:
            pass

    previous = signal.signal(signal.SIGINT, answer)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
