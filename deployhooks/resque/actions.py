"""The wrapper's actions on one worker, each under the worker's lock: start, stop, signal.

- :func:`start` launches the worker through :mod:`deployhooks.resque.launch` (privileges dropped
  before anything under ``deploy_to`` is touched) and writes its pid;
- :func:`stop` sends QUIT (``stop``/``quit``, waiting GRACE_TIME seconds) or TERM (``term``/``kill``,
  waiting ``--term-wait``), then KILLs the job child before the worker;
- :func:`send` sends USR2 (``pause``), CONT (``cont``) or USR1 (``abort``);
- :func:`action_lock` is an flock in ``pid_dir``, which must be a folder only root can change.

Each acts only on a pid that :func:`deployhooks.resque.pidtrust.running_worker` trusts.
Signal meanings: docs/resque.md, "Signals".
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import time

import psutil

from . import safefs
from .launch import LaunchFailed, LaunchSpec, spawn
from .pidtrust import remove_pidfile, running_worker, write_pidfile
from .worker import PROG, Log, Worker

START_CHECK_SECONDS = 0.3
KILL_WAIT_SECONDS = 10.0
LOG_TAIL_LINES = 15

SIGNAL_ACTIONS = {"pause": signal.SIGUSR2, "cont": signal.SIGCONT, "abort": signal.SIGUSR1}


class ActionFailed(Exception):
    """The action was refused or failed; the message says why. Exit code 1."""


def is_gone(proc: psutil.Process) -> bool:
    """True once ``proc`` has exited; a zombie counts as gone (it runs nothing any more)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` seconds for ``procs`` to be gone; return those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if not is_gone(p)]
        remaining = deadline - time.monotonic()
        if not alive or remaining <= 0:
            return alive
        # wait_procs returns as soon as a process disappears; a zombie never does, hence the
        # short slices and the is_gone() re-check above.
        psutil.wait_procs(alive, timeout=min(0.1, remaining))


def kill_quietly(proc: psutil.Process) -> None:
    with contextlib.suppress(psutil.NoSuchProcess):
        proc.kill()


def prepare_pid_dir(worker: Worker) -> None:
    """Create ``pid_dir`` if missing and check that only root (or we) can change it."""
    try:
        safefs.ensure_trusted_dir(str(worker.pid_dir))
    except safefs.UnsafePath as exc:
        raise ActionFailed(
            f"pid_dir {worker.pid_dir} is not safe: {exc}. Use a folder only root can change "
            f"(chown root:root and chmod 755 it and each parent, or set resque.pid_dir and run "
            f"resque.setup)"
        ) from None


@contextlib.contextmanager
def action_lock(worker: Worker, timeout: float):
    """Hold an exclusive flock on the worker's lock file; ActionFailed if busy after ``timeout`` s.

    The kernel drops an flock when its holder dies, so the lock is never stale. The file is never
    unlinked: a waiter that already opened it would lock an orphaned inode while a newcomer locks
    a fresh file, and both would run.
    """
    prepare_pid_dir(worker)
    fd = safefs.open_lock(str(worker.lockfile))
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise ActionFailed(
                        f"another {PROG} is acting on {worker.app} {worker.conf} (pid {holder})"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def _log_tail(worker: Worker) -> str:
    """The last lines of the worker's log, read only if root may (see deployhooks.resque.supervisor)."""
    owner = worker.user.uid if worker.user else os.geteuid()
    try:
        fd = os.open(worker.log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if st.st_uid != owner or st.st_nlink != 1 or not (st.st_mode & 0o170000 == 0o100000):
            return ""
        fh.seek(max(0, st.st_size - 64 * 1024))
        data = fh.read()
    return "\n".join(data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:])


def start(worker: Worker, log: Log) -> None:
    """Launch the worker (see deployhooks.resque.supervisor); ActionFailed if refused or it dies at once."""
    if worker.user is None:
        raise ActionFailed("no worker user: pass --user")
    proc = running_worker(worker, log)
    if proc is not None:
        raise ActionFailed(f"already running with pid {proc.pid}; not starting another")
    spec = LaunchSpec(
        user=worker.user,
        argv=worker.command,
        current=worker.current,
        conf=worker.config_dir / worker.conf,
        env_files=(worker.config_dir / "env.custom", worker.config_dir / "env.cloud"),
        log_path=worker.log_path,
        framework_env=worker.framework_env,
    )
    try:
        pid = spawn(spec, log.child_say)
    except LaunchFailed as exc:
        raise ActionFailed(str(exc)) from None
    write_pidfile(worker, pid)
    time.sleep(START_CHECK_SECONDS)
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        remove_pidfile(worker)
        code = os.waitstatus_to_exitcode(status)
        raise ActionFailed(
            f"worker pid {pid} exited at once with status {code}; last lines of {worker.log_path}:\n{_log_tail(worker)}"
        )
    log.info(f"started worker pid {pid} as {worker.user.name}; pidfile {worker.pidfile}")


def _force_end(worker: Worker, proc: psutil.Process, log: Log) -> None:
    try:
        kids = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    if kids:
        log.warning(f"killing job child(ren) {', '.join(str(k.pid) for k in kids)} of worker {proc.pid}")
    # Children first: a Resque parent killed before its child leaves the job running as an orphan.
    for kid in kids:
        kill_quietly(kid)
    log.warning(f"killing worker {proc.pid}")
    kill_quietly(proc)
    alive = wait_gone([proc, *kids], KILL_WAIT_SECONDS)
    if alive:
        raise ActionFailed(
            f"pid(s) {', '.join(str(p.pid) for p in alive)} still alive {KILL_WAIT_SECONDS:g}s after SIGKILL; "
            f"keeping {worker.pidfile}"
        )


def stop(worker: Worker, log: Log, sig: signal.Signals, wait: float) -> None:
    """Send ``sig``, wait ``wait`` seconds for the worker to exit, then KILL job child and worker."""
    proc = running_worker(worker, log)
    if proc is None:
        log.info("no running worker; nothing to stop")
        return
    log.info(f"sending {sig.name} to worker {proc.pid}; waiting up to {wait:g}s for it to exit")
    started = time.monotonic()
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        pass
    if wait_gone([proc], wait):
        log.warning(f"worker {proc.pid} still running {wait:g}s after {sig.name}")
        _force_end(worker, proc, log)
        log.info(f"worker {proc.pid} killed after {time.monotonic() - started:.1f}s")
    else:
        log.info(f"worker {proc.pid} exited after {time.monotonic() - started:.1f}s")
    remove_pidfile(worker)


def send(worker: Worker, log: Log, sig: signal.Signals) -> None:
    """Send ``sig`` to a running worker; nothing (exit 0) when none runs."""
    proc = running_worker(worker, log)
    if proc is None:
        log.info(f"no running worker; {sig.name} not sent")
        return
    log.info(f"sending {sig.name} to worker {proc.pid}")
    try:
        proc.send_signal(sig)
    except psutil.NoSuchProcess:
        log.warning(f"worker {proc.pid} exited before {sig.name} reached it")


def _end(worker: Worker, log: Log, args: argparse.Namespace, how: str) -> None:
    """End the worker as stop action ``how`` does: QUIT and GRACE_TIME, or TERM and --term-wait."""
    if how in ("stop", "quit"):
        stop(worker, log, signal.SIGQUIT, args.grace_time)
    else:
        stop(worker, log, signal.SIGTERM, args.term_wait)


def run(args: argparse.Namespace, worker: Worker, log: Log) -> None:
    """Carry out ``args.action`` under the worker's lock; raises ActionFailed."""
    action = args.action
    with action_lock(worker, args.lock_timeout):
        if action == "start":
            start(worker, log)
        elif action in ("stop", "quit", "term", "kill"):
            _end(worker, log, args, action)
        elif action == "restart":
            _end(worker, log, args, args.restart_with)
            start(worker, log)
        else:
            send(worker, log, SIGNAL_ACTIONS[action])
