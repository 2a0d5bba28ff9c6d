"""monit's CLI as facts and actions, through any invoke Context or fabric Connection.

monit 5.33 facts this module is built on (research/peers-monit.md §2):
- with a daemon running, `stop/start/restart -g G` return at once with rc 0; the daemon does
  the work later, one service after another;
- a stop that outlives the service's timeout is reported `Not monitored` although the worker
  still runs, so a status word alone never proves a worker has exited;
- with no daemon, the same commands run the programs in the foreground and start workers that
  nothing supervises; we therefore refuse group actions unless a daemon answers;
- `-B status` has the full status text (`summary` cuts it at 27 characters).

Parsing and error classification are pure functions; `Monit` spells every monit command and
runs them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import CommandFailed, ConfigError
from ..settings import Settings
from .shell import with_sudo

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
    name: str | None = None
    fields: dict[str, str] = {}

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


def without_control_file(command: Sequence[str]) -> list[str]:
    """monit's argv with any `-c FILE` removed, to point it at another control file."""
    argv, skip = [], False
    for word in command:
        if skip:
            skip = False
            continue
        if word == "-c":
            skip = True
            continue
        if word.startswith("-c") and len(word) > 2 and not word.startswith("--"):
            continue
        argv.append(word)
    return argv


_GROUP_MISSING = re.compile(r"group '.*' not found", re.I)
_ACTIONS = ("stop", "start", "restart", "monitor", "unmonitor")


class Monit:
    """monit on one host, reached through a Context or Connection `c`.

    Every monit command the toolkit sends is spelled here. The `*_argv` and `*_command`
    methods are pure (a `Monit` without `c` builds commands for others to send, such as the
    status command's one round trip); the others run them, each as a fact (`status`,
    `services`, `syntax_check`: always run) or a change (`action`, `service`, `reload`:
    under a dry run printed through `would`, not sent).
    """

    def __init__(
        self,
        c=None,
        command: Sequence[str] = ("monit",),
        *,
        sudo: bool = False,
        host: str = "localhost",
        group: str = "",
        would: Callable[[str], None] | None = None,
    ):
        """`group`: the configured group, named in the errors of commands that take none;
        `would`: a dry run's printer; changes are then printed, not sent (facts still run)."""
        self.c, self.command, self.sudo, self.host, self.group = c, tuple(command), sudo, host, group
        self.would = would

    @classmethod
    def of(cls, settings: Settings, c=None, *, host: str = "localhost", would: Callable[[str], None] | None = None):
        """monit as `settings.resque` configures it (command, sudo, group)."""
        r = settings.resque
        return cls(c, r.monit_command, sudo=r.sudo, host=host, group=r.monit_group, would=would)

    # --- commands (pure) -----------------------------------------------------------------------

    def argv(self, *args: str, control: str | None = None, sudo: bool = True) -> list[str]:
        """monit's argv for `args`; `control`: under that control file instead of the configured
        one; through sudo when resque.sudo is on, unless `sudo` is False (already root)."""
        command = list(self.command) if control is None else without_control_file(self.command) + ["-c", control]
        argv = command + list(args)
        return with_sudo(argv) if self.sudo and sudo else argv

    def status_argv(self, group: str) -> list[str]:
        """`-B status -g group`: the group's services, with the full status text."""
        return self.argv("-B", "status", "-g", group)

    def status_command(self, group: str) -> str:
        """`status_argv` as one shell command (what `status` and `services` run)."""
        return shell_command(self.status_argv(group))

    def action_argv(self, verb: str, group: str) -> list[str]:
        """`verb all -g group` (stop, start, restart, monitor, unmonitor)."""
        if verb not in _ACTIONS:
            raise ConfigError(f"unknown monit action {verb!r}")
        return self.argv(verb, "all", "-g", group)

    def service_argv(self, verb: str, name: str) -> list[str]:
        """`verb name` for one service (stop, start, restart, monitor, unmonitor)."""
        if verb not in _ACTIONS:
            raise ConfigError(f"unknown monit action {verb!r}")
        return self.argv(verb, name)

    def reload_argv(self) -> list[str]:
        return self.argv("reload")

    def test_argv(self, *, control: str | None = None, verbose: bool = False, sudo: bool = True) -> list[str]:
        """`-t` (syntax check of the control file; `-v -t` also lists the services it defines)."""
        return self.argv(*(["-v"] if verbose else []), "-t", control=control, sudo=sudo)

    def test_command(self, *, control: str | None = None, verbose: bool = False, sudo: bool = True) -> str:
        """`test_argv` as one shell command, its messages (on stderr) in its output."""
        return shell_command(self.test_argv(control=control, verbose=verbose, sudo=sudo)) + " 2>&1"

    # --- running them --------------------------------------------------------------------------

    def _call(self, argv: Sequence[str]):
        return self.c.run(shell_command(argv), hide=True, warn=True, in_stream=False)

    def _failure(self, result, argv: Sequence[str], group: str) -> Exception:
        return classify_failure(
            result.exited, result.stdout, result.stderr, group=group, host=self.host, command=argv, sudo=self.sudo
        )

    def _run(self, argv: Sequence[str], *, group: str):
        result = self._call(argv)
        if result.exited != 0:
            raise self._failure(result, argv, group)
        return result

    def _change(self, argv: Sequence[str], *, group: str, check: bool = True) -> None:
        if self.would is not None:
            self.would(f"run: {shlex.join(argv)}")
        elif check:
            self._run(argv, group=group)
        else:
            self._call(argv)

    def status(self, group: str) -> dict[str, ServiceStatus]:
        """The group's services; raises when the daemon is down or the group does not exist.

        `-B status` fails with "the monit daemon is not running" when there is no daemon, so
        this is also the check that makes group actions safe to send.
        """
        services = parse_status(self._run(self.status_argv(group), group=group).stdout)
        if not services:
            raise CommandFailed(f"{self.host}: monit group '{group}' has no services")
        return services

    def services(self, group: str) -> dict[str, ServiceStatus]:
        """The group's services; {} when monit knows no such group (yet). Raises when the
        daemon does not answer, or monit fails in any other way."""
        argv = self.status_argv(group)
        result = self._call(argv)
        if result.exited == 0:
            return parse_status(result.stdout)
        if _GROUP_MISSING.search(f"{result.stderr}\n{result.stdout}"):
            return {}
        raise self._failure(result, argv, group)

    def syntax_check(self, *, verbose: bool = False):
        """The result of `monit -t` (`-v -t` with `verbose`) on the configured control file,
        messages included in its stdout; a refusal is a result (rc != 0), not an exception."""
        return self.c.run(self.test_command(verbose=verbose), hide=True, warn=True, in_stream=False)

    def action(self, verb: str, group: str) -> None:
        """Send `verb all -g group` to the daemon (returns before the work is done)."""
        argv = self.action_argv(verb, group)
        self.status(group)  # never let a daemon-less monit run the programs itself
        self._change(argv, group=group)

    def service(self, verb: str, name: str, *, check: bool = True) -> None:
        """Send `verb name` for one service (returns before the work is done); `check` False:
        best effort, a failure is ignored. The caller has seen the daemon answer."""
        self._change(self.service_argv(verb, name), group=self.group, check=check)

    def reload(self) -> None:
        """`monit reload`: the daemon rereads its configuration (returns before it has)."""
        self._change(self.reload_argv(), group=self.group)
