"""An app deployed on a :mod:`deployhooks.testing.fleet`: its spec, and the workstation's
deployhooks.yml that reaches it on the fleet's hosts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from .applayout import fake_worker_argv, test_user
from .fleethost import MONIT_COMMAND

if TYPE_CHECKING:
    from .fleet import Fleet
    from .fleethost import FleetHost

DEFAULT_RELEASES = ("20260101000000", "20260102000000")


@dataclass
class AppSpec:
    """One app deployed on the fleet's hosts.

    ``workers`` holds one QUEUE value per worker (comma-separated queues allowed); ``{host}`` in it
    becomes the host's name, so ``"q_{host}"`` gives each host a queue of its own (``q_host2``) when
    a test needs a job to land on one host only. ``host_workers`` replaces the list on given hosts
    (by number, 1-based). ``hosts`` limits the app to some hosts (default: all). ``stop`` (quit or
    term) and ``grace_time`` go to the monitrc and the config; ``releases`` are created in order and
    ``current`` points at the last. ``resque_extra`` is appended verbatim to the ``resque:`` section
    of the app's deployhooks.yml (two-space indented lines), ``top_extra`` to the top level.
    """

    name: str = "shop"
    workers: Sequence[str] = ("deploytest",)
    host_workers: Mapping[int, Sequence[str]] = field(default_factory=dict)
    hosts: Sequence[int] | None = None
    stop: str = "quit"
    grace_time: int = 10
    releases: Sequence[str] = DEFAULT_RELEASES
    framework_env: str = "production"
    interval: float = 0.2
    start_timeout: int = 30
    resque_extra: str = ""
    top_extra: str = ""

    def on(self, host: "FleetHost") -> bool:
        return self.hosts is None or host.index in self.hosts

    def queues_on(self, host: "FleetHost") -> list[str]:
        """The QUEUE value of each worker on ``host``."""
        raw = self.host_workers.get(host.index, self.workers)
        return [q.replace("{host}", host.name) for q in raw]

    @property
    def deploy_to(self) -> str:
        """Where the app lives inside every host."""
        return f"/data/{self.name}"

    @property
    def pid_dir(self) -> str:
        return f"/var/run/deployhooks/resque/{self.name}"

    @property
    def group(self) -> str:
        return f"{self.name}_resque"

    @property
    def monitrc_path(self) -> str:
        """Where every host's monit reads the app's stanzas (the config says so too)."""
        return f"/etc/monit/conf.d/resque_{self.name}.monitrc"


def config_text(fleet: "Fleet", app: AppSpec) -> str:
    """The text of ``app``'s deployhooks.yml: the fleet's hosts carrying it, by role, its ssh
    settings, and the ``resque:`` section matching what was laid out on the hosts."""
    roles = {role: [i for i in numbers if app.on(fleet.host(i))] for role, numbers in fleet.roles.items()}
    roles = {role: numbers for role, numbers in roles.items() if numbers}
    first = next((h for h in fleet.hosts if app.on(h)), fleet.hosts[0])
    # Quoted: a bare * would be a YAML alias.
    worker_lines = "".join(
        f"    - queues: [{', '.join(json.dumps(x) for x in q.split(','))}]\n" for q in app.queues_on(first)
    )
    per_host = any("{host}" in q for q in app.workers) or bool(app.host_workers)
    note = f"  # queues as on {first.name}; they differ per host\n" if per_host else ""
    return (
        f"# Written by deployhooks.testing.fleet for the hosts under {fleet.root}.\n"
        f"app: {app.name}\n"
        f"framework_env: {app.framework_env}\n"
        f"deploy_to: {app.deploy_to}\n"
        f"{app.top_extra}"
        f"{fleet.hosts_yaml(roles)}"
        f"{fleet.ssh_settings_yaml()}"
        f"resque:\n"
        f"  user: {test_user()}\n"
        f"  worker_command: {json.dumps(list(fake_worker_argv()))}\n"
        f"  stop: {app.stop}\n"
        f"  grace_time: {app.grace_time}\n"
        f"{_sudo_yaml(fleet.login)}"
        f"{note}"
        f"  workers:\n{worker_lines}"
        f"  monit_command: [{', '.join(MONIT_COMMAND)}]\n"
        f"  monitrc_path: {app.monitrc_path}\n"
        f"  pause_timeout: 10\n"
        f"  start_timeout: {app.start_timeout}\n"
        f"{app.resque_extra}"
    )


def _sudo_yaml(login: str) -> str:
    """``resque.sudo: true`` when the login is not root: monit (root's) through ``sudo -n``."""
    return "" if login == "root" else "  sudo: true\n"
