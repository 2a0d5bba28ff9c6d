"""`fab --dry <task>` changes nothing and says what it would do.

Found before: `fab --dry deploy` switched current on every host and `fab --dry resque.stop`
stopped every worker: Fabric's --dry never reached the toolkit's own connections. Here every
task runs with --dry against a fleet with a job running on one host, and a snapshot of each
host's /data (paths, owners, modes, link targets, sizes, mtimes), monit's view, the worker
processes and redis is the same before and after.
"""

from __future__ import annotations

import pytest
import redis

from deployhooks.testing.fakeresque import enqueue, open_gate
from deployhooks.testing.fleet import AppSpec
from tests.helpers import fab, make_repo, monit_settled, wait_for

SHOP = AppSpec("shop", workers=("deploytest", "q_{host}"), grace_time=2)
PREV = "20260102000000"


@pytest.fixture(scope="module")
def redis_client_module(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="module")
def busy_fleet(module_fleet, redis_client_module, tmp_path_factory):
    f = module_fleet(2, [SHOP])
    monit_settled(f)
    enqueue(redis_client_module, "q_host2", "GateJob", "dry-busy")
    wait_for(lambda: any(w.busy for w in f.workers(2, "shop")), 10, "the job on host2")
    yield f, str(f.config_path("shop")), make_repo(tmp_path_factory.mktemp("repo") / "repo")
    open_gate(redis_client_module, "dry-busy")


def snapshot(f, redis_client):
    hosts = {}
    for h in f.hosts:
        # The workers' logs grow by themselves; everything else must not change at all.
        files = f.run(
            h,
            "find /data /etc/monit/conf.d -path '*/shared/log' -prune -o -printf '%p %u %m %s %T@ %l\\n' | sort",
            check=True,
        ).stdout
        monit = f.monit(h, "-B", "summary").stdout
        procs = sorted((w.pid, w.state, w.release) for w in f.workers(h, "shop"))
        hosts[h.name] = (files, monit, procs)
    keys = sorted(k for k in redis_client.keys("resque:*") if b"stat" not in k and b"worker" not in k)
    return hosts, {k: redis_client.dump(k) for k in keys}


TASKS = [
    (["deploy", "--repo", "{repo}"], 1, "would refuse to deploy"),
    (["rollback"], 1, "would refuse to roll back"),
    (["rollback", "--release", PREV], 1, "would refuse to roll back"),
    (["resque.stop"], 1, "would refuse to resque.stop"),
    (["resque.stop", "--force"], 0, "would run: monit"),
    (["resque.restart"], 1, "would refuse to resque.restart"),
    (["resque.drain", "--deadline", "5"], 0, "would wait up to 5s"),
    (["resque.start"], 0, "would run: monit"),
    (["resque.pause"], 0, "would send USR2"),
    (["resque.resume"], 0, ""),
    (["resque.setup"], 0, ""),
    (["hooks.before-migrate", "--release-path", f"/data/shop/releases/{PREV}"], 1, "would refuse"),
    (["hooks.after-symlink", "--release-path", f"/data/shop/releases/{PREV}"], 0, "would run: monit"),
]


@pytest.mark.parametrize("args,code,says", TASKS, ids=[" ".join(t[0][:2]) for t in TASKS])
def test_dry_run_changes_nothing_and_says_what_it_would_do(busy_fleet, redis_client_module, args, code, says):
    f, config, repo = busy_fleet
    args = [a.replace("{repo}", str(repo)) for a in args]
    before = snapshot(f, redis_client_module)
    r = fab("--dry", *args, "--config", config)
    out = r.stdout + r.stderr
    assert r.returncode == code, out
    assert says in out
    assert "Traceback" not in out
    if code == 0:
        assert "[dry run] nothing was changed" in out
    assert snapshot(f, redis_client_module) == before
