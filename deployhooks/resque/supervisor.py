"""deployhooks-resque: start, stop and signal one Resque worker for monit.

A drop-in for Engine Yard's ``/engineyard/bin/resque`` wrapper::

    deployhooks-resque [--user USER] [--deploy-to DIR] [--pid-dir DIR] [--grace-time SECONDS]
                       [--term-wait SECONDS] <app> <action> <framework_env> <conf> [-- COMMAND...]

``<conf>`` names ``<deploy_to>/shared/config/<conf>`` (e.g. ``resque_0.conf``); its stem
(``resque_0``) names the worker: pidfile ``<pid_dir>/resque_0.pid``, lock ``<pid_dir>/resque_0.lock``,
log ``<deploy_to>/shared/log/resque_0.log``.

Defaults: ``--deploy-to`` = $DEPLOYHOOKS_DEPLOY_TO or ``/data/<app>``; ``--pid-dir`` =
$DEPLOYHOOKS_PID_DIR or ``/var/run/deployhooks/resque/<app>``; ``--grace-time`` = $GRACE_TIME or 60;
``--term-wait`` = 5. $DEPLOYHOOKS_LOCK_TIMEOUT (default 10) is how long to wait for the lock.
``COMMAND`` (after ``--``) is what the worker execs, ``{current}`` standing for the release path;
default ``bundle exec rake -f {current}/Rakefile resque:work``.

Trust. monit runs this program as root, and the deploy user owns ``<deploy_to>``. So:

- The worker's user is ``--user`` (the monitrc line, which root owns), required when running
  as root and never root itself; Engine Yard took the owner of ``current``, which the deploy user
  can point anywhere (``ln -sfn /usr/share current`` made it root).
- The command comes from the monitrc line, never from files under ``<deploy_to>``. The conf and
  ``env.custom`` / ``env.cloud`` are read by the worker's process *after* it has become the
  user, as ``KEY=VALUE`` data; ``RESQUE_WORKER_COMMAND`` there is refused, ``PATH`` and ``LD_*``
  ignored with a warning (see :mod:`deployhooks.resque.envfile`).
- ``pid_dir`` must be a folder only root can change (created 0755 if missing; see
  :mod:`deployhooks.resque.safefs`); the lock is opened without following links and the
  pidfile is written through an exclusively created temporary file.
- The worker's log is opened by the worker's process as the user. The wrapper's own lines go
  to it only if it is a regular file owned by that user, with one link, reached without a
  symlink at its name.
- A pid read from the pidfile is signalled only if it is a live Resque worker of this app: a
  Resque command line, the worker's user, and a working directory under ``<deploy_to>``.

Actions:

- ``start``: launch the worker unless one is running, as above, in its own session, with stdout
  and stderr appended to its log, and APP_ROOT, RAILS_ENV, RACK_ENV set. QUEUE/QUEUES are
  required in the conf. The pidfile gets the worker's own pid.
- ``stop`` / ``quit``: QUIT (finish the job, then exit); after ``--grace-time`` seconds KILL the job
  child and the worker. ``term`` / ``kill``: TERM (Resque kills the job at once); after
  ``--term-wait`` seconds the same forced end. Both return once the worker is gone and remove the
  pidfile.
- ``restart``: stop, then start, under one lock.
- ``pause`` (USR2: take no new job), ``cont`` (CONT: resume), ``abort`` (USR1: kill the current job,
  keep the worker).

A pidfile naming a process that is not this app's live worker (after a crash or a reboot the
number may belong to anything) is stale: it is removed, nothing is signalled, and the action
goes on as if no worker ran.

Differences from Engine Yard's shipped script (ey-cookbooks-stable-v6/v7):

- GRACE_TIME counts seconds and is honoured. EY documented "QUIT, wait GRACE_TIME, then kill -9",
  but its code counted quarter-seconds (60 meant 15 s) in a loop that ``stop``/``quit`` never
  reached: they sent QUIT and returned at once, leaving the pidfile behind.
- The pidfile holds the worker's pid, not the pid of the ``sudo`` that launched it, and is written
  atomically. ``stop`` kills the job child *before* the worker: a Resque parent killed first leaves
  an orphaned child that finishes its job unsupervised.
- The lock is an flock on a file in the app's pid directory. EY's ``/tmp/<worker>.monit-lock`` was
  shared by every app on the host and went stale when a wrapper died.
- There is a ``restart`` action; an unknown action is a usage error (EY: exit 1).
- Env files are parsed as the worker's user, not sourced by root.

Every step is logged to syslog (tag ``deployhooks-resque``; silently skipped without /dev/log) and
appended, timestamped, to the worker's log file (under the rule above).

Exit codes:

- 0: done (including "nothing to signal": no pidfile, stale pidfile).
- 1: refused or failed: already running, lock busy, unsafe pid_dir, conf missing or without
  QUEUE/QUEUES, ``current`` missing, bad env file, worker died at start, worker would not die.
- 2: usage error (bad option, action, app, framework_env, conf name or user; no --user as root).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import signal
import sys
import syslog
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from . import safefs
from .launch import LaunchFailed, LaunchSpec, WorkerUser, resolve_user, spawn

PROG = "deployhooks-resque"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

DEFAULT_GRACE_TIME = 60.0
DEFAULT_TERM_WAIT = 5.0
DEFAULT_LOCK_TIMEOUT = 10.0
MAX_SECONDS = 86400.0  # a day: longer is a typo, and monit's timeouts are whole seconds anyway
START_CHECK_SECONDS = 0.3
KILL_WAIT_SECONDS = 10.0
LOG_TAIL_LINES = 15
DEFAULT_WORKER_COMMAND = ("bundle", "exec", "rake", "-f", "{current}/Rakefile", "resque:work")

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
CONF_RE = re.compile(r"[A-Za-z0-9_.-]+\.conf")
PID_RE = re.compile(r"[0-9]{1,10}")
# Resque's own liveness test (worker.rb linux_worker_pids) greps for the same three shapes:
# rake before the procline is set, the startup title, and every "resque-<version>: ..." title.
WORKER_CMDLINE_RE = re.compile(r"resque-\d|resque: Starting|resque:work")
DELETED_SUFFIX = " (deleted)"

ACTIONS = ("start", "stop", "quit", "term", "kill", "restart", "pause", "cont", "abort")
SIGNAL_ACTIONS = {"pause": signal.SIGUSR2, "cont": signal.SIGCONT, "abort": signal.SIGUSR1}


class ActionFailed(Exception):
    """The action was refused or failed; the message says why. Exit code 1."""


@dataclass
class Worker:
    """One worker of one app: who runs it, what it runs, and the paths every action uses."""

    app: str
    framework_env: str
    conf: str
    deploy_to: Path
    pid_dir: Path
    user: WorkerUser | None = None  # None: root without --user (stop/signal of a legacy line)
    command: tuple[str, ...] = DEFAULT_WORKER_COMMAND

    @property
    def stem(self) -> str:
        return self.conf[: -len(".conf")]

    @property
    def current(self) -> Path:
        return self.deploy_to / "current"

    @property
    def config_dir(self) -> Path:
        return self.deploy_to / "shared" / "config"

    @property
    def log_path(self) -> Path:
        return self.deploy_to / "shared" / "log" / f"{self.stem}.log"

    @property
    def pidfile(self) -> Path:
        return self.pid_dir / f"{self.stem}.pid"

    @property
    def lockfile(self) -> Path:
        return self.pid_dir / f"{self.stem}.lock"


class Log:
    """Step log: syslog, the worker's log file, and stdout/stderr for whoever runs us."""

    def __init__(self, worker: Worker):
        self.worker = worker
        self.prefix = f"{worker.app} {worker.stem}"
        try:
            syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)
        except Exception:
            pass

    def _emit(self, priority: int, message: str, stream, fd: int | None = None) -> None:
        line = f"{self.prefix}: {message}"
        try:
            # glibc drops the message when /dev/log is missing; never let logging fail an action.
            syslog.syslog(priority, line)
        except Exception:
            pass
        self.append_to_worker_log(line, fd)
        print(f"{PROG}: {line}", file=stream, flush=True)

    def append_to_worker_log(self, line: str, fd: int | None = None) -> None:
        """Append to `fd`, else to the worker's log if root may write it (see the module
        docstring); never create it: the worker's process does that as its user."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        data = f"[{stamp}] {PROG}[{os.getpid()}]: {line}\n".encode("utf-8", "replace")
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, data)
            return
        owner = self.worker.user.uid if self.worker.user else os.geteuid()
        if owner == 0:
            return  # root without --user: no user whose file it could safely be
        fd = safefs.open_append_owned(str(self.worker.log_path), owner)
        if fd is None:
            return
        try:
            os.write(fd, data)
        except OSError:
            pass
        finally:
            os.close(fd)

    def child_say(self, message: str, fd: int, warning: bool) -> None:
        """For the launching child: a line into the log fd it opened as the user."""
        self._emit(
            syslog.LOG_WARNING if warning else syslog.LOG_INFO, message, sys.stderr if warning else sys.stdout, fd
        )

    def info(self, message: str) -> None:
        self._emit(syslog.LOG_INFO, message, sys.stdout)

    def warning(self, message: str) -> None:
        self._emit(syslog.LOG_WARNING, message, sys.stderr)

    def error(self, message: str) -> None:
        self._emit(syslog.LOG_ERR, message, sys.stderr)


# --- processes -------------------------------------------------------------------------------


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


# --- lock ------------------------------------------------------------------------------------


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


# --- actions ---------------------------------------------------------------------------------


def _log_tail(worker: Worker) -> str:
    """The last lines of the worker's log, read only if root may (see the module docstring)."""
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
    """Launch the worker (see the module docstring); ActionFailed if refused or it dies at once."""
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


# --- command line ----------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text) if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text) else None
    except ValueError:
        value = None
    if value is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (like 60 or 2.5)")
    if value > MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"{text!r} is more than {MAX_SECONDS:g} seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Start, stop or signal one Resque worker (monit wrapper; Engine Yard drop-in).",
        epilog="Exit codes: 0 done, 1 refused or failed, 2 usage error.",
    )
    parser.add_argument("--user", metavar="USER", help="the worker's user (required as root; never root)")
    parser.add_argument("--deploy-to", metavar="DIR", help="app root (default $DEPLOYHOOKS_DEPLOY_TO or /data/<app>)")
    parser.add_argument(
        "--pid-dir",
        metavar="DIR",
        help="pidfile and lock directory (default $DEPLOYHOOKS_PID_DIR or /var/run/deployhooks/resque/<app>)",
    )
    parser.add_argument(
        "--grace-time",
        metavar="SECONDS",
        type=_seconds,
        help="stop/quit: seconds to let the job finish before killing it "
        f"(default $GRACE_TIME or {DEFAULT_GRACE_TIME:g})",
    )
    parser.add_argument(
        "--term-wait",
        metavar="SECONDS",
        type=_seconds,
        default=DEFAULT_TERM_WAIT,
        help=f"term/kill: seconds to wait after TERM before KILL (default {DEFAULT_TERM_WAIT:g})",
    )
    parser.add_argument("app")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("framework_env")
    parser.add_argument("conf")
    parser.add_argument(
        "command",
        nargs="*",
        metavar="-- COMMAND",
        help="what the worker execs ({current} = the release); default: " + " ".join(DEFAULT_WORKER_COMMAND),
    )
    return parser


def _abs_dir(parser: argparse.ArgumentParser, what: str, value: str) -> Path:
    if not value.startswith("/") or "\x00" in value or "\n" in value:
        parser.error(f"bad {what} {value!r}: an absolute path")
    path = os.path.normpath(value)
    if path == "/":
        parser.error(f"bad {what} {value!r}: not the root folder")
    return Path(path)


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Worker]:
    """Parse and validate; exits 2 with a message naming the bad argument."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not NAME_RE.fullmatch(args.app):
        parser.error(f"bad app {args.app!r}: use letters, digits, '_' and '-'")
    if not NAME_RE.fullmatch(args.framework_env):
        parser.error(f"bad framework_env {args.framework_env!r}: use letters, digits, '_' and '-'")
    if not CONF_RE.fullmatch(args.conf):
        parser.error(
            f"bad conf {args.conf!r}: a file name like resque_0.conf (letters, digits, '_', '.', '-'; no slashes)"
        )
    if args.user is not None and not USER_RE.fullmatch(args.user):
        parser.error(f"bad --user {args.user!r}: a user name (lower-case letters, digits, '_', '-')")
    if args.grace_time is None:
        env_grace = os.environ.get("GRACE_TIME", "").strip()
        try:
            args.grace_time = _seconds(env_grace) if env_grace else DEFAULT_GRACE_TIME
        except argparse.ArgumentTypeError as exc:
            parser.error(f"bad GRACE_TIME: {exc}")
    lock_env = os.environ.get("DEPLOYHOOKS_LOCK_TIMEOUT", "").strip()
    try:
        args.lock_timeout = _seconds(lock_env) if lock_env else DEFAULT_LOCK_TIMEOUT
    except argparse.ArgumentTypeError as exc:
        parser.error(f"bad DEPLOYHOOKS_LOCK_TIMEOUT: {exc}")
    user = None
    if args.user is not None or os.geteuid() != 0 or args.action in ("start", "restart"):
        try:
            user = resolve_user(args.user)
        except LaunchFailed as exc:
            parser.error(str(exc))
    deploy_to = args.deploy_to or os.environ.get("DEPLOYHOOKS_DEPLOY_TO") or f"/data/{args.app}"
    pid_dir = args.pid_dir or os.environ.get("DEPLOYHOOKS_PID_DIR") or f"/var/run/deployhooks/resque/{args.app}"
    worker = Worker(
        app=args.app,
        framework_env=args.framework_env,
        conf=args.conf,
        deploy_to=_abs_dir(parser, "deploy_to", os.path.abspath(deploy_to)),
        pid_dir=_abs_dir(parser, "pid_dir", os.path.abspath(pid_dir)),
        user=user,
        command=tuple(args.command) or DEFAULT_WORKER_COMMAND,
    )
    return args, worker


def run(args: argparse.Namespace, worker: Worker, log: Log) -> None:
    """Carry out ``args.action`` under the worker's lock; raises ActionFailed."""
    action = args.action
    with action_lock(worker, args.lock_timeout):
        if action == "start":
            start(worker, log)
        elif action in ("stop", "quit"):
            stop(worker, log, signal.SIGQUIT, args.grace_time)
        elif action in ("term", "kill"):
            stop(worker, log, signal.SIGTERM, args.term_wait)
        elif action == "restart":
            stop(worker, log, signal.SIGQUIT, args.grace_time)
            start(worker, log)
        else:
            send(worker, log, SIGNAL_ACTIONS[action])


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code described in the module docstring."""
    args, worker = parse_args(argv)
    log = Log(worker)
    log.info(f"{args.action} requested (deploy_to {worker.deploy_to}, pid_dir {worker.pid_dir})")
    try:
        run(args, worker, log)
    except ActionFailed as exc:
        log.error(f"{args.action} failed: {exc}")
        return EXIT_REFUSED
    except (OSError, psutil.Error) as exc:
        # e.g. pid dir not writable, or a worker owned by another user when not run as root
        log.error(f"{args.action} failed: {exc}")
        return EXIT_REFUSED
    log.info(f"{args.action} done")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
