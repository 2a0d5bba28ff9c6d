"""One simulated host of a :mod:`deployhooks.testing.fleet`, as the machine sees it.

:class:`FleetHost` is a host's description (name, address, folder, login) and the pids recorded
for it in the state file; the pid checks here tell a live host from a gone one, or from a
reused pid, so that only what the fleet started is ever signalled.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MONIT_COMMAND = ("monit", "-c", "/etc/monit/monitrc")

# A host's inside path -> its folder's subdirectory (see hostsetup.BINDS); /var/run is /run on Debian.
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


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
