"""Looking inside a running :mod:`deployhooks.testing.fleet`'s hosts: run a command or monit
there, connect over SSH, list their processes and resque workers, wait for the workers.

:class:`FleetObserving` is a part of :class:`~deployhooks.testing.fleet.Fleet`, which sets what
it reads (``hosts``, ``apps``, ``client_key``, ``known_hosts``, ``host()``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import psutil

from ..facts.processes import PS_COMMAND, RawProcess, WorkerProcess, normalize_title, parse_ps_output, workers_from
from .fleetapp import AppSpec
from .fleethost import HOST_PATH, MONIT_COMMAND, FleetError, FleetHost, _is_alive, _pidns, _tail


class FleetObserving:
    """Commands, processes and workers of the hosts of a :class:`~deployhooks.testing.fleet.Fleet`."""

    # What Fleet sets (its __init__) or defines and this part reads: declared for the type checker.
    hosts: list[FleetHost]
    apps: list[AppSpec]
    if TYPE_CHECKING:

        @property
        def client_key(self) -> Path: ...

        @property
        def known_hosts(self) -> Path: ...

        def host(self, which: int | str | FleetHost) -> FleetHost: ...

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
            ns = _pidns(proc.pid)
            h = by_ns.get(ns) if ns is not None else None
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
            ns = _pidns(info["pid"])
            name = by_ns.get(ns) if ns is not None else None
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
