"""The simulated-host harness itself: boot time, isolation, workers under each host's monit, and a
teardown that leaves nothing behind (in-process and through the command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import paramiko
import psutil
import pytest

from deployhooks import settings as settings_mod
from deployhooks.facts.monit import parse_status
from deployhooks.facts.processes import remote_processes, workers_from
from deployhooks.testing.fakeresque import enqueue
from deployhooks.testing.fleet import AppSpec, Fleet, FleetError
from tests.helpers import wait_for

RELEASE = "20260102000000"


def listeners() -> set[str]:
    """``address:port`` of every TCP listener on the machine, from ``ss -ltn``."""
    out = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    return {line.split()[3] for line in out.splitlines() if line.strip()}


def ns_inode(pid: int, kind: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def snapshot(fleet: Fleet) -> dict:
    """What a running fleet owns: its pids (machine view), namespaces and listeners."""
    procs = [p for ps in fleet.processes().values() for p in ps]
    return {
        "pids": {(p.pid, p.create_time()) for p in procs},
        "state_pids": [h["pid"] for h in json.loads(fleet.state_path.read_text())["hosts"]]
        + [h["launcher_pid"] for h in json.loads(fleet.state_path.read_text())["hosts"]],
        "pidns": {h.pidns for h in fleet.hosts},
        "mntns": {ns_inode(h.pid, "mnt") for h in fleet.hosts},
        "listen": {f"{h.address}:{h.port}" for h in fleet.hosts},
        "root": str(fleet.root),
    }


def assert_nothing_left(snap: dict) -> None:
    for pid, started in snap["pids"]:
        try:
            proc = psutil.Process(pid)
            alive = proc.create_time() == started and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        assert not alive, f"pid {pid} of the fleet still runs"
    for pid in snap["state_pids"]:
        assert not psutil.pid_exists(pid), f"pid {pid} from the state file remains"
    assert not snap["listen"] & listeners(), "a host's sshd still listens"
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            cwd = proc.cwd()
        except psutil.Error:
            cwd = ""
        cmdline = " ".join(proc.info["cmdline"] or ())
        assert snap["root"] not in cwd and snap["root"] not in cmdline, f"{proc.pid} {cmdline} points into the fleet"
        assert ns_inode(proc.pid, "pid") not in snap["pidns"], f"{proc.pid} {cmdline} lives in a host's namespace"
        assert ns_inode(proc.pid, "mnt") not in snap["mntns"], f"{proc.pid} {cmdline} holds a host's mounts"


def test_five_hosts_boot_fast_isolated_and_run_their_workers(fleet, redis_client):
    started = time.monotonic()
    f = fleet(5, apps=[AppSpec("shop", workers=("deploytest", "q_{host}"))], wait_workers=False)
    up = time.monotonic() - started
    f.wait_workers()
    workers_up = time.monotonic() - started
    mem = f.memory()
    pss = sum(m["pss"] for m in mem.values()) / len(mem) / 2**20
    print(
        f"\n5 hosts: sshd+monit answering after {up:.2f}s, 10 workers idle after {workers_up:.2f}s; "
        f"{pss:.1f} MB PSS per host with 2 workers"
    )
    assert up < 10

    # Own hostname and own /data on each host.
    for h in f.hosts:
        r = f.run(h, "hostname; ls /data; readlink /data/shop/current")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == [h.name, "shop", f"releases/{RELEASE}"]
        assert h.address == f"{f.hosts[0].address.rsplit('.', 1)[0]}.{h.index}"
    assert f.run(2, "echo two > /data/marker").returncode == 0
    assert f.hosts[1].path("/data/marker").read_text() == "two\n"
    assert f.run(1, "test -e /data/marker").returncode == 1

    # Over SSH, strict host keys: host 3 shows its own processes only.
    with f.connect(3) as conn:
        out = conn.run("hostname; ps ax -o pid=,args=", hide=True).stdout
        rows = workers_from(remote_processes(conn), {"shop": "/data/shop"})
    assert out.splitlines()[0] == "host3"
    assert "Waiting for q_host3" in out and "q_host1" not in out and "--name host1" not in out
    assert "--name host3" in out.splitlines()[1]  # its init is pid 1 there
    assert sorted((w.state, w.release, w.queues) for w in rows) == [
        ("idle", RELEASE, ("deploytest",)),
        ("idle", RELEASE, ("q_host3",)),
    ]

    # Each host has its own key: host 1's key for host 3's address is refused.
    wrong = f.root / "wrong_known_hosts"
    host1_key = f.known_hosts.read_text().splitlines()[0].split()[1:]
    wrong.write_text(f"{f.hosts[2].address} {' '.join(host1_key)}\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(wrong))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.BadHostKeyException):
        client.connect(
            f.hosts[2].address,
            username="root",
            key_filename=str(f.client_key),
            look_for_keys=False,
            allow_agent=False,
            timeout=5,
        )
    client.close()

    # Under each host's monit, every worker runs from the current release and is the pidfile's pid.
    for h in f.hosts:
        services = parse_status(f.monit(h, "-B", "status", "-g", "shop_resque").stdout)
        assert sorted(services) == ["resque_shop_0", "resque_shop_1"]
        wait_for(
            lambda: all(
                s.running for s in parse_status(f.monit(h, "-B", "status", "-g", "shop_resque").stdout).values()
            ),
            10,
            f"{h.name}: monit running",
        )
        workers = f.workers(h, "shop")
        pids = f.run(h, "cat /var/run/deployhooks/resque/shop/resque_*.pid").stdout.split()
        assert sorted(w.pid for w in workers) == sorted(map(int, pids))
        assert {(w.release, w.cwd) for w in workers} == {(RELEASE, f"/data/shop/releases/{RELEASE}")}

    # A job on host 2's own queue is taken on host 2.
    enqueue(redis_client, "q_host2", "SleepJob", 0.1, "only-on-2")
    wait_for(lambda: "only-on-2" in redis_client.lrange("resque:test:finished", 0, -1), 10, "the job")
    # the worker counts it as processed just after the job itself records that it finished
    wait_for(lambda: redis_client.keys("resque:stat:processed:host2:*:q_host2"), 5, "host2's processed count")

    # The workstation config reaches all five hosts.
    cfg = settings_mod.load(str(f.config_path("shop")))
    assert cfg.hosts == {"util": tuple(h.target for h in f.hosts)}
    assert cfg.deploy_to == "/data/shop" and cfg.resque.monit_command == ("monit", "-c", "/etc/monit/monitrc")
    assert cfg.ssh.known_hosts == str(f.known_hosts) and cfg.ssh.strict_host_keys


def test_quit_reaches_a_worker_started_with_ignored_signals(fleet, redis_client):
    # The harness may itself run as a shell's background job (INT/QUIT ignored); monit's workers
    # must still drain on QUIT as resque's do.
    import signal

    old = signal.signal(signal.SIGQUIT, signal.SIG_IGN), signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        f = fleet(1, apps=[AppSpec("shop", workers=("q_{host}",))])
    finally:
        signal.signal(signal.SIGQUIT, old[0])
        signal.signal(signal.SIGINT, old[1])
    (worker,) = f.workers(1, "shop")
    daemons = json.loads(f.hosts[0].path("/run/hostinit.ready").read_text())
    for what in (daemons["monit"], daemons["sshd"], worker.pid, "self"):
        r = f.run(1, f"grep -E '^Sig(Ign|Blk)' /proc/{what}/status")
        masks = [int(line.split()[1], 16) for line in r.stdout.splitlines()]
        for sig in (signal.SIGINT, signal.SIGQUIT):
            assert all(not m & (1 << (sig - 1)) for m in masks), f"{what}: {sig.name} ignored or blocked"
    enqueue(redis_client, "q_host1", "SleepJob", 1.0, "drained")
    wait_for(lambda: any(w.busy for w in f.workers(1, "shop")), 10, "the job to start")
    assert f.run(1, f"kill -QUIT {worker.pid}").returncode == 0
    wait_for(lambda: "drained" in redis_client.lrange("resque:test:finished", 0, -1), 10, "the job to finish")
    assert redis_client.lrange("resque:failed", 0, -1) == []


def test_teardown_leaves_no_process_mount_or_listener(tmp_path, redis_server):
    fleet = Fleet(
        tmp_path / "fleet",
        3,
        redis_url=redis_server.url,
        address_base=None,
        apps=[AppSpec("shop", workers=("deploytest", "q_{host}")), AppSpec("blog", hosts=[2])],
    )
    with fleet:
        fleet.wait_workers()
        # Something started by hand inside a host (setsid: not a child of anything we track).
        assert fleet.run(2, "setsid sleep 300 < /dev/null > /dev/null 2>&1 &").returncode == 0
        wait_for(lambda: "sleep 300" in fleet.run(2, "ps ax -o args=").stdout, 5, "the stray sleep")
        snap = snapshot(fleet)
        assert len(snap["pids"]) >= 3 * 5 + 1
        assert snap["listen"] <= listeners()
        # A second fleet on the same addresses is refused before it starts anything.
        base = fleet.hosts[0].address.rsplit(".", 1)[0] + "."
        with pytest.raises(FleetError, match="in use"):
            Fleet(tmp_path / "other", 1, redis_url=redis_server.url, address_base=base).start()
        stopped = time.monotonic()
    print(f"\n3 hosts stopped in {time.monotonic() - stopped:.2f}s")
    assert not fleet.state_path.exists()
    assert_nothing_left(snap)


def test_command_line_up_status_down(tmp_path):
    root = tmp_path / "sandbox"
    out = tmp_path / "up.out"
    python = sys.executable
    # Under the reaper: `up` leaves a keeper behind, and this machine's PID 1 would not reap it.
    with open(out, "w") as fh:
        reaper = subprocess.Popen(
            [
                python,
                "-m",
                "deployhooks.testing.reaper",
                "--",
                python,
                "-m",
                "deployhooks.testing.fleet",
                "up",
                "--root",
                str(root),
                "-n",
                "2",
                "--address-base",
                "auto",
                "--app",
                "shop:q_{host}",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        wait_for(lambda: "ssh -i" in out.read_text() or reaper.poll() is not None, 30, "fleet up")
        assert "ssh -i" in out.read_text(), out.read_text()
        state = json.loads((root / "fleet.json").read_text())
        pids = [state["keeper_pid"], state["redis_pid"]] + [
            h[k] for h in state["hosts"] for k in ("pid", "launcher_pid")
        ]
        listen = {f"{h['address']}:22" for h in state["hosts"]}
        assert all(psutil.pid_exists(p) for p in pids) and listen <= listeners()

        status = subprocess.run(
            [python, "-m", "deployhooks.testing.fleet", "status", "--root", str(root)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert status.returncode == 0, status.stderr
        assert [line.split()[5] for line in status.stdout.splitlines() if "init pid" in line] == ["up", "up"]
        assert (root / "shop.deployhooks.yml").exists()

        # A second `up` on the same root is refused and leaves the running fleet and its record alone.
        again = subprocess.run(
            [python, "-m", "deployhooks.testing.fleet", "up", "--root", str(root), "-n", "1", "--address-base", "auto"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert again.returncode == 1 and "already runs a fleet" in again.stderr, again.stderr
        assert json.loads((root / "fleet.json").read_text()) == state

        down = subprocess.run(
            [python, "-m", "deployhooks.testing.fleet", "down", "--root", str(root)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert down.returncode == 0, down.stderr
        assert reaper.wait(15) == 0  # the keeper, its hosts and its redis are all gone
    finally:
        if reaper.poll() is None:
            subprocess.run([python, "-m", "deployhooks.testing.fleet", "down", "--root", str(root)], timeout=60)
            reaper.terminate()
            reaper.wait(15)
    for pid in pids:
        assert not psutil.pid_exists(pid), f"pid {pid} from the state file remains"
    assert not listen & listeners()
    assert not (root / "fleet.json").exists()
