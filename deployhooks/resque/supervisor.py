"""deployhooks-resque: start, stop and signal one Resque worker for monit.

A drop-in for Engine Yard's ``/engineyard/bin/resque`` wrapper::

    deployhooks-resque [--deploy-to DIR] [--pid-dir DIR] [--grace-time SECONDS] [--term-wait SECONDS]
                       <app> <action> <framework_env> <conf>

``<conf>`` names ``<deploy_to>/shared/config/<conf>`` (e.g. ``resque_0.conf``); its stem
(``resque_0``) names the worker: pidfile ``<pid_dir>/resque_0.pid``, lock ``<pid_dir>/resque_0.lock``,
log ``<deploy_to>/shared/log/resque_0.log``.

Defaults: ``--deploy-to`` = $DEPLOYHOOKS_DEPLOY_TO or ``/data/<app>``; ``--pid-dir`` =
$DEPLOYHOOKS_PID_DIR or ``/var/run/deployhooks/resque/<app>``; ``--grace-time`` = $GRACE_TIME or 60;
``--term-wait`` = 5. $DEPLOYHOOKS_LOCK_TIMEOUT (default 10) is how long to wait for the lock.

Actions:

- ``start``: launch the worker unless one is running. Reads QUEUE/QUEUES (required) and any other
  KEY=VALUE from the conf file, and the optional ``env.custom`` then ``env.cloud`` beside it (later
  files win; they may set RESQUE_WORKER_COMMAND, default
  ``bundle exec rake -f {current}/Rakefile resque:work``, ``{current}`` being replaced). The worker
  runs in ``<deploy_to>/current`` (so its cwd is the release directory), as the owner of
  ``current`` when we are root, in its own session, with stdout and stderr appended to its log, and
  with APP_ROOT, RAILS_ENV, RACK_ENV set. The pidfile gets the worker's own pid.
- ``stop`` / ``quit``: QUIT (finish the job, then exit); after ``--grace-time`` seconds KILL the job
  child and the worker. ``term`` / ``kill``: TERM (Resque kills the job at once); after
  ``--term-wait`` seconds the same forced end. Both return once the worker is gone and remove the
  pidfile.
- ``restart``: stop, then start, under one lock.
- ``pause`` (USR2: take no new job), ``cont`` (CONT: resume), ``abort`` (USR1: kill the current job,
  keep the worker).

A pid from the pidfile is trusted only if that process is alive, not a zombie, and its command
line is a Resque worker's (``resque-<digit>``, ``resque: Starting`` or ``resque:work``): after a
crash or reboot the number may belong to anything. Otherwise the pidfile is stale: it is removed
and nothing is signalled.

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
- Env files are parsed, not sourced: only ``[export] KEY=VALUE`` lines (shell quoting, ``#``
  comments; ``$NAME`` / ``${NAME}`` expand from the environment built so far unless the line
  contains a single quote).

Every step is logged to syslog (tag ``deployhooks-resque``; silently skipped without /dev/log) and
appended, timestamped, to the worker's log file.

Exit codes:

- 0: done (including "nothing to signal": no pidfile, stale pidfile).
- 1: refused or failed: already running, lock busy, conf missing or without QUEUE/QUEUES,
  ``current`` missing, bad env file, worker died at start, worker would not die.
- 2: usage error (bad option, action, app, framework_env or conf name).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pwd
import re
import shlex
import signal
import subprocess
import sys
import syslog
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

PROG = "deployhooks-resque"

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2

DEFAULT_GRACE_TIME = 60.0
DEFAULT_TERM_WAIT = 5.0
DEFAULT_LOCK_TIMEOUT = 10.0
START_CHECK_SECONDS = 0.3
KILL_WAIT_SECONDS = 10.0
LOG_TAIL_LINES = 15
DEFAULT_WORKER_COMMAND = "bundle exec rake -f {current}/Rakefile resque:work"

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
CONF_RE = re.compile(r"^[A-Za-z0-9_.-]+\.conf$")
# Resque's own liveness test (worker.rb linux_worker_pids) greps for the same three shapes:
# rake before the procline is set, the startup title, and every "resque-<version>: ..." title.
WORKER_CMDLINE_RE = re.compile(r"resque-\d|resque: Starting|resque:work")
_ASSIGN_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

ACTIONS = ("start", "stop", "quit", "term", "kill", "restart", "pause", "cont", "abort")
SIGNAL_ACTIONS = {"pause": signal.SIGUSR2, "cont": signal.SIGCONT, "abort": signal.SIGUSR1}


class ActionFailed(Exception):
    """The action was refused or failed; the message says why. Exit code 1."""


@dataclass
class Worker:
    """One worker of one app: the names and paths every action uses."""

    app: str
    framework_env: str
    conf: str
    deploy_to: Path
    pid_dir: Path

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

    def _emit(self, priority: int, message: str, stream) -> None:
        line = f"{self.prefix}: {message}"
        try:
            # glibc drops the message when /dev/log is missing; never let logging fail an action.
            syslog.syslog(priority, line)
        except Exception:
            pass
        self.append_to_worker_log(line)
        print(f"{PROG}: {line}", file=stream, flush=True)

    def append_to_worker_log(self, line: str) -> None:
        # Only inside an existing deploy tree: never create /data/<typo> for a mistyped app.
        if not self.worker.deploy_to.is_dir():
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            self.worker.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.worker.log_path, "a", encoding="utf-8") as fh:
                fh.write(f"[{stamp}] {PROG}[{os.getpid()}]: {line}\n")
        except OSError:
            pass

    def info(self, message: str) -> None:
        self._emit(syslog.LOG_INFO, message, sys.stdout)

    def warning(self, message: str) -> None:
        self._emit(syslog.LOG_WARNING, message, sys.stderr)

    def error(self, message: str) -> None:
        self._emit(syslog.LOG_ERR, message, sys.stderr)


# --- env files -------------------------------------------------------------------------------


def read_env_file(path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Parse ``[export] KEY=VALUE ...`` lines of ``path`` into a dict (in file order).

    Shell quoting and ``#`` comments are honoured (shlex). ``$NAME``/``${NAME}`` in a value expand
    from ``base`` updated with the assignments read so far, unless the line holds a single quote
    (single quotes mean "literal" in the shell). Raises FileNotFoundError if the file is missing
    and ActionFailed, naming file and line, for anything that is not an assignment.
    """
    scope = dict(base or {})
    result: dict[str, str] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        try:
            tokens = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise ActionFailed(f"{path}:{lineno}: cannot parse {raw.strip()!r}: {exc}") from None
        if tokens and tokens[0] == "export":
            tokens = tokens[1:]
        for token in tokens:
            match = _ASSIGN_RE.match(token)
            if not match:
                raise ActionFailed(
                    f"{path}:{lineno}: {raw.strip()!r} is not a KEY=VALUE assignment "
                    "(env files are parsed, not run by a shell)"
                )
            key, value = match.groups()
            if "'" not in raw:
                value = _VAR_RE.sub(lambda m: scope.get(m.group(1) or m.group(2), ""), value)
            result[key] = value
            scope[key] = value
    return result


# --- processes -------------------------------------------------------------------------------


def read_pid(pidfile: Path) -> int | None:
    """The pid in ``pidfile``, or None if it is missing, empty or not a positive number."""
    try:
        text = pidfile.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    if not text.isdigit() or int(text) <= 0:
        return None
    return int(text)


def resque_process(pid: int) -> psutil.Process | None:
    """The live, non-zombie process ``pid`` if its command line is a Resque worker's, else None."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return None
    return proc if WORKER_CMDLINE_RE.search(cmdline) else None


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
    tmp = worker.pid_dir / f".{worker.stem}.pid.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        fh.write(f"{pid}\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, worker.pidfile)


def running_worker(worker: Worker, log: Log) -> psutil.Process | None:
    """The worker named by the pidfile if it is a live Resque worker; a stale pidfile is removed."""
    pid = read_pid(worker.pidfile)
    if pid is None:
        if worker.pidfile.exists():
            log.warning(f"removing unreadable pidfile {worker.pidfile}")
            remove_pidfile(worker)
        return None
    proc = resque_process(pid)
    if proc is None:
        log.warning(f"pidfile {worker.pidfile} names pid {pid}, which is not a live resque worker; removing it")
        remove_pidfile(worker)
    return proc


# --- lock ------------------------------------------------------------------------------------


@contextlib.contextmanager
def action_lock(worker: Worker, timeout: float):
    """Hold an exclusive flock on the worker's lock file; ActionFailed if busy after ``timeout`` s.

    The kernel drops an flock when its holder dies, so the lock is never stale. The file is never
    unlinked: a waiter that already opened it would lock an orphaned inode while a newcomer locks
    a fresh file, and both would run.
    """
    worker.pid_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(worker.lockfile, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
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


def _reset_signals() -> None:
    # monit, nohup or a non-interactive shell may have left SIGINT/SIGQUIT ignored, and ignored
    # dispositions survive fork and exec. Resque traps QUIT only once booted; until then (bundler,
    # rake, a Rails app loading) and in any shell or wrapper in between, an ignored QUIT would make
    # `stop` wait out the whole grace time and end in KILL.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def _log_tail(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(lines)


def _run_as(current: Path, env: dict[str, str], log: Log) -> dict:
    """Popen keyword arguments that drop root to the owner of ``current`` (nothing otherwise)."""
    if os.geteuid() != 0:
        return {}
    st = os.stat(current)  # follows the symlink: the owner of the release, like EY's `stat -L`
    if st.st_uid == 0:
        return {}
    try:
        pw = pwd.getpwuid(st.st_uid)
    except KeyError:
        log.warning(f"owner uid {st.st_uid} of {current} has no passwd entry; running as uid {st.st_uid}")
        return {"user": st.st_uid, "group": st.st_gid, "extra_groups": []}
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    return {
        "user": pw.pw_uid,
        "group": pw.pw_gid,
        "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid),
    }


def start(worker: Worker, log: Log) -> None:
    """Launch the worker (see the module docstring); ActionFailed if refused or it dies at once."""
    conf_path = worker.config_dir / worker.conf
    try:
        conf_vars = read_env_file(conf_path)
    except FileNotFoundError:
        raise ActionFailed(f"config file {conf_path} is missing") from None
    if not (conf_vars.get("QUEUE") or conf_vars.get("QUEUES")):
        raise ActionFailed(f"QUEUE or QUEUES must be set in {conf_path}")
    current = worker.current
    if not current.exists():
        raise ActionFailed(f"{current} does not exist; nothing is deployed")
    proc = running_worker(worker, log)
    if proc is not None:
        raise ActionFailed(f"already running with pid {proc.pid}; not starting another")

    # monit hands its programs MONIT_SERVICE, MONIT_EVENT, ... describing this one start; they mean
    # nothing to a worker that lives on for days.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONIT_")}
    for name in ("env.custom", "env.cloud"):
        try:
            env.update(read_env_file(worker.config_dir / name, base=env))
        except FileNotFoundError:
            pass
    # A QUEUES inherited from monit's or a shell's environment would beat the conf's QUEUE in Resque.
    env.pop("QUEUE", None)
    env.pop("QUEUES", None)
    env.update(conf_vars)
    env.update(APP_ROOT=str(current), RAILS_ENV=worker.framework_env, RACK_ENV=worker.framework_env)
    command_text = env.get("RESQUE_WORKER_COMMAND") or DEFAULT_WORKER_COMMAND
    try:
        argv = shlex.split(command_text.replace("{current}", str(current)))
    except ValueError as exc:
        raise ActionFailed(f"cannot parse RESQUE_WORKER_COMMAND {command_text!r}: {exc}") from None
    if not argv:
        raise ActionFailed("RESQUE_WORKER_COMMAND is empty")
    user_kwargs = _run_as(current, env, log)

    worker.log_path.parent.mkdir(parents=True, exist_ok=True)
    queues = conf_vars.get("QUEUES") or conf_vars.get("QUEUE")
    log.info(f"starting worker: {shlex.join(argv)} (cwd {current}, queues {queues})")
    with open(worker.log_path, "ab") as logfh:
        offset = logfh.seek(0, os.SEEK_END)
        try:
            child = subprocess.Popen(
                argv,
                cwd=current,  # chdir resolves the symlink: the worker keeps this release as its cwd
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=logfh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no signal meant for monit or a terminal reaches the worker
                close_fds=True,  # above all the lock fd: the worker must not hold the lock
                preexec_fn=_reset_signals,
                **user_kwargs,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ActionFailed(f"cannot run {argv[0]!r}: {exc}") from None
    write_pidfile(worker, child.pid)
    time.sleep(START_CHECK_SECONDS)
    status = child.poll()
    if status is not None:
        remove_pidfile(worker)
        tail = _log_tail(worker.log_path, offset)
        raise ActionFailed(
            f"worker pid {child.pid} exited at once with status {status}; last lines of {worker.log_path}:\n{tail}"
        )
    log.info(f"started worker pid {child.pid}; pidfile {worker.pidfile}")


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
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a non-negative number of seconds")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Start, stop or signal one Resque worker (monit wrapper; Engine Yard drop-in).",
        epilog="Exit codes: 0 done, 1 refused or failed, 2 usage error.",
    )
    parser.add_argument("--deploy-to", metavar="DIR", help="app root (default $DEPLOYHOOKS_DEPLOY_TO or /data/<app>)")
    parser.add_argument(
        "--pid-dir", metavar="DIR",
        help="pidfile and lock directory (default $DEPLOYHOOKS_PID_DIR or /var/run/deployhooks/resque/<app>)",
    )
    parser.add_argument(
        "--grace-time", metavar="SECONDS", type=_seconds,
        help="stop/quit: seconds to let the job finish before killing it "
        f"(default $GRACE_TIME or {DEFAULT_GRACE_TIME:g})",
    )
    parser.add_argument(
        "--term-wait", metavar="SECONDS", type=_seconds, default=DEFAULT_TERM_WAIT,
        help=f"term/kill: seconds to wait after TERM before KILL (default {DEFAULT_TERM_WAIT:g})",
    )
    parser.add_argument("app")
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("framework_env")
    parser.add_argument("conf")
    return parser


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Worker]:
    """Parse and validate; exits 2 with a message naming the bad argument."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not NAME_RE.match(args.app):
        parser.error(f"bad app {args.app!r}: use letters, digits, '_' and '-'")
    if not NAME_RE.match(args.framework_env):
        parser.error(f"bad framework_env {args.framework_env!r}: use letters, digits, '_' and '-'")
    if not CONF_RE.match(args.conf):
        parser.error(
            f"bad conf {args.conf!r}: a file name like resque_0.conf (letters, digits, '_', '.', '-'; no slashes)"
        )
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
    deploy_to = args.deploy_to or os.environ.get("DEPLOYHOOKS_DEPLOY_TO") or f"/data/{args.app}"
    pid_dir = args.pid_dir or os.environ.get("DEPLOYHOOKS_PID_DIR") or f"/var/run/deployhooks/resque/{args.app}"
    worker = Worker(
        app=args.app,
        framework_env=args.framework_env,
        conf=args.conf,
        deploy_to=Path(os.path.abspath(deploy_to)),
        pid_dir=Path(os.path.abspath(pid_dir)),
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
