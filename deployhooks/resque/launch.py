"""Start one worker process as its user: drop privileges first, then touch the app's files.

The wrapper (root, under monit) forks; the child becomes the worker's user (initgroups, setgid,
setuid) *before* it opens the log or reads anything under ``<deploy_to>``, builds the worker's
environment from the conf and env files as data, and execs the command root chose (the monitrc
line). What the deploy user writes can then change what the worker sees, never what root does.

The child reports a failure before ``exec`` through a close-on-exec pipe: the parent reads
nothing when the exec succeeded, and the child's message otherwise.
"""

from __future__ import annotations

import os
import pwd
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NoReturn

from .envfile import EnvFileError, is_ignored, read_env_file

__all__ = ["LaunchFailed", "LaunchSpec", "WorkerUser", "resolve_user", "spawn", "DEFAULT_PATH"]

# The worker's PATH when the wrapper's own environment has none (monit's is minimal).
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class LaunchFailed(Exception):
    """The worker could not be started; the message says why."""


@dataclass(frozen=True)
class WorkerUser:
    """Who the worker runs as."""

    name: str
    uid: int
    gid: int
    home: str

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()


def resolve_user(name: str | None) -> WorkerUser:
    """The worker's user: `name` from the monitrc line, or the running user when not root.

    Raises LaunchFailed for an unknown user, for root (a worker runs app code and never as
    root), and for a missing name when running as root: ownership of files under /data is
    the deploy user's to change, so it cannot say who the worker is.
    """
    if name is None:
        if os.geteuid() == 0:
            raise LaunchFailed(
                "running as root, the worker's user must be given with --user USER "
                "(resque.setup writes it into the monitrc from resque.user)"
            )
        pw = pwd.getpwuid(os.geteuid())
    else:
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            raise LaunchFailed(f"--user {name}: no such user on this host") from None
    if pw.pw_uid == 0:
        raise LaunchFailed(f"--user {pw.pw_name}: workers never run as root; name the deploy user")
    if os.geteuid() != 0 and pw.pw_uid != os.geteuid():
        raise LaunchFailed(f"--user {pw.pw_name}: only root can start a worker as another user")
    return WorkerUser(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def _drop_privileges(user: WorkerUser) -> None:
    if os.geteuid() != 0:
        return
    os.initgroups(user.name, user.gid)
    os.setgid(user.gid)
    os.setuid(user.uid)
    if os.getuid() != user.uid or os.geteuid() != user.uid or os.getegid() != user.gid:
        raise LaunchFailed(f"could not become {user.name}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise LaunchFailed(f"still able to regain root after becoming {user.name}")


@dataclass(frozen=True)
class LaunchSpec:
    """What to start: every path and name the child needs, decided by root beforehand."""

    user: WorkerUser
    argv: tuple[str, ...]  # {current} not yet replaced
    current: Path
    conf: Path
    env_files: tuple[Path, ...]
    log_path: Path
    framework_env: str


def _environment(spec: LaunchSpec, warn: Callable[[str], None]) -> tuple[dict[str, str], str]:
    """(environment, queues) for the worker, read as its user. Raises LaunchFailed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONIT_")}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(HOME=spec.user.home, USER=spec.user.name, LOGNAME=spec.user.name)
    try:
        conf_vars = read_env_file(spec.conf)
    except FileNotFoundError:
        raise LaunchFailed(f"config file {spec.conf} is missing") from None
    except EnvFileError as exc:
        raise LaunchFailed(str(exc)) from None
    except PermissionError:
        raise LaunchFailed(f"{spec.user.name} cannot read {spec.conf}") from None
    queues = conf_vars.get("QUEUES") or conf_vars.get("QUEUE")
    if not queues:
        raise LaunchFailed(f"QUEUE or QUEUES must be set in {spec.conf}")
    for path in spec.env_files:
        try:
            values = read_env_file(path, base=env)
        except FileNotFoundError:
            continue
        except EnvFileError as exc:
            raise LaunchFailed(str(exc)) from None
        except PermissionError:
            raise LaunchFailed(f"{spec.user.name} cannot read {path}") from None
        _merge(env, values, path, warn)
    # A QUEUES inherited from monit's or a shell's environment would beat the conf's QUEUE in Resque.
    env.pop("QUEUE", None)
    env.pop("QUEUES", None)
    _merge(env, conf_vars, spec.conf, warn)
    current = str(spec.current)
    env.update(APP_ROOT=current, RAILS_ENV=spec.framework_env, RACK_ENV=spec.framework_env)
    return env, queues


def _merge(env: dict[str, str], values: dict[str, str], path: Path, warn: Callable[[str], None]) -> None:
    for key, value in values.items():
        if is_ignored(key):
            warn(
                f"{path}: {key} ignored: env files set data for the worker, not where programs "
                "are found (the worker's PATH is the wrapper's)"
            )
            continue
        env[key] = value


Say = Callable[[str, int, bool], None]


def _child(spec: LaunchSpec, errw: int, say: Say) -> NoReturn:
    """In the forked child: become the user, prepare, exec. Never returns."""
    try:
        os.setsid()  # no signal meant for monit or a terminal reaches the worker
        _drop_privileges(spec.user)
        try:
            spec.log_path.parent.mkdir(parents=True, exist_ok=True)
            logfd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except PermissionError:
            # Older wrappers opened the log as root, leaving it root's.
            raise LaunchFailed(
                f"{spec.user.name} cannot open the log {spec.log_path}: permission denied "
                f"(give it to the worker's user: chown {spec.user.name} {spec.log_path})"
            ) from None
        except OSError as exc:
            raise LaunchFailed(f"{spec.user.name} cannot open the log {spec.log_path}: {exc.strerror}") from None
        env, queues = _environment(spec, lambda message: say(message, logfd, True))
        try:
            # chdir resolves the symlink: the worker keeps this release as its cwd.
            os.chdir(spec.current)
        except FileNotFoundError:
            raise LaunchFailed(f"{spec.current} does not exist; nothing is deployed") from None
        except OSError as exc:
            raise LaunchFailed(f"{spec.user.name} cannot enter {spec.current}: {exc.strerror}") from None
        argv = [token.replace("{current}", str(spec.current)) for token in spec.argv]
        say(
            f"starting worker as {spec.user.name}: {' '.join(argv)} (cwd {spec.current}, queues {queues})", logfd, False
        )
        _reset_signals()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(logfd, 1)
        os.dup2(logfd, 2)
        # Above all the wrapper's lock: the worker must not hold it. errw closes itself at exec.
        os.closerange(3, errw)
        os.closerange(errw + 1, 1 << 16)
        try:
            os.execvpe(argv[0], argv, env)
        except OSError as exc:
            raise LaunchFailed(f"cannot run {argv[0]!r}: {exc.strerror}") from None
    except BaseException as exc:  # everything, or the child would run on as a second wrapper
        message = str(exc) if isinstance(exc, LaunchFailed) else f"{type(exc).__name__}: {exc}"
        try:
            os.write(errw, message.encode("utf-8", "replace")[:8000])
        finally:
            os._exit(127)
    os._exit(127)  # not reached: execvpe does not return


def _reset_signals() -> None:
    # monit, nohup or a non-interactive shell may have left SIGINT/SIGQUIT ignored, and ignored
    # dispositions survive exec. Resque traps QUIT only once booted; until then (bundler, rake,
    # a Rails app loading) an ignored QUIT would make `stop` wait out the whole grace time and
    # end in KILL. Python itself ignores SIGPIPE and SIGXFSZ; a worker should not inherit that.
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def spawn(spec: LaunchSpec, say: Say) -> int:
    """Fork and exec the worker described by `spec`; its pid once the exec has happened.

    `say(message, fd, warning)` logs a line from the child into the worker's log fd. Raises LaunchFailed with the child's reason if it failed before
    exec (the child has then exited and is reaped here).
    """
    sys.stdout.flush()
    sys.stderr.flush()
    errr, errw = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(errr)
        _child(spec, errw, say)
    os.close(errw)
    chunks = []
    with os.fdopen(errr, "rb") as pipe:
        while chunk := pipe.read(4096):
            chunks.append(chunk)
    if chunks:
        os.waitpid(pid, 0)
        raise LaunchFailed(b"".join(chunks).decode("utf-8", "replace"))
    return pid
