"""The promise on every path, not only `fab deploy`: rollback, restart, stop and drain never end a
job unless asked by name (--force), and Ctrl-C leaves nothing paused or stopped.

Each test is a finding reproduced on the toolkit before these paths went through the guard: a
job longer than grace_time (here a gate job that runs until the test opens it) was killed by
`fab rollback`, `fab resque.restart` and `fab resque.stop`, and Ctrl-C during `resque.drain`
left every worker paused.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from deployhooks.testing.fakeresque import enqueue, open_gate
from deployhooks.testing.fleet import AppSpec
from tests.helpers import REPO, fab, monit_settled, wait_for

OLD, PREV = "20260101000000", "20260102000000"
SHOP = AppSpec("shop", workers=("deploytest", "q_{host}"), grace_time=2)


@pytest.fixture
def shop(fleet):
    f = fleet(2, [SHOP])
    monit_settled(f)
    return f, str(f.config_path("shop"))


def current(f, h):
    return f.run(h, "readlink /data/shop/current").stdout.strip().rsplit("/", 1)[-1]


def finished(redis_client):
    return [t.decode() if isinstance(t, bytes) else t for t in redis_client.lrange("resque:test:finished", 0, -1)]


def snapshot(f):
    """What a refusal must leave exactly as it was: worker pids and states, and current."""
    return {
        h.name: (current(f, h), sorted((w.pid, w.state) for w in f.workers(h, "shop") if w.state != "busy"))
        for h in f.hosts
    }


def busy_on_host2(f, redis_client, tag):
    enqueue(redis_client, "q_host2", "GateJob", tag)
    wait_for(lambda: any(w.busy and w.queue == "q_host2" for w in f.workers(2, "shop")), 10, "the job on host2")


def finish_job(f, redis_client, tag):
    open_gate(redis_client, tag)
    wait_for(lambda: tag in finished(redis_client), 15, f"job {tag} to finish")
    assert redis_client.llen("resque:failed") == 0


@pytest.mark.parametrize("command", [["rollback"], ["resque.restart"], ["resque.stop"]])
def test_a_job_longer_than_grace_time_is_never_ended(shop, redis_client, command):
    f, config = shop
    busy_on_host2(f, redis_client, "long-job")
    before = snapshot(f)
    r = fab(*command, "--config", config)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"{f.host(2).target}: refusing to" in r.stdout + r.stderr
    assert "GateJob" in r.stdout + r.stderr
    # Nothing moved on any host: not the idle host1, not host2's idle worker.
    wait_for(
        lambda: all(w.state != "paused" for h in f.hosts for w in f.workers(h, "shop")), 10, "every worker resumed"
    )
    assert snapshot(f) == before
    assert not f.run(1, "test -e /data/shop/shared/deployhooks/guard.json").returncode == 0
    finish_job(f, redis_client, "long-job")


def test_rollback_waits_for_the_job_under_on_busy_wait_then_goes_back(fleet, redis_client):
    f = fleet(
        2,
        [
            AppSpec(
                "shop",
                workers=("deploytest", "q_{host}"),
                grace_time=2,
                resque_extra="  on_busy: wait\n  wait_timeout: 60\n",
            )
        ],
    )
    monit_settled(f)
    config = str(f.config_path("shop"))
    busy_on_host2(f, redis_client, "rollback-wait")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric", "rollback", "--config", config],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: all(w.state in ("paused", "busy") for h in f.hosts for w in f.workers(h, "shop")),
            20,
            "the fleet paused",
        )
        assert all(current(f, h) == PREV for h in f.hosts)  # nothing switched while the job runs
        open_gate(redis_client, "rollback-wait")
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "rollback-wait" in finished(redis_client) and redis_client.llen("resque:failed") == 0
    for h in f.hosts:
        assert current(f, h) == OLD
        assert {w.release for w in f.workers(h, "shop")} == {OLD}
        assert f.run(h, f"test -d /data/shop/releases_failed/{PREV}").returncode == 0


def test_rollback_to_a_named_release_and_a_split_fleet_is_refused(shop):
    f, config = shop
    r = fab("rollback", "--release", PREV, "--config", config)  # already there: a no-op switch
    assert r.returncode == 0, r.stderr
    # An interrupted rollback left the hosts on different releases: rollback will not guess.
    f.run(2, f"ln -sfn /data/shop/releases/{OLD} /data/shop/.c && mv -Tf /data/shop/.c /data/shop/current", check=True)
    r = fab("rollback", "--config", config)
    assert r.returncode == 2 and "different releases" in r.stderr and "--release" in r.stderr
    r = fab("rollback", "--release", OLD, "--config", config)
    assert r.returncode == 0, r.stderr
    assert all(current(f, h) == OLD for h in f.hosts)
    r = fab("rollback", "--release", "latest", "--config", config)
    assert r.returncode == 2 and "--release" in r.stderr


def test_force_names_the_jobs_it_ends_then_ends_them(shop, redis_client):
    f, config = shop
    busy_on_host2(f, redis_client, "forced-job")
    r = fab("resque.restart", "--force", "--config", config)
    assert r.returncode == 0, r.stderr
    assert "resque.restart --force will end 1 running job(s)" in r.stdout
    assert f"{f.host(2).target}: pid" in r.stdout and "GateJob" in r.stdout
    assert "forced-job" not in finished(redis_client)


def test_ctrl_c_during_drain_leaves_no_worker_paused(shop, redis_client):
    f, config = shop
    busy_on_host2(f, redis_client, "drain-job")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fabric", "resque.drain", "--deadline", "60", "--config", config],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: all(w.state in ("paused", "busy") for h in f.hosts for w in f.workers(h, "shop")),
            20,
            "the fleet paused",
        )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "every paused worker was resumed" in out
    wait_for(
        lambda: all(w.state in ("idle", "busy") for h in f.hosts for w in f.workers(h, "shop")),
        10,
        "no worker left paused",
    )
    assert all(len(f.workers(h, "shop")) == 2 for h in f.hosts)
    finish_job(f, redis_client, "drain-job")


def test_rollback_under_a_symlinked_deploy_to(shop, redis_client):
    """current is read as status reads it (the raw link), so a deploy_to that is a symlink
    (/data/shop_link -> /data/shop) still gives rollback its releases and its workers."""
    f, config = shop
    for h in f.hosts:
        f.run(h, "ln -s /data/shop /data/shop_link", check=True)
    text = open(config).read()
    linked = f.root / "shop_link.deployhooks.yml"
    linked.write_text(text.replace("deploy_to: /data/shop\n", "deploy_to: /data/shop_link\n"))
    busy_on_host2(f, redis_client, "link-rollback")
    r = fab("rollback", "--config", str(linked))
    assert r.returncode == 1 and "GateJob" in r.stdout + r.stderr, r.stdout + r.stderr
    finish_job(f, redis_client, "link-rollback")
    r = fab("rollback", "--config", str(linked))
    assert r.returncode == 0, r.stdout + r.stderr
    for h in f.hosts:
        assert current(f, h) == OLD
        assert {w.release for w in f.workers(h, "shop")} == {OLD}
