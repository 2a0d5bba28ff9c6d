"""Rolling deploys (`deploy.batch_size`): batch after batch, the other hosts keep serving.

A sampler reads every host's workers from outside (the machine's process table) all through
the deploy: at every sample some host must have a worker running and unpaused, so the shared
queue is never without a worker; and some sample must show a host without one, so the sampler
did see the restarts it vouches for.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from deployhooks.testing.fakeresque import enqueue, open_gate
from deployhooks.testing.fleet import AppSpec
from tests.helpers import fab, make_repo, monit_settled, wait_for

PREV = "20260102000000"


def shop(on_busy: str) -> AppSpec:
    return AppSpec(
        "shop",
        workers=("deploytest,q_{host}",),
        top_extra="deploy:\n  batch_size: 1\n",
        resque_extra=f"  guard_at: before_symlink\n  on_busy: {on_busy}\n  wait_timeout: 60\n",
    )


def current(f, h):
    return f.run(h, "readlink /data/shop/current").stdout.strip().rsplit("/", 1)[-1]


class Sampler(threading.Thread):
    """Which hosts have a shop worker running and unpaused (idle or busy), every few ms."""

    def __init__(self, fleet):
        super().__init__(daemon=True)
        self.fleet, self.stop, self.samples = fleet, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            scan = self.fleet._worker_scan()
            serving = {
                name for name, ws in scan.items() if any(w.app == "shop" and w.state in ("idle", "busy") for w in ws)
            }
            self.samples.append((time.monotonic(), serving))
            time.sleep(0.005)


@pytest.fixture
def rolling(fleet, tmp_path):
    def make(on_busy):
        f = fleet(3, [shop(on_busy)])
        monit_settled(f)
        return f, str(f.config_path("shop")), make_repo(tmp_path / "repo")

    return make


def test_a_rolling_deploy_always_leaves_a_worker_on_the_shared_queue(rolling, redis_client):
    f, config, repo = rolling("wait")
    sampler = Sampler(f)
    sampler.start()
    try:
        r = fab("deploy", "--json", "--repo", str(repo), "--config", config)
    finally:
        sampler.stop.set()
        sampler.join()
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    new = report["release"]
    names = [s["name"] for s in report["steps"]]
    for n in (1, 2, 3):
        assert f"switch current (batch {n}/3)" in names and f"after_symlink (batch {n}/3)" in names
    # one host at a time: each batch's switch and restart touched its own host only
    assert [s["hosts"] for s in report["steps"] if s["name"].startswith("switch current")] == [
        {h.target: "ok"} for h in f.hosts
    ]
    assert all(current(f, h) == new for h in f.hosts)
    wait_for(lambda: all(w.release == new for h in f.hosts for w in f.workers(h, "shop")), 30, "workers on new")

    empty = [t for t, serving in sampler.samples if not serving]
    down = {name for _, serving in sampler.samples for name in [h.name for h in f.hosts] if name not in serving}
    assert len(sampler.samples) > 50, len(sampler.samples)
    assert not empty, f"{len(empty)} samples with no worker serving anywhere"
    assert down == {h.name for h in f.hosts}, f"the sampler never saw some hosts restart: {down}"
    # and the report says the same: each host had its window, no instant had every host down
    assert report["queue_downtime"]["no_worker_anywhere"] == 0
    assert len(report["queue_downtime"]["per_host"]) == 3
    assert all(d > 0 for d in report["queue_downtime"]["per_host"].values())


def test_a_job_in_a_later_batch_stops_the_rollout_there_and_names_the_hosts(rolling, redis_client):
    f, config, repo = rolling("abort")
    enqueue(redis_client, "q_host2", "GateJob", "busy-host2")
    wait_for(lambda: any(w.busy for w in f.workers(2, "shop")), 10, "host2 busy")
    before = {h.name: sorted(w.pid for w in f.workers(h, "shop")) for h in f.hosts[1:]}
    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 3, r.stderr
    out = r.stdout + r.stderr
    new = current(f, 1)
    assert new != PREV
    assert current(f, 2) == PREV and current(f, 3) == PREV
    assert "guard (batch 2/3) refused" in out and "AFTER the switch" in out
    assert f"current points at {new} on: {f.host(1).target}; still on the previous release: " in out
    assert f"fab rollback --release {PREV}" in out
    # host2 and host3 were not touched: the same worker processes, none left paused
    after = {h.name: sorted(w.pid for w in f.workers(h, "shop")) for h in f.hosts[1:]}
    assert after == before
    assert all(w.state != "paused" for h in f.hosts for w in f.workers(h, "shop"))
    open_gate(redis_client, "busy-host2")
    wait_for(lambda: "busy-host2" in redis_client.lrange("resque:test:finished", 0, -1), 15, "the job")
    assert redis_client.llen("resque:failed") == 0

    # the named repair works
    r = fab("rollback", "--release", PREV, "--config", config)
    assert r.returncode == 0, r.stderr
    assert all(current(f, h) == PREV for h in f.hosts)
