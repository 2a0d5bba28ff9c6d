"""A tiny child-subreaper: ``python -m deployhooks.testing.reaper -- CMD ARGS...``

Runs CMD as a child-subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``), so every process that CMD's
descendants orphan — a Resque worker whose wrapper exited, a job child whose worker was killed —
is reparented to the reaper instead of PID 1, and the reaper reaps it. Some sandboxes and
containers run a PID 1 that never calls wait(); there a killed worker would otherwise stay a zombie
for good, and monit, ``ps`` and the tests would keep seeing it.

Promises:

- stdin/stdout/stderr, the session and the process group are passed to CMD unchanged.
- SIGTERM and SIGINT are forwarded to CMD.
- Every child that ends is reaped, CMD's own or adopted.
- After a SIGTERM, once CMD has exited, every remaining descendant gets SIGTERM, then SIGKILL
  3 seconds later, and the reaper exits. This is how a test stops a monit daemon together with the
  workers it started.
- When CMD exits on its own (no SIGTERM), the reaper stays while adopted descendants are still
  running and keeps reaping them (a SIGTERM then ends them as above); it exits once none remain.
- The exit status is CMD's (128 + N when CMD died of signal N).

Linux only.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from typing import TypedDict

import psutil

PR_SET_CHILD_SUBREAPER = 36
KILL_AFTER_SECONDS = 3.0


class _Terminate(Exception):
    """Raised from the SIGTERM handler to break out of a blocking wait once CMD is gone."""


def set_child_subreaper() -> None:
    """Mark this process as child-subreaper; raises OSError if the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}")


def _exit_code(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _reap_nohang() -> bool:
    """Reap every child that has ended; return False once there are no children at all."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _end_descendants() -> None:
    """TERM every descendant, KILL what is left after KILL_AFTER_SECONDS, reap them all."""
    me = psutil.Process()
    for proc in me.children(recursive=True):
        try:
            proc.terminate()
        except psutil.Error:
            pass
    deadline = time.monotonic() + KILL_AFTER_SECONDS
    while _reap_nohang():
        if time.monotonic() >= deadline:
            # Re-list: a descendant may have forked after the TERM round.
            for proc in me.children(recursive=True):
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            deadline = time.monotonic() + KILL_AFTER_SECONDS
        time.sleep(0.05)


class _State(TypedDict):
    """What the signal handler and the wait loop of `run` share."""

    child: subprocess.Popen | None
    child_done: bool
    terminating: bool


def run(cmd: list[str]) -> int:
    """Run ``cmd`` under this process as child-subreaper; return the exit status described above."""
    set_child_subreaper()
    state: _State = {"child": None, "child_done": False, "terminating": False}

    def on_signal(signum, _frame):
        if signum == signal.SIGTERM:
            state["terminating"] = True
        child = state["child"]
        if child is not None and not state["child_done"]:
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass
        elif signum == signal.SIGTERM and state["child_done"]:
            raise _Terminate()

    # Installed before CMD starts so an early TERM is not lost; exec resets them to default in CMD.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        child = subprocess.Popen(cmd)
    except OSError as exc:
        print(f"reaper: cannot run {cmd[0]!r}: {exc}", file=sys.stderr)
        return 127
    state["child"] = child
    if state["terminating"]:
        os.kill(child.pid, signal.SIGTERM)

    status = None
    try:
        while True:
            try:
                pid, wait_status = os.wait()  # PEP 475: retried after a handler that returns
            except ChildProcessError:
                break  # CMD and every adopted descendant are gone
            if pid == child.pid:
                status = _exit_code(wait_status)
                state["child_done"] = True
                # Popen must not try to wait for a pid we already reaped.
                child.returncode = status
                if state["terminating"]:
                    raise _Terminate()
    except _Terminate:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _end_descendants()
    # status is None only if CMD was reaped by someone else, which cannot happen here.
    return 0 if status is None else status


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        print("usage: python -m deployhooks.testing.reaper -- CMD [ARGS...]", file=sys.stderr)
        return 2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
