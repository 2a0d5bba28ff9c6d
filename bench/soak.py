"""A randomized soak of the promise: no job killed, no deploy while a job runs, nothing left
stopped or paused, `current` always a release, exit codes as documented.

    .venv/bin/python bench/soak.py [--rounds 15] [--seed N] [--hosts 3] [--login deploy]
        [--faults none,ctrl-c,concurrent-deploy,sshd-kill,sshd-stall] [--host-kill last|never]
        [--only ROUND] [--keep-logs] [--log-dir DIR]

Not a test (tests/fleet/test_soak_short.py runs a short one). It brings up a private redis and a
fleet of simulated hosts (deployhooks.testing.fleet; app "shop", two workers per host: one on the
shared queue `deploytest`, one on `q_hostN`; grace_time 3 s; reached over SSH as the deploy user
whose sudo runs monit only), then plays rounds. Each round's plan comes from its own generator,
seeded with "seed:round", so a round's choices do not depend on what earlier rounds did:

1. a config variant (on_busy abort|wait, wait_timeout 5|20 s, guard_at, a migration or none);
2. background jobs: SleepJobs of 0.3-8 s (5 and 8 outlast grace_time) and GateJobs that run
   until the soak opens them (during the operation, or only after it), enqueued before or during
   the operation on `deploytest` (any host) or one host's queue;
3. one operation, a real `fab` subprocess from the repository: deploy, rollback,
   resque.restart, resque.stop + resque.start, resque.drain + resque.start;
4. maybe one fault, at a random time or just after a random progress line of the operation:
   Ctrl-C (SIGINT to fab), a second `fab deploy` started alongside, a host's sshd killed
   (listener and sessions; started again after the operation), a host's sshd frozen for 1-8 s,
   or (last round only, `--host-kill last`) a whole host SIGKILLed: the harness cannot bring a
   host back, so that round ends the run;
5. the repairs the toolkit's output names, run and counted: `fab hooks.deploy-failed`, the
   deploy lock's `rm -rf`, a rerun of the operation after Ctrl-C or after a failure after the
   switch. Whatever is left and not named is a violation, then repaired the same way (a new
   release left in releases/ is moved aside by hand) so that later rounds start clean.

While the operation and its repairs run, a poller inside every host checks every ~3 ms that
`current` resolves to a release. The invariants (`Soak.check_*`): every job ran exactly once
to its end and none is in resque:failed; `current` never failed to resolve; the exit code is
one the README allows for the operation and fault, and the hosts show what it claims; what is
left right after the operation is named in the output with its repair; at the end every worker
runs, monitored, on `current`, no guard record or deploy lock is left, and every host is on one
release. It prints a line per round and totals, and exits 1 if any invariant was violated (0
otherwise, 2 on bad options, 3 if the fleet could not come up, 130 on Ctrl-C). Every wait is
bounded (each `fab` call by FAB_TIMEOUT), so a run always ends. The fab logs of a run with a
violation are kept and their folder printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fleet as bench  # noqa: E402
import redis  # noqa: E402
from _fleet import PYTHON, REPO, AppSpec  # noqa: E402

from deployhooks.facts.monit import parse_status  # noqa: E402
from deployhooks.testing.examplerepo import make_repo  # noqa: E402
from deployhooks.testing.fakeresque import FAILED_KEY, FINISHED_KEY, STARTED_KEY, enqueue, open_gate  # noqa: E402
from deployhooks.testing.fleet import Fleet  # noqa: E402
from deployhooks.testing.redisserver import RedisServer  # noqa: E402

APP = "shop"
DEPLOY_TO = f"/data/{APP}"
GROUP = f"{APP}_resque"
GRACE_TIME = 3
# A worker on the shared queue (a job there lands on whichever host polls first) and one on the
# host's own queue, on every host.
SPEC = AppSpec(APP, workers=("deploytest", "q_{host}"), grace_time=GRACE_TIME)
RECORD = f"{DEPLOY_TO}/shared/deployhooks/guard.json"
LOCK = f"{DEPLOY_TO}/shared/deployhooks/deploy.lock"

FAB_TIMEOUT = 240  # seconds for any one fab call: the longest plan needs well under 90
JOB_SETTLE = 60  # seconds for every job of a round to finish once its gates are open
WORKER_SETTLE = 45  # seconds for every worker to run, monitored, on current
GATE_MAX = 120  # a GateJob ends by itself after this, whatever happens to the soak
CONNECT_TIMEOUT = 5  # the fleet's config: ssh.connect_timeout

OPS = {"deploy": 4, "rollback": 2, "restart": 2, "stop-start": 1, "drain": 1}
FAULTS = {"none": 8, "ctrl-c": 4, "concurrent-deploy": 3, "sshd-kill": 3, "sshd-stall": 2}
SLEEP_SECONDS = (0.3, 1.5, 5.0, 8.0)  # 5 and 8 outlast grace_time
# Progress lines a fault may wait for (then 0-0.4 s more), so that faults land inside the steps
# that matter (the guard's stop, the switch, after_symlink's restart) instead of before or
# after a short operation.
MARKERS = {
    "deploy": (
        "==> lock",
        "==> upload",
        "==> guard",
        "paused ",
        "monit stop",
        "==> migrate",
        "==> prepare switch",
        "==> switch current",
        "==> after_symlink",
        "monit restart",
        "==> cleanup",
    ),
    "rollback": (
        "==> read releases",
        "==> guard",
        "paused ",
        "monit stop",
        "==> switch current",
        "==> after_symlink",
        "monit restart",
        "==> move rolled-back",
    ),
    "restart": ("paused ", "monit stop", "monit start", "waiting for"),
    "stop-start": ("paused ", "monit stop", "waiting for"),
    "drain": ("paused ", "waiting for", "monit stop"),
}

RELEASE_RE = re.compile(r"^\d{14}$")


# --- the plan of a round (pure: a generator in, a plan out) ----------------------------------


@dataclass
class JobPlan:
    """One background job: `enqueue_at` None means before the operation (in flight when it
    starts); a gate's `open_at` None means only after the operation."""

    tag: str
    kind: str  # "sleep" | "gate"
    queue: str
    seconds: float = 0.0  # a SleepJob's length
    enqueue_at: float | None = None
    open_at: float | None = None

    def describe(self) -> str:
        what = (
            f"sleep {self.seconds:g}s"
            if self.kind == "sleep"
            else f"gate open@{'after' if self.open_at is None else f'{self.open_at:.1f}s'}"
        )
        when = "pre" if self.enqueue_at is None else f"@{self.enqueue_at:.1f}s"
        return f"{what} on {self.queue} {when}"


@dataclass
class RoundPlan:
    """Everything a round will do, decided before it starts."""

    index: int
    op: str
    fault: str
    fault_at: float = 0.0  # seconds after the op started, or after fault_marker
    fault_marker: str | None = None  # a progress line of the op to wait for first
    fault_host: int = 0
    stall_for: float = 0.0
    on_busy: str = "abort"
    wait_timeout: int = 20
    guard_at: str = "before_migrate"
    migrate: str | None = None
    drain_deadline: int = 15
    jobs: list[JobPlan] = field(default_factory=list)

    def describe(self) -> str:
        extra = f",migrate={self.migrate}" if self.migrate else ""
        op = self.op
        if self.op == "deploy":
            op += f"[{self.on_busy}/{self.wait_timeout}s,{self.guard_at}{extra}]"
        elif self.op == "drain":
            op += f"[deadline {self.drain_deadline}s]"
        else:
            op += f"[{self.on_busy}/{self.wait_timeout}s]"
        fault = self.fault
        when = f"'{self.fault_marker.strip()}'+{self.fault_at:.1f}s" if self.fault_marker else f"{self.fault_at:.1f}s"
        if self.fault in ("sshd-kill", "host-kill"):
            fault += f"(host{self.fault_host}@{when})"
        elif self.fault == "sshd-stall":
            fault += f"(host{self.fault_host}@{when} for {self.stall_for:.1f}s)"
        elif self.fault != "none":
            fault += f"(@{when})"
        return f"{op} fault={fault}"


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), list(weights.values()))[0]


def plan_round(
    seed: int, index: int, hosts: int, *, last: bool, host_kill: bool, faults: dict[str, int] = FAULTS
) -> RoundPlan:
    """The plan of round `index` of run `seed`: the same arguments give the same plan."""
    rng = random.Random(f"{seed}:{index}")
    plan = RoundPlan(index, _weighted(rng, OPS), _weighted(rng, faults))
    if last and host_kill:
        plan.fault = "host-kill"
    plan.on_busy = rng.choice(["abort", "wait"])
    plan.wait_timeout = rng.choice([5, 20])
    plan.guard_at = rng.choice(["before_migrate", "before_symlink"])
    plan.migrate = rng.choice([None, None, "sleep 1", "sleep 3"])
    plan.drain_deadline = rng.choice([4, 15])
    plan.fault_host = rng.randint(1, hosts)
    plan.fault_at = {
        "ctrl-c": rng.uniform(0.3, 6),
        "concurrent-deploy": rng.uniform(0, 3),
        "sshd-kill": rng.uniform(0.3, 6),
        "sshd-stall": rng.uniform(0.3, 5),
        "host-kill": rng.uniform(0.5, 6),
    }.get(plan.fault, 0.0)
    plan.stall_for = rng.uniform(1, 8)
    if plan.fault not in ("none", "concurrent-deploy") and rng.random() < 0.6:
        # Only lines this plan's operation prints: no "==> migrate" without a migration.
        plan.fault_marker = rng.choice([m for m in MARKERS[plan.op] if plan.migrate or m != "==> migrate"])
        plan.fault_at = rng.uniform(0, 0.4)
    if plan.fault == "host-kill" and plan.fault_marker not in (None, "paused ", "monit stop"):
        # A run has one host kill: on a line every guarded operation prints, so it is not wasted.
        plan.fault_marker = rng.choice(["paused ", "monit stop"])
    queues = ["deploytest"] + [f"q_host{i}" for i in range(1, hosts + 1)]
    for j in range(rng.choice([0, 1, 1, 2, 2, 3])):
        job = JobPlan(f"s{seed}-r{index}-j{j}", rng.choice(["sleep", "sleep", "gate"]), rng.choice(queues))
        if job.kind == "sleep":
            job.seconds = rng.choice(SLEEP_SECONDS)
        else:
            job.open_at = rng.choice([rng.uniform(1, 12), None])
        job.enqueue_at = rng.choice([None, rng.uniform(0.2, 6)])
        plan.jobs.append(job)
    return plan


def config_variant(base: str, plan: RoundPlan) -> str:
    """The fleet's config with the round's resque and deploy settings. The fleet writes the
    `resque:` section last and none of these keys, so appending them keeps every key single."""
    text = base.rstrip("\n") + "\n"
    text += f"  on_busy: {plan.on_busy}\n  wait_timeout: {plan.wait_timeout}\n  guard_at: {plan.guard_at}\n"
    text += "keep_releases: 3\n"
    if plan.migrate:
        text += f"deploy:\n  migrate_command: {plan.migrate}\n  migrate_role: util\n"
    return text


def allowed_codes(plan: RoundPlan, has_target: bool) -> dict[int, str]:
    """The exit codes the README allows for this round's operation and fault, with why."""
    codes = {0: "done"}
    if plan.op == "rollback" and not has_target:
        codes = {2: "no release before current on every host"}
    elif plan.jobs:
        codes[1] = "refused: jobs ran"
    if plan.fault == "ctrl-c":
        codes[130] = "Ctrl-C"
    if plan.fault == "concurrent-deploy":
        codes[1] = "refused: the other deploy, or jobs"
        if plan.op not in ("deploy", "rollback"):
            # resque.* take no deploy lock: the deploy may stop or move the workers they wait
            # for, and exit 3 says so honestly. Whether a job died is checked on its own.
            codes[3] = "the deploy changed the workers under it (no lock between them)"
    if plan.fault in ("sshd-kill", "host-kill"):
        codes[3] = "a host failed"
    if plan.fault == "sshd-stall" and plan.stall_for >= CONNECT_TIMEOUT:
        # A connection opened during the stall gives up after ssh.connect_timeout: a host down.
        codes[3] = f"the stall outlasted ssh.connect_timeout ({CONNECT_TIMEOUT}s)"
    return codes


# --- the fleet ---------------------------------------------------------------------------------


class SoakFleet:
    """A temp dir, a private redis and a started fleet logging in as `login`; all three go away
    on exit, on an exception and on Ctrl-C/SIGTERM (bench._fleet.terminate_on_signals)."""

    def __init__(self, n: int, login: str):
        self.n, self.login = n, login
        self.dir = Path(tempfile.mkdtemp(prefix="deployhooks-soak-"))
        self.redis: RedisServer | None = None
        self.fleet: Fleet | None = None

    def __enter__(self) -> "SoakFleet":
        try:
            self.redis = RedisServer().start()
            self.fleet = Fleet(
                self.dir / "fleet",
                self.n,
                redis_url=self.redis.url,
                apps=[SPEC],
                address_base=None,
                ready_timeout=120.0,
                login=self.login,
            )
            self.fleet.start()
            self.fleet.wait_workers(timeout=120)
            bench.monit_settled(self.fleet, APP, timeout=120)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        bench.stop_all(self.fleet, self.redis)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.close()


# --- looking at the hosts (from the machine: psutil, nsenter, the hosts' folders) -------------


def current_of(f: Fleet, h: int) -> str | None:
    """The release `current` points at on host `h`, or None when it is not a release link."""
    try:
        name = os.readlink(f.host(h).path(f"{DEPLOY_TO}/current")).rstrip("/").rsplit("/", 1)[-1]
    except OSError:
        return None
    return name if RELEASE_RE.match(name) else None


def releases_of(f: Fleet, h: int) -> list[str]:
    """The release folders (14-digit names) under releases/ on host `h`, oldest first."""
    try:
        return sorted(n for n in os.listdir(f.host(h).path(f"{DEPLOY_TO}/releases")) if RELEASE_RE.match(n))
    except OSError:
        return []


def rollback_target(f: Fleet, live: list[int]) -> str | None:
    """Where a plain `fab rollback` goes (the release before current, kept on every host), or
    None when it must refuse (exit 2): the soak's own reading of the README's rule."""
    currents = {current_of(f, h) for h in live}
    if len(currents) != 1 or None in currents:
        return None
    cur = currents.pop()
    before = {max((r for r in releases_of(f, h) if r < cur), default=None) for h in live}
    return before.pop() if len(before) == 1 and None not in before else None


def workers_by_host(f: Fleet) -> dict[int, list]:
    """Every host's workers of the app, in one pass over the machine's process table (machine
    pids: compare them only with each other)."""
    scan = bench.worker_scan(f)
    return {h.index: [w for w in scan.get(h.name, []) if w.app == APP] for h in f.hosts}


def monit_services(f: Fleet, h: int) -> dict:
    """monit's view of the app's group on host `h` (no services if monit does not answer)."""
    try:
        return parse_status(f.monit(h, "-B", "status", "-g", GROUP, timeout=20).stdout)
    except subprocess.TimeoutExpired:
        return {}


def worker_problems(f: Fleet, h: int, workers: list) -> list[str]:
    """Why host `h` is not in the promised state: every worker running (idle or busy, not paused,
    not missing), from the release `current` points at, and monitored by monit with that pid."""
    want = len(SPEC.queues_on(f.host(h)))
    cur = current_of(f, h)
    problems = []
    states = Counter(w.state for w in workers)
    if len(workers) != want or set(states) - {"idle", "busy"}:
        problems.append(f"{len(workers)}/{want} workers ({dict(states)})")
    stale = [
        f"{w.pid} on {w.release}{' (deleted)' if w.release_deleted else ''}"
        for w in workers
        if w.release != cur or w.release_deleted
    ]
    if stale:
        problems.append(f"not on current {cur}: {', '.join(stale)}")
    services = monit_services(f, h)
    bad = [
        f"{s.name}: {s.status}/{s.monitoring}"
        for s in services.values()
        if not s.running or s.pending or s.monitoring != "Monitored"
    ]
    if len(services) != want or bad:
        problems.append(f"monit: {len(services)} services {'; '.join(bad)}")
    elif {s.pid for s in services.values()} != {w.pid for w in workers}:
        problems.append("monit's pids are not the workers'")
    return problems


def leftovers(f: Fleet, h: int) -> list[str]:
    """A guard record or a deploy lock left on host `h`."""
    return [
        name
        for name, path in (("guard record", RECORD), ("deploy lock", LOCK))
        if os.path.lexists(f.host(h).path(path))
    ]


def wait_for(check, timeout: float, interval: float = 0.25):
    """Call `check()` until it returns something falsy (no problem left) or `timeout` passes;
    return the last value (the problems still there, or a falsy value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def host_problems(f: Fleet, live: list[int]) -> dict[int, list[str]]:
    """Per live host, what is not as promised (nothing: the host is left out)."""
    # The host's own view (its pids, as monit reports them), read inside it with ps.
    found = {h: worker_problems(f, h, f.workers(h, APP)) + leftovers(f, h) for h in live}
    return {h: p for h, p in found.items() if p}


# --- `current` pollers: a loop inside each host --------------------------------------------

POLLER = r"""
import json, os, sys, threading, time
current, releases = sys.argv[1], sys.argv[2]
try:
    os.nice(-10)  # root: ahead of the hosts' daemons, so a check is due every ~3 ms on 2 busy cores
except OSError:
    pass
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
checks = misses = late = 0
worst = 0.0
first_bad = ""
last = time.monotonic()
while not done.is_set():
    try:
        target = os.path.realpath(current)
        ok = os.path.dirname(target) == releases and os.path.isdir(current + "/")
    except OSError as exc:
        ok, target = False, str(exc)
    now = time.monotonic()
    if checks:
        worst = max(worst, now - last)
        late += now - last > 0.010
    last = now
    checks += 1
    if not ok:
        misses += 1
        first_bad = first_bad or f"{time.time():.3f}: current -> {target}"
    time.sleep(0.002)
print(json.dumps({"checks": checks, "misses": misses, "late": late, "worst_ms": worst * 1000,
                  "first_bad": first_bad}), flush=True)
"""


class Pollers:
    """One poller per live host, inside its namespaces, checking every ~3 ms that `current`
    resolves to a folder under releases/ (a stat through the link, as `[ -d current/ ]`).
    A Python loop sleeping 2 ms between checks costs a few % of a core per host; a shell loop
    of `[ -d ]` would spin a core each."""

    def __init__(self, f: Fleet, live: list[int]):
        self.procs = {}
        for h in live:
            argv = [
                "nsenter",
                "-t",
                str(f.host(h).pid),
                "-p",
                "-m",
                "-u",
                "--",
                "env",
                "--default-signal",
                PYTHON,
                "-c",
                POLLER,
                f"{DEPLOY_TO}/current",
                f"{DEPLOY_TO}/releases",
            ]
            self.procs[h] = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )

    def stop(self) -> dict[int, dict | None]:
        """End every poller (stdin closed) and return its counts; None for a host that died."""
        results = {}
        for h, proc in self.procs.items():
            try:
                proc.stdin.close()
            except OSError:
                pass
            proc.stdin = None  # communicate() would flush the closed pipe
        for h, proc in self.procs.items():
            try:
                out, _ = proc.communicate(timeout=10)
                results[h] = json.loads(out.strip().splitlines()[-1]) if out.strip() else None
            except (subprocess.TimeoutExpired, ValueError, IndexError):
                proc.kill()
                proc.wait()
                results[h] = None
        return results


# --- fab ---------------------------------------------------------------------------------------


class FabRun:
    """`fab ARGS` from the repository as a subprocess, stdout and stderr into one log file."""

    def __init__(self, args: list[str], log: Path):
        self.args, self.log = args, log
        self.started = time.monotonic()
        self._out = open(log, "w")
        self._out.write(f"$ fab {' '.join(args)}\n")
        self._out.flush()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "fabric", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.code: int | None = None
        self.timed_out = False
        self.seconds = 0.0

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = FAB_TIMEOUT) -> int:
        """The exit code as a shell reports it (killed by SIGINT = 130); on timeout the process
        is ended (TERM, then KILL) and `timed_out` set."""
        try:
            self.proc.wait(timeout=max(1.0, timeout - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.seconds = time.monotonic() - self.started
        rc = self.proc.returncode
        self.code = 128 - rc if rc < 0 else rc
        self._out.close()
        return self.code

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")


def fab(args: list[str], log: Path) -> FabRun:
    run = FabRun(args, log)
    run.wait()
    return run


# --- jobs --------------------------------------------------------------------------------------


class JobScheduler(threading.Thread):
    """Enqueues the round's timed jobs and opens its timed gates, relative to the operation's
    start; `finish()` enqueues at once whatever is still due, so every planned job exists."""

    def __init__(self, client: redis.Redis, jobs: list[JobPlan]):
        super().__init__(daemon=True)
        self.client = client
        self.events = sorted(
            [(j.enqueue_at, "enqueue", j) for j in jobs if j.enqueue_at is not None]
            + [(j.open_at, "open", j) for j in jobs if j.open_at is not None],
            key=lambda e: e[0],
        )
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.start_time = time.monotonic()
        self.performed: set[tuple[str, str]] = set()

    def run(self) -> None:
        for at, what, job in self.events:
            if self.done.wait(max(0.0, at - (time.monotonic() - self.start_time))):
                return
            self._do(what, job)

    def _do(self, what: str, job: JobPlan) -> None:
        # Once each: the thread and finish() may both reach the same event.
        with self.lock:
            if (what, job.tag) in self.performed:
                return
            self.performed.add((what, job.tag))
            if what == "enqueue":
                enqueue_job(self.client, job)
            else:
                open_gate(self.client, job.tag)

    def finish(self) -> None:
        self.done.set()
        self.join(5)
        for at, what, job in self.events:
            if what == "enqueue":
                self._do(what, job)


def enqueue_job(client: redis.Redis, job: JobPlan) -> None:
    if job.kind == "sleep":
        enqueue(client, job.queue, "SleepJob", job.seconds, job.tag)
    else:
        enqueue(client, job.queue, "GateJob", job.tag, GATE_MAX)


def tag_counts(client: redis.Redis, key: str) -> Counter:
    return Counter(client.lrange(key, 0, -1))


def unfinished(client: redis.Redis, tags: list[str]) -> list[str]:
    finished = tag_counts(client, FINISHED_KEY)
    return [t for t in tags if not finished[t]]


def in_flight(client: redis.Redis, tags: list[str]) -> list[str]:
    started, finished = tag_counts(client, STARTED_KEY), tag_counts(client, FINISHED_KEY)
    return [t for t in tags if started[t] > finished[t]]


# --- faults ------------------------------------------------------------------------------------


def sshd_pids(f: Fleet, h: int) -> list:
    """Host `h`'s sshd processes (the listener and every session), as psutil processes."""
    procs = f.processes(h).get(f.host(h).name, [])
    out = []
    for p in procs:
        try:
            if p.name() == "sshd":
                out.append(p)
        except Exception:  # noqa: BLE001 - gone meanwhile
            pass
    return out


def restart_sshd(f: Fleet, h: int) -> None:
    """Start host `h`'s sshd again as hostinit does (its own config; it daemonizes, and the host's
    init adopts and reaps it)."""
    config = f.host(h).folder / "ssh" / "sshd_config"
    f.run(h, f"/usr/sbin/sshd -f {config} -E /var/log/sshd.log", check=True, timeout=20)


class Fault(threading.Thread):
    """Does the round's fault `plan.fault_at` seconds after the operation started; `note` says
    what it did (or that the operation had ended first)."""

    def __init__(self, plan: RoundPlan, f: Fleet, op: FabRun, second_args: list[str], logdir: Path):
        super().__init__(daemon=True)
        self.plan, self.f, self.op, self.second_args, self.logdir = plan, f, op, second_args, logdir
        self.note = ""
        self.second: FabRun | None = None
        self.sshd_killed = False
        self.host_killed = False
        self.busy_at_kill: list = []
        self.op_done = threading.Event()

    def run(self) -> None:
        p = self.plan
        if p.fault_marker and not self._marker_seen(p.fault_marker):
            self.note = f"the operation ended before printing {p.fault_marker.strip()!r}: no fault"
            return
        base = time.monotonic() if p.fault_marker else self.op.started
        if self.op_done.wait(max(0.0, p.fault_at - (time.monotonic() - base))) or not self.op.running():
            self.note = "the operation ended before the fault was due: no fault"
            return
        if p.fault == "ctrl-c":
            self.op.proc.send_signal(signal.SIGINT)
        elif p.fault == "concurrent-deploy":
            self.second = FabRun(self.second_args, self.logdir / "second.log")
        elif p.fault == "sshd-kill":
            for proc in sshd_pids(self.f, p.fault_host):
                try:
                    proc.kill()
                except Exception:  # noqa: BLE001 - gone meanwhile
                    pass
            self.sshd_killed = True
        elif p.fault == "sshd-stall":
            frozen = sshd_pids(self.f, p.fault_host)
            for proc in frozen:
                try:
                    proc.suspend()
                except Exception:  # noqa: BLE001
                    pass
            time.sleep(p.stall_for)
            for proc in frozen:
                try:
                    proc.resume()
                except Exception:  # noqa: BLE001
                    pass
        elif p.fault == "host-kill":
            self.busy_at_kill = [w for w in workers_by_host(self.f)[p.fault_host] if w.busy]
            os.kill(self.f.host(p.fault_host).pid, signal.SIGKILL)
            self.host_killed = True

    def _marker_seen(self, marker: str) -> bool:
        """Wait until the op's log has `marker` (True) or the op has ended (False)."""
        while not self.op_done.is_set():
            try:
                if marker in self.op.log.read_text(errors="replace"):
                    return True
            except OSError:
                pass
            time.sleep(0.02)
        return False


# --- one round ---------------------------------------------------------------------------------


@dataclass
class RoundResult:
    plan: RoundPlan
    code: int | None = None
    codes: list[str] = field(default_factory=list)  # every fab call: "name:code"
    recoveries: list[str] = field(default_factory=list)
    violations: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    polls: dict = field(default_factory=dict)
    seconds: float = 0.0
    jobs_done: int = 0
    excused_jobs: int = 0
    silent: dict = field(default_factory=dict)  # host -> what was left and not named
    late_failed: int = 0  # earlier rounds' jobs that resque:failed recorded during this one

    def violate(self, kind: str, detail: str) -> None:
        self.violations.append((kind, detail))


def op_commands(plan: RoundPlan, config: str, repo: Path, target: str | None) -> list[list[str]]:
    """The fab calls of the operation: the first is the one the fault hits."""
    c = ["--config", config]
    if plan.op == "deploy":
        return [["deploy", "--repo", str(repo), *c]]
    if plan.op == "rollback":
        return [["rollback", *c]]
    if plan.op == "restart":
        return [["resque.restart", *c]]
    if plan.op == "stop-start":
        return [["resque.stop", *c], ["resque.start", *c]]
    return [["resque.drain", "--deadline", str(plan.drain_deadline), *c], ["resque.start", *c]]


class Soak:
    """The rounds of one run on one fleet, with their totals."""

    def __init__(self, sf: SoakFleet, seed: int, logdir: Path):
        self.sf, self.f, self.seed, self.logdir = sf, sf.fleet, seed, logdir
        self.client = redis.Redis.from_url(sf.redis.url, decode_responses=True)
        self.repo = make_repo(sf.dir / "repo")
        self.base_config = self.f.config_path(APP).read_text()
        self.live = [h.index for h in self.f.hosts]

    # -- the round's steps

    def run_round(self, plan: RoundPlan) -> RoundResult:
        res = RoundResult(plan)
        started = time.monotonic()
        rdir = self.logdir / f"round{plan.index:03d}"
        rdir.mkdir(parents=True, exist_ok=True)
        config = rdir / "deployhooks.yml"
        config.write_text(config_variant(self.base_config, plan))
        make_repo(self.repo, f"s{self.seed}-r{plan.index}")  # every deploy ships a new commit
        pre = self.snapshot()
        target = rollback_target(self.f, self.live)
        failed_before = self.client.llen(FAILED_KEY)
        self.start_jobs(plan)
        pollers = Pollers(self.f, self.live)
        try:
            cmds = op_commands(plan, str(config), self.repo, target)
            op = FabRun(cmds[0], rdir / "op.log")
            sched = JobScheduler(self.client, plan.jobs)
            sched.start_time = op.started
            sched.start()
            fault = None
            if plan.fault != "none":
                second = ["deploy", "--repo", str(self.repo), "--config", str(config)]
                fault = Fault(plan, self.f, op, second, rdir)
                fault.start()
            res.code = op.wait()
            if fault:
                fault.op_done.set()
            res.codes.append(f"{cmds[0][0]}:{res.code}")
            if op.timed_out:
                res.violate("timeout", f"fab {cmds[0][0]} still running after {FAB_TIMEOUT}s")
            sched.finish()
            if fault:
                fault.join(FAB_TIMEOUT)
                self.after_fault(fault, res)
            self.check_outcome(res, op, pre, target, fault)
            self.check_left(res, op, fault, pre)
            if fault and fault.host_killed:
                # From here on, act on the hosts still up.
                config = self.config_without(config, plan.fault_host, rdir)
                cmds = op_commands(plan, str(config), self.repo, target)
            for extra in cmds[1:]:
                r = fab(extra, rdir / f"{extra[0]}.log")
                res.codes.append(f"{extra[0]}:{r.code}")
                if r.code != 0:
                    res.violate("exit-code", f"fab {extra[0]} after {cmds[0][0]} exited {r.code}")
            self.recover(res, op, plan, config, target, rdir, fault)
        finally:
            res.polls = pollers.stop()
        self.check_current(res)
        self.check_jobs(res, plan, failed_before, fault)
        self.check_hosts(res)
        res.seconds = time.monotonic() - started
        return res

    def snapshot(self) -> dict:
        byh = workers_by_host(self.f)
        return {
            h: {
                "current": current_of(self.f, h),
                "releases": releases_of(self.f, h),
                "pids": sorted(w.pid for w in byh[h]),
            }
            for h in self.live
        }

    def start_jobs(self, plan: RoundPlan) -> None:
        """Enqueue the jobs due before the operation and give them up to 3 s to start, so that
        the operation meets them in flight."""
        pre = [j for j in plan.jobs if j.enqueue_at is None]
        for job in pre:
            enqueue_job(self.client, job)
        if pre:
            wait_for(
                lambda: [t for t in (j.tag for j in pre) if t not in tag_counts(self.client, STARTED_KEY)], 3.0, 0.05
            )

    def after_fault(self, fault: Fault, res: RoundResult) -> None:
        if fault.note:
            res.notes.append(f"fault: {fault.note}")
        if fault.second is not None:
            code = fault.second.wait()
            res.codes.append(f"deploy#2:{code}")
            if code not in (0, 1):
                res.violate("exit-code", f"the concurrent deploy exited {code} (0 or 1 expected)")
            if code == 1 and "holds the lock" not in fault.second.text and "refusing to" not in fault.second.text:
                res.violate("exit-code", "the concurrent deploy exited 1 without naming the lock or a job")
        if fault.sshd_killed:
            restart_sshd(self.f, fault.plan.fault_host)
            res.notes.append(f"sshd of host{fault.plan.fault_host} started again")
        if fault.host_killed:
            self.live.remove(fault.plan.fault_host)

    def check_outcome(self, res: RoundResult, op: FabRun, pre: dict, target: str | None, fault: Fault | None) -> None:
        """The exit code is one the README allows here, and the hosts show what it claims."""
        plan, code, text = res.plan, res.code, op.text
        allowed = allowed_codes(plan, target is not None)
        if code not in allowed:
            res.violate(
                "exit-code",
                f"fab {plan.op} exited {code}; allowed here: "
                + ", ".join(f"{c} ({why})" for c, why in allowed.items())
                + f" -- last lines: {' | '.join(text.strip().splitlines()[-3:])}",
            )
        racing = fault is not None and fault.second is not None and fault.second.code == 0
        currents = {h: current_of(self.f, h) for h in self.live}
        if code == 0:
            if len(set(currents.values())) != 1:
                res.violate("same-release", f"exit 0 but hosts on different releases: {currents}")
            if plan.op == "deploy":
                m = re.search(r"deployed (\d{14}) to", text)
                if not m or set(currents.values()) != {m.group(1)}:
                    res.violate("outcome", f"deploy exited 0 but current is {currents}")
            elif plan.op == "rollback" and not racing and set(currents.values()) != {target}:
                res.violate("outcome", f"rollback exited 0 but current is {currents}, not {target}")
            elif plan.op in ("stop-start", "drain"):
                up = {h: len(ws) for h, ws in workers_by_host(self.f).items() if h in self.live and ws}
                if up:
                    res.violate(
                        "outcome",
                        f"{plan.op} exited 0 but workers still run: {up}"
                        + (" (the deploy alongside started them again)" if racing else ""),
                    )
            elif plan.op == "restart" and plan.fault == "none":
                byh = workers_by_host(self.f)
                kept = {h: sorted(set(pre[h]["pids"]) & {w.pid for w in byh[h]}) for h in self.live}
                kept = {h: p for h, p in kept.items() if p}
                if kept:
                    res.violate("outcome", f"restart exited 0 but old worker pids remain: {kept}")
        elif code == 1:
            if "refusing to" not in text and "holds the lock" not in text:
                res.violate("outcome", "exit 1 without 'refusing to' or the lock holder in the output")
            moved = {h: (pre[h]["current"], currents[h]) for h in self.live if currents[h] != pre[h]["current"]}
            if moved and not racing:
                res.violate("outcome", f"refused (exit 1) but current moved: {moved}")
            if plan.op in ("restart", "stop-start") and plan.fault == "none":
                byh = workers_by_host(self.f)
                gone = {h: sorted(set(pre[h]["pids"]) - {w.pid for w in byh[h]}) for h in self.live}
                gone = {h: p for h, p in gone.items() if p}
                if gone:
                    res.violate("outcome", f"refused (exit 1) but workers were replaced: {gone}")

    def quiesce_jobs(self, plan: RoundPlan) -> None:
        """Open every gate and wait until no job of the round is running or still to start (up
        to 20 s: a queued one may wait for stopped workers): a recovery must not be refused by
        the round's own jobs, and a queued job starts as soon as an abort resumes the workers."""
        for job in plan.jobs:
            if job.kind == "gate":
                open_gate(self.client, job.tag)
        tags = [j.tag for j in plan.jobs]
        wait_for(lambda: in_flight(self.client, tags) or unfinished(self.client, tags), 20, 0.1)

    def check_left(self, res: RoundResult, op: FabRun, fault: Fault | None, pre: dict) -> None:
        """Right after the operation, before anything else runs: every host is clean (workers
        running and monitored on current, no record, no lock, no new release beside current in
        releases/), or what is left is named in the output with its repair. A stop or drain
        that exited 0 leaves the workers stopped by design; only a record or lock counts then."""
        text = self.output(op, fault)
        self.check_stray_releases(res, text, pre)
        by_design = res.plan.op in ("stop-start", "drain") and res.code == 0
        if by_design:
            problems = {h: leftovers(self.f, h) for h in self.live}
            problems = {h: p for h, p in problems.items() if p}
        else:
            problems = wait_for(lambda: host_problems(self.f, self.live), 8 if res.code else 3)
        if not problems:
            return
        named_repair = "fab hooks.deploy-failed" in text
        after_switch = "AFTER the switch" in text and "fab rollback" in text
        named_lock = "rm -rf" in text and "deploy.lock" in text

        def excused(item: str) -> bool:
            return (named_lock and item == "deploy lock") or (item != "deploy lock" and (named_repair or after_switch))

        silent = {h: [i for i in p if not excused(i)] for h, p in problems.items()}
        silent = {h: p for h, p in silent.items() if p}
        if silent:
            res.silent = silent
            res.violate(
                "left-behind",
                f"after exit {res.code}, not named in the output: "
                + "; ".join(f"host{h}: {', '.join(p)}" for h, p in silent.items()),
            )
        named = {h: [i for i in p if excused(i)] for h, p in problems.items()}
        named = {h: p for h, p in named.items() if p}
        if named:
            res.notes.append(
                "left behind, as the output says: " + "; ".join(f"host{h}: {', '.join(p)}" for h, p in named.items())
            )

    def check_stray_releases(self, res: RoundResult, text: str, pre: dict) -> None:
        """README: a deploy stopped before the switch moves its new release to releases_failed/
        on every host; after the switch the message names the hosts. A release that appeared in
        releases/ and is not current must be one of those, or named as not moved."""
        if "AFTER the switch" in text:
            return
        stray = {
            h: sorted(set(releases_of(self.f, h)) - set(pre[h]["releases"]) - {current_of(self.f, h)})
            for h in self.live
        }
        stray = {h: r for h, r in stray.items() if r}
        if not stray:
            return
        where = "; ".join(f"host{h}: releases/{', '.join(r)}" for h, r in stray.items())
        if "new release was moved to releases_failed/" in text:
            res.violate(
                "left-behind",
                f"the summary says the new release was moved to releases_failed/, but it is still in {where}",
            )
        elif "could not move" in text:
            res.notes.append(f"new release left in releases/, as the output says: {where}")
        else:
            res.violate("left-behind", f"new release left in releases/ (not current), not named: {where}")
        # Put aside by hand, as the deploy would have: later rounds' rollbacks and cleanups
        # must not count a release that never went live.
        for h, names in stray.items():
            for name in names:
                self.as_owner(
                    h,
                    f"mkdir -p {DEPLOY_TO}/releases_failed && "
                    f"mv {DEPLOY_TO}/releases/{name} {DEPLOY_TO}/releases_failed/{name}",
                )
                res.recoveries.append(f"mv-release@host{h}")

    def as_owner(self, h: int, command: str) -> None:
        """Run `command` on host `h` as the owner of deploy_to, as the deploy would have: a
        folder root made there would refuse the deploy user later."""
        st = os.stat(self.f.host(h).path(DEPLOY_TO))
        self.f.run(
            h,
            ["setpriv", f"--reuid={st.st_uid}", f"--regid={st.st_gid}", "--clear-groups", "sh", "-c", command],
            check=True,
            timeout=20,
        )

    @staticmethod
    def output(op: FabRun, fault: Fault | None) -> str:
        return op.text + (fault.second.text if fault and fault.second else "")

    def recover(
        self,
        res: RoundResult,
        op: FabRun,
        plan: RoundPlan,
        config: Path,
        target: str | None,
        rdir: Path,
        fault: Fault | None,
    ) -> None:
        """Run the repair the output names (or a rerun after Ctrl-C), and count it: the deploy
        lock's rm -rf, `fab hooks.deploy-failed`, a rerun after Ctrl-C or after a failure after
        the switch. The round's jobs are let finish first, so no repair is refused by them."""
        self.quiesce_jobs(plan)
        text = self.output(op, fault)
        if "rm -rf" in text and "deploy.lock" in text:
            for h in self.live:
                if os.path.lexists(self.f.host(h).path(LOCK)):
                    self.f.run(h, f"rm -rf {LOCK}", timeout=20)
                    res.recoveries.append(f"rm-lock@host{h}")
        if "fab hooks.deploy-failed" in text:
            self.run_recovery(res, ["hooks.deploy-failed", "--config", str(config)], rdir, "deploy-failed")
        elif any(i != "deploy lock" for p in res.silent.values() for i in p):
            # Already a violation; repaired with the README's repair for what a guard leaves, so
            # that the next rounds start clean and do not report it again.
            self.run_recovery(res, ["hooks.deploy-failed", "--config", str(config)], rdir, "deploy-failed(not named)")
        for h, p in res.silent.items():
            if "deploy lock" in p and os.path.lexists(self.f.host(h).path(LOCK)):
                self.f.run(h, f"rm -rf {LOCK}", timeout=20)
                res.recoveries.append(f"rm-lock(not named)@host{h}")
        if res.code == 130 or "AFTER the switch" in text:
            rerun = op_commands(plan, str(config), self.repo, target)
            if plan.op == "rollback" and target:
                rerun[0] += ["--release", target]
            if plan.op == "deploy":
                make_repo(self.repo, f"s{self.seed}-r{plan.index}-again")
            for i, cmd in enumerate(rerun):
                self.run_recovery(res, cmd, rdir, f"rerun-{cmd[0]}" if i == 0 else cmd[0])

    def run_recovery(self, res: RoundResult, args: list[str], rdir: Path, label: str) -> None:
        r = fab(args, rdir / f"recovery{len(res.recoveries)}-{args[0]}.log")
        res.recoveries.append(f"{label}:{r.code}")
        if r.code != 0:
            res.violate(
                "recovery", f"fab {' '.join(args[:1])} exited {r.code}: " + " | ".join(r.text.strip().splitlines()[-3:])
            )

    def config_without(self, config: Path, host: int, rdir: Path) -> Path:
        """The round's config minus a dead host, for the recovery on the hosts still up."""
        target = self.f.host(host).target
        text = config.read_text().replace(f"{target}, ", "").replace(f", {target}", "")
        path = rdir / "deployhooks-live.yml"
        path.write_text(text)
        return path

    # -- the invariants

    def check_current(self, res: RoundResult) -> None:
        """`current` resolved to a release at every check of every live host's poller."""
        for h in self.live:
            p = res.polls.get(h)
            if p is None:
                res.violate("current", f"host{h}: the poller gave no result")
            elif p["misses"]:
                res.violate(
                    "current",
                    f"host{h}: {p['misses']} of {p['checks']} checks found no release (first: {p['first_bad']})",
                )

    def check_jobs(self, res: RoundResult, plan: RoundPlan, failed_before: int, fault: Fault | None) -> None:
        """Every job ran exactly once to its end; none failed. With a host killed, the jobs it
        was running and those queued only for it are excused (they died with it)."""
        tags = [j.tag for j in plan.jobs]
        self.quiesce_jobs(plan)
        dead_queues = set()
        excusable = 0
        if fault and fault.host_killed:
            dead_queues = {f"q_host{plan.fault_host}"}
            excusable = len(fault.busy_at_kill)

        def unfinished():
            done = tag_counts(self.client, FINISHED_KEY)
            return [t for t in tags if not done[t]]

        def waited_for():
            # Jobs queued only for a dead host cannot finish: not waited for (counted below).
            return [t for t in unfinished() if by_tag[t].queue not in dead_queues]

        by_tag = {j.tag: j for j in plan.jobs}
        wait_for(waited_for, JOB_SETTLE if not excusable else 15, 0.2)
        left = unfinished()
        started, finished = tag_counts(self.client, STARTED_KEY), tag_counts(self.client, FINISHED_KEY)
        lost = []
        for t in left:
            if by_tag[t].queue in dead_queues:
                res.excused_jobs += 1
            elif started[t] and excusable:
                excusable -= 1
                res.excused_jobs += 1
            else:
                lost.append(f"{t} ({by_tag[t].describe()}, started {started[t]}x)")
        if lost:
            res.violate("jobs", "not finished: " + ", ".join(lost))
        twice = [t for t in tags if started[t] > 1 or finished[t] > 1]
        if twice:
            res.violate("jobs", f"ran more than once: {twice}")
        res.jobs_done = sum(1 for t in tags if finished[t])
        ours, earlier = [], []
        for entry in map(json.loads, self.client.lrange(FAILED_KEY, failed_before, -1)):
            args = (entry.get("payload") or {}).get("args") or []
            line = f"{entry.get('exception')}: {entry.get('payload')}"
            (ours if any(a in tags for a in args) else earlier).append(line)
        if ours:
            res.violate("jobs", f"{len(ours)} new in resque:failed: " + "; ".join(ours))
        for line in earlier:
            # resque records a job whose worker died only when another worker prunes the dead
            # one (its heartbeat expired, minutes later): evidence for an earlier round's loss.
            res.notes.append(f"resque:failed now records an earlier round's job: {line}")
            res.late_failed += 1

    def check_hosts(self, res: RoundResult) -> None:
        """Every live host: workers running and monitored on current, no record, no lock; all
        hosts on one release."""
        problems = wait_for(lambda: host_problems(self.f, self.live), WORKER_SETTLE, 0.5)
        for h, p in (problems or {}).items():
            kind = "leftovers" if set(p) <= {"guard record", "deploy lock"} else "workers"
            res.violate(kind, f"host{h}: {'; '.join(p)}")
        currents = {f"host{h}": current_of(self.f, h) for h in self.live}
        if len(set(currents.values())) != 1:
            res.violate("same-release", f"hosts end on different releases: {currents}")
        if problems:
            self.reset_hosts(res, list(problems))

    def reset_hosts(self, res: RoundResult, hosts: list[int]) -> None:
        """After a violation the toolkit's own repair did not clear: put the hosts right as root,
        outside the toolkit (monit start, CONT, record and lock removed), so that the next round
        is judged on what it does, not on what this one left. Noted, never counted as a repair."""
        for h in hosts:
            paused = [w.pid for w in self.f.workers(h, APP) if w.state == "paused"]
            script = f"rm -rf {RECORD} {LOCK}; monit -c /etc/monit/monitrc start all -g {GROUP}"
            if paused:
                script += f"; kill -CONT {' '.join(map(str, paused))}"
            self.f.run(h, script, timeout=30)
        left = wait_for(lambda: host_problems(self.f, hosts), WORKER_SETTLE, 0.5)
        res.notes.append(
            f"harness reset of {', '.join(f'host{h}' for h in hosts)} as root"
            + (f"; still wrong: {left}" if left else "")
        )


# --- reporting ---------------------------------------------------------------------------------


def round_line(seed: int, r: RoundResult) -> str:
    p = r.plan
    kinds = Counter(k for k, _ in r.violations)
    checks = []
    for name in (
        "exit-code",
        "outcome",
        "jobs",
        "current",
        "workers",
        "leftovers",
        "left-behind",
        "same-release",
        "recovery",
        "timeout",
    ):
        if kinds[name]:
            checks.append(f"{name} FAIL")
    polls = [v for v in r.polls.values() if v]
    n = sum(v["checks"] for v in polls)
    worst = max((v["worst_ms"] for v in polls), default=0)
    verdict = "ok" if not r.violations else "VIOLATED: " + ", ".join(checks)
    jobs = f"jobs {r.jobs_done}/{len(p.jobs)}" + (f" ({r.excused_jobs} died with the host)" if r.excused_jobs else "")
    rec = f" recovery [{', '.join(r.recoveries)}]" if r.recoveries else ""
    return (
        f"round {p.index:>3} seed {seed} {p.describe()} jobs: {len(p.jobs)} | exit {r.code}"
        f" ({' '.join(r.codes)}){rec} | {jobs}, current {n} checks, worst gap {worst:.0f} ms"
        f" | {verdict} | {r.seconds:.1f}s"
    )


def totals(seed: int, results: list[RoundResult], seconds: float, bringup: float, repro: str) -> list[str]:
    kinds = Counter(k for r in results for k, _ in r.violations)
    polls = [v for r in results for v in r.polls.values() if v]
    lines = [
        f"=== soak seed {seed}: {len(results)} rounds in {seconds:.0f}s "
        f"(fleet up in {bringup:.0f}s, median round {sorted(r.seconds for r in results)[len(results) // 2]:.1f}s)"
        if results
        else f"=== soak seed {seed}: no round ran",
        "ops: " + ", ".join(f"{k} {v}" for k, v in Counter(r.plan.op for r in results).most_common()),
        "faults: "
        + ", ".join(f"{k} {v}" for k, v in Counter(r.plan.fault for r in results).most_common())
        + f" ({sum(1 for r in results if any('no fault' in n for n in r.notes))} did not land: "
        f"the operation had ended first)",
        "exit codes: "
        + ", ".join(
            f"{k}: {v}"
            for k, v in sorted(Counter(r.code for r in results).items(), key=lambda kv: (kv[0] is None, kv[0] or 0))
        ),
        f"recoveries: {sum(len(r.recoveries) for r in results)} "
        f"({', '.join(f'{k} {v}' for k, v in Counter(x.split(':')[0].split('@')[0] for r in results for x in r.recoveries).items()) or 'none'})",
        f"jobs: {sum(len(r.plan.jobs) for r in results)} planned, {sum(r.jobs_done for r in results)} finished, "
        f"{sum(r.excused_jobs for r in results)} died with a killed host; "
        f"{sum(r.late_failed for r in results)} recorded in resque:failed rounds later (dead-worker pruning)",
        f"current: {sum(v['checks'] for v in polls)} checks, {sum(v['misses'] for v in polls)} without a release, "
        f"{sum(v['late'] for v in polls)} gaps over 10 ms (worst {max((v['worst_ms'] for v in polls), default=0):.0f} ms)",
        f"violations: {sum(kinds.values())}"
        + (" (" + ", ".join(f"{k} {v}" for k, v in kinds.items()) + ")" if kinds else ""),
    ]
    bad = [r for r in results if r.violations]
    for r in bad:
        lines.append(
            f"  round {r.plan.index} (reproduce: {repro} --rounds {r.plan.index}; "
            f"its plan alone on a fresh fleet: --only {r.plan.index}):"
        )
        lines += [f"    {k}: {d}" for k, d in r.violations]
    return lines


# --- main --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=None, help="default: random, printed")
    ap.add_argument("--hosts", type=int, default=3)
    ap.add_argument("--login", default="deploy", help="the hosts' SSH login (deploy: sudo for monit only)")
    ap.add_argument(
        "--host-kill",
        choices=["last", "never"],
        default="last",
        help="SIGKILL a host in the last round (the harness cannot bring it back)",
    )
    ap.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"the faults to draw from, comma-separated (default all: {','.join(FAULTS)})",
    )
    ap.add_argument(
        "--only", type=int, default=None, metavar="ROUND", help="play only this round's plan, on a fresh fleet"
    )
    ap.add_argument("--keep-logs", action="store_true", help="keep every fab log, not only on violations")
    ap.add_argument("--log-dir", type=Path, default=None)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 100000)
    faults = {name: FAULTS[name] for name in args.faults.split(",") if name in FAULTS}
    if args.rounds < 1 or not 2 <= args.hosts <= 20 or not faults or len(faults) != len(args.faults.split(",")):
        print(f"--rounds must be >= 1, --hosts 2..20, --faults some of {','.join(FAULTS)}", file=sys.stderr)
        return 2
    bench.terminate_on_signals()
    logdir = args.log_dir or Path(tempfile.mkdtemp(prefix=f"deployhooks-soak-logs-{seed}-"))
    indexes = [args.only] if args.only else list(range(1, args.rounds + 1))
    last = indexes[-1] if not args.only else args.rounds
    print(
        f"soak: seed {seed}, rounds {indexes[0]}..{indexes[-1]}, {args.hosts} hosts, login {args.login}, "
        f"faults {','.join(faults)}, host kill: {args.host_kill}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {bench.machine()}",
        flush=True,
    )
    results: list[RoundResult] = []
    started = time.monotonic()
    bringup = 0.0
    try:
        with SoakFleet(args.hosts, args.login) as sf:
            bringup = time.monotonic() - started
            soak = Soak(sf, seed, logdir)
            for i in indexes:
                plan = plan_round(
                    seed, i, args.hosts, last=i == last, host_kill=args.host_kill == "last", faults=faults
                )
                r = soak.run_round(plan)
                results.append(r)
                print(round_line(seed, r), flush=True)
                for kind, detail in r.violations:
                    print(f"    {kind}: {detail}", flush=True)
                for note in r.notes:
                    print(f"    note: {note}", flush=True)
                if r.plan.fault == "host-kill":
                    break
    except KeyboardInterrupt:
        print("\ninterrupted: fleet and redis stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a fleet that did not come up; all torn down
        print(f"\nsoak failed: {type(exc).__name__}: {exc} (fleet and redis stopped)", file=sys.stderr)
        return 3
    repro = (
        f".venv/bin/python bench/soak.py --seed {seed} --hosts {args.hosts}"
        + (f" --login {args.login}" if args.login != "deploy" else "")
        + (f" --faults {','.join(faults)}" if list(faults) != list(FAULTS) else "")
        + (" --host-kill never" if args.host_kill == "never" else "")
    )
    print("\n".join(totals(seed, results, time.monotonic() - started, bringup, repro)))
    violated = any(r.violations for r in results)
    if violated or args.keep_logs:
        print(f"fab logs: {logdir}")
    else:
        shutil.rmtree(logdir, ignore_errors=True)
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if violated else 0


if __name__ == "__main__":
    sys.exit(main())
