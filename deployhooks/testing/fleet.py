"""A fleet of simulated hosts on one machine, for multi-host tests and a newcomer's sandbox.

Each host is a set of PID, mount and UTS namespaces whose PID 1 is
:mod:`deployhooks.testing.hostinit`: its own hostname, ``/data``, ``/run``, ``/var/log``,
``/etc/monit`` and ``/root``, its own sshd on ``127.0.10.<N>:22`` and its own monit daemon running the
apps' Resque workers (the resque-faithful :mod:`deployhooks.testing.fakeresque`) through the real
``deployhooks-resque`` wrapper. There is no network namespace: everything stays on loopback, and
every host's workers share one redis.

::

    from deployhooks.testing.fleet import AppSpec, Fleet

    apps = [AppSpec("shop", workers=("deploytest", "q_{host}"))]   # worker 1 polls q_host1 on host1...
    with Fleet(tmp / "fleet", 3, redis_url=redis.url, apps=apps) as fleet:
        fleet.wait_workers()
        fleet.run(2, "hostname").stdout                 # 'host2\\n', run inside host2's namespaces
        with fleet.connect(3) as conn:                  # fabric, strict host keys
            conn.run("ps ax")                           # host3's processes only
        fleet.config_path("shop")                       # deployhooks.yml reaching all three hosts

From a shell (the sandbox)::

    python -m deployhooks.testing.fleet up --root /tmp/sandbox -n 3 --app shop:deploytest+q_{host}
    python -m deployhooks.testing.fleet status --root /tmp/sandbox
    ssh -i /tmp/sandbox/client_ed25519 -o UserKnownHostsFile=/tmp/sandbox/known_hosts root@127.0.10.2
    python -m deployhooks.testing.fleet down --root /tmp/sandbox

With ``login="deploy"`` (``up --login deploy``) the hosts are reached as production reaches them:
sshd lets in only ``deploy`` (never root), whose home on each host is a folder of its own holding
the fleet's client key, and the apps' configs say ``deploy@127.0.10.N`` and ``resque.sudo: true``.
What the toolkit then does as root goes through ``sudo -n``, which the machine's sudoers must
allow (script/setup installs ``deploy ALL=(root) NOPASSWD: /usr/bin/monit``). The fleet's own
helpers (:meth:`Fleet.run`, :meth:`Fleet.monit`) still act as root, through nsenter, not SSH.

``up`` returns once every host answers, leaving a keeper process behind: the hosts' parent, which
reaps them and owns the private redis started when ``--redis-url`` is not given. ``down`` ends the
pids recorded in ``fleet.json`` and the keeper exits. On a machine whose PID 1 reaps no orphans the
keeper then stays a zombie; there, run ``up --foreground &`` from a shell (the shell reaps it) or
under ``python -m deployhooks.testing.reaper --``.

Layout under ``root``::

    fleet.json                  state: every pid started, so ``down`` ends exactly those
    client_ed25519[.pub]        the key every host accepts for its login (root, or ``login``)
    known_hosts                 every host's key, for strict host-key checking
    <app>.deployhooks.yml       the workstation's config for each app (hosts, ssh, resque)
    hosts/host<N>/              the host's folder (see hostinit: data, run, log, monit, root, home, ssh)
    hosts/host<N>.log           its init's output
    keeper.log                  the keeper's output (command line only)

Inside a host, app ``<app>`` is deployed at ``/data/<app>`` (``current`` is a relative link to
``releases/<last>``), its pidfiles are under ``/var/run/deployhooks/resque/<app>`` and its monit
stanzas in ``/etc/monit/conf.d/resque_<app>.monitrc``; ``monit -c /etc/monit/monitrc`` (or plain
``monit``) talks to the host's daemon.

The machine must have no listener on port 22 of the wildcard address (it would own 127.0.10.N:22
too). An empty ``/data`` is created on the machine when missing (a bind mount needs a directory
to cover); nothing else outside ``root`` is changed.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .fleetapp import DEFAULT_RELEASES, AppSpec  # noqa: F401  (DEFAULT_RELEASES re-exported)
from .fleetfolder import _give_to_owner_of
from .fleethost import HOST_PATH, MONIT_COMMAND, FleetError, FleetHost, _is_alive  # noqa: F401  (re-exported)
from .fleetlife import (  # noqa: F401  (re-exported, for fleetcli among others)
    ADDRESS_LOCK,
    DEFAULT_ADDRESS_BASE,
    STATE_FILE,
    STOP_TIMEOUT,
    FleetLifecycle,
    _address_free,
)
from .fleetobserve import FleetObserving

__all__ = ["AppSpec", "Fleet", "FleetHost", "FleetError", "main"]


class Fleet(FleetLifecycle, FleetObserving):
    """``n`` simulated hosts under ``root``; see the module docstring.

    ``address_base`` "127.0.10." gives host N the address 127.0.10.N; None picks the first block
    127.0.K. (K = 10, 11, ...) whose port 22 is free on every address, so fleets of concurrent test
    runs do not collide. ``roles`` (role -> host numbers, default ``{"util": all}``) fills the
    ``hosts:`` section of the apps' configs. With ``die_with_parent`` the hosts are torn down
    (SIGTERM to each init) if the thread that started them dies without calling ``stop()``.
    ``login`` is the one user the hosts' sshd lets in (default root); any other user is the
    machine's (``deploy``, made by script/setup): then root cannot log in, and the configs say
    ``<login>@host`` and ``resque.sudo: true`` (see the module docstring).

    Its parts live next door: bring-up, state file and teardown in :mod:`.fleetlife`, commands and
    workers inside the hosts in :mod:`.fleetobserve`, the folder laid out before boot in
    :mod:`.fleetfolder`, the apps' configs in :mod:`.fleetapp`, one host in :mod:`.fleethost`.
    """

    def __init__(
        self,
        root: Path,
        n: int,
        *,
        redis_url: str,
        apps: Iterable[AppSpec] = (),
        address_base: str | None = DEFAULT_ADDRESS_BASE,
        roles: Mapping[str, Sequence[int]] | None = None,
        port: int = 22,
        die_with_parent: bool = True,
        ready_timeout: float = 30.0,
        login: str = "root",
    ):
        if not 1 <= n <= 250:
            raise ValueError(f"a fleet has 1 to 250 hosts, not {n}")
        self.root = Path(root).absolute()
        self.n = n
        self.redis_url = redis_url
        self.apps = list(apps)
        names = [a.name for a in self.apps]
        if len(set(names)) != len(names):
            raise ValueError(f"app names repeat: {names}")
        self.address_base = address_base
        if address_base is not None:
            self._check_base(address_base)
        self.roles = {k: list(v) for k, v in (roles or {"util": list(range(1, n + 1))}).items()}
        for role, numbers in self.roles.items():
            bad = [i for i in numbers if not 1 <= i <= n]
            if bad:
                raise ValueError(f"role {role} names hosts {bad}; hosts are numbered 1..{n}")
        self.port = port
        self.login = login
        self.login_home = self._home_of(login)
        self.die_with_parent = die_with_parent
        self.ready_timeout = ready_timeout
        self.hosts: list[FleetHost] = []
        self.extra_state: dict = {}
        self._launchers: dict[int, subprocess.Popen] = {}
        # Only the fleet that wrote the state file (or was read from it) may remove it: a start
        # refused because ``root`` already runs a fleet must leave that fleet's record alone.
        self._owns_state = False
        self.timings: dict[str, float] = {}

    @staticmethod
    def _home_of(login: str) -> str | None:
        """The login's home as the machine's passwd has it (None for root: hosts have their own
        /root); ValueError naming the fix when the machine has no such user."""
        if login == "root":
            return None
        try:
            return pwd.getpwnam(login).pw_dir
        except KeyError:
            raise ValueError(f"login {login!r} is not a user of this machine (script/setup creates deploy)") from None

    # --- paths, config text, hosts ------------------------------------------------------------

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.root / "client_ed25519"

    @property
    def state_path(self) -> Path:
        return self.root / STATE_FILE

    def config_path(self, app: str | None = None) -> Path:
        """The workstation's deployhooks.yml for ``app`` (default: the only or first app)."""
        if app is None:
            if not self.apps:
                raise ValueError("the fleet has no apps")
            app = self.apps[0].name
        return self.root / f"{app}.deployhooks.yml"

    def ssh_settings_yaml(self) -> str:
        """The ``ssh:`` section of a deployhooks.yml that reaches the hosts with strict host keys."""
        return f"ssh:\n  known_hosts: {self.known_hosts}\n  identity_file: {self.client_key}\n  connect_timeout: 5\n"

    def hosts_yaml(self, roles: Mapping[str, Sequence[int]] | None = None) -> str:
        """A ``hosts:`` section: role -> ``<login>@127.0.10.N`` of the given host numbers (default:
        the fleet's roles)."""
        roles = self.roles if roles is None else roles
        lines = ["hosts:"]
        for role, numbers in roles.items():
            lines.append(f"  {role}: [{', '.join(self.host(i).target for i in numbers)}]")
        return "\n".join(lines) + "\n"

    def host(self, which: "int | str | FleetHost") -> FleetHost:
        """A host by number (1-based), name (``host2``), address, or the host itself."""
        if isinstance(which, FleetHost):
            return which
        for h in self.hosts:
            if which in (h.index, h.name, h.address):
                return h
        raise KeyError(f"no host {which!r} in this fleet")

    # --- deploy steps a test performs on the hosts' disks --------------------------------------

    def new_release(self, app: str, name: str, hosts: Iterable | None = None) -> str:
        """Create ``releases/<name>/config`` of ``app`` on the hosts (default: those carrying it),
        owned by the owner of ``deploy_to`` as a deploy would leave it; return the release's path
        inside a host."""
        spec = next(a for a in self.apps if a.name == app)
        for h in self._app_hosts(spec, hosts):
            release = h.path(f"{spec.deploy_to}/releases/{name}")
            (release / "config").mkdir(parents=True, exist_ok=True)
            _give_to_owner_of(h.path(spec.deploy_to), release)
        return f"{spec.deploy_to}/releases/{name}"

    def switch_current(self, app: str, name: str, hosts: Iterable | None = None) -> None:
        """Point ``current`` at ``releases/<name>`` (relative link, renamed over the old one)."""
        spec = next(a for a in self.apps if a.name == app)
        for h in self._app_hosts(spec, hosts):
            current = h.path(f"{spec.deploy_to}/current")
            tmp = current.with_name(".current.switch")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(f"releases/{name}")
            _give_to_owner_of(current.parent, tmp)
            os.replace(tmp, current)

    def _app_hosts(self, spec: AppSpec, hosts: Iterable | None) -> list[FleetHost]:
        chosen = [self.host(x) for x in hosts] if hosts is not None else self.hosts
        return [h for h in chosen if spec.on(h)]


# --- command line ---------------------------------------------------------------------------------


if __name__ == "__main__":
    # `python -m deployhooks.testing.fleet up|down|status`: the command line lives in fleetcli.
    from .fleetcli import main

    sys.exit(main())
