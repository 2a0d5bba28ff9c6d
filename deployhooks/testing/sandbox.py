"""The newcomer's sandbox: three simulated hosts, an example app, and a real `fab deploy`.

`python -m deployhooks.testing.sandbox up` (what `script/sandbox` runs) brings up three hosts on this
machine (Linux namespaces on 127.0.10.1-3, each with its own sshd, monit and two resque-style
workers), makes host2 busy with a long job, then deploys the example app twice: once with
`on_busy: abort` (the guard refuses and nothing changes), once with `on_busy: wait` (the guard
waits for the job, then the deploy switches every host and restarts the workers on the new
release). The sandbox stays up to explore; `down` takes it away.

`fab` reaches the hosts as it reaches production ones: the SSH login is the deploy user (the one
the workers run as; root cannot log in), whose sudo allows monit and nothing else
(/etc/sudoers.d/deployhooks-test, installed by script/setup), and the config says
`resque.sudo: true`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

REPO = Path(__file__).resolve().parents[2]  # deployhooks/testing/sandbox.py -> the repository
DEFAULT_ROOT = REPO / ".sandbox"
JOB_SECONDS = 20


def say(text: str = "") -> None:
    print(text, flush=True)


def step(title: str) -> None:
    say()
    say(f"### {title}")


def run(*argv: str, check: bool = True) -> int:
    """Run a command with its output on this terminal; return its exit code."""
    say("$ " + " ".join(argv))
    code = subprocess.call(list(argv), cwd=REPO, stdin=subprocess.DEVNULL)
    if check and code:
        raise SystemExit(f"sandbox: '{' '.join(argv)}' failed with exit code {code}")
    return code


def fab(*args: str, check: bool = True) -> int:
    return run(sys.executable, "-m", "fabric", *args, check=check)


def up(root: Path) -> int:
    from .applayout import test_user
    from .fleet import Fleet

    fleet_root = root / "fleet"
    if (fleet_root / "fleet.json").exists():
        say(f"A sandbox is already up in {root}. Take it down first: script/sandbox down")
        return 1
    root.mkdir(parents=True, exist_ok=True)

    step("1. Three hosts on this machine")
    say(
        "Each host is a set of Linux namespaces (PID, mount, hostname) with its own sshd on\n"
        "127.0.10.N:22, its own /data, and its own monit supervising two resque workers of the\n"
        "app 'shop' through deployhooks-resque (the monit wrapper). Nothing leaves loopback.\n"
        f"fab logs in as '{test_user()}', as on production hosts: root cannot log in over SSH, and\n"
        f"{test_user()}'s sudo runs monit and nothing else (resque.sudo: true in the config)."
    )
    run(
        sys.executable,
        "-m",
        "deployhooks.testing.fleet",
        "up",
        "--root",
        str(fleet_root),
        "-n",
        "3",
        "--app",
        "shop:deploytest+q_{host}",
        "--login",
        test_user(),
    )
    try:
        return _tour(root, fleet_root, Fleet.from_state(fleet_root))
    except BaseException as exc:
        # Never leave a half-made sandbox running: take down what this run brought up.
        say(f"\nsandbox: stopped ({exc or type(exc).__name__}); taking the hosts down again")
        down(root)
        raise


def _tour(root: Path, fleet_root: Path, fleet) -> int:
    """Steps 2-6 on a fleet that is up: status, a busy job, a refused and a waiting deploy."""
    from .examplerepo import make_repo
    from .fakeresque import enqueue

    fleet.wait_workers(timeout=60)

    base = fleet.config_path("shop").read_text()
    deploy = "deploy:\n  migrate_command: sleep 1\n  migrate_role: util\n"
    abort_cfg, wait_cfg = root / "deployhooks.yml", root / "deployhooks-wait.yml"
    abort_cfg.write_text(base + "  on_busy: abort\n" + deploy)
    wait_cfg.write_text(base + "  on_busy: wait\n  wait_timeout: 120\n" + deploy)
    repo = make_repo(root / "shop")
    time.sleep(2)  # monit learns the workers' pids on its next poll cycle

    step("2. The fleet's workers, as `fab resque.status` sees them")
    fab("resque.status", "--config", str(abort_cfg))

    step(f"3. A {JOB_SECONDS}-second job starts on host2")
    import redis

    client = redis.Redis.from_url(json.loads((fleet_root / "fleet.json").read_text())["redis_url"])
    enqueue(client, "q_host2", "SleepJob", JOB_SECONDS, "sandbox-long-job")
    deadline = time.monotonic() + 15
    while not any(w.busy for w in fleet.workers(2, "shop")):
        if time.monotonic() > deadline:
            raise SystemExit("sandbox: the job did not start on host2")
        time.sleep(0.2)
    fab("resque.status", "--config", str(abort_cfg), check=False)

    step("4. Deploy with on_busy: abort -- the guard refuses while the job runs")
    say(
        "Expect exit code 1: host2 is named with its job. The guard decides once for the fleet:\n"
        "host1 and host3 were only paused and are resumed, no host stops anything, and current\n"
        "does not move anywhere."
    )
    code = fab("deploy", "--repo", str(repo), "--config", str(abort_cfg), check=False)
    say(f"(fab deploy exited {code})")

    step("5. Deploy with on_busy: wait -- the guard waits for the job, then the deploy goes on")
    code = fab("deploy", "--repo", str(repo), "--config", str(wait_cfg), check=False)
    say(f"(fab deploy exited {code})")

    step("6. After the deploy: every worker on the new release")
    fab("resque.status", "--config", str(abort_cfg), check=False)
    # A client made without decode_responses: every reply is bytes.
    finished = [t.decode() for t in cast("list[bytes]", client.lrange("resque:test:finished", 0, -1))]
    say(f"Jobs finished: {finished}; jobs failed or killed: {client.llen('resque:failed')}")

    step("The sandbox stays up. Explore it:")
    cfg = os.path.relpath(abort_cfg, REPO)
    say(f"  .venv/bin/fab resque.status --config {cfg}")
    say(f"  .venv/bin/fab deploy --repo {os.path.relpath(repo, REPO)} --config {cfg}")
    say(f"  .venv/bin/fab rollback --config {cfg}")
    say(f"  .venv/bin/fab resque.logs --config {cfg}")
    say(f"  ssh -i {fleet.client_key} -o UserKnownHostsFile={fleet.known_hosts} {fleet.host(2).target}")
    say("Take it down:")
    say("  script/sandbox down")
    return 0


def down(root: Path) -> int:
    fleet_root = root / "fleet"
    if not (fleet_root / "fleet.json").exists():
        say(f"No sandbox is up in {root}.")
        return 0
    return run(sys.executable, "-m", "deployhooks.testing.fleet", "down", "--root", str(fleet_root), check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="script/sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", default="up", choices=["up", "down"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    args = parser.parse_args(argv)
    return up(args.root) if args.command == "up" else down(args.root)


if __name__ == "__main__":
    sys.exit(main())
