"""The command line of ``deployhooks-resque``: options, positional arguments, defaults, checks.

Every value is checked before anything is touched; a bad one exits 2 (argparse's usage error)
with a message naming it. See :mod:`deployhooks.resque.supervisor` for the usage.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from .launch import LaunchFailed, resolve_user
from .worker import DEFAULT_WORKER_COMMAND, PROG, Worker

DEFAULT_GRACE_TIME = 60.0
DEFAULT_TERM_WAIT = 5.0
DEFAULT_LOCK_TIMEOUT = 10.0
MAX_SECONDS = 86400.0  # a day: longer is a typo, and monit's timeouts are whole seconds anyway

NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
CONF_RE = re.compile(r"[A-Za-z0-9_.-]+\.conf")

ACTIONS = ("start", "stop", "quit", "term", "kill", "restart", "pause", "cont", "abort")
# The actions that end a worker; ``restart --restart-with A`` ends it the way ``A`` would.
STOP_ACTIONS = ("stop", "quit", "term", "kill")


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
    parser.add_argument(
        "--restart-with",
        metavar="ACTION",
        choices=STOP_ACTIONS,
        default="quit",
        help="restart: how the old worker is ended, as that stop action would (stop|quit: QUIT and "
        "--grace-time; term|kill: TERM and --term-wait; default quit). The monitrc's restart program "
        "passes the stop program's action, so a restart drains or ends a job exactly as a stop does",
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
