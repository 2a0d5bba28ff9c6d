"""One worker of one app, and the step log of ``deployhooks-resque`` acting on it.

:class:`Worker` holds what the monitrc line says (app, framework_env, conf, deploy_to, pid_dir,
user, command) and derives every path an action uses. :class:`Log` writes each step to syslog,
to the worker's log file (only under the rule in :mod:`deployhooks.resque.supervisor`'s
docstring: a regular file of the worker's user with one link, never created here) and to
stdout/stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
import syslog
import time
from dataclasses import dataclass
from pathlib import Path

from . import safefs
from .launch import WorkerUser

PROG = "deployhooks-resque"

DEFAULT_WORKER_COMMAND = ("bundle", "exec", "rake", "-f", "{current}/Rakefile", "resque:work")


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
        """Append to `fd`, else to the worker's log if root may write it (see the docstring of
        deployhooks.resque.supervisor); never create it: the worker's process does that as its user."""
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
