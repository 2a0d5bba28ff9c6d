"""Ctrl-C for work running in threads.

Only the main thread sees KeyboardInterrupt; per-host work runs in a pool. On Ctrl-C the main
thread sets `CANCELLED`, and every wait loop calls `check()` on each poll, so each host stops
at its next poll by raising `Cancelled` through its own cleanup (a guard resumes the workers
it paused) instead of being cut off mid-command.
"""

from __future__ import annotations

import threading

from .errors import CommandFailed

CANCELLED = threading.Event()


class Cancelled(CommandFailed):
    """The user interrupted (Ctrl-C); raised inside per-host work at its next poll."""


def check(where: str = "") -> None:
    if CANCELLED.is_set():
        raise Cancelled(f"{where}: interrupted (Ctrl-C)" if where else "interrupted (Ctrl-C)")
