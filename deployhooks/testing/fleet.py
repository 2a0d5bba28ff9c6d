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

import contextlib
import errno
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlparse

import psutil

from ..facts.processes import PS_COMMAND, RawProcess, WorkerProcess, normalize_title, parse_ps_output, workers_from
from ..resque.monitrc import render_monitrc
from .apphost import wrapper_path
from .applayout import fake_worker_argv, make_app, test_user

__all__ = ["AppSpec", "Fleet", "FleetHost", "FleetError", "main"]

STATE_FILE = "fleet.json"
DEFAULT_ADDRESS_BASE = "127.0.10."
DEFAULT_RELEASES = ("20260101000000", "20260102000000")
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MONIT_COMMAND = ("monit", "-c", "/etc/monit/monitrc")
# An abstract unix socket: held while a fleet picks addresses and binds them, released by the
# kernel when its holder dies, and it leaves no file behind.
ADDRESS_LOCK = b"\0deployhooks.testing.fleet.addresses"
STOP_TIMEOUT = 10.0

# A host's inside path -> its folder's subdirectory (see hostinit.BINDS); /var/run is /run on Debian.
_INSIDE = (
    ("/var/run", "run"),
    ("/data", "data"),
    ("/run", "run"),
    ("/var/log", "log"),
    ("/etc/monit", "monit"),
    ("/root", "root"),
)


class FleetError(RuntimeError):
    """The fleet could not be started, or its state makes no sense; the message says why."""


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


@dataclass
class FleetHost:
    """One host: ``name`` hostN, ``address`` 127.0.10.N, ``pid`` the machine's pid of its init;
    ``user`` the SSH login, and ``home`` where the host sees that login's home unless it is root."""

    index: int
    name: str
    address: str
    folder: Path
    port: int = 22
    user: str = "root"
    home: str | None = None
    pid: int | None = None
    pid_started: float | None = None
    pidns: int | None = None
    launcher_pid: int | None = None

    @property
    def target(self) -> str:
        """``<user>@127.0.10.N`` (with ``:port`` unless 22), as a deployhooks.yml lists hosts."""
        port = "" if self.port == 22 else f":{self.port}"
        return f"{self.user}@{self.address}{port}"

    @property
    def log(self) -> Path:
        return self.folder.parent / f"{self.name}.log"

    def path(self, inside: str) -> Path:
        """The machine's path of ``inside`` (``/data/shop/current`` -> ``<folder>/data/shop/current``)."""
        inside = os.path.normpath(inside)
        bound = _INSIDE + (((self.home, "home"),) if self.home else ())
        for prefix, sub in bound:
            if inside == prefix or inside.startswith(prefix + "/"):
                return self.folder / sub / os.path.relpath(inside, prefix)
        home = f", {self.home}" if self.home else ""
        raise ValueError(f"{inside} is not a per-host path (/data, /run, /var/log, /etc/monit, /root{home})")

    def to_state(self) -> dict:
        return {
            "index": self.index,
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "home": self.home,
            "folder": str(self.folder),
            "pid": self.pid,
            "pid_started": self.pid_started,
            "pidns": self.pidns,
            "launcher_pid": self.launcher_pid,
        }

    @classmethod
    def from_state(cls, data: dict) -> "FleetHost":
        return cls(
            index=data["index"],
            name=data["name"],
            address=data["address"],
            port=data["port"],
            user=data.get("user", "root"),
            home=data.get("home"),
            folder=Path(data["folder"]),
            pid=data["pid"],
            pid_started=data["pid_started"],
            pidns=data["pidns"],
            launcher_pid=data["launcher_pid"],
        )


def _pidns(pid: int) -> int | None:
    """The inode of ``pid``'s PID namespace, or None if it is gone."""
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def _is_alive(pid: int | None, started: float | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, started at ``started``: not a reused pid."""
    if not pid:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 0.05
    except psutil.Error:
        return False


def _is_unshare(pid: int | None) -> bool:
    """True if ``pid`` is a running ``unshare`` (a launcher of ours, given a pid from the state)."""
    try:
        return _is_alive(pid) and "unshare" in " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return False


def _address_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As sshd does: a TIME_WAIT from an earlier fleet must not count as in use.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


@contextlib.contextmanager
def _address_lock(timeout: float = 60.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                sock.bind(ADDRESS_LOCK)
                break
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise FleetError(f"another fleet has been picking addresses for {timeout:g}s") from exc
                time.sleep(0.05)
        yield
    finally:
        sock.close()


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    """Give ``path`` and everything under it to ``uid:gid`` (links themselves, never followed)."""
    names = [path]
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            names += [Path(folder, n) for n in dirs + files]
    for name in names:
        os.lchown(name, uid, gid)


def _give_to_owner_of(parent: Path, path: Path) -> None:
    """Give ``path`` (and what is under it) to the owner of ``parent``."""
    st = parent.stat()
    _chown_tree(path, st.st_uid, st.st_gid)


def _keygen(path: Path) -> subprocess.Popen:
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    return subprocess.Popen(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _login_bashrc() -> str:
    """A plain Debian .bashrc for a host's login (root, or ``login``), with this venv on PATH."""
    try:
        base = Path("/usr/share/base-files/dot.bashrc").read_text()
    except OSError:
        base = "# ~/.bashrc: executed by bash(1) for non-login shells.\n"
    venv_bin = os.path.dirname(sys.executable)
    # The toolkit is installed on the host as on a real one: deployhooks, deployhooks-resque.
    return base + f'\nexport PATH="{venv_bin}:$PATH"\n'


class Fleet:
    """``n`` simulated hosts under ``root``; see the module docstring.

    ``address_base`` "127.0.10." gives host N the address 127.0.10.N; None picks the first block
    127.0.K. (K = 10, 11, ...) whose port 22 is free on every address, so fleets of concurrent test
    runs do not collide. ``roles`` (role -> host numbers, default ``{"util": all}``) fills the
    ``hosts:`` section of the apps' configs. With ``die_with_parent`` the hosts are torn down
    (SIGTERM to each init) if the thread that started them dies without calling ``stop()``.
    ``login`` is the one user the hosts' sshd lets in (default root); any other user is the
    machine's (``deploy``, made by script/setup): then root cannot log in, and the configs say
    ``<login>@host`` and ``resque.sudo: true`` (see the module docstring).
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

    # --- paths and config text ----------------------------------------------------------------

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

    # --- bring-up ------------------------------------------------------------------------------

    @staticmethod
    def _check_base(base: str) -> None:
        for last in (1, 250):
            try:
                address = ipaddress.ip_address(f"{base}{last}")
            except ValueError:
                raise ValueError(f"address_base {base!r} must look like '127.0.10.'") from None
            if not address.is_loopback:
                raise ValueError(f"address_base {base!r} is not loopback: hosts stay on 127.x addresses")

    def _pick_base(self) -> str:
        candidates = [self.address_base] if self.address_base else [f"127.0.{k}." for k in range(10, 255)]
        for base in candidates:
            busy = [f"{base}{i}" for i in range(1, self.n + 1) if not _address_free(f"{base}{i}", self.port)]
            if not busy:
                return base
            if self.address_base:
                raise FleetError(
                    f"port {self.port} is in use on {', '.join(busy)}: another fleet? "
                    f"(python -m deployhooks.testing.fleet down --root DIR), or pick "
                    f"another address_base"
                )
        raise FleetError(f"no 127.0.K. block has port {self.port} free on {self.n} addresses")

    def start(self) -> "Fleet":
        """Lay out and boot every host; return once each one's sshd and monit answer.

        Workers start under monit right after; :meth:`wait_workers` waits for them. On failure
        everything started is stopped and FleetError says which host failed and why.
        """
        if self.hosts and any(_is_alive(h.pid, h.pid_started) for h in self.hosts):
            raise FleetError("this fleet is already running")
        self._refuse_running_root()
        t0 = time.monotonic()
        with _address_lock():
            base = self._pick_base()
            self.hosts = [
                FleetHost(
                    i,
                    f"host{i}",
                    f"{base}{i}",
                    self.root / "hosts" / f"host{i}",
                    port=self.port,
                    user=self.login,
                    home=self.login_home,
                )
                for i in range(1, self.n + 1)
            ]
            self._prepare()
            self.timings["prepare"] = time.monotonic() - t0
            try:
                self._launch()
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
        self.timings["ready"] = time.monotonic() - t0
        return self

    def _refuse_running_root(self) -> None:
        try:
            old = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return
        live = [h["name"] for h in old.get("hosts", []) if _is_alive(h.get("pid"), h.get("pid_started"))]
        if live:
            raise FleetError(
                f"{self.root} already runs a fleet ({', '.join(live)}): "
                f"python -m deployhooks.testing.fleet down --root {self.root}"
            )

    def _prepare(self) -> None:
        """Keys, known_hosts, every host's folder and apps, and the apps' configs."""
        self.root.mkdir(parents=True, exist_ok=True)
        keygens = []
        if not self.client_key.exists():
            keygens.append(_keygen(self.client_key))
        for h in self.hosts:
            shutil.rmtree(h.folder, ignore_errors=True)
            for sub in ("data", "run", "log", "monit/conf.d", "root/.ssh", "home", "ssh"):
                (h.folder / sub).mkdir(parents=True, exist_ok=True)
            keygens.append(_keygen(h.folder / "ssh" / "ssh_host_ed25519_key"))
        for proc in keygens:
            if proc.wait() != 0:
                raise FleetError("ssh-keygen failed")
        client_pub = Path(f"{self.client_key}.pub").read_text()
        bashrc = _login_bashrc()
        known = []
        for h in self.hosts:
            self._write_home(h.folder / "root", client_pub, bashrc)
            if self.login != "root":
                self._write_home(h.folder / "home", client_pub, bashrc, owner=self.login)
            kind, key = (h.folder / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
            where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
            known.append(f"{where} {kind} {key}\n")
            for app in self.apps:
                if app.on(h):
                    self._lay_out(h, app)
        self.known_hosts.write_text("".join(known))
        for app in self.apps:
            self.config_path(app.name).write_text(self._config_text(app))

    @staticmethod
    def _write_home(home: Path, client_pub: str, bashrc: str, owner: str | None = None) -> None:
        """A login's home on one host: the fleet's key in .ssh/authorized_keys, a plain .bashrc and
        .profile; all ``owner``'s when given (sshd reads the keys as the user logging in)."""
        (home / ".ssh").mkdir(parents=True, exist_ok=True)
        (home / ".ssh" / "authorized_keys").write_text(client_pub)
        (home / ".bashrc").write_text(bashrc)
        if os.path.exists("/usr/share/base-files/dot.profile"):
            shutil.copyfile("/usr/share/base-files/dot.profile", home / ".profile")
        if owner is not None:
            home.chmod(0o755)
            (home / ".ssh").chmod(0o700)
            (home / ".ssh" / "authorized_keys").chmod(0o600)
            pw = pwd.getpwnam(owner)
            _chown_tree(home, pw.pw_uid, pw.pw_gid)

    def _lay_out(self, h: FleetHost, app: AppSpec) -> None:
        """Deploy ``app`` on ``h``: tree, configs and monitrc, with the paths the host sees."""
        queues = app.queues_on(h)
        layout = make_app(
            h.folder / "data",
            app.name,
            releases=list(app.releases),
            workers=queues,
            framework_env=app.framework_env,
            redis_url=self.redis_url,
            interval=app.interval,
        )
        for release in layout.releases:
            (release / "config").mkdir(exist_ok=True)
        # make_app links `current` by the machine's path; inside the host that path does not exist.
        tmp = layout.deploy_to / ".current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(f"releases/{layout.releases[-1].name}")
        tmp.replace(layout.current)
        url = urlparse(self.redis_url)
        (layout.config_dir / "resque.yml").write_text(f"{app.framework_env}: {url.hostname}:{url.port}\n")
        h.path(app.pid_dir).mkdir(parents=True, exist_ok=True)
        h.path(app.monitrc_path).write_text(
            render_monitrc(
                app.name,
                app.framework_env,
                app.group,
                len(queues),
                wrapper=wrapper_path(),
                deploy_to=app.deploy_to,
                pid_dir=app.pid_dir,
                stop_action=app.stop,
                grace_time=app.grace_time,
                start_timeout=app.start_timeout,
                user=layout.user,
                worker_command=layout.worker_command,
            )
        )

    def _config_text(self, app: AppSpec) -> str:
        roles = {role: [i for i in numbers if app.on(self.host(i))] for role, numbers in self.roles.items()}
        roles = {role: numbers for role, numbers in roles.items() if numbers}
        first = next((h for h in self.hosts if app.on(h)), self.hosts[0])
        # Quoted: a bare * would be a YAML alias.
        worker_lines = "".join(
            f"    - queues: [{', '.join(json.dumps(x) for x in q.split(','))}]\n" for q in app.queues_on(first)
        )
        per_host = any("{host}" in q for q in app.workers) or bool(app.host_workers)
        note = f"  # queues as on {first.name}; they differ per host\n" if per_host else ""
        return (
            f"# Written by deployhooks.testing.fleet for the hosts under {self.root}.\n"
            f"app: {app.name}\n"
            f"framework_env: {app.framework_env}\n"
            f"deploy_to: {app.deploy_to}\n"
            f"{app.top_extra}"
            f"{self.hosts_yaml(roles)}"
            f"{self.ssh_settings_yaml()}"
            f"resque:\n"
            f"  user: {test_user()}\n"
            f"  worker_command: {json.dumps(list(fake_worker_argv()))}\n"
            f"  stop: {app.stop}\n"
            f"  grace_time: {app.grace_time}\n"
            f"{self._sudo_yaml()}"
            f"{note}"
            f"  workers:\n{worker_lines}"
            f"  monit_command: [{', '.join(MONIT_COMMAND)}]\n"
            f"  monitrc_path: {app.monitrc_path}\n"
            f"  pause_timeout: 10\n"
            f"  start_timeout: {app.start_timeout}\n"
            f"{app.resque_extra}"
        )

    def _sudo_yaml(self) -> str:
        """``resque.sudo: true`` when the login is not root: monit (root's) through ``sudo -n``."""
        return "" if self.login == "root" else "  sudo: true\n"

    def _launch(self) -> None:
        env = {"PATH": HOST_PATH, "LANG": "C.UTF-8", "HOME": "/root"}
        # env --default-signal: a shell's background job leaves INT/QUIT ignored, and that would
        # reach every worker. setpriv --pdeathsig: if we die without stop(), unshare dies, and its
        # --kill-child TERMs the init, which tears its host down.
        prefix = ["env", "--default-signal"]
        if self.die_with_parent:
            prefix = ["setpriv", "--pdeathsig", "KILL", *prefix]
        for h in self.hosts:
            argv = [
                *prefix,
                "unshare",
                "--pid",
                "--mount",
                "--uts",
                "--fork",
                "--mount-proc",
                "--kill-child=SIGTERM",
                sys.executable,
                "-m",
                "deployhooks.testing.hostinit",
                "--folder",
                str(h.folder),
                "--name",
                h.name,
                "--address",
                h.address,
                "--port",
                str(h.port),
                "--login",
                h.user,
                "--ready-timeout",
                str(self.ready_timeout),
            ]
            with open(h.log, "ab") as out:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd="/",
                    start_new_session=True,
                )
            self._launchers[h.index] = proc
            h.launcher_pid = proc.pid
        self.write_state()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout + 5
        pending = list(self.hosts)
        while pending:
            for h in list(pending):
                launcher = self._launchers[h.index]
                if h.pid is None:
                    try:
                        kids = psutil.Process(launcher.pid).children()
                    except psutil.Error:
                        kids = []
                    if kids:
                        h.pid, h.pid_started = kids[0].pid, kids[0].create_time()
                if h.pid is not None and h.pidns is None:
                    h.pidns = _pidns(h.pid)
                if launcher.poll() is not None:
                    raise FleetError(
                        f"{h.name} ({h.address}) did not start (exit {launcher.returncode}):\n{_tail(h.log)}"
                    )
                if h.pidns is not None and (h.folder / "run" / "hostinit.ready").exists():
                    pending.remove(h)
            if pending and time.monotonic() > deadline:
                raise FleetError(
                    f"{', '.join(h.name for h in pending)} not up after {self.ready_timeout:g}s:\n"
                    f"{_tail(pending[0].log)}"
                )
            if pending:
                time.sleep(0.01)
        self.write_state()

    def write_state(self) -> None:
        """Record every pid we started, so ``down`` can end exactly those after a crash."""
        state = {
            "version": 1,
            "root": str(self.root),
            "redis_url": self.redis_url,
            "apps": [a.name for a in self.apps],
            "roles": self.roles,
            "login": self.login,
            "hosts": [h.to_state() for h in self.hosts],
            **self.extra_state,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        tmp.replace(self.state_path)
        self._owns_state = True

    @classmethod
    def from_state(cls, root: Path) -> "Fleet":
        """The fleet recorded in ``root/fleet.json`` (for ``status`` and ``down``); FleetError if none."""
        root = Path(root).absolute()
        try:
            state = json.loads((root / STATE_FILE).read_text())
        except FileNotFoundError:
            raise FleetError(f"no fleet state in {root} ({STATE_FILE} is missing)") from None
        except (OSError, ValueError) as exc:
            raise FleetError(f"cannot read {root / STATE_FILE}: {exc}") from None
        hosts = [FleetHost.from_state(h) for h in state["hosts"]]
        fleet = cls(
            root,
            max(len(hosts), 1),
            redis_url=state.get("redis_url", ""),
            roles=state.get("roles"),
            address_base=None,
            login=state.get("login", "root"),
        )
        fleet.hosts = hosts
        fleet.extra_state = {
            k: v
            for k, v in state.items()
            if k not in ("version", "root", "redis_url", "apps", "roles", "login", "hosts")
        }
        fleet.apps = [AppSpec(name) for name in state.get("apps", [])]
        fleet._owns_state = True
        return fleet

    # --- teardown -------------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """End every host: SIGTERM to its init (which stops monit, sshd and everything else), then
        SIGKILL to what is left after ``timeout`` (killing a namespace's init kills all in it).
        Only pids recorded by this fleet, still running with the recorded start time, are signalled.
        The state file this fleet wrote (or was read from) is removed. Idempotent."""
        live = [h for h in self.hosts if _is_alive(h.pid, h.pid_started)]
        for h in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._host_running(h) for h in self.hosts):
            time.sleep(0.02)
        for h in self.hosts:
            if _is_alive(h.pid, h.pid_started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.pid, signal.SIGKILL)
            if h.index not in self._launchers and _is_unshare(h.launcher_pid):
                # Not our child (``down`` from another process): its parent reaps it.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.launcher_pid, signal.SIGKILL)
        for launcher in self._launchers.values():
            try:
                launcher.wait(5)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
        self._launchers.clear()
        if self._owns_state:
            self.state_path.unlink(missing_ok=True)
            self._owns_state = False

    def _host_running(self, h: FleetHost) -> bool:
        launcher = self._launchers.get(h.index)
        if launcher is not None:
            return launcher.poll() is None
        return _is_alive(h.pid, h.pid_started)

    def __enter__(self) -> "Fleet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- inside the hosts -----------------------------------------------------------------------

    def host_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of a root login on a host (PATH includes this venv's bin)."""
        env = {
            "PATH": f"{os.path.dirname(sys.executable)}:{HOST_PATH}",
            "HOME": "/root",
            "USER": "root",
            "LOGNAME": "root",
            "LANG": "C.UTF-8",
            "SHELL": "/bin/bash",
        }
        env.update(extra or {})
        return env

    def run(
        self,
        host,
        cmd: str | Sequence[str],
        *,
        check: bool = False,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` (a shell string or an argv) inside ``host``'s namespaces as root, from ``/``;
        return the CompletedProcess (text). Signals start at their defaults there.

        Output is captured until every holder of the pipe has exited: a background job started
        here must redirect its output (``setsid cmd >/dev/null 2>&1 &``) or this waits for it."""
        h = self.host(host)
        if not h.pid:
            raise FleetError(f"{h.name} is not running")
        argv = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return subprocess.run(
            ["nsenter", "-t", str(h.pid), "-p", "-m", "-u", "--", "env", "--default-signal", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=self.host_env(env),
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )

    def monit(self, host, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``monit -c /etc/monit/monitrc ARGS`` on ``host``."""
        return self.run(host, [*MONIT_COMMAND, *args], timeout=timeout)

    def connect(self, host, connect_timeout: int = 5):
        """A fabric Connection to ``<login>@<address>`` with the fleet's key; unknown or changed
        host keys are rejected (the fleet's known_hosts only). Use it as a context manager."""
        import paramiko
        from fabric import Config, Connection

        h = self.host(host)
        conn = Connection(
            h.address,
            user=h.user,
            port=h.port,
            connect_timeout=connect_timeout,
            config=Config(overrides={"run": {"in_stream": False}}),
            connect_kwargs={"key_filename": str(self.client_key), "look_for_keys": False, "allow_agent": False},
        )
        conn.client.load_host_keys(str(self.known_hosts))
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return conn

    def workers(self, host, app: str | None = None) -> list[WorkerProcess]:
        """The resque workers on ``host`` as the host itself sees them (its pids, its paths), read
        with the product's ``ps`` adapter; ``app`` keeps that app's only."""
        apps = {a.name: a.deploy_to for a in self.apps}
        rows = parse_ps_output(self.run(host, PS_COMMAND).stdout)
        return [w for w in workers_from(rows, apps) if app is None or w.app == app]

    def processes(self, host=None) -> dict[str, list[psutil.Process]]:
        """The machine's view of each host's processes (machine pids): name -> processes."""
        by_ns = {h.pidns: h for h in self.hosts if h.pidns}
        if host is not None:
            wanted = self.host(host)
            by_ns = {k: v for k, v in by_ns.items() if v is wanted}
        found: dict[str, list[psutil.Process]] = {h.name: [] for h in by_ns.values()}
        for proc in psutil.process_iter():
            h = by_ns.get(_pidns(proc.pid))
            if h is not None:
                found[h.name].append(proc)
        return found

    def memory(self) -> dict[str, dict[str, int]]:
        """Per host: ``rss``, ``pss`` and ``uss`` in bytes, summed over its processes and its
        ``unshare``. RSS counts shared pages once per process; PSS splits them fairly; USS is what
        ending the host gives back."""
        usage = {}
        for name, procs in self.processes().items():
            h = self.host(name)
            if h.launcher_pid and _is_alive(h.launcher_pid):
                procs = [*procs, psutil.Process(h.launcher_pid)]
            total = {"rss": 0, "pss": 0, "uss": 0}
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    info = proc.memory_full_info()
                    for key in total:
                        total[key] += getattr(info, key)
            usage[name] = total
        return usage

    def _worker_scan(self) -> dict[str, list[WorkerProcess]]:
        """Every host's workers in one pass over the machine's process table (machine pids)."""
        apps = {a.name: a.deploy_to for a in self.apps}
        rows: dict[str, list[RawProcess]] = {h.name: [] for h in self.hosts}
        by_ns = {h.pidns: h.name for h in self.hosts if h.pidns}
        for proc in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
            info = proc.info
            title = " ".join(info["cmdline"] or ()).strip()
            if "resque" not in title or info["status"] == psutil.STATUS_ZOMBIE:
                continue
            name = by_ns.get(_pidns(info["pid"]))
            if name is None:
                continue
            try:
                # Read from outside, a host process's cwd is the path its own namespace sees.
                cwd = os.readlink(f"/proc/{info['pid']}/cwd")
            except OSError:
                cwd = None
            rows[name].append(RawProcess(info["pid"], info["ppid"], 0, cwd, normalize_title(title)))
        return {name: workers_from(r, apps) for name, r in rows.items()}

    def wait_workers(self, timeout: float = 30, release: str | None = None) -> float:
        """Wait until, on every host, each app has all its workers idle in ``release`` (default: the
        app's last release); return the seconds waited, or raise FleetError naming what is missing."""
        started = time.monotonic()
        deadline = started + timeout
        while True:
            missing = []
            scan = self._worker_scan()
            for h in self.hosts:
                for app in self.apps:
                    if not app.on(h):
                        continue
                    want = release or app.releases[-1]
                    ok = [w for w in scan[h.name] if w.app == app.name and w.state == "idle" and w.release == want]
                    if len(ok) < len(app.queues_on(h)):
                        missing.append(f"{h.name}/{app.name} {len(ok)}/{len(app.queues_on(h))}")
            if not missing:
                return time.monotonic() - started
            if time.monotonic() > deadline:
                first = self.host(missing[0].split("/")[0])
                raise FleetError(
                    f"workers not idle on their release after {timeout:g}s: {', '.join(missing)}\n"
                    f"{first.name}:/var/log/monit.log:\n{_tail(first.path('/var/log/monit.log'))}"
                )
            time.sleep(0.05)

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
