"""What every task shares: loading settings, picking hosts, running on them, exit codes."""

from __future__ import annotations

import functools
import importlib
import re
import socket
import sys
import threading
from typing import TYPE_CHECKING, Callable, Sequence

from fabric import task as fabric_task
from invoke import Context, Exit

from ..errors import EXIT_CONFIG, EXIT_INTERRUPTED, DeployhooksError

if TYPE_CHECKING:
    from ..remote.fleet import HostGroup, HostResult
    from ..remote.host import Host
    from ..settings import Settings


class LazyModule:
    """The module `name`, imported on the first use of one of its attributes.

    Every `fab` call imports every task module to build the namespace, `fab --list` included,
    while each task needs only a few of the library's modules (`resque.status` none of the
    deploy's or the guard's): the task modules hold these instead of importing at the top.
    tests/unit/test_cli.py checks what `import deployhooks.tasks` loads.
    """

    def __init__(self, name: str):
        self._name = name
        self._module = None

    def __getattr__(self, attr: str):
        # Called only for what the proxy lacks; read through __dict__, so it never recurses.
        module, name = self.__dict__.get("_module"), self.__dict__.get("_name")
        if module is None:
            if name is None:  # a copy made without __init__
                raise AttributeError(attr)
            # import_module takes the import lock: tasks reach hosts from several threads.
            module = self.__dict__["_module"] = importlib.import_module(name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


settings_mod = LazyModule("deployhooks.settings")
fleet = LazyModule("deployhooks.remote.fleet")
remote_host = LazyModule("deployhooks.remote.host")

# deployhooks.settings.MAX_SECONDS, for the help texts that every `fab` call builds (equal by
# tests/unit/test_input_tasks.py): importing the settings module for it would cost every call.
MAX_SECONDS = 86400

_say_lock = threading.Lock()


def task(*args, **kwargs):
    """Fabric's `@task`, with one ending for every task: a `DeployhooksError` that reaches it
    exits with its code and message, and Ctrl-C (after the task's own cleanup) with 130."""

    def decorate(body):
        @functools.wraps(body)
        def run(c, *a, **kw):
            if getattr(c, "host", None) and len(cli_hosts()) > 1:
                # fab -H a,b,c calls a task once per host, one after another; the first call
                # acts on all of them together (target_hosts), the others have nothing left.
                if body.__name__ in _acted_on_all:
                    return None
                _acted_on_all.add(body.__name__)
            try:
                result = body(c, *a, **kw)
                if dry_run(c):
                    say("[dry run] nothing was changed")
                return result
            except DeployhooksError as exc:
                raise Exit(str(exc), code=exc.exit_code) from None
            except KeyboardInterrupt:
                raise Exit("interrupted (Ctrl-C)", code=EXIT_INTERRUPTED) from None

        # Long options only: invoke derives short flags from each task's own parameter names,
        # so -c was --config in one task and --check in another, -r --ref or --roles.
        kwargs.setdefault("auto_shortflags", False)
        return fabric_task(**kwargs)(run)

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def say(line: str) -> None:
    """Print one progress line; whole lines only, as hosts report from parallel threads."""
    with _say_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


# Task options are checked before the config is read and before any host is reached, with the
# config file's rules: plain ASCII decimals (str.isdigit() would take '٥'), a bound on each.
_WHOLE_RE = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")
_DECIMAL_RE = re.compile(r"\A(?:0|[1-9][0-9]*)(?:\.[0-9]+)?\Z")
_ROLE_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_-]*\Z")


def usage_error(option: str, expected: str, value: object) -> Exit:
    """The Exit (code 2) for a bad option: `--option: expected ...; got 'value'`, one line."""
    shown = repr(value if not isinstance(value, str) or len(value) <= 60 else value[:60] + "...")
    return Exit(f"{option}: expected {expected}; got {shown}", code=EXIT_CONFIG)


def whole_number(option: str, value: object, minimum: int, maximum: int) -> int:
    """`value` (an option's text) as a whole number in [minimum, maximum], else a usage error."""
    text = str(value)
    expected = f"a whole number from {minimum} to {maximum}"
    # The length test first: int() of thousands of digits is slow, and refused beyond 4300.
    if not _WHOLE_RE.fullmatch(text) or len(text) > len(str(maximum)) or not minimum <= int(text) <= maximum:
        raise usage_error(option, expected, value)
    return int(text)


def seconds(option: str, value: object, maximum: int) -> float:
    """`value` as seconds above 0 and at most `maximum` (plain decimal: no nan, inf or 1e3)."""
    text = str(value)
    expected = f"seconds, a plain decimal number above 0 and at most {maximum}"
    if not _DECIMAL_RE.fullmatch(text) or len(text) > 32 or not 0 < float(text) <= maximum:
        raise usage_error(option, expected, value)
    return float(text)


def role_names(roles: str | None) -> str | None:
    """`--roles` checked: comma-separated role names (letters, digits, _ and -), or None."""
    if roles is None:
        return None
    names = roles.split(",")
    if not any(names) or not all(_ROLE_RE.fullmatch(n) for n in names if n):
        raise usage_error("--roles", "comma-separated role names (letters, digits, _ and -)", roles)
    return roles


def load_settings(config: str | None) -> Settings:
    try:
        return settings_mod.load(config)
    except DeployhooksError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None


_acted_on_all: set[str] = set()


def cli_hosts() -> list[str]:
    """The hosts of `fab -H a,b,c` (Fabric's own parse of its command line), or []."""
    try:
        from fabric.main import program

        value = program.core[0].args.hosts.value
    except Exception:  # not under fab, or before its parse
        return []
    return [h for h in (value or "").split(",") if h]


def dry_run(c) -> bool:
    """Fabric's and invoke's `--dry` (config `run.dry`): read facts, print the changes."""
    try:
        return bool(c.config.run.dry)
    except (AttributeError, KeyError):
        return False


def fabric_config(c):
    """The Config Fabric handed the task (its CLI flags, fabric.yaml, FABRIC_* variables), for
    our connections; None outside fab. Commands never read stdin, and --dry is ours to honour
    (we withhold changes; invoke would echo every command, facts too)."""
    from fabric import Config

    if not isinstance(getattr(c, "config", None), Config):
        return None
    config = c.config.clone()
    config.run.in_stream = False
    config.run.dry = False
    return config


def on_server(c) -> bool:
    """True under the `deployhooks` console script: act on this machine, not over SSH."""
    return bool(c.config.get("deployhooks", {}).get("on_server", False))


def target_hosts(c, settings: Settings, roles: str | None, default_roles: Sequence[str]) -> list[str]:
    """Hosts to act on from a workstation: -H wins, then --roles, then `default_roles`."""
    role_names(roles)
    if getattr(c, "host", None):  # fab -H: every host of it, together (see `task`)
        return cli_hosts() or [c.original_host]
    wanted = [r for r in (roles.split(",") if roles else default_roles) if r]
    unknown = [r for r in wanted if r not in settings.hosts]
    if unknown and roles:
        raise Exit(
            f"role(s) {', '.join(unknown)} not under hosts in {settings.source} "
            f"(roles there: {', '.join(settings.hosts) or 'none'})",
            code=2,
        )
    hosts = settings.hosts_for(wanted)
    if not hosts:
        raise Exit(
            f"no hosts for role(s) {', '.join(wanted)} in {settings.source}: add them under hosts, or pass -H", code=2
        )
    return hosts


def select_hosts(c, settings: Settings, roles: str | None, default_roles: Sequence[str]) -> HostGroup:
    """The hosts one invocation acts on, as a `HostGroup`: this machine under the console
    script, else one SSH connection per selected host, kept for every phase of the task."""
    dry = dry_run(c)
    if not on_server(c):
        names = target_hosts(c, settings, roles, default_roles)
        return fleet.HostGroup.over_ssh(names, settings, fabric_config(c), dry=dry, say=say)
    if getattr(c, "host", None):
        # Under the console script Fabric's -H would hand us a connection and we would
        # still act here: say so instead of reporting this machine as that host.
        raise Exit(
            f"deployhooks acts on this machine only; for {c.original_host} run the "
            f"task from a workstation: fab -H {c.original_host} <task>",
            code=EXIT_CONFIG,
        )
    config = c.config.clone()
    config.run.dry = False  # invoke would echo every command, facts too: we withhold changes
    return fleet.HostGroup.here(Context(config=config), socket.gethostname(), settings, dry=dry, say=say)


def on_hosts(
    c, settings: Settings, roles: str | None, default_roles: Sequence[str], fn: Callable[[Host], object]
) -> list[HostResult]:
    """Run `fn(host)` once here (console script) or on every selected host in parallel (fab)."""
    with select_hosts(c, settings, roles, default_roles) as hosts:
        return hosts.each(fn)


def finish(results: list[HostResult], extra_code: int = 0) -> None:
    """Print each host's failure and exit with the worst code (or `extra_code`, e.g. --check)."""
    failed = [r for r in results if r.code]
    for r in failed:
        print(r.error, file=sys.stderr, flush=True)
    code = fleet.overall_code(results) or extra_code
    if code:
        ok = [r.host for r in results if not r.code]
        raise Exit(
            f"{len(failed)} of {len(results)} host(s) did not pass" + (f"; passed: {', '.join(ok)}" if ok else "")
            if len(failed) and len(results) > 1
            else None,
            code=code,
        )
