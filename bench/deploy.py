"""What `fab deploy` costs beyond the waits it cannot avoid.

    .venv/bin/python bench/deploy.py [--hosts 20] [--deploys 3]

Brings up a private redis and a fleet of simulated hosts (app "shop", one resque worker each,
``deploy.migrate_command: sleep 1`` on the first host of role util) in a temp dir, builds a git
repo of examples/shop, and runs ``--deploys`` deploys, each of a new commit (a new release):

  deploy         fab deploy --repo R --config CFG  (cwd: the repo): wall time, the step table it
                 prints ("step seconds hosts"), SSH logins per host (from the hosts' sshd logs)

After each deploy, in the same run, the baselines for the waits a deploy cannot avoid:

  upload         the same archive (git archive --format=tar.gz HEAD, as the deploy builds it) copied
                 once to every host in parallel, as a whole command (start, connect, copy):
                 parallel-scp (OpenSSH default key exchange, and pinned to paramiko's
                 curve25519-sha256@libssh.org) and a fabric ThreadingGroup.put script; the fastest
                 one is the upload baseline
  migrate        1.0 s: the migration is `sleep 1` on one host
  restart        direct, no SSH: `monit restart all -g shop_resque` on every host at once (nsenter),
                 then wait until every host's worker is a new process idle on the current release
                 (process table) AND monit reports it running, not pending (what after_symlink waits
                 for); also `fab resque.restart` for reference

overhead = deploy wall - (upload + migrate + restart), printed per deploy and as medians.
Everything it started is gone when it exits, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fleet as bench  # noqa: E402
from _fleet import GROUP_PRELUDE, PYTHON, AppSpec, BenchFleet, fmt_s  # noqa: E402

GROUP = "shop_resque"
MIGRATE_SECONDS = 1.0
PARAMIKO_KEX = "curve25519-sha256@libssh.org"
REMOTE_ARCHIVE = "/root/bench-upload.tar.gz"

PUT_SCRIPT = (
    GROUP_PRELUDE
    + r"""
key, known_hosts, local, remote, hosts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
group = group_of(key, known_hosts, hosts)
try:
    results = group.put(local, remote=remote)
finally:
    group.close()
sys.stdout.write(f"put to {len(results.succeeded)} hosts\n")
"""
)

# --what-if-nodelay: `fab` with TCP_NODELAY on paramiko's sockets. paramiko leaves Nagle on, so a
# small request on an open connection can wait for the peer's delayed ACK (~40 ms on Linux) before
# it leaves; this measures what setting it would save. Patched here, in the benchmark's own
# process; the product is not changed.
NODELAY_FAB = r"""
import socket, sys
import paramiko.transport as _transport
_init = _transport.Transport.__init__
def _init_nodelay(self, sock, *args, **kwargs):
    _init(self, sock, *args, **kwargs)
    try:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass
_transport.Transport.__init__ = _init_nodelay
from fabric.main import program
sys.argv = ["fab", *sys.argv[1:]]
program.run()
"""

STEP_LINE = re.compile(r"^(?P<name>\S.*?)\s+(?P<sec>\d+\.\d\d)\s+(?P<ok>\d+)/(?P<total>\d+) ok\s*$")


def parse_steps(stdout: str) -> list[tuple[str, float, str]]:
    """The deploy's summary table: [(step, seconds, 'ok/total')] after its 'step seconds hosts' header."""
    lines = stdout.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.split() == ["step", "seconds", "hosts"])
    except StopIteration:
        return []
    steps = []
    for line in lines[start + 1 :]:
        m = STEP_LINE.match(line)
        if not m:
            break
        steps.append((m["name"], float(m["sec"]), f"{m['ok']}/{m['total']}"))
    return steps


def current_release(bf: BenchFleet, host=1) -> str:
    return bf.fleet.run(host, "readlink /data/shop/current").stdout.strip().rsplit("/", 1)[-1]


def monit_direct(bf: BenchFleet, verb: str, release: str, timeout: float = 120) -> tuple[float, float]:
    """``monit VERB all -g GROUP`` (restart, stop or start) on every host at once, no SSH, then
    wait. Returns (seconds until the process table shows the outcome on every host, seconds until
    monit agrees on every host too), as deployhooks.guard.policy.start_settled / stop_settled ask:

    restart, start: every service's worker is a new process, idle, on ``release``; monit reports
                    each service running with that pid and nothing pending;
    stop:           none of the old workers is left; monit reports every service Not monitored,
                    nothing pending.

    The process table is read from outside (psutil, machine pids, one scan for all hosts); monit
    is asked inside each host (its pids are the host's own), every 0.25 s like the product."""
    from deployhooks.facts.monit import parse_status

    f = bf.fleet
    want = {h.name: len(bf.apps[0].queues_on(h)) for h in f.hosts}
    old, old_ns, started = bench.monit_everywhere(f, verb, GROUP)
    deadline = started + timeout
    done: set[str] = set()
    while True:
        scan = bench.worker_scan(f)
        for h in f.hosts:
            mine = [w for w in scan[h.name] if w.app == "shop"]
            if verb == "stop":
                if not any(w.pid in old[h.name] for w in mine):
                    done.add(h.name)
            elif (
                len([w for w in mine if w.state == "idle" and w.release == release and w.pid not in old[h.name]])
                >= want[h.name]
            ):
                done.add(h.name)
        if len(done) == len(f.hosts):
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(
                f"monit {verb}: process table not settled after {timeout}s on "
                f"{', '.join(h.name for h in f.hosts if h.name not in done)}"
            )
        time.sleep(0.05)
    table_done = time.perf_counter() - started

    def monit_agrees(h) -> None:
        while True:
            services = parse_status(f.monit(h, "-B", "status", "-g", GROUP).stdout)
            if verb == "stop":
                if services and all(s.stopped and not s.pending for s in services.values()):
                    return
            elif services and all(
                s.running and not s.pending and s.pid not in old_ns[h.name] for s in services.values()
            ):
                live = {w.pid for w in f.workers(h, "shop") if w.release == release}
                if all(s.pid in live for s in services.values()):
                    return
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{h.name}: monit did not report the {verb} within {timeout}s")
            time.sleep(0.05)  # finer than the product's poll (deployhooks.guard.workers.POLL, 0.1 s)

    bench.in_threads(monit_agrees, f.hosts)
    return table_done, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=20, help="fleet size (default 20)")
    parser.add_argument("--deploys", type=int, default=3, help="deploys, each of a new release (default 3)")
    parser.add_argument(
        "--no-fab-restart", action="store_true", help="skip the `fab resque.restart` reference measurement"
    )
    parser.add_argument(
        "--what-if-nodelay",
        action="store_true",
        help="also run one deploy per round through fab with TCP_NODELAY set on paramiko's "
        "sockets (patched in the benchmark's subprocess; adds ~15 s per round)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (hosts' logs) afterwards")
    parser.add_argument(
        "--downtime",
        action="store_true",
        help="instead: queue downtime per shape (guard_at before_migrate / before_symlink, migration "
        "1 s / 10 s, rolling halves) against a bare monit restart (bench/_downtime.py)",
    )
    parser.add_argument("--workers", type=int, default=1, help="--downtime: workers per host (default 1)")
    parser.add_argument("--only", metavar="TEXT", help="--downtime: only the shapes whose label contains TEXT")
    args = parser.parse_args(argv)
    if args.hosts < 1 or args.deploys < 1 or args.workers < 1:
        parser.error("--hosts, --deploys and --workers must be positive")
    bench.terminate_on_signals()
    started = time.monotonic()
    print(f"bench/deploy.py: {bench.machine()}")
    if args.downtime:
        import _downtime

        try:
            return _downtime.run(args.hosts, args.deploys, args.keep, args.workers, args.only)
        except KeyboardInterrupt:
            print("\ninterrupted: fleet and redis stopped", file=sys.stderr)
            return 130
    print(
        f"{args.hosts} hosts, app shop with 1 resque worker per host (fakeresque, poll interval 0.2s, "
        f"stop: quit), migrate_command 'sleep 1' on the first util host; {args.deploys} deploys"
    )
    app = AppSpec(
        "shop", workers=("deploytest",), top_extra="deploy:\n  migrate_command: sleep 1\n  migrate_role: util\n"
    )
    rows = []
    try:
        with BenchFleet(args.hosts, [app], keep=args.keep, label=f"fleet{args.hosts}") as bf:
            f = bf.fleet
            print(
                f"fleet up in {bf.bringup_seconds:.1f}s on {f.hosts[0].address}..{f.hosts[-1].address} "
                f"(temp dir {bf.dir})",
                flush=True,
            )
            repo = bench.make_repo(bf.dir / "repo", "v0")
            hosts_file = bf.hosts_file()
            targets = [h.target for h in f.hosts]
            par = str(max(20, args.hosts))
            bench.fab("--list")  # warm the fabfile's byte-code once; not timed
            for i in range(1, args.deploys + 1):
                print(f"\n--- deploy {i} of {args.deploys} ---", flush=True)
                bench.make_repo(repo, f"v{i}")
                before = bench.accepted(f)
                d = bench.fab("deploy", "--repo", str(repo), "--config", bf.config, timeout=600)
                deploy_conns = bench.diff_counts(before, bench.accepted(f))
                if not d.ok or "deployed" not in d.proc.stdout:
                    print(f"deploy {i} FAILED ({bench.fail_text(d, 12)}); not counted")
                    print(d.proc.stdout[-3000:])
                    continue
                release = current_release(bf)
                steps = parse_steps(d.proc.stdout)
                # The same bytes the deploy shipped: deployhooks.commands.deploy.build_archive's command.
                data = subprocess.run(
                    ["git", "-C", str(repo), "archive", "--format=tar.gz", "HEAD"], capture_output=True, check=True
                ).stdout
                size = len(data)
                archive = bf.dir / "release.tar.gz"
                archive.write_bytes(data)
                print(
                    f"deploy {d.seconds:.2f}s, release {release}, archive {size} bytes; "
                    f"SSH logins per host: {bench.fmt_counts(deploy_conns)}"
                )
                if not steps:
                    print("  (no step table found in the deploy's output)")
                nodelay = None
                if args.what_if_nodelay:
                    bench.make_repo(repo, f"v{i}-nodelay")
                    b = bench.accepted(f)
                    t = bench.run_timed(
                        [PYTHON, "-c", NODELAY_FAB, "deploy", "--repo", str(repo), "--config", bf.config], timeout=600
                    )
                    logins = bench.diff_counts(b, bench.accepted(f))
                    if t.ok and "deployed" in t.proc.stdout:
                        nodelay = {"wall": t.seconds, "steps": parse_steps(t.proc.stdout)}
                        release = current_release(bf)
                        print(
                            f"  what-if deploy with TCP_NODELAY {t.seconds:.2f}s, release {release}; SSH "
                            f"logins per host: {bench.fmt_counts(logins)}"
                        )
                    else:
                        print(f"  what-if deploy with TCP_NODELAY FAILED: {bench.fail_text(t, 12)}")
                # --- upload baselines
                pscp = ["parallel-scp", "-h", str(hosts_file), "-l", "root", "-p", par, "-t", "120"]
                uploads = {
                    "parallel-scp": [*pscp, "-x", bf.ssh_opts(), str(archive), REMOTE_ARCHIVE],
                    "parallel-scp c25519": [
                        *pscp,
                        "-x",
                        f"{bf.ssh_opts()} -o KexAlgorithms={PARAMIKO_KEX}",
                        str(archive),
                        REMOTE_ARCHIVE,
                    ],
                    "ThreadingGroup put": [
                        PYTHON,
                        "-c",
                        PUT_SCRIPT,
                        str(f.client_key),
                        str(f.known_hosts),
                        str(archive),
                        REMOTE_ARCHIVE,
                        *targets,
                    ],
                }
                upload_times = {}
                for label, argv_ in uploads.items():
                    b = bench.accepted(f)
                    t = bench.run_timed(argv_)
                    logins = bench.diff_counts(b, bench.accepted(f))
                    ok = t.ok and (
                        t.proc.stdout.count("[SUCCESS]") == args.hosts
                        if label.startswith("parallel")
                        else f"put to {args.hosts} hosts" in t.proc.stdout
                    )
                    if ok:
                        upload_times[label] = t.seconds
                    print(
                        f"  upload {label:<20} {t.seconds:6.3f}s"
                        + ("" if ok else f"  FAILED: {bench.fail_text(t)}")
                        + f"  (SSH logins per host: {bench.fmt_counts(logins)})"
                    )
                # --- restart baselines
                direct = {}
                for verb in ("restart", "stop", "start"):
                    try:
                        direct[verb] = monit_direct(bf, verb, release)
                        print(
                            f"  monit {verb:<8} direct: process table settled {direct[verb][0]:6.3f}s, "
                            f"monit agrees {direct[verb][1]:6.3f}s"
                        )
                    except RuntimeError as exc:
                        direct[verb] = (None, None)
                        print(f"  monit {verb} direct FAILED: {exc}")
                        if verb == "stop":
                            bench.in_threads(lambda h: f.monit(h, "start", "all", "-g", GROUP), f.hosts)
                        break
                bench.monit_settled(f, timeout=60)
                pids_s, monit_s = direct["restart"]
                fab_restart = None
                if not args.no_fab_restart:
                    t = bench.fab("resque.restart", "--config", bf.config)
                    fab_restart = t.seconds if t.ok else None
                    print(
                        f"  fab resque.restart      {t.seconds:6.3f}s"
                        + ("" if t.ok else f"  FAILED: {bench.fail_text(t)}")
                    )
                    bench.monit_settled(f, timeout=60)
                rows.append(
                    {
                        "wall": d.seconds,
                        "steps": steps,
                        "conns": deploy_conns,
                        "upload": min(upload_times.values()) if upload_times else None,
                        "upload_by": upload_times,
                        "restart_pids": pids_s,
                        "restart": monit_s,
                        "fab_restart": fab_restart,
                        "release": release,
                        "stop": direct.get("stop", (None, None))[1],
                        "start": direct.get("start", (None, None))[1],
                        "nodelay": nodelay,
                    }
                )
            load = bench.machine().split("load average ")[1].split(",")[0]
    except KeyboardInterrupt:
        print("\ninterrupted: fleet and redis stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a fleet that did not come up, a wait that timed out; all torn down
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc} (fleet and redis stopped)")
        return 1

    print(f"\n=== {len(rows)} of {args.deploys} deploys measured, {args.hosts} hosts; medians ===")
    if not rows:
        print("nothing to report: every deploy failed (see above)")
        return 1
    med = lambda xs: bench.median([x for x in xs if x is not None])  # noqa: E731
    names = []
    for r in rows:
        for name, _, _ in r["steps"]:
            if name not in names:
                names.append(name)
    nd_rows = [r["nodelay"] for r in rows if r["nodelay"]]
    nd_head = f"{'NODELAY':>9}" if nd_rows else ""
    print(f"{'step':<22}{'median s':>9}{nd_head}   per deploy")

    def nd_col(values) -> str:
        return fmt_s(med(values), 9) if nd_rows else ""

    for name in names:
        vals = [next((s for n, s, _ in r["steps"] if n == name), None) for r in rows]
        nd = [next((s for n, s, _ in x["steps"] if n == name), None) for x in nd_rows]
        oks = {next((o for n, _, o in r["steps"] if n == name), "-") for r in rows}
        print(
            f"{name:<22}{fmt_s(med(vals), 9)}{nd_col(nd)}   "
            + "  ".join(fmt_s(v, 6) for v in vals)
            + f"   hosts ok {'/'.join(sorted(oks))}"
        )
    step_sum = [sum(s for _, s, _ in r["steps"]) for r in rows]
    walls = [r["wall"] for r in rows]
    nd_sum = [sum(s for _, s, _ in x["steps"]) for x in nd_rows]
    nd_wall = [x["wall"] for x in nd_rows]
    print(
        f"{'sum of steps':<22}{fmt_s(med(step_sum), 9)}{nd_col(nd_sum)}   " + "  ".join(fmt_s(v, 6) for v in step_sum)
    )
    print(
        f"{'outside the steps':<22}{fmt_s(med([w - s for w, s in zip(walls, step_sum)]), 9)}"
        f"{nd_col([w - s for w, s in zip(nd_wall, nd_sum)])}   "
        + "  ".join(fmt_s(w - s, 6) for w, s in zip(walls, step_sum))
        + "   (python start, imports, config, git archive, summary)"
    )
    print(f"{'deploy wall':<22}{fmt_s(med(walls), 9)}{nd_col(nd_wall)}   " + "  ".join(fmt_s(v, 6) for v in walls))
    if nd_rows:
        print(
            f"(NODELAY: medians of {len(nd_rows)} what-if deploys through fab with TCP_NODELAY on "
            f"paramiko's sockets, run in the same rounds)"
        )

    def step_med(name):
        return med([next((s for n, s, _ in r["steps"] if n == name), None) for r in rows])

    print(
        "\nthe worker steps against monit doing the same directly (medians; direct = no SSH, all hosts "
        "at once, until process table and monit agree):"
    )
    for step, verb, what in (
        ("guard (before_migrate)", "stop", "guard: pause, wait Paused, monit stop, wait exited"),
        ("after_symlink", "start", "monit restart, wait new pids on the release"),
    ):
        a, b = step_med(step), med([r[verb] for r in rows])
        extra = f"  -> {a - b:+.3f}s" if a is not None and b is not None else ""
        print(f"  {step:<23}{fmt_s(a)} s  vs  monit {verb:<5} direct{fmt_s(b)} s{extra}   ({what})")
    lock = step_med("lock")
    if lock is not None:
        print(
            f"  lock           {fmt_s(lock)} s  = {lock / args.hosts * 1000:.0f} ms per host: hosts are locked "
            f"one after another, and each host's SSH connection is opened by its lock command"
        )

    conn_lo = min(min(r["conns"].values()) for r in rows)
    conn_hi = max(max(r["conns"].values()) for r in rows)
    print(
        "\nSSH logins per host per deploy (sshd logs): "
        + (
            f"{conn_lo} on every host in every deploy"
            if conn_lo == conn_hi
            else f"between {conn_lo} and {conn_hi}; " + "; ".join(bench.fmt_counts(r["conns"]) for r in rows)
        )
    )

    print("\nbaselines (medians):")
    for label in ("parallel-scp", "parallel-scp c25519", "ThreadingGroup put"):
        print(f"  upload {label:<22}{fmt_s(med([r['upload_by'].get(label) for r in rows]))} s")
    print(f"  restart direct, pids only     {fmt_s(med([r['restart_pids'] for r in rows]))} s")
    print(f"  restart direct, monit agrees  {fmt_s(med([r['restart'] for r in rows]))} s")
    if not args.no_fab_restart:
        print(f"  fab resque.restart (reference){fmt_s(med([r['fab_restart'] for r in rows]))} s")

    print("\noverhead = deploy wall - (upload [fastest] + migrate 1.0 + restart [direct, monit agrees])")
    print(
        f"{'deploy':>7}{'wall':>9}{'upload':>9}{'migrate':>9}{'restart':>9}{'unavoid.':>10}"
        f"{'overhead':>10}{'wall/unavoid.':>15}"
    )
    overheads, ratios = [], []
    for i, r in enumerate(rows, 1):
        if r["upload"] is None or r["restart"] is None:
            print(f"{i:>7}{fmt_s(r['wall'], 9)}  a baseline failed: no overhead for this deploy")
            continue
        unavoidable = r["upload"] + MIGRATE_SECONDS + r["restart"]
        overheads.append(r["wall"] - unavoidable)
        ratios.append(r["wall"] / unavoidable)
        print(
            f"{i:>7}{fmt_s(r['wall'], 9)}{fmt_s(r['upload'], 9)}{fmt_s(MIGRATE_SECONDS, 9)}"
            f"{fmt_s(r['restart'], 9)}{fmt_s(unavoidable, 10)}{fmt_s(overheads[-1], 10)}{ratios[-1]:>14.2f}x"
        )
    if overheads:
        print(f"{'median':>7}{fmt_s(med(walls), 9)}{'':>37}{fmt_s(med(overheads), 10)}{med(ratios):>14.2f}x")
        pid_only = [
            r["wall"] - (r["upload"] + MIGRATE_SECONDS + r["restart_pids"])
            for r in rows
            if r["upload"] is not None and r["restart_pids"] is not None
        ]
        if pid_only:
            print(f"(with the pids-only restart baseline instead, the median overhead is {med(pid_only):.3f}s)")
    print(f"\nload average (1 min) at the end: {load}")
    print(f"total benchmark time {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
