"""Shared pieces of the benchmarks: a private redis + fleet that always goes away, timing, sshd
connection counts, and the baselines' command lines.

Not a test helper: nothing here imports ``tests``. Every process a benchmark starts is either a
child it waits for (fab, parallel-ssh, the baseline scripts) or belongs to the fleet and its redis,
which ``BenchFleet`` stops on exit, on an exception, on Ctrl-C and on SIGTERM/SIGHUP.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from deployhooks.testing.examplerepo import make_repo  # noqa: F401  (used by deploy.py)
from deployhooks.testing.fleet import AppSpec, Fleet  # noqa: E402
from deployhooks.testing.redisserver import RedisServer  # noqa: E402

PYTHON = sys.executable
PS_ARGS = "ps axww -o pid=,ppid=,rss=,stat=,args="

# The bare-Fabric baselines' set-up, shared by their scripts: a ThreadingGroup with the fleet's
# key, and the known_hosts and RejectPolicy deployhooks.remote.fleet.connect() checks, loaded the way a
# plain Fabric user does (per connection). Each script appends what it does with `group`.
GROUP_PRELUDE = r"""
import sys
import paramiko
from fabric import Config, ThreadingGroup


def group_of(key, known_hosts, hosts):
    group = ThreadingGroup(*hosts, config=Config(overrides={"run": {"in_stream": False}}),
                           connect_timeout=5, connect_kwargs={"key_filename": key})
    for conn in group:
        conn.client.load_system_host_keys()
        conn.client.load_host_keys(known_hosts)
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return group
"""


# --- signals ------------------------------------------------------------------------------------


def stop_all(fleet, redis_server) -> None:
    """Stop a fleet and its redis (either may be None). Each stop is idempotent; a Ctrl-C
    during teardown must not skip the rest."""
    for stop in (lambda: fleet and fleet.stop(), lambda: redis_server and redis_server.stop()):
        for _ in range(3):
            try:
                stop()
                break
            except KeyboardInterrupt:
                continue


class _Terminated(KeyboardInterrupt):
    """SIGTERM/SIGHUP, raised as an interrupt so every ``finally`` runs."""


def terminate_on_signals() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C (KeyboardInterrupt): teardown code runs."""

    def handler(signum, _frame):
        raise _Terminated(f"signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


# --- the fleet ------------------------------------------------------------------------------------


class BenchFleet:
    """A temp dir, a private redis and a started fleet; ``with BenchFleet(...) as bf`` tears all
    three down on the way out, whatever happened (the fleet's hosts also die with this process
    if it is SIGKILLed: Fleet's die_with_parent)."""

    def __init__(
        self, n: int, apps: Sequence[AppSpec], *, workdir: Path | None = None, keep: bool = False, label: str = "fleet"
    ):
        self.n, self.apps, self.keep, self.label = n, list(apps), keep, label
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="deployhooks-bench-"))
        self.redis: RedisServer | None = None
        self.fleet: Fleet | None = None
        self.bringup_seconds = 0.0

    def __enter__(self) -> "BenchFleet":
        started = time.monotonic()
        try:
            self.redis = RedisServer().start()
            # address_base=None: the first free 127.0.K. block, so a test run's fleet elsewhere on
            # this machine does not collide with ours.
            self.fleet = Fleet(
                self.dir / self.label,
                self.n,
                redis_url=self.redis.url,
                apps=self.apps,
                address_base=None,
                ready_timeout=120.0,
            )
            self.fleet.start()
            if any(a.workers for a in self.apps):
                self.fleet.wait_workers(timeout=180)
                monit_settled(self.fleet, timeout=120)
        except BaseException:
            self.close()
            raise
        self.bringup_seconds = time.monotonic() - started
        return self

    def close(self) -> None:
        stop_all(self.fleet, self.redis)
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.close()

    # conveniences
    @property
    def config(self) -> str:
        return str(self.fleet.config_path(self.apps[0].name))

    def hosts_file(self) -> Path:
        """A parallel-ssh hosts file: one ``address`` per line (user and key come from options)."""
        path = self.dir / f"{self.label}.hosts"
        path.write_text("".join(f"{h.address}\n" for h in self.fleet.hosts))
        return path

    def ssh_opts(self) -> str:
        return pssh_ssh_opts(self.fleet)


def pssh_ssh_opts(fleet: Fleet) -> str:
    """OpenSSH options equivalent to deployhooks' ssh settings: the fleet's key only, its
    known_hosts only, strict host keys, never a prompt."""
    return (
        f"-i {fleet.client_key} -o IdentitiesOnly=yes -o UserKnownHostsFile={fleet.known_hosts} "
        f"-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes "
        f"-o ConnectTimeout=5"
    )


def monit_settled(fleet: Fleet, app: str = "shop", timeout: float = 60) -> None:
    """Wait until monit on every host reports each of ``app``'s services OK with a pid."""
    from deployhooks.facts.monit import parse_status

    deadline = time.monotonic() + timeout
    pending = list(fleet.hosts)
    while pending:
        for h in list(pending):
            services = parse_status(fleet.monit(h, "-B", "status", "-g", f"{app}_resque").stdout)
            if services and all(s.running and not s.pending for s in services.values()):
                pending.remove(h)
        if pending and time.monotonic() > deadline:
            raise RuntimeError(f"monit not settled after {timeout}s on {', '.join(h.name for h in pending)}")
        if pending:
            time.sleep(0.2)


def monit_everywhere(fleet: Fleet, verb: str, group: str = "shop_resque") -> tuple[dict, dict, float]:
    """``monit VERB all -g GROUP`` on every host at once, through nsenter (no SSH), after noting
    what came before. Returns (machine pids of each host's workers, monit's pids of each host's
    services -- each host's own namespace --, perf_counter when the actions were sent)."""
    from deployhooks.facts.monit import parse_status

    old = {h: {w.pid for w in ws} for h, ws in worker_scan(fleet).items()}
    old_ns = dict(
        zip(
            (h.name for h in fleet.hosts),
            in_threads(
                lambda h: {s.pid for s in parse_status(fleet.monit(h, "-B", "status", "-g", group).stdout).values()},
                fleet.hosts,
            ),
        )
    )
    started = time.perf_counter()
    in_threads(lambda h: fleet.monit(h, verb, "all", "-g", group), fleet.hosts)
    return old, old_ns, started


def worker_scan(fleet: Fleet):
    """Every host's workers from the machine's process table (no SSH): name -> [WorkerProcess]."""
    return fleet._worker_scan()


# --- sshd connection counts ---------------------------------------------------------------------

ACCEPTED = "Accepted publickey for "


def accepted(fleet: Fleet) -> dict[str, int]:
    """Per host, the SSH logins its sshd has logged so far (``Accepted publickey`` lines: sshd's
    default LogLevel INFO logs one per authenticated connection; hostinit sends sshd's stderr,
    ``sshd -D -e``, to the host's /var/log/sshd.log)."""
    counts = {}
    for h in fleet.hosts:
        try:
            text = h.path("/var/log/sshd.log").read_text(errors="replace")
        except OSError:
            text = ""
        counts[h.name] = text.count(ACCEPTED)
    return counts


def diff_counts(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def fmt_counts(per_host: dict[str, int]) -> str:
    """``1 on every host (20)`` or ``min 1 / median 1 / max 3 over 20 hosts (host4: 3, ...)``."""
    values = list(per_host.values())
    if not values:
        return "no hosts"
    if min(values) == max(values):
        return f"{values[0]} on every host ({len(values)} hosts)"
    odd = sorted(per_host.items(), key=lambda kv: -kv[1])[:3]
    return (
        f"min {min(values)} / median {statistics.median(values):g} / max {max(values)} over "
        f"{len(values)} hosts (most: {', '.join(f'{k}={v}' for k, v in odd)})"
    )


# --- timing -------------------------------------------------------------------------------------


class Timed:
    __slots__ = ("seconds", "proc")

    def __init__(self, seconds: float, proc: subprocess.CompletedProcess):
        self.seconds, self.proc = seconds, proc

    @property
    def ok(self) -> bool:
        return self.proc.returncode == 0


def run_timed(argv: Sequence[str], *, timeout: float = 300, cwd: Path | str = REPO, env: dict | None = None) -> Timed:
    """Run ``argv`` and return its wall time (fork to exit) and CompletedProcess (text)."""
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, env=env
    )
    return Timed(time.perf_counter() - started, proc)


def fab(*args: str, timeout: float = 300) -> Timed:
    """``fab ARGS`` from the repository root (its fabfile), as the tests run it."""
    return run_timed([PYTHON, "-m", "fabric", *args], timeout=timeout)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_s(value: float | None, width: int = 7) -> str:
    return f"{'n/a':>{width}}" if value is None else f"{value:>{width}.3f}"


def fail_text(t: Timed, lines: int = 6) -> str:
    text = (t.proc.stderr.strip() or t.proc.stdout.strip()).splitlines()
    return f"exit {t.proc.returncode}: " + " | ".join(text[-lines:])


# --- a git repo of the example app ------------------------------------------------------------------

# --- parallel work in this process ----------------------------------------------------------------


def in_threads(fn: Callable, items: Sequence) -> list:
    """``fn(item)`` for every item at once, in threads; results in order, exceptions re-raised."""
    results: list = [None] * len(items)
    errors: list = []

    def one(i, item):
        try:
            results[i] = fn(item)
        except BaseException as exc:  # noqa: BLE001 - handed back to the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i, x), daemon=True) for i, x in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# --- the machine ----------------------------------------------------------------------------------


def machine() -> str:
    """One line: cores, CPU model, memory, load average, interpreter."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = float("nan")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} cores ({model or platform.machine()}), {mem_gb:.0f} GiB RAM, "
        f"load average {load}, Python {platform.python_version()}"
    )
