"""What `resque.setup` should make of a host, decided without touching it (pure).

From the config and what the host holds (conf files, the installed monitrc, monit's view of
the group): the conf files' and the monitrc's text, the `Plan` that makes them agree, and
monit's verdict on a configuration with the new monitrc in place (`check_failure`).
`commands.install` reads the facts and carries the plan out.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..errors import ConfigError
from ..facts import monit as monit_mod
from ..resque.monitrc import render_monitrc
from ..settings import Settings

WRAPPER_TRUST_FIX = (
    "Install deployhooks where only root can change it (e.g. a root-owned "
    "virtualenv under /opt) and set resque.wrapper to its deployhooks-resque"
)


def service_name(app: str, n: int) -> str:
    return f"resque_{app}_{n}"


def conf_path(settings: Settings, n: int) -> str:
    return f"{settings.shared_path}/config/resque_{n}.conf"


def conf_text(queues: Sequence[str]) -> str:
    """The whole of a `resque_N.conf`: the wrapper reads QUEUE with shell quoting."""
    return f"QUEUE={shlex.quote(','.join(queues))}\n"


def desired_monitrc(settings: Settings, wrapper: str) -> str:
    """The monitrc the config asks for, with `wrapper` already resolved to an absolute path."""
    r = settings.resque
    if r.user is None:
        raise ConfigError(
            f"{settings.source}: resque.user: not set: name the user the workers run "
            f"as (the monit wrapper runs as root and drops to it; never root)"
        )
    try:
        return render_monitrc(
            settings.app,
            settings.framework_env,
            r.monit_group,
            len(r.workers),
            wrapper=wrapper,
            deploy_to=settings.deploy_to,
            pid_dir=r.pid_dir,
            stop_action=r.stop,
            grace_time=r.grace_time,
            start_timeout=r.start_timeout,
            totalmem_mb=r.totalmem_mb,
            user=r.user,
            worker_command=r.worker_command,
        )
    except ValueError as exc:
        raise ConfigError(f"{settings.source}: cannot render the monitrc: {exc}") from None


def desired_services(settings: Settings) -> list[str]:
    return [service_name(settings.app, w.index) for w in settings.resque.workers]


def monitrc_workers(text: str | None, app: str) -> set[int]:
    """Worker numbers that a monitrc text defines for `app` (`check process resque_<app>_<N>`)."""
    pattern = re.compile(rf"^\s*check\s+process\s+resque_{re.escape(app)}_(\d+)\b", re.M)
    return {int(m) for m in pattern.findall(text or "")}


def service_workers(names: Sequence[str], app: str) -> set[int]:
    pattern = re.compile(rf"^resque_{re.escape(app)}_(\d+)$")
    return {int(m.group(1)) for m in map(pattern.match, names) if m}


@dataclass(frozen=True)
class FileChange:
    """One file to write (`new` text) or remove (`new` None); `old` None when it is absent."""

    path: str
    old: str | None
    new: str | None


@dataclass
class Plan:
    """What setup will do on one host."""

    confs: list[FileChange] = field(default_factory=list)  # writes, then removals
    monitrc: FileChange | None = None
    stop: list[str] = field(default_factory=list)  # services of removed workers
    reload: bool = False
    services: list[str] = field(default_factory=list)  # what monit must list after

    @property
    def empty(self) -> bool:
        return not self.confs and self.monitrc is None and not self.stop and not self.reload


def plan(
    settings: Settings,
    *,
    wrapper: str,
    installed_monitrc: str | None,
    confs: Mapping[int, str],
    live: Mapping[str, monit_mod.ServiceStatus],
) -> Plan:
    """Compare what is on the host with the config: the least that makes them agree.

    `confs` is worker number -> text of the `resque_N.conf` files present; `live` is monit's
    view of the group (empty when monit has no such group yet). A worker counts as removed when
    any of the three still knows it; its service is stopped only if monit still has it.
    """
    r = settings.resque
    app = settings.app
    wanted = {w.index: conf_text(w.queues) for w in r.workers}
    result = Plan(services=desired_services(settings))
    for n, text in sorted(wanted.items()):
        if confs.get(n) != text:
            result.confs.append(FileChange(conf_path(settings, n), confs.get(n), text))
    known = set(confs) | monitrc_workers(installed_monitrc, app) | service_workers(list(live), app)
    for n in sorted(known - set(wanted)):
        if n in confs:
            result.confs.append(FileChange(conf_path(settings, n), confs[n], None))
        name = service_name(app, n)
        if name in live:
            result.stop.append(name)
    new_monitrc = desired_monitrc(settings, wrapper)
    if installed_monitrc != new_monitrc:
        result.monitrc = FileChange(r.monitrc_path, installed_monitrc, new_monitrc)
    result.reload = result.monitrc is not None or sorted(live) != sorted(result.services)
    return result


def unified_diff(host: str, change: FileChange) -> str:
    """The change as a unified diff, every line prefixed by the host (for parallel output)."""
    old = (change.old or "").splitlines(keepends=True)
    new = (change.new or "").splitlines(keepends=True)
    lines = difflib.unified_diff(
        old,
        new,
        fromfile=change.path if change.old is not None else "/dev/null",
        tofile=change.path if change.new is not None else "/dev/null",
    )
    return "\n".join(f"{host}: {line.rstrip(chr(10))}" for line in lines)


_PROCESS_NAME = re.compile(
    r"^(?:Process|Program|File|Filesystem|Directory|Remote Host|Network|Fifo|System) Name\s+= (?P<name>\S+)\s*$"
)
_GROUP = re.compile(r"^\s+Group\s+= (?P<groups>.*?)\s*$")


def parse_service_list(text: str) -> dict[str, set[str]]:
    """Services and their groups from `monit -v -t` ("The service list contains ...")."""
    services: dict[str, set[str]] = {}
    name = None
    for line in text.splitlines():
        m = _PROCESS_NAME.match(line)
        if m:
            name = m["name"]
            services[name] = set()
            continue
        g = _GROUP.match(line)
        if g and name is not None:
            services[name] |= {x for x in re.split(r"[,\s]+", g["groups"]) if x}
        elif not line.strip():
            name = None
    return services


def check_failure(rc: int, output: str, *, path: str, group: str, wanted: Sequence[str]) -> str | None:
    """Why monit's verdict on the configuration with our monitrc in place is not good, or None.

    Good means: `monit -v -t` passed, and the group holds exactly the wanted services (so the
    control file includes `path`, and nothing else defines services in our group).
    """
    if rc != 0:
        detail = [
            l.strip()
            for l in output.splitlines()
            if l.strip() and not l.startswith((" ", "Adding credentials", "Runtime constants"))
        ]
        return "monit -t refused the configuration: " + ("; ".join(detail[-3:]) or f"exit {rc}")
    in_group = sorted(n for n, groups in parse_service_list(output).items() if group in groups)
    if sorted(wanted) == in_group:
        return None
    if not set(wanted) & set(in_group):
        return (
            f"monit's control file does not include {path}: add a line such as "
            f"'include {os.path.dirname(path)}/*' to it, or set resque.monitrc_path to a "
            f"file it includes"
        )
    extra = sorted(set(in_group) - set(wanted))
    missing = sorted(set(wanted) - set(in_group))
    return (
        "monit's configuration would not hold exactly the configured services of group "
        f"{group}"
        + (f"; defined elsewhere too: {', '.join(extra)} (remove them from the other monit files)" if extra else "")
        + (f"; missing: {', '.join(missing)}" if missing else "")
    )
