"""`fab resque.*` on a fleet of three real hosts."""

from __future__ import annotations

import json
import os
import signal
import time

from deployhooks.testing.fakeresque import enqueue, open_gate
from deployhooks.testing.fleet import AppSpec
from tests.helpers import fab, monit_settled, wait_for

SHOP = AppSpec("shop", workers=("deploytest", "q_{host}"))
OLD = "20260101000000"


def status_json(config, *extra):
    r = fab("resque.status", "--json", "--config", config, *extra)
    return r, json.loads(r.stdout)


def test_status_table_json_and_a_host_down(fleet, redis_client):
    f = fleet(3, [SHOP])
    monit_settled(f)
    config = str(f.config_path("shop"))
    r = fab("resque.status", "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert f"{h.target}: 2 worker(s): 2 idle" in r.stdout
        assert f"{h.target}  resque_shop_1" in r.stdout
    assert "fleet: 3 host(s): 6 idle" in r.stdout

    enqueue(redis_client, "q_host1", "GateJob", "status-job")
    wait_for(lambda: any(w.busy for w in f.workers(1, "shop")), 10, "host1 busy")
    r, data = status_json(config, "--check")
    assert r.returncode == 1  # --check: a job is running
    busy = [w for w in data["workers"] if w["state"] == "busy"]
    assert [(w["host"], w["queue"], w["job_class"], w["release_mark"]) for w in busy] == [
        (f.host(1).target, "q_host1", "GateJob", "current")
    ]
    assert busy[0]["rss_kb"] > 1000 and busy[0]["busy_for"] >= 0

    os.kill(f.host(3).pid, signal.SIGKILL)
    r, data = status_json(config)
    assert r.returncode == 3
    assert f.host(3).target in data["unreachable"] and "cannot connect" in data["unreachable"][f.host(3).target]
    assert len([w for w in data["workers"] if w["pid"]]) == 4  # the others are still shown


def test_killed_worker_and_a_stale_worker_on_a_deleted_release(fleet, redis_client):
    f = fleet(2, [SHOP])
    monit_settled(f)
    config = str(f.config_path("shop"))
    # a busy worker killed behind monit's back: its job child runs on, orphaned
    enqueue(redis_client, "q_host1", "GateJob", "orphan-job")
    wait_for(lambda: any(w.busy for w in f.workers(1, "shop")), 10, "host1 busy")
    parent = next(w for w in f.workers(1, "shop") if w.busy)
    f.run(1, f"kill -9 {parent.pid}", check=True)
    wait_for(
        lambda: any(w.pid == parent.job_pid and w.busy for w in f.workers(1, "shop")),
        5,
        "the orphaned job child seen as a running job",
    )
    r, data = status_json(config, "--check")
    assert r.returncode == 1
    orphan = [w for w in data["workers"] if w["pid"] == parent.job_pid and w["host"] == f.host(1).target]
    assert orphan and orphan[0]["state"] == "busy" and orphan[0]["service"] is None
    assert "not under monit" in orphan[0]["problems"]
    # pids are per host (each has its own PID namespace): look at host1's rows only
    host1 = [w for w in data["workers"] if w["host"] == f.host(1).target]
    assert all(w["pid"] != parent.pid for w in host1 if w["state"] != "down")
    open_gate(redis_client, "orphan-job")
    wait_for(
        lambda: "orphan-job" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the orphaned job to finish"
    )

    # a worker started by hand from a release that is then deleted
    f.run(
        2,
        f"cd /data/shop/releases/{OLD} && QUEUE=stray REDIS_URL={f.redis_url} INTERVAL=0.2 "
        f"setsid python -m deployhooks.testing.fakeresque resque:work >/dev/null 2>&1 &",
        check=True,
    )
    wait_for(lambda: any(w.release == OLD for w in f.workers(2, "shop")), 10, "the stray worker")
    f.run(2, f"rm -rf /data/shop/releases/{OLD}", check=True)
    r = fab("resque.status", "--check", "--config", config)
    assert r.returncode == 1
    assert f"{OLD} (deleted)" in r.stdout and "stale (deleted release)" in r.stdout


def test_unknown_host_key_is_refused(fleet, tmp_path):
    f = fleet(3, [SHOP])
    monit_settled(f)
    partial = tmp_path / "known_hosts"
    partial.write_text(
        "".join(l for l in f.known_hosts.read_text().splitlines(True) if not l.startswith(f.host(3).address + " "))
    )
    config = tmp_path / "deployhooks.yml"
    config.write_text(f.config_path("shop").read_text().replace(str(f.known_hosts), str(partial)))
    r = fab("resque.status", "--config", str(config))
    assert r.returncode == 3
    assert f"{f.host(3).target}: unknown host key" in r.stderr
    assert f"{f.host(1).target}: 2 worker(s)" in r.stdout


def test_stop_start_restart_pause_resume_logs(fleet):
    f = fleet(2, [SHOP])
    config = str(f.config_path("shop"))
    assert fab("resque.stop", "--config", config).returncode == 0
    for h in f.hosts:
        assert f.workers(h, "shop") == []
    assert fab("resque.start", "--config", config).returncode == 0
    for h in f.hosts:
        assert len(f.workers(h, "shop")) == 2
    # (host, pid): each host has its own pid namespace, so two hosts often reuse the same pids.
    before = {(h.name, w.pid) for h in f.hosts for w in f.workers(h, "shop")}
    logs = {h.name: len(h.path("/var/log/monit.log").read_text()) for h in f.hosts}
    r = fab("resque.restart", "--config", config)
    assert r.returncode == 0, r.stderr
    after = {(h.name, w.pid) for h in f.hosts for w in f.workers(h, "shop")}
    assert len(after) == 4 and not before & after
    # One monit restart of the paused, idle workers (its restart program), not a stop and a
    # start: the queues are unserved for one wait, not two.
    for h in f.hosts:
        since = h.path("/var/log/monit.log").read_text()[logs[h.name] :]
        assert since.count("restart on user request") == 2, since
        assert "' stop on user request" not in since and "' start on user request" not in since, since

    assert fab("resque.pause", "--config", config).returncode == 0
    for h in f.hosts:
        assert {w.state for w in f.workers(h, "shop")} == {"paused"}
    assert fab("resque.resume", "--config", config).returncode == 0
    wait_for(
        lambda: all(w.state == "idle" for h in f.hosts for w in f.workers(h, "shop")), 10, "workers idle after resume"
    )

    r = fab("resque.logs", "--lines", "5", "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert f"{h.target} | " in r.stdout
    assert "deployhooks-resque" in r.stdout or "Starting" in r.stdout or "started" in r.stdout


def test_drain_waits_for_jobs_then_stops_or_resumes_on_the_deadline(fleet, redis_client):
    f = fleet(2, [SHOP])
    config = str(f.config_path("shop"))
    enqueue(redis_client, "q_host1", "GateJob", "drain-long")
    wait_for(lambda: any(w.busy for w in f.workers(1, "shop")), 10, "host1 busy")
    r = fab("resque.drain", "--deadline", "2", "--config", config)
    assert r.returncode == 1 and "still running" in r.stderr and "every paused worker was resumed" in r.stdout
    open_gate(redis_client, "drain-long")
    wait_for(lambda: "drain-long" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the job")
    wait_for(lambda: all(w.state == "idle" for w in f.workers(1, "shop")), 10, "host1 idle again")

    enqueue(redis_client, "q_host2", "SleepJob", 2, "drain-short")
    wait_for(lambda: any(w.busy for w in f.workers(2, "shop")), 10, "host2 busy")
    r = fab("resque.drain", "--deadline", "30", "--config", config)
    assert r.returncode == 0, r.stderr
    assert "drain-short" in redis_client.lrange("resque:test:finished", 0, -1)
    for h in f.hosts:
        assert f.workers(h, "shop") == []
    assert redis_client.llen("resque:failed") == 0


def test_logs_follow_streams_new_lines_until_interrupted(fleet):
    import subprocess
    import sys

    from tests.helpers import REPO

    f = fleet(1, [SHOP])
    monit_settled(f)
    config = str(f.config_path("shop"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric", "resque.logs", "--follow", "--lines", "1", "--config", config],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert proc.stdout.readline().startswith(f"{f.host(1).target} | ")
        # a new line in a worker's log while we follow: the wrapper logs its actions there
        f.run(1, "echo deployhooks-follow-marker >> /data/shop/shared/log/resque_0.log", check=True)
        deadline = time.monotonic() + 15
        seen = ""
        while "deployhooks-follow-marker" not in seen and time.monotonic() < deadline:
            seen = proc.stdout.readline()
        assert seen.startswith(f"{f.host(1).target} | ") and "deployhooks-follow-marker" in seen
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
