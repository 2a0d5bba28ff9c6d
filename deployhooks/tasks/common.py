"""What every task shares: loading settings, picking hosts, running on them, exit codes."""

from __future__ import annotations

import socket
import sys
from typing import Callable, Sequence

from invoke import Context, Exit

from .. import settings as settings_mod
from ..errors import DeployhooksError
from ..fleet import HostResult, overall_code, run_each
from ..host import Host
from ..settings import Settings


def say(line: str) -> None:
    print(line, flush=True)


def load_settings(config: str | None) -> Settings:
    try:
        return settings_mod.load(config)
    except DeployhooksError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None


def on_server(c) -> bool:
    """True under the `deployhooks` console script: act on this machine, not over SSH."""
    return bool(c.config.get("deployhooks", {}).get("on_server", False))


def target_hosts(c, settings: Settings, roles: str | None, default_roles: Sequence[str]) -> list[str]:
    """Hosts to act on from a workstation: -H wins, then --roles, then `default_roles`."""
    if getattr(c, "host", None):  # fab -H: the executor already made one call per host
        return [c.original_host]
    wanted = [r for r in (roles.split(",") if roles else default_roles) if r]
    unknown = [r for r in wanted if r not in settings.hosts]
    if unknown and roles:
        raise Exit(f"role(s) {', '.join(unknown)} not under hosts in {settings.source} "
                   f"(roles there: {', '.join(settings.hosts) or 'none'})", code=2)
    hosts = settings.hosts_for(wanted)
    if not hosts:
        raise Exit(f"no hosts for role(s) {', '.join(wanted)} in {settings.source}: add them "
                   f"under hosts, or pass -H", code=2)
    return hosts


def on_hosts(c, settings: Settings, roles: str | None, default_roles: Sequence[str],
             fn: Callable[[Host], object]) -> list[HostResult]:
    """Run `fn(host)` here (console script) or on every selected host in parallel (fab).

    Failures become per-host results with their exit code; nothing is raised here.
    """
    if on_server(c):
        name = socket.gethostname()
        try:
            return [HostResult(name, value=fn(Host(Context(config=c.config), settings, name)))]
        except DeployhooksError as exc:
            return [HostResult(name, exc.exit_code, str(exc))]
    hosts = target_hosts(c, settings, roles, default_roles)
    return run_each(hosts, settings, lambda name, conn: fn(Host(conn, settings, name)))


def finish(results: list[HostResult], extra_code: int = 0) -> None:
    """Print each host's failure and exit with the worst code (or `extra_code`, e.g. --check)."""
    failed = [r for r in results if r.code]
    for r in failed:
        print(r.error, file=sys.stderr, flush=True)
    code = overall_code(results) or extra_code
    if code:
        ok = [r.host for r in results if not r.code]
        raise Exit(f"{len(failed)} of {len(results)} host(s) did not pass"
                   + (f"; passed: {', '.join(ok)}" if ok else "")
                   if len(failed) and len(results) > 1 else None, code=code)
