"""The fleet's command line: `python -m deployhooks.testing.fleet up|down|status`.

`up` starts a fleet (and, without --redis-url, a private redis) and returns once its hosts
answer, leaving a keeper process that reaps the hosts; `down` ends exactly what `up` recorded
in ROOT/fleet.json, by pid; `status` shows it. The harness itself is deployhooks.testing.fleet.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from .fleet import DEFAULT_ADDRESS_BASE, AppSpec, Fleet, FleetError, _address_free, _is_alive


def _parse_app(text: str) -> AppSpec:
    """``NAME[:QUEUE[+QUEUE...]]``: one worker per QUEUE value (commas allowed, ``{host}`` expands)."""
    name, _, workers = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"bad --app {text!r}: NAME[:QUEUE[+QUEUE...]]")
    return AppSpec(name, workers=tuple(workers.split("+")) if workers else ("deploytest",))


def _parse_role(text: str) -> tuple[str, list[int]]:
    role, _, numbers = text.partition("=")
    try:
        return role, [int(x) for x in numbers.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --role {text!r}: ROLE=1,2,3") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployhooks.testing.fleet",
        description="Simulated hosts on this machine (see the module docstring).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a fleet and return once its hosts answer")
    up.add_argument("--root", required=True, type=Path)
    up.add_argument("-n", type=int, default=3, help="number of hosts (default 3)")
    up.add_argument("--redis-url", help="redis for the workers (default: start a private one with the fleet)")
    up.add_argument(
        "--app",
        action="append",
        type=_parse_app,
        default=[],
        metavar="NAME[:Q[+Q...]]",
        help="deploy an app; one worker per QUEUE value, {host} = host name (repeatable)",
    )
    up.add_argument(
        "--role",
        action="append",
        type=_parse_role,
        default=[],
        metavar="ROLE=1,2",
        help="hosts of a role in the apps' configs (default util = all)",
    )
    up.add_argument(
        "--login",
        default="root",
        metavar="USER",
        help="the one user the hosts' sshd lets in (default root); another user (deploy) "
        "gets configs with USER@host and resque.sudo: true, and root cannot log in",
    )
    up.add_argument(
        "--address-base",
        default=DEFAULT_ADDRESS_BASE,
        help="'127.0.10.' (default) or 'auto' for the first free 127.0.K. block",
    )
    up.add_argument(
        "--foreground", action="store_true", help="stay in the foreground; Ctrl-C or TERM tears the fleet down"
    )
    up.add_argument("--notify-fd", type=int, help=argparse.SUPPRESS)
    for name, text in (("down", "tear down the fleet recorded in ROOT"), ("status", "show the fleet in ROOT")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--root", required=True, type=Path)
    return parser


def _print_status(fleet: Fleet, out=sys.stdout) -> None:
    print(f"fleet in {fleet.root}", file=out)
    for h in fleet.hosts:
        up = _is_alive(h.pid, h.pid_started)
        listening = up and not _address_free(h.address, h.port)
        procs = len(fleet.processes(h).get(h.name, [])) if up else 0
        state = "up" if up and listening else ("starting" if up else "down")
        print(f"  {h.name:8} {h.target:22} init pid {h.pid or '-':>7}  {state:8} {procs} processes", file=out)
    if fleet.apps:
        print("configs: " + ", ".join(str(fleet.config_path(a.name)) for a in fleet.apps), file=out)
    print(f"ssh -i {fleet.client_key} -o UserKnownHostsFile={fleet.known_hosts} {fleet.login}@<address>", file=out)


def _up_foreground(args, notify_fd: int | None) -> int:
    redis_server = None
    stop = {"now": False}

    def on_signal(signum, _frame):
        stop["now"] = True

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    fleet = None
    try:
        redis_url = args.redis_url
        extra: dict[str, int | float | None] = {
            "keeper_pid": os.getpid(),
            "keeper_started": psutil.Process().create_time(),
        }
        if not redis_url:
            from .redisserver import RedisServer

            redis_server = RedisServer().start()
            redis_url = redis_server.url
            extra.update(redis_pid=redis_server.pid, redis_started=psutil.Process(redis_server.pid).create_time())
        base = None if args.address_base == "auto" else args.address_base
        fleet = Fleet(
            args.root,
            args.n,
            redis_url=redis_url,
            apps=args.app,
            address_base=base,
            roles=dict(args.role) or None,
            login=args.login,
        )
        fleet.extra_state = extra
        fleet.start()
    except (FleetError, ValueError, OSError) as exc:
        if fleet is not None:
            fleet.stop()
        if redis_server is not None:
            redis_server.stop()
        message = f"fleet up failed: {exc}\n"
        if notify_fd is not None:
            os.write(notify_fd, message.encode())
            os.close(notify_fd)
        print(message, file=sys.stderr, end="")
        return 1
    if notify_fd is not None:
        os.write(notify_fd, b"ok\n")
        os.close(notify_fd)
    else:
        _print_status(fleet)
    try:
        # Until asked to stop, or until ``down`` (from elsewhere) has ended every host.
        while not stop["now"] and any(fleet._host_running(h) for h in fleet.hosts):
            time.sleep(0.2)
    finally:
        fleet.stop()
        if redis_server is not None:
            redis_server.stop()
    return 0


def _up_detached(args) -> int:
    read_fd, write_fd = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "deployhooks.testing.fleet",
        "up",
        "--foreground",
        "--root",
        str(args.root),
        "-n",
        str(args.n),
        "--address-base",
        args.address_base,
        "--login",
        args.login,
        "--notify-fd",
        str(write_fd),
    ]
    if args.redis_url:
        argv += ["--redis-url", args.redis_url]
    for app in args.app:
        argv += ["--app", f"{app.name}:{'+'.join(app.workers)}"]
    for role, numbers in args.role:
        argv += ["--role", f"{role}={','.join(map(str, numbers))}"]
    args.root.mkdir(parents=True, exist_ok=True)
    with open(args.root / "keeper.log", "ab") as out:
        keeper = subprocess.Popen(
            argv,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        answer = pipe.read()
    if answer.strip() != "ok":
        keeper.wait()
        print(answer.strip() or f"fleet up failed; see {args.root / 'keeper.log'}", file=sys.stderr)
        return 1
    # The keeper stays, as the parent that reaps the hosts; we leave it to whoever reaps orphans here.
    _print_status(Fleet.from_state(args.root))
    return 0


def _down(root: Path) -> int:
    fleet = Fleet.from_state(root)
    keeper, keeper_started = fleet.extra_state.get("keeper_pid"), fleet.extra_state.get("keeper_started")
    redis_pid, redis_started = fleet.extra_state.get("redis_pid"), fleet.extra_state.get("redis_started")
    fleet.stop()
    # The keeper notices its hosts are gone, stops its redis and exits; make sure of it.
    deadline = time.monotonic() + 10
    while _is_alive(keeper, keeper_started) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, started in ((keeper, keeper_started), (redis_pid, redis_started)):
        if pid is not None and _is_alive(pid, started):
            os.kill(pid, signal.SIGKILL)
    print(f"fleet in {fleet.root} is down ({len(fleet.hosts)} hosts)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            if args.foreground or args.notify_fd is not None:
                return _up_foreground(args, args.notify_fd)
            return _up_detached(args)
        if args.command == "down":
            return _down(args.root)
        _print_status(Fleet.from_state(args.root))
        return 0
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
