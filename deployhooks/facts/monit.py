"""monit's CLI as facts and actions, through any invoke Context or fabric Connection.

monit 5.33 facts this module is built on (research/peers-monit.md §2):
- with a daemon running, `stop/start/restart -g G` return at once with rc 0; the daemon does
  the work later, one service after another;
- a stop that outlives the service's timeout is reported `Not monitored` although the worker
  still runs, so a status word alone never proves a worker has exited;
- with no daemon, the same commands run the programs in the foreground and start workers that
  nothing supervises; we therefore refuse group actions unless a daemon answers;
- `-B status` has the full status text (`summary` cuts it at 27 characters).

Parsing and error classification are pure functions; `Monit` runs the commands.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import CommandFailed, ConfigError

NOT_MONITORED = "Not monitored"


@dataclass(frozen=True)
class ServiceStatus:
    """One monit service: its status text, monitoring state and pid (None when not running)."""

    name: str
    status: str
    monitoring: str | None = None
    pid: int | None = None

    @property
    def pending(self) -> bool:
        """True while monit still has an action queued or running for this service."""
        return "pending" in self.status

    @property
    def stopped(self) -> bool:
        return self.status == NOT_MONITORED

    @property
    def running(self) -> bool:
        return self.status == "OK" and self.pid is not None


_BLOCK = re.compile(
    r"^(?:Process|Program|File|System|Filesystem|Directory|Remote Host|Network|Fifo) '(?P<name>[^']+)'\s*$"
)
_FIELD = re.compile(r"^\s+(?P<key>[a-z][a-z ]*?)\s{2,}(?P<value>.*?)\s*$")


def parse_status(text: str) -> dict[str, ServiceStatus]:
    """Services from `monit -B status` output, by name, in the order monit printed them."""
    services: dict[str, ServiceStatus] = {}
    name, fields = None, {}

    def flush() -> None:
        if name is not None:
            pid = fields.get("pid")
            services[name] = ServiceStatus(
                name,
                fields.get("status", ""),
                fields.get("monitoring status"),
                int(pid) if pid and pid.isdigit() and int(pid) > 0 else None,
            )

    for line in text.splitlines():
        block = _BLOCK.match(line)
        if block:
            flush()
            name, fields = block["name"], {}
            continue
        field = _FIELD.match(line)
        if field and name is not None:
            fields.setdefault(field["key"], field["value"])
    flush()
    return services


def classify_failure(
    rc: int, out: str, err: str, *, group: str, host: str, command: Sequence[str], sudo: bool
) -> Exception:
    """The exception, with its fix, that a failed monit call means."""
    text = f"{err}\n{out}"
    cmd = " ".join(command)
    if (
        rc == 127
        or "command not found" in text
        or re.search(r"No such file or directory.*monit\b", text)
        and "socket" not in text.lower()
    ):
        return CommandFailed(
            f"{host}: monit is not installed or not on PATH ('{cmd}' not found): install the "
            f"monit package, or set resque.monit_command to its full path"
        )
    if "a password is required" in text or "a terminal is required" in text:
        return CommandFailed(
            f"{host}: sudo asked for a password for '{cmd}': allow it without one in sudoers "
            f"(NOPASSWD for monit), or run the hooks as root"
        )
    if re.search(r"permission denied|must be run as root|cannot read control file|Operation not permitted", text, re.I):
        hint = (
            "sudo is on (resque.sudo: true) and was still refused: check sudoers"
            if sudo
            else "set resque.sudo: true in the config, or run as root"
        )
        return CommandFailed(f"{host}: permission denied running '{cmd}': {hint}. monit said: {_first_line(text)}")
    if re.search(r"daemon is not running|connection error|Cannot connect to the monit daemon", text, re.I):
        return CommandFailed(
            f"{host}: the monit daemon is not running (or its httpd is off). Start it "
            f"(e.g. 'monit' or 'systemctl start monit'); deployhooks will not run group actions "
            f"without it, because monit would then start workers that nothing supervises. "
            f"monit said: {_first_line(text)}"
        )
    if re.search(r"group '.*' not found", text, re.I):
        return CommandFailed(
            f"{host}: monit has no group '{group}'. Check resque.monit_group in the config, or "
            f"install the monitrc (deployhooks resque.setup) and 'monit reload'"
        )
    return CommandFailed(f"{host}: '{cmd}' failed (exit {rc}): {_first_line(text) or 'no output'}")


# monit's CLI closes every descriptor up to the soft RLIMIT_NOFILE when it starts. Under a
# high limit that is most of what a call costs: 11.7 ms -> 7.1 ms per `monit -B status` on
# the test hosts (limit 20000) when lowered to 1024, and containers often have 1048576. monit
# needs a handful, and the guard polls it ten times a second. A failing ulimit (hard limit
# below 1024, a shell without -S) is ignored: the call then costs what it did.
_FD_LIMIT = "ulimit -Sn 1024 2>/dev/null; "


def shell_command(argv: Sequence[str]) -> str:
    """`argv` (monit, or sudo -n monit) as one shell command, with a low soft fd limit."""
    return _FD_LIMIT + shlex.join(argv)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


class Monit:
    """monit on one host, reached through a Context or Connection `c`."""

    def __init__(
        self,
        c,
        command: Sequence[str] = ("monit",),
        *,
        sudo: bool = False,
        host: str = "localhost",
        would: Callable[[str], None] | None = None,
    ):
        """`would`: a dry run's printer; actions are then printed, not sent (status still runs)."""
        self.c, self.command, self.sudo, self.host = c, tuple(command), sudo, host
        self.would = would

    def _argv(self, *args: str) -> list[str]:
        argv = list(self.command) + list(args)
        # -n: a hook has no terminal to type a password into; fail at once instead of hanging.
        return (["sudo", "-n"] + argv) if self.sudo else argv

    def _run(self, *args: str, group: str = ""):
        argv = self._argv(*args)
        result = self.c.run(shell_command(argv), hide=True, warn=True, in_stream=False)
        if result.exited != 0:
            raise classify_failure(
                result.exited, result.stdout, result.stderr, group=group, host=self.host, command=argv, sudo=self.sudo
            )
        return result

    def status(self, group: str) -> dict[str, ServiceStatus]:
        """The group's services; raises when the daemon is down or the group does not exist.

        `-B status` fails with "the monit daemon is not running" when there is no daemon, so
        this is also the check that makes group actions safe to send.
        """
        services = parse_status(self._run("-B", "status", "-g", group, group=group).stdout)
        if not services:
            raise CommandFailed(f"{self.host}: monit group '{group}' has no services")
        return services

    def action(self, verb: str, group: str) -> None:
        """Send `verb all -g group` to the daemon (returns before the work is done)."""
        if verb not in ("stop", "start", "restart", "monitor", "unmonitor"):
            raise ConfigError(f"unknown monit action {verb!r}")
        self.status(group)  # never let a daemon-less monit run the programs itself
        if self.would is not None:
            self.would(f"run: {shlex.join(self._argv(verb, 'all', '-g', group))}")
            return
        self._run(verb, "all", "-g", group, group=group)
