"""How long `fab resque.status` takes against baselines that only run `ps` on every host.

    .venv/bin/python bench/status.py [--hosts 20,100] [--runs 7,3] [--workers 1]
    .venv/bin/python bench/status.py --hosts 20 --workers 3      # the target: status <= 1.3x pssh-c25519

For each fleet size it brings up a private redis and a fleet of simulated hosts (app "shop",
``--workers`` resque workers per host) in a temp dir, then times these commands, alternating
(order rotated every round) over the size's timed rounds, after one warm-up round:

  status       fab resque.status --config <fleet config>   (cwd: the repo, so fab finds fabfile.py)
  group        baseline: python -c <script>: fabric ThreadingGroup.run('ps axww -o ...') with the
               same key, known_hosts and RejectPolicy as deployhooks.remote.fleet.connect()
  pssh         baseline: parallel-ssh -h <hosts> -l root -p <n> -i -x "-i KEY -o UserKnownHostsFile=KH
               -o StrictHostKeyChecking=yes ..." 'ps axww -o ...'  (OpenSSH's default key exchange)
  pssh-c25519  the same with -o KexAlgorithms=curve25519-sha256@libssh.org: the exchange paramiko
               negotiates with this sshd (OpenSSH 9.2 prefers sntrup761x25519, which costs more CPU)
  group-stcmd  diagnostic, not a baseline: the ThreadingGroup script running deployhooks' own
               status command (ps + cwd of resque processes and current's link + monit -B status) instead
               of bare ps; it separates the remote command's cost from fab's client side
  startup      diagnostic: fab --list (cwd: the repo), no host contacted: what every fab call pays
               before it reaches a host (interpreter, fabric/invoke, the fabfile's namespace)

The target (issue 9): status within 1.3x of pssh-c25519, the fastest baseline, at 20 hosts with 3
workers each. Each size prints status against it, and against the fastest baseline of that run.

All of them are subprocesses, so interpreter start and imports count for each. It prints medians,
ratios, SSH logins per host per command (counted in the hosts' sshd logs) and a hosts -> medians
table. Everything it started is gone when it exits, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _fleet as bench  # noqa: E402
from _fleet import GROUP_PRELUDE, PS_ARGS, PYTHON, AppSpec, BenchFleet, fmt_s  # noqa: E402

# The ThreadingGroup baseline: what deployhooks.remote.fleet.connect() sets up, minus deployhooks.
GROUP_SCRIPT = (
    GROUP_PRELUDE
    + r"""
key, known_hosts, command, hosts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
group = group_of(key, known_hosts, hosts)
try:
    results = group.run(command, hide=True, in_stream=False)
finally:
    group.close()
for conn, result in results.items():
    sys.stdout.write(f"{conn.host}: {len(result.stdout.splitlines())} lines\n")
"""
)

NAMES = ("status", "group", "pssh", "pssh-c25519", "group-stcmd", "startup")
BASELINES = ("group", "pssh", "pssh-c25519")
TARGET_BASELINE, TARGET_RATIO = "pssh-c25519", 1.3
LABELS = {
    "status": "fab resque.status",
    "group": "ThreadingGroup ps",
    "pssh": "parallel-ssh ps",
    "pssh-c25519": "parallel-ssh ps c25519",
    "group-stcmd": "(ThreadingGroup st-cmd)",
    "startup": "(start-up: fab --list)",
}
PARAMIKO_KEX = "curve25519-sha256@libssh.org"


def status_command(config: str) -> str:
    from deployhooks import settings
    from deployhooks.facts import status

    return status.status_command(settings.load(config))


def commands(bf: BenchFleet) -> dict[str, list[str]]:
    f = bf.fleet
    n = len(f.hosts)
    targets = [h.target for h in f.hosts]
    pssh = ["parallel-ssh", "-h", str(bf.hosts_file()), "-l", "root", "-p", str(max(20, n)), "-t", "120"]
    return {
        "status": [PYTHON, "-m", "fabric", "resque.status", "--config", bf.config],
        "group": [PYTHON, "-c", GROUP_SCRIPT, str(f.client_key), str(f.known_hosts), PS_ARGS, *targets],
        "pssh": [*pssh, "-x", bf.ssh_opts(), "-i", PS_ARGS],
        "pssh-c25519": [*pssh, "-x", f"{bf.ssh_opts()} -o KexAlgorithms={PARAMIKO_KEX}", "-i", PS_ARGS],
        "group-stcmd": [
            PYTHON,
            "-c",
            GROUP_SCRIPT,
            str(f.client_key),
            str(f.known_hosts),
            status_command(bf.config),
            *targets,
        ],
        "startup": [PYTHON, "-m", "fabric", "--list"],
    }


def check_output(name: str, t: bench.Timed, n: int) -> str | None:
    """Why a run does not count (None if it does): exit code, and every host answered."""
    if not t.ok:
        return bench.fail_text(t)
    out = t.proc.stdout
    if name == "status":
        if f"fleet: {n} host(s)" not in out or "unreachable" in out:
            last = out.strip().splitlines()[-1] if out.strip() else "no output"
            return f"status did not see every host: {last}"
    elif name.startswith("group") and out.count(" lines\n") != n:
        return f"ThreadingGroup answered for {out.count(' lines')} of {n} hosts"
    elif name.startswith("pssh") and out.count("[SUCCESS]") != n:
        return f"parallel-ssh succeeded on {out.count('[SUCCESS]')} of {n} hosts"
    elif name == "startup" and "resque.status" not in out:
        return "fab --list did not list resque.status"
    return None


def bytecode_note() -> str:
    """How many of deployhooks' modules start from cached bytecode. With PYTHONDONTWRITEBYTECODE
    and no __pycache__ in the tree (a fresh checkout), every command compiles the ones it imports,
    which the baselines (no deployhooks) never pay; a pip-installed deployhooks has them cached."""
    sources = sorted((bench.REPO / "deployhooks").rglob("*.py"))
    cached = sum(Path(importlib.util.cache_from_source(str(f))).exists() for f in sources)
    flag = "PYTHONDONTWRITEBYTECODE set" if sys.flags.dont_write_bytecode else "bytecode written"
    return f"deployhooks' modules with cached bytecode: {cached} of {len(sources)} ({flag})"


def floor(runs: int) -> dict[str, float | None]:
    """What any Python-based command pays before it reaches a host (median of ``runs``)."""
    probes = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "python -c 'import fabric'": [PYTHON, "-c", "import fabric"],
        "python -c 'import fabric.main'": [PYTHON, "-c", "import fabric.main"],
        "python -c 'import deployhooks.tasks'": [PYTHON, "-c", "import deployhooks.tasks"],
        "fab --list (fabfile loaded, no host)": [PYTHON, "-m", "fabric", "--list"],
        "parallel-ssh --version": ["parallel-ssh", "--version"],
    }
    out = {}
    for label, argv in probes.items():
        times = [t.seconds for t in (bench.run_timed(argv) for _ in range(runs)) if t.ok]
        out[label] = bench.median(times)
    return out


def remote_cost(bf: BenchFleet, runs: int = 7) -> dict[str, float | None]:
    """Wall time of the remote commands inside host1 (nsenter + bash -c, no SSH), median."""
    cmds = {"bash -c true": "true", "ps axww -o ...": PS_ARGS, "status command": status_command(bf.config)}
    out = {}
    for label, cmd in cmds.items():
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            r = bf.fleet.run(1, ["bash", "-c", cmd])
            if r.returncode == 0:
                times.append(time.perf_counter() - t)
        out[label] = bench.median(times)
    return out


def measure(n: int, runs: int, workers: int, keep: bool) -> dict:
    apps = [AppSpec("shop", workers=("deploytest",) * workers, interval=1.0)]
    print(
        f"\n=== {n} hosts, {workers} resque worker(s) per host ({n * workers} workers), "
        f"{runs} timed rounds after 1 warm-up ===",
        flush=True,
    )
    with BenchFleet(n, apps, keep=keep, label=f"fleet{n}") as bf:
        f = bf.fleet
        print(
            f"fleet up in {bf.bringup_seconds:.1f}s on {f.hosts[0].address}..{f.hosts[-1].address} (temp dir {bf.dir})",
            flush=True,
        )
        argv = commands(bf)
        times: dict[str, list[float]] = {k: [] for k in NAMES}
        conns: dict[str, list[dict[str, int]]] = {k: [] for k in NAMES}
        problems: dict[str, list[str]] = {k: [] for k in NAMES}
        status_tail = None
        for round_no in range(runs + 1):  # round 0 is the warm-up
            shift = round_no % len(NAMES)
            for name in NAMES[shift:] + NAMES[:shift]:
                before = bench.accepted(f)
                t = bench.run_timed(argv[name])
                after = bench.accepted(f)
                why = check_output(name, t, n)
                if name == "status" and t.ok and t.proc.stdout.strip():
                    status_tail = t.proc.stdout.strip().splitlines()[-1]
                if why:
                    problems[name].append(("warm-up: " if round_no == 0 else "") + why)
                    continue
                if round_no:
                    times[name].append(t.seconds)
                    conns[name].append(bench.diff_counts(before, after))
        load = bench.machine().split("load average ")[1].replace(",", " ").split()[0]
        remote = remote_cost(bf)
    med = {k: bench.median(v) for k, v in times.items()}
    print(f"{'command':<24}{'median s':>9}{'min s':>8}{'max s':>8}  runs  SSH logins per host per run")
    for name in NAMES:
        v = times[name]
        if conns[name]:
            lo = min(min(d.values()) for d in conns[name])
            hi = max(max(d.values()) for d in conns[name])
            counts = f"{lo} on every host in every run" if lo == hi else f"between {lo} and {hi}"
        else:
            counts = "n/a (no run counted)"
        print(
            f"{LABELS[name]:<24}{fmt_s(med[name], 9)}{fmt_s(min(v) if v else None, 8)}"
            f"{fmt_s(max(v) if v else None, 8)}  {len(v):>4}  {counts}"
        )
        for why in problems[name][:3]:
            print(f"  ! {LABELS[name]}: run not counted: {why}")
    print(f"load average (1 min) after the runs: {load}")
    if status_tail:
        print(f"status said: {status_tail}")
    s = med["status"]
    for b in BASELINES:
        if s and med[b]:
            print(f"status / {LABELS[b]:<24}= {s / med[b]:.2f}x")
    target = med[TARGET_BASELINE]
    if s and target:
        verdict = "within" if s / target <= TARGET_RATIO else "NOT within"
        print(
            f"status vs the target baseline ({LABELS[TARGET_BASELINE]}): {s / target:.2f}x, {verdict} "
            f"the {TARGET_RATIO}x target (set at 20 hosts, 3 workers each; here {n} hosts, {workers} each)"
        )
    fast = [(b, med[b]) for b in BASELINES if med[b]]
    if s and fast:
        fast_name, fast_s = min(fast, key=lambda kv: kv[1])
        if fast_name != TARGET_BASELINE:
            print(f"  in this run {LABELS[fast_name]} was faster still: status / it = {s / fast_s:.2f}x")
    up = med["startup"]
    if s and up:
        print(f"start-up: fab --list {up:.3f}s, {up / s:.0%} of status's {s:.3f}s (same rounds)")
    g, gs = med["group"], med["group-stcmd"]
    if s and g and gs:
        print(
            f"where status's extra {s - g:+.3f}s over ThreadingGroup ps goes: remote command "
            f"(group st-cmd - group ps) {gs - g:+.3f}s, fab/deployhooks client side "
            f"(status - group st-cmd) {s - gs:+.3f}s"
        )
    rc = ", ".join(f"{k} {v * 1000:.1f} ms" if v else f"{k} n/a" for k, v in remote.items())
    print(f"remote commands inside host1 (nsenter, no SSH; median of 7): {rc}")
    if remote.get("status command") and remote.get("ps axww -o ..."):
        extra = remote["status command"] - remote["ps axww -o ..."]
        print(
            f"  -> the status command costs {extra * 1000:.1f} ms more than ps per host; here all {n} "
            f"hosts share this machine's cores (~{n * extra / (os.cpu_count() or 1):.2f}s of the "
            f"gap at {os.cpu_count()} cores), on real hosts it would run in parallel"
        )
    return {"n": n, "workers": workers, "med": med, "runs": {k: len(v) for k, v in times.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", default="20,100", help="comma-separated fleet sizes (default 20,100)")
    parser.add_argument(
        "--runs",
        default="7,3",
        help="timed rounds per size, after one warm-up round; one value per size, the "
        "last repeats (default 7,3: 7 at the first size, 3 at the others)",
    )
    parser.add_argument("--workers", type=int, default=1, help="resque workers per host (default 1; >= 1)")
    parser.add_argument(
        "--floor-runs", type=int, default=5, help="runs of the interpreter/import probes (0 skips them; default 5)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (hosts' logs) afterwards")
    args = parser.parse_args(argv)
    sizes = [int(x) for x in args.hosts.split(",") if x.strip()]
    runs = [int(x) for x in args.runs.split(",") if x.strip()]
    if not sizes or not runs or min(runs) < 1:
        parser.error("--hosts and --runs take comma-separated positive numbers")
    runs += [runs[-1]] * (len(sizes) - len(runs))
    if args.workers < 1:
        parser.error("--workers must be >= 1: without a worker monit has no group and status reports an error")
    bench.terminate_on_signals()
    started = time.monotonic()
    print(f"bench/status.py: {bench.machine()}")
    print(bytecode_note())
    print(
        f"fleet sizes {sizes}, timed rounds {runs[: len(sizes)]}; {args.workers} resque worker(s) per host "
        f"(fakeresque, poll interval 1s); commands alternated, order rotated every round"
    )
    results = []
    try:
        if args.floor_runs:
            print(f"\n=== interpreter and import floor (median of {args.floor_runs}, no host contacted) ===")
            for label, value in floor(args.floor_runs).items():
                print(f"  {label:<40}{fmt_s(value)} s")
        for n, r in zip(sizes, runs):
            results.append(measure(n, r, args.workers, args.keep))
    except KeyboardInterrupt:
        print("\ninterrupted: fleet and redis stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a fleet that did not come up, say; it has been torn down
        print(f"\nbenchmark failed: {type(exc).__name__}: {exc} (fleet and redis stopped)")
        return 1
    print("\n=== hosts -> median seconds ===")
    cols = ("status", "group", "pssh", "pssh-c25519", "group-stcmd", "startup")
    print(f"{'hosts':>6}{'workers':>8}" + "".join(f"{c:>13}" for c in cols) + f"{'st/c25519':>11}{'st/fastest':>12}")
    for r in results:
        m = r["med"]
        fast = [m[b] for b in BASELINES if m[b]]
        target = f"{m['status'] / m[TARGET_BASELINE]:>10.2f}x" if m["status"] and m[TARGET_BASELINE] else f"{'n/a':>11}"
        ratio = f"{m['status'] / min(fast):>11.2f}x" if m["status"] and fast else f"{'n/a':>12}"
        print(f"{r['n']:>6}{r['n'] * r['workers']:>8}" + "".join(fmt_s(m[c], 13) for c in cols) + target + ratio)
    if len(results) >= 2:
        a, b = results[0], results[-1]
        grow = [
            f"{k} {(b['med'][k] - a['med'][k]) / (b['n'] - a['n']) * 1000:+.1f}"
            for k in cols
            if k != "startup" and a["med"][k] and b["med"][k]
        ]
        print(f"marginal ms per extra host ({a['n']} -> {b['n']} hosts): " + ", ".join(grow))
    print(f"\ntotal benchmark time {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
