"""Render monit configuration for Resque workers run through ``deployhooks-resque``.

Two pure functions, no I/O:

- :func:`render_monitrc` gives one ``check process`` stanza per worker, the shape of Engine Yard's
  ``/etc/monit.d/resque_<app>.monitrc`` with two fixes: the stop program's timeout exceeds the grace
  time the wrapper waits (EY used 90 s even with ``GRACE_TIME=300``, so monit gave up first and
  reported a worker still draining as stopped), and the wrapper gets explicit paths instead of
  hard-coded ``/data/<app>`` (docs/engineyard.md, "The monitrc and the recipe"; docs/monit.md,
  "Stop and start timeouts").
- :func:`render_monit_control` gives a control file for a private monit daemon (tests, sandboxes,
  a per-user monit): state under one directory and the CLI reaching the daemon over a unix socket.

monit splits a program string on whitespace and has no quoting inside it, and a ``#`` starts a
comment anywhere on a line, so every value rendered into a token is checked: whitespace, quotes,
``#`` or control characters raise :class:`ValueError` instead of producing a file that monit reads
differently from what was meant.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Iterable

__all__ = ["render_monitrc", "render_monit_control", "STOP_ACTIONS"]

# The wrapper actions a monit stop program may use: drain (QUIT) or end the job now (TERM).
STOP_ACTIONS = ("stop", "quit", "term", "kill")

# Same rule as the wrapper applies to app and framework_env; anything else it would refuse.
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# Characters that would split a monit token, end it early, or start a comment.
_BAD_TOKEN_RE = re.compile(r"""[\s'"`#\x00-\x1f\x7f]""")


def _token(what: str, value: object) -> str:
    text = str(value)
    if not text or _BAD_TOKEN_RE.search(text):
        raise ValueError(f"{what} {text!r} is empty or contains whitespace, a quote, '#' or a control character")
    return text


def _path(what: str, value: object) -> str:
    text = _token(what, value)
    if not text.startswith("/"):
        raise ValueError(f"{what} {text!r} must be an absolute path")
    return text


def _name(what: str, value: object) -> str:
    text = str(value)
    if not _NAME_RE.fullmatch(text):
        raise ValueError(f"{what} {text!r} may only contain letters, digits, '_' and '-'")
    return text


def _seconds(what: str, value: float) -> str:
    """Format a non-negative number of seconds the way the wrapper's option parser reads it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a non-negative number of seconds, not {value!r}")
    return f"{value:g}" if isinstance(value, float) else str(value)


def _worker_numbers(workers: int | Iterable[int]) -> list[int]:
    if isinstance(workers, bool):
        raise ValueError(f"workers must be a count or a list of worker numbers, not {workers!r}")
    if isinstance(workers, int):
        if workers < 0:
            raise ValueError(f"worker count must be >= 0, not {workers}")
        return list(range(workers))
    numbers = list(workers)
    for n in numbers:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"worker numbers must be integers >= 0, not {n!r}")
    if len(set(numbers)) != len(numbers):
        raise ValueError(f"worker numbers repeat: {numbers}")
    return numbers


def render_monitrc(
    app: str,
    framework_env: str,
    group: str,
    workers: int | Iterable[int],
    *,
    wrapper: str,
    deploy_to: str,
    pid_dir: str,
    stop_action: str,
    grace_time: float,
    start_timeout: int = 30,
    margin: int = 30,
    totalmem_mb: int | None = None,
    user: str | None = None,
    worker_command: Iterable[str] | None = None,
) -> str:
    """Return monitrc text with one ``check process resque_<app>_<N>`` stanza per worker N.

    ``workers`` is a count (workers 0..count-1) or a list of worker numbers. Each stanza watches
    ``<pid_dir>/resque_<N>.pid``; its start program runs ``<wrapper> ... <app> start <env>
    resque_<N>.conf`` with ``start_timeout``; its stop program runs the wrapper with
    ``--grace-time <grace_time>`` and ``stop_action``, with a timeout of ``ceil(grace_time +
    margin)`` seconds so monit never ends the wrapper while it is still waiting for a job to drain.
    Its restart program runs the wrapper's ``restart`` with the same action, grace time and command,
    with the two timeouts added: monit then restarts a worker in one wrapper run, not a stop program
    and a start program (docs/monit.md, "Restart program").
    ``totalmem_mb`` adds a restart rule on memory used for 2 cycles. ``user`` (``--user``) is who
    the wrapper runs the worker as, and ``worker_command`` what it execs (after ``--``): both
    must come from here, the file root owns, and never from files under ``deploy_to``. Raises
    ValueError for a value monit or the wrapper would misread (see the module docstring).
    """
    app = _name("app", app)
    framework_env = _name("framework_env", framework_env)
    group = _name("group", group)
    wrapper = _path("wrapper", wrapper)
    deploy_to = _path("deploy_to", deploy_to).rstrip("/") or "/"
    pid_dir = _path("pid_dir", pid_dir).rstrip("/") or "/"
    if stop_action not in STOP_ACTIONS:
        raise ValueError(f"stop_action {stop_action!r} must be one of {', '.join(STOP_ACTIONS)}")
    grace = _seconds("grace_time", grace_time)
    _seconds("margin", margin)
    if isinstance(start_timeout, bool) or not isinstance(start_timeout, int) or start_timeout <= 0:
        raise ValueError(f"start_timeout must be a positive whole number of seconds, not {start_timeout!r}")
    stop_timeout = math.ceil(grace_time + margin)
    if stop_timeout <= 0:
        raise ValueError("grace_time + margin must be positive: monit needs a stop timeout")
    if totalmem_mb is not None and (
        isinstance(totalmem_mb, bool) or not isinstance(totalmem_mb, int) or totalmem_mb <= 0
    ):
        raise ValueError(f"totalmem_mb must be a positive whole number of MB, not {totalmem_mb!r}")

    if user is not None and (not _USER_RE.fullmatch(str(user)) or user == "root"):
        raise ValueError(f"user {user!r} must be a user name other than root")
    command = [_token("worker_command", t) for t in worker_command] if worker_command is not None else []
    if worker_command is not None and not command:
        raise ValueError("worker_command must not be empty")
    paths = (f"--user {user} " if user else "") + f"--deploy-to {deploy_to} --pid-dir {pid_dir}"
    exec_part = (" -- " + " ".join(command)) if command else ""
    lines = [
        f"# Resque workers of {app} ({framework_env}), rendered by deployhooks; do not edit by hand.",
        f"# Stop timeout {stop_timeout} s = grace time {grace} s + margin: monit must outwait the drain.",
    ]
    for n in _worker_numbers(workers):
        conf = f"resque_{n}.conf"
        lines += [
            "",
            f"check process resque_{app}_{n} with pidfile {pid_dir}/resque_{n}.pid",
            f'  start program = "{wrapper} {paths} {app} start {framework_env} {conf}{exec_part}"'
            f" with timeout {start_timeout} seconds",
            f'  stop program = "{wrapper} {paths} --grace-time {grace} {app} {stop_action} {framework_env} {conf}"'
            f" with timeout {stop_timeout} seconds",
            f'  restart program = "{wrapper} {paths} --grace-time {grace} --restart-with {stop_action} {app} restart'
            f' {framework_env} {conf}{exec_part}" with timeout {stop_timeout + start_timeout} seconds',
        ]
        if totalmem_mb is not None:
            lines.append(f"  if totalmem is greater than {totalmem_mb} MB for 2 cycles then restart")
        lines.append(f"  group {group}")
    return "\n".join(lines) + "\n"


def render_monit_control(
    *,
    statedir: str,
    socket: str,
    include: str | None = None,
    poll_seconds: int = 1,
    password: str | None = None,
) -> str:
    """Return a control file for a private monit daemon.

    Log, pid, id and state files go under ``statedir``; the CLI talks to the daemon over the unix
    socket ``socket``. monit 5.33 starts no httpd (and so every CLI call fails with "connection
    error") unless an ``allow`` line is present, so one is always written: ``deployhooks:<password>``,
    a random token unless ``password`` is given (the CLI reads it back from this same file).
    ``include`` (a path or glob) pulls in service definitions. monit refuses the file unless its
    mode is 0600 or 0700: the caller writes it that way.
    """
    statedir = _path("statedir", statedir).rstrip("/") or "/"
    socket = _path("socket", socket)
    if isinstance(poll_seconds, bool) or not isinstance(poll_seconds, int) or poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be a positive whole number, not {poll_seconds!r}")
    if password is None:
        password = secrets.token_hex(12)
    elif not re.match(r"^[A-Za-z0-9_.-]+$", password):
        raise ValueError("password may only contain letters, digits, '_', '.' and '-'")
    lines = [
        "# Private monit daemon, rendered by deployhooks.",
        f"set daemon {poll_seconds}",
        f"set log {statedir}/monit.log",
        f"set pidfile {statedir}/monit.pid",
        f"set idfile {statedir}/monit.id",
        f"set statefile {statedir}/monit.state",
        f"set httpd unixsocket {socket}",
        f"    allow deployhooks:{password}",
    ]
    if include is not None:
        lines += ["", f"include {_path('include', include)}"]
    return "\n".join(lines) + "\n"
