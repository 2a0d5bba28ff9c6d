"""`fab hooks.*` over SSH on a fleet of three real hosts (own sshd, monit, process table each)."""

from __future__ import annotations

import json
import os
import signal

from deployhooks.testing.fakeresque import enqueue, open_gate
from deployhooks.testing.fleet import AppSpec
from tests.helpers import fab, monit_settled, wait_for

NEW = "20260103000000"
SHOP = AppSpec("shop", workers=("deploytest", "q_{host}"))


def new_release(fleet):
    for h in fleet.hosts:
        fleet.run(h, f"mkdir -p /data/shop/releases/{NEW}/config", check=True)
    return f"/data/shop/releases/{NEW}"


def running(fleet, h, release=None):
    ws = fleet.workers(h, "shop")
    return (
        len(ws) == 2
        and all(w.state in ("idle", "busy") for w in ws)
        and (release is None or {w.release for w in ws} == {release})
    )


def test_busy_host_refuses_and_no_host_stops_anything(fleet, redis_client):
    """From a workstation the guard decides once for the fleet: the idle hosts were paused and
    resumed, never stopped (before, each host decided alone and host1 and host3 restarted)."""
    f = fleet(3, [SHOP])
    config = str(f.config_path("shop"))
    before = {h.name: sorted(w.pid for w in f.workers(h, "shop")) for h in f.hosts}
    enqueue(redis_client, "q_host2", "GateJob", "host2-job")
    wait_for(lambda: any(w.busy for w in f.workers(2, "shop")), 10, "host2 busy")

    r = fab("hooks.before-migrate", "--release-path", new_release(f), "--config", config)
    assert r.returncode == 1
    assert f"{f.host(2).target}: refusing to deploy" in r.stderr
    assert "q_host2 [GateJob]" in r.stderr
    for other in (1, 3):
        assert f"{f.host(other).target}: refusing" not in r.stderr
        wait_for(lambda: running(f, other), 30, f"host{other}'s workers running again")
    # every host was only paused and resumed: the same workers everywhere, the job ran on
    for h in f.hosts:
        assert sorted(w.pid for w in f.workers(h, "shop")) == before[h.name]
        services = f.monit(h, "-B", "summary").stdout
        assert "Not monitored" not in services
    open_gate(redis_client, "host2-job")
    wait_for(lambda: "host2-job" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the job")
    assert redis_client.llen("resque:failed") == 0


def test_idle_fleet_passes_then_every_host_restarts_on_the_new_release(fleet):
    f = fleet(3, [SHOP])
    config = str(f.config_path("shop"))
    release = new_release(f)
    r = fab("hooks.before-migrate", "--release-path", release, "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert f.workers(h, "shop") == []
        assert f.run(h, f"readlink {release}/config/resque.yml").stdout.strip() == "/data/shop/shared/config/resque.yml"
        f.run(h, f"ln -sfn releases/{NEW} /data/shop/.c && mv -Tf /data/shop/.c /data/shop/current", check=True)
    r = fab("hooks.after-symlink", "--release-path", release, "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert running(f, h, NEW)


def test_one_host_down_exits_3_naming_it_and_the_others_are_unharmed(fleet):
    f = fleet(3, [SHOP])
    config = str(f.config_path("shop"))
    release = new_release(f)
    os.kill(f.host(3).pid, signal.SIGKILL)  # the namespace's init: the whole host goes
    r = fab("hooks.before-migrate", "--release-path", release, "--config", config)
    assert r.returncode == 3
    assert f"{f.host(3).target}: cannot connect" in r.stderr
    for h in (1, 2):
        wait_for(lambda: running(f, h), 30, f"host{h}'s workers running again")


def test_ctrl_c_while_the_guard_waits_resumes_everything_and_loses_no_job(fleet, redis_client):
    import subprocess
    import sys
    import time

    from tests.helpers import REPO

    app = AppSpec("shop", workers=("deploytest", "q_{host}"), resque_extra="  on_busy: wait\n  wait_timeout: 300\n")
    # No wait for monit to learn the new workers' pids: the guard reads the wrapper's pidfiles
    # too, so host1's just-started workers are paused all the same (found: they were not).
    f = fleet(2, [app])
    enqueue(redis_client, "q_host2", "GateJob", "held-job")
    wait_for(lambda: any(w.busy for w in f.workers(2, "shop")), 10, "host2 busy")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fabric",
            "hooks.before-migrate",
            "--release-path",
            new_release(f),
            "--config",
            str(f.config_path("shop")),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seen = ""
    while "waiting for 1 job(s)" not in seen:
        line = proc.stdout.readline()
        assert line, "the guard never said it was waiting"
        seen += line
    # the fleet waits together: idle host1 is paused, not stopped, while host2's job runs
    wait_for(lambda: {w.state for w in f.workers(1, "shop")} == {"paused"}, 30, "host1 paused")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    print(seen + out, err)
    assert proc.returncode == 130 and "interrupted" in err  # 130: Ctrl-C, as shells report it
    assert time.monotonic() - started < 20  # not the 300 s wait_timeout
    for h in (1, 2):
        wait_for(lambda: running(f, h), 30, f"host{h}'s workers running again")
    open_gate(redis_client, "held-job")
    wait_for(lambda: "held-job" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the job")
    assert redis_client.llen("resque:failed") == 0


def test_a_symlinked_deploy_to_still_sees_the_busy_worker(fleet, redis_client):
    # Workers' cwd comes from the kernel, fully resolved; deploy_to in the config often is not
    # (/var/www/app -> /srv/app). The guard must still see the app's busy worker and refuse.
    f = fleet(1, [SHOP])
    monit_settled(f)
    f.run(1, "ln -s /data/shop /data/shop_link", check=True)
    text = f.config_path("shop").read_text()
    assert "deploy_to: /data/shop\n" in text
    config = f.root / "shop_link.deployhooks.yml"
    config.write_text(text.replace("deploy_to: /data/shop\n", "deploy_to: /data/shop_link\n"))
    enqueue(redis_client, "q_host1", "GateJob", "link-job")
    wait_for(lambda: any(w.busy for w in f.workers(1, "shop")), 10, "host1 busy")

    status = fab("resque.status", "--json", "--config", str(config))
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)["workers"]
    assert sorted((w["service"], w["state"]) for w in rows) == [("resque_shop_0", "idle"), ("resque_shop_1", "busy")], (
        rows
    )
    assert {(w["release"], w["release_mark"]) for w in rows} == {("20260102000000", "current")}, rows

    release = f"/data/shop_link/releases/{NEW}"
    # Not uploaded yet: bad input, said plainly, and nothing touched (the job runs on).
    r = fab("hooks.before-migrate", "--release-path", release, "--config", str(config))
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"the release folder {release} does not exist" in r.stderr
    assert sorted(w.state for w in f.workers(1, "shop")) == ["busy", "idle"]

    new_release(f)
    r = fab("hooks.before-migrate", "--release-path", release, "--config", str(config))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "refusing to deploy" in r.stderr and "q_host1 [GateJob]" in r.stderr
    open_gate(redis_client, "link-job")
    wait_for(lambda: "link-job" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the job")
    assert redis_client.llen("resque:failed") == 0


def test_a_busy_worker_the_guard_cannot_place_refuses_the_deploy(fleet, redis_client):
    # A host whose find has no -printf (busybox) gives no working directories: the guard cannot
    # tell which app the busy worker serves, so it counts it as this app's and refuses.
    f = fleet(1, [SHOP])
    f.run(
        1,
        "mkdir -p /root/fakebin && printf '#!/bin/sh\\necho \"find: unknown predicate "
        "-printf\" >&2\\nexit 1\\n' > /root/fakebin/find && chmod +x /root/fakebin/find && "
        "echo 'PATH=/root/fakebin:$PATH' >> /root/.bashrc",
        check=True,
    )
    config = str(f.config_path("shop"))
    enqueue(redis_client, "q_host1", "GateJob", "unplaced-job")
    wait_for(lambda: any(w.busy for w in f.workers(1, "shop")), 10, "host1 busy")

    r = fab("hooks.before-migrate", "--release-path", new_release(f), "--config", config)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "q_host1 [GateJob]" in r.stderr and "working directory could not be read" in r.stderr
    # nothing stopped; the idle worker was resumed (CONT), and its title says so at its next poll
    wait_for(lambda: sorted(w.state for w in f.workers(1, "shop")) == ["busy", "idle"], 5, "the idle worker resumed")
    open_gate(redis_client, "unplaced-job")
    wait_for(lambda: "unplaced-job" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the job")
    assert redis_client.llen("resque:failed") == 0
