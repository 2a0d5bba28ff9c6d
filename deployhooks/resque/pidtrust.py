"""The worker's pidfile, and whether the pid it names may be acted on.

monit watches ``<pid_dir>/<stem>.pid``; the wrapper writes the worker's own pid there, atomically.
A pid read back is trusted only if it is a live Resque worker of this app: not a zombie, a Resque
command line (:data:`WORKER_CMDLINE_RE`), the worker's user, and a working directory under
``deploy_to`` as the kernel resolves it. After a crash or a reboot the number may belong to
anything; such a pidfile is stale: it is removed and nothing is signalled.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil

from . import safefs
from .worker import Log, Worker

PID_RE = re.compile(r"[0-9]{1,10}")
# Resque's own liveness test (worker.rb linux_worker_pids) greps for the same three shapes:
# rake before the procline is set, the startup title, and every "resque-<version>: ..." title
# (docs/resque.md, "Process titles").
WORKER_CMDLINE_RE = re.compile(r"resque-\d|resque: Starting|resque:work")
DELETED_SUFFIX = " (deleted)"


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile``, or None if it is missing, unreadable, or not a positive ASCII number."""
    try:
        text = pidfile.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not PID_RE.fullmatch(text) or int(text) <= 0:
        return None
    return int(text)


def _cwd_of(proc: psutil.Process) -> str | None:
    try:
        cwd = os.readlink(f"/proc/{proc.pid}/cwd")
    except OSError:
        return None
    return cwd[: -len(DELETED_SUFFIX)] if cwd.endswith(DELETED_SUFFIX) else cwd


def why_not_ours(proc: psutil.Process, worker: Worker) -> str | None:
    """None if ``proc`` is a live Resque worker of this app, else why not (for the log).

    Ours means: alive and not a zombie, a Resque command line, the worker's user (when known),
    and a working directory under ``deploy_to`` as the kernel resolves it.
    """
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return "it is a zombie"
        cmdline = " ".join(proc.cmdline())
        uid = proc.uids().real
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return "it is not running"
    except psutil.AccessDenied:
        return "it cannot be inspected"
    if not WORKER_CMDLINE_RE.search(cmdline):
        return "it is not a resque worker"
    if worker.user is not None and uid != worker.user.uid:
        return f"it runs as uid {uid}, not {worker.user.name}"
    cwd = _cwd_of(proc)
    root = os.path.realpath(worker.deploy_to).rstrip("/") + "/"
    if cwd is None or not (cwd + "/").startswith(root):
        return f"its working directory {cwd or '(unreadable)'} is not under {worker.deploy_to}"
    return None


def remove_pidfile(worker: Worker) -> None:
    worker.pidfile.unlink(missing_ok=True)


def write_pidfile(worker: Worker, pid: int) -> None:
    """Write ``pid`` to the pidfile atomically: monit must never read a half-written number."""
    safefs.write_atomic(str(worker.pidfile), f"{pid}\n".encode())


def running_worker(worker: Worker, log: Log) -> psutil.Process | None:
    """The worker named by the pidfile if it is this app's live Resque worker, else None; a
    pidfile naming anything else is removed (it is ours, in our pid_dir) and nothing signalled."""
    pid = read_pid(worker.pidfile)
    if pid is None:
        if worker.pidfile.exists():
            log.warning(f"removing unreadable pidfile {worker.pidfile}")
            remove_pidfile(worker)
        return None
    try:
        proc = psutil.Process(pid)
        reason = why_not_ours(proc, worker)
    except psutil.NoSuchProcess:
        proc, reason = None, "it is not running"
    if reason is not None:
        log.warning(
            f"pidfile {worker.pidfile} names pid {pid}, which is not this app's worker "
            f"({reason}); removing the pidfile and signalling nothing"
        )
        remove_pidfile(worker)
        return None
    return proc
