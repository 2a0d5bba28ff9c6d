"""The folder of a :mod:`deployhooks.testing.fleet` on the machine, laid out before any host boots.

Keys (the client's, every host's) and ``known_hosts``; each host's folder (``data``, ``run``,
``log``, ``monit/conf.d``, ``root``, ``home``, ``ssh``) with its login's home and the apps
deployed in it; the workstation's config of each app. See the fleet's module docstring for the
layout under ``root``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from ..resque.monitrc import render_monitrc
from .apphost import wrapper_path
from .applayout import make_app
from .fleetapp import AppSpec, config_text
from .fleethost import FleetError, FleetHost

if TYPE_CHECKING:
    from .fleet import Fleet


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


def _login_bashrc() -> str:
    """A plain Debian .bashrc for a host's login (root, or ``login``), with this venv on PATH."""
    try:
        base = Path("/usr/share/base-files/dot.bashrc").read_text()
    except OSError:
        base = "# ~/.bashrc: executed by bash(1) for non-login shells.\n"
    venv_bin = os.path.dirname(sys.executable)
    # The toolkit is installed on the host as on a real one: deployhooks, deployhooks-resque.
    return base + f'\nexport PATH="{venv_bin}:$PATH"\n'


def prepare(fleet: "Fleet") -> None:
    """Keys, known_hosts, every host's folder and apps, and the apps' configs."""
    fleet.root.mkdir(parents=True, exist_ok=True)
    keygens = []
    if not fleet.client_key.exists():
        keygens.append(_keygen(fleet.client_key))
    for h in fleet.hosts:
        shutil.rmtree(h.folder, ignore_errors=True)
        for sub in ("data", "run", "log", "monit/conf.d", "root/.ssh", "home", "ssh"):
            (h.folder / sub).mkdir(parents=True, exist_ok=True)
        keygens.append(_keygen(h.folder / "ssh" / "ssh_host_ed25519_key"))
    for proc in keygens:
        if proc.wait() != 0:
            raise FleetError("ssh-keygen failed")
    client_pub = Path(f"{fleet.client_key}.pub").read_text()
    bashrc = _login_bashrc()
    known = []
    for h in fleet.hosts:
        _write_home(h.folder / "root", client_pub, bashrc)
        if fleet.login != "root":
            _write_home(h.folder / "home", client_pub, bashrc, owner=fleet.login)
        kind, key = (h.folder / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        where = h.address if h.port == 22 else f"[{h.address}]:{h.port}"
        known.append(f"{where} {kind} {key}\n")
        for app in fleet.apps:
            if app.on(h):
                lay_out(h, app, fleet.redis_url)
    fleet.known_hosts.write_text("".join(known))
    for app in fleet.apps:
        fleet.config_path(app.name).write_text(config_text(fleet, app))


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


def lay_out(h: FleetHost, app: AppSpec, redis_url: str) -> None:
    """Deploy ``app`` on ``h``: tree, configs and monitrc, with the paths the host sees."""
    queues = app.queues_on(h)
    layout = make_app(
        h.folder / "data",
        app.name,
        releases=list(app.releases),
        workers=queues,
        framework_env=app.framework_env,
        redis_url=redis_url,
        interval=app.interval,
    )
    for release in layout.releases:
        (release / "config").mkdir(exist_ok=True)
    # make_app links `current` by the machine's path; inside the host that path does not exist.
    tmp = layout.deploy_to / ".current.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(f"releases/{layout.releases[-1].name}")
    tmp.replace(layout.current)
    url = urlparse(redis_url)
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
