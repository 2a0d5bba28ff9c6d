"""A :mod:`deployhooks.testing.fleet`'s lifecycle: pick free addresses, boot the hosts, wait
until each answers, record every pid in the state file, and end exactly those.

:class:`FleetLifecycle` is a part of :class:`~deployhooks.testing.fleet.Fleet`, which sets what
it reads (``root``, ``n``, ``port``, ``address_base``, ``hosts``, ``apps``, ``login``, ...).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, cast

import psutil

from .fleetapp import AppSpec
from .fleetfolder import prepare
from .fleethost import HOST_PATH, FleetError, FleetHost, _is_alive, _is_unshare, _pidns, _tail

if TYPE_CHECKING:
    from .fleet import Fleet

STATE_FILE = "fleet.json"
DEFAULT_ADDRESS_BASE = "127.0.10."
# An abstract unix socket: held while a fleet picks addresses and binds them, released by the
# kernel when its holder dies, and it leaves no file behind.
ADDRESS_LOCK = b"\0deployhooks.testing.fleet.addresses"
STOP_TIMEOUT = 10.0


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


class FleetLifecycle:
    """Bring-up, state file and teardown of a :class:`~deployhooks.testing.fleet.Fleet`."""

    # What Fleet sets (its __init__) or defines and this part reads: declared for the type checker.
    root: Path
    n: int
    redis_url: str
    apps: list[AppSpec]
    address_base: str | None
    roles: dict[str, list[int]]
    port: int
    login: str
    login_home: str | None
    die_with_parent: bool
    ready_timeout: float
    hosts: list[FleetHost]
    extra_state: dict
    _launchers: dict[int, subprocess.Popen]
    _owns_state: bool
    timings: dict[str, float]
    if TYPE_CHECKING:

        @property
        def state_path(self) -> Path: ...

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
        fleet = cast("Fleet", self)  # this class exists only as a part of Fleet
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
            prepare(fleet)
            self.timings["prepare"] = time.monotonic() - t0
            try:
                self._launch()
                self._wait_ready()
            except BaseException:
                self.stop()
                raise
        self.timings["ready"] = time.monotonic() - t0
        return fleet

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
        make = cast("type[Fleet]", cls)  # this class exists only as a part of Fleet: cls is Fleet
        fleet = make(
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
        live = [h.pid for h in self.hosts if h.pid is not None and _is_alive(h.pid, h.pid_started)]
        for pid in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(self._host_running(h) for h in self.hosts):
            time.sleep(0.02)
        for h in self.hosts:
            if h.pid is not None and _is_alive(h.pid, h.pid_started):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(h.pid, signal.SIGKILL)
            if h.index not in self._launchers and h.launcher_pid is not None and _is_unshare(h.launcher_pid):
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
