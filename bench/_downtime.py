"""Queue downtime per deploy shape: `bench/deploy.py --downtime` (see bench/README.md).

For each shape -- guard_at before_migrate or before_symlink, a migration of 1 s or 10 s, and a
rolling deploy -- `fab deploy --json` runs `--deploys` times on one fleet (`--workers` per host, one by default)
and its report gives each host's window (from the guard's pause until every worker of the host
ran again on the new release) and the time no host served the queue at all. In the same run,
the baseline: a bare `monit restart all -g shop_resque` of one host's group, no SSH (nsenter),
timed until the new worker is idle on the release and monit reports it running.

The figures are ratios against that baseline, so a slower machine moves both sides.
"""

from __future__ import annotations

import json
import time

import _fleet as bench
from _fleet import GROUP_PRELUDE, AppSpec, BenchFleet, fmt_s  # noqa: F401

from deployhooks.facts.monit import parse_status

GROUP = "shop_resque"
SHAPES = (
    # (label, guard_at, migration seconds, batch_size)
    ("before_migrate, migrate 1s", "before_migrate", 1, None),
    ("before_migrate, migrate 10s", "before_migrate", 10, None),
    ("before_symlink, migrate 1s", "before_symlink", 1, None),
    ("before_symlink, migrate 10s", "before_symlink", 10, None),
    ("rolling halves, migrate 10s", "before_symlink", 10, "half"),
)


def config_for(base: str, guard_at: str, migrate: int, batch_size: int | None) -> str:
    """The fleet's config text with this shape's guard_at, migration and batch size."""
    text = base.replace("migrate_command: sleep 1\n", f"migrate_command: sleep {migrate}\n")
    if batch_size:
        text = text.replace("  migrate_role: util\n", f"  migrate_role: util\n  batch_size: {batch_size}\n")
    # resque: is the file's last section (AppSpec.resque_extra goes at its end)
    return text.rstrip("\n") + f"\n  guard_at: {guard_at}\n"


def bare_restart(bf: BenchFleet, host, release: str, timeout: float = 60) -> float:
    """Seconds from `monit restart all -g GROUP` on `host` (no SSH) until its worker is a new
    process, idle on `release`, and monit reports it running with that pid, nothing pending."""
    f = bf.fleet
    old = {s.pid for s in parse_status(f.monit(host, "-B", "status", "-g", GROUP).stdout).values()}
    started = time.perf_counter()
    f.monit(host, "restart", "all", "-g", GROUP)
    deadline = started + timeout
    while time.perf_counter() < deadline:
        services = parse_status(f.monit(host, "-B", "status", "-g", GROUP).stdout)
        if services and all(s.running and not s.pending and s.pid not in old for s in services.values()):
            idle = {w.pid for w in f.workers(host, "shop") if w.state == "idle" and w.release == release}
            if all(s.pid in idle for s in services.values()):
                return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"{host.name}: monit restart not settled within {timeout}s")


def bare_restart_all(bf: BenchFleet, release: str, timeout: float = 180) -> float:
    """`monit restart all -g GROUP` on every host at once (no SSH); the median host's seconds
    until its worker is new and idle on `release` (one scan of the machine's process table for
    all hosts every 50 ms, so the watching costs little) and then monit agrees (asked inside
    that host, every 0.1 s): what the same restart costs when every simulated host does it on
    this machine's cores at the same moment."""
    f = bf.fleet
    old, old_ns, started = bench.monit_everywhere(f, "restart", GROUP)
    deadline = started + timeout
    table: dict[str, float] = {}
    while len(table) < len(f.hosts):
        scan = bench.worker_scan(f)
        now = time.perf_counter() - started
        for h in f.hosts:
            mine = [w for w in scan[h.name] if w.app == "shop"]
            if (
                h.name not in table
                and mine
                and all(w.state == "idle" and w.release == release and w.pid not in old[h.name] for w in mine)
            ):
                table[h.name] = now
        if time.perf_counter() > deadline:
            raise RuntimeError(f"restart of every host: not settled within {timeout}s")
        time.sleep(0.05)
    agreed: dict[str, float] = {}

    def monit_agrees(h) -> None:
        while time.perf_counter() < deadline:
            services = parse_status(f.monit(h, "-B", "status", "-g", GROUP).stdout)
            if services and all(s.running and not s.pending and s.pid not in old_ns[h.name] for s in services.values()):
                agreed[h.name] = max(table[h.name], time.perf_counter() - started)
                return
            time.sleep(0.1)
        raise RuntimeError(f"{h.name}: monit did not agree within {timeout}s")

    bench.in_threads(monit_agrees, f.hosts)
    return bench.median(list(agreed.values())) or 0.0


def run(hosts: int, deploys: int, keep: bool, workers: int = 1, only: str | None = None) -> int:
    """Run the shapes whose label contains ``only`` (all by default), ``workers`` per host."""
    app = AppSpec(
        "shop",
        workers=("deploytest",) * workers,
        top_extra="deploy:\n  migrate_command: sleep 1\n  migrate_role: util\n",
    )
    shapes = [shape for shape in SHAPES if only is None or only in shape[0]]
    if not shapes:
        raise SystemExit(f"--only {only!r} matches no shape; the shapes: {', '.join(s[0] for s in SHAPES)}")
    results: dict[str, list[dict]] = {label: [] for label, *_ in shapes}
    baseline: list[float] = []
    baseline_all: list[float] = []
    with BenchFleet(hosts, [app], keep=keep, label=f"downtime{hosts}") as bf:
        f = bf.fleet
        print(f"fleet of {hosts} up in {bf.bringup_seconds:.1f}s (temp dir {bf.dir})", flush=True)
        repo = bench.make_repo(bf.dir / "repo", "v0")
        base = open(bf.config).read()
        bench.fab("--list")  # warm the byte-code once; not timed
        n = 0
        for round_ in range(1, deploys + 1):
            for label, guard_at, migrate, batch in shapes:
                n += 1
                size = max(1, hosts // 2) if batch == "half" else batch
                path = bf.dir / f"shape{n}.yml"
                path.write_text(config_for(base, guard_at, migrate, size))
                bench.make_repo(repo, f"v{n}")
                d = bench.fab("deploy", "--json", "--repo", str(repo), "--config", str(path), timeout=900)
                try:
                    report = json.loads(d.proc.stdout)
                except ValueError:
                    report = None
                if not d.ok or report is None:
                    print(f"  {label}: deploy FAILED ({bench.fail_text(d, 8)}); not counted", flush=True)
                    continue
                down = report["queue_downtime"]
                per_host = list(down["per_host"].values())
                row = {
                    "wall": d.seconds,
                    "median": bench.median(per_host),
                    "worst": max(per_host),
                    "anywhere": down["no_worker_anywhere"],
                }
                results[label].append(row)
                bench.monit_settled(f, timeout=120)
                b = bare_restart(bf, f.hosts[0], report["release"])
                baseline.append(b)
                bench.monit_settled(f, timeout=120)
                if hosts > 1:
                    baseline_all.append(bare_restart_all(bf, report["release"]))
                    bench.monit_settled(f, timeout=120)
                print(
                    f"  round {round_} {label:<28} wall {d.seconds:6.2f}s  per-host median {row['median']:.3f}s "
                    f"worst {row['worst']:.3f}s  no worker anywhere {row['anywhere']:.3f}s  "
                    f"(bare monit restart after it: {b:.3f}s)",
                    flush=True,
                )
    restart = bench.median(baseline)
    print(
        f"\n=== queue downtime, {hosts} hosts, {workers} worker(s) each; medians of {deploys} deploy(s) per shape ===\n"
        f"bare `monit restart` of one host's group (no SSH, until the new worker is idle and monit "
        f"agrees): median {fmt_s(restart)} s of {len(baseline)} (min {fmt_s(min(baseline) if baseline else None)})"
    )
    restart_all = bench.median(baseline_all)
    if restart_all:
        print(
            f"bare `monit restart` of every host's group at once (the median host): median "
            f"{fmt_s(restart_all)} s of {len(baseline_all)}"
        )
    print(
        f"{'shape':<30}{'per-host median':>16}{'worst':>8}{'no worker anywhere':>20}{'median / restart':>18}"
        + (f"{'/ all at once':>15}" if restart_all else "")
    )
    for label, *_ in shapes:
        rows = results[label]
        if not rows:
            print(f"{label:<30}{'(no deploy succeeded)':>16}")
            continue
        med = bench.median([r["median"] for r in rows])
        ratio = f"{med / restart:.2f}x" if restart and med is not None else "-"
        print(
            f"{label:<30}{fmt_s(med, 16)}{fmt_s(bench.median([r['worst'] for r in rows]), 8)}"
            f"{fmt_s(bench.median([r['anywhere'] for r in rows]), 20)}{ratio:>18}"
            + (f"{med / restart_all:>14.2f}x" if restart_all and med is not None else "")
        )
    print(
        "target (issue 11.3): before_symlink with a 10 s migration on 20 hosts: median under 2 s and "
        "no more than 1.3x the bare restart"
    )
    return 0
