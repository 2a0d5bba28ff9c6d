"""Tested as deployed: every `fab` task over SSH as the deploy user, whose sudo runs monit only.

One fleet of two hosts for the whole module, booted with ``login=deploy``: each host's sshd lets
in only the deploy user (root is refused), the config says ``deploy@host`` and ``resque.sudo:
true``, and the machine's sudoers gives that user exactly ``(root) NOPASSWD: /usr/bin/monit``
(/etc/sudoers.d/deployhooks-test, from script/setup). The workers run as the same user. The tests
run in file order; each leaves every worker running for the next.
"""

from __future__ import annotations

import subprocess

import pytest
import redis

from deployhooks.testing import applayout
from deployhooks.testing.fakeresque import enqueue, open_gate
from deployhooks.testing.fleet import AppSpec
from tests.helpers import fab, make_repo, monit_settled, wait_for

LOGIN = applayout.test_user()
# Both hosts run the same queues, so the config describes every host exactly (resque.doctor).
SHOP = AppSpec("shop", workers=("deploytest", "other"))
PREV, NEW = "20260102000000", "20260103000000"


@pytest.fixture(scope="module")
def shop(module_fleet, tmp_path_factory):
    f = module_fleet(2, [SHOP], login=LOGIN)
    monit_settled(f)
    return f, str(f.config_path("shop")), make_repo(tmp_path_factory.mktemp("repo") / "shop")


@pytest.fixture(scope="module")
def jobs(redis_server):
    """The fleet's redis, not flushed: the module's workers stay registered across tests."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    client.close()


def current(f, h):
    return f.run(h, "readlink /data/shop/current").stdout.strip().rsplit("/", 1)[-1]


def releases(f, h, folder="releases"):
    return sorted(f.run(h, f"ls -1 /data/shop/{folder} 2>/dev/null").stdout.split())


def running(f, release=None, states=("idle", "busy")):
    """Every host runs its two workers, in one of `states`, on `release` when given."""
    return all(
        len(ws := f.workers(h, "shop")) == 2
        and all(w.state in states for w in ws)
        and (release is None or {w.release for w in ws} == {release})
        for h in f.hosts
    )


def worker_users(f):
    """The user of every worker on every host, as the host's `ps -o user` shows it."""
    users = set()
    for h in f.hosts:
        pids = ",".join(str(w.pid) for w in f.workers(h, "shop"))
        assert pids, f"no worker on {h.name}"
        users |= set(f.run(h, f"ps -o user= -p {pids}", check=True).stdout.split())
    return users


def finished(jobs, tag):
    return tag in jobs.lrange("resque:test:finished", 0, -1)


def test_only_the_deploy_user_logs_in_and_its_sudo_runs_monit_only(shop):
    f, config, _ = shop
    text = open(config).read()
    assert "  sudo: true\n" in text
    assert all(f"{LOGIN}@{h.address}" in text for h in f.hosts)
    with f.connect(1) as c:
        assert c.run("id -un", hide=True).stdout.strip() == LOGIN
        assert c.run("sudo -n monit -c /etc/monit/monitrc summary", hide=True).ok
        refused = c.run("sudo -n true", hide=True, warn=True)
        assert refused.exited != 0 and "password is required" in refused.stderr
    root = subprocess.run(
        [
            "ssh",
            "-i",
            str(f.client_key),
            "-o",
            f"UserKnownHostsFile={f.known_hosts}",
            "-o",
            "BatchMode=yes",
            f"root@{f.host(1).address}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert root.returncode == 255 and "Permission denied" in root.stderr
    # The machine's whole sudo policy for the login: one rule, monit as root.
    rules = subprocess.run(["sudo", "-n", "-l", "-U", LOGIN], capture_output=True, text=True, check=True)
    allowed = rules.stdout.split("may run the following commands on", 1)[1].splitlines()[1:]
    assert [line.strip() for line in allowed if line.strip()] == ["(root) NOPASSWD: /usr/bin/monit"]
    assert worker_users(f) == {LOGIN}


def test_hooks_over_ssh(shop):
    f, config, _ = shop
    release = f.new_release("shop", NEW)
    r = fab("hooks.before-migrate", "--release-path", release, "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert f.workers(h, "shop") == []
        assert f.run(h, f"readlink {release}/config/resque.yml").stdout.strip() == "/data/shop/shared/config/resque.yml"
    f.switch_current("shop", NEW)
    r = fab("hooks.after-symlink", "--release-path", release, "--config", config)
    assert r.returncode == 0, r.stderr
    assert running(f, NEW) and worker_users(f) == {LOGIN}


def test_deploy_refused_while_a_job_runs_changes_nothing_then_deploys_and_rolls_back(shop, jobs):
    f, config, repo = shop
    failed_before = jobs.llen("resque:failed")  # the session's redis: other modules' jobs too
    before = {h.name: (current(f, h), releases(f, h), releases(f, h, "releases_failed")) for h in f.hosts}
    enqueue(jobs, "deploytest", "GateJob", "deploy-user-busy")
    busy = wait_for(
        lambda: next((h for h in f.hosts if any(w.busy for w in f.workers(h, "shop"))), None), 10, "a busy worker"
    )
    busy_pids = sorted(w.pid for w in f.workers(busy, "shop"))

    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 1, r.stderr
    assert f"{busy.target}: refusing to deploy" in r.stdout + r.stderr
    assert "still running the old code on every host" in r.stderr
    for h in f.hosts:
        cur, rels, failed = before[h.name]
        assert (current(f, h), releases(f, h)) == (cur, rels)
        assert len(releases(f, h, "releases_failed")) == len(failed) + 1
    wait_for(lambda: running(f, NEW), 30, "every worker running again")
    # The busy host's workers were only paused and resumed: the job ran on.
    assert sorted(w.pid for w in f.workers(busy, "shop")) == busy_pids
    open_gate(jobs, "deploy-user-busy")
    wait_for(lambda: finished(jobs, "deploy-user-busy"), 15, "the job to finish")

    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 0, r.stderr
    new = current(f, 1)
    assert new not in (PREV, NEW)
    for h in f.hosts:
        assert current(f, h) == new
        assert f.run(h, "cat /data/shop/current/VERSION").stdout == "v1\n"
        assert f.run(h, "test -e /data/shop/shared/deployhooks/deploy.lock").returncode == 1
    assert running(f, new) and worker_users(f) == {LOGIN}

    r = fab("rollback", "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert current(f, h) == NEW and new in releases(f, h, "releases_failed")
    assert running(f, NEW) and worker_users(f) == {LOGIN}
    assert jobs.llen("resque:failed") == failed_before


def test_every_resque_task(shop, jobs):
    f, config, _ = shop
    r = fab("resque.status", "--config", config)
    assert r.returncode == 0, r.stderr
    for h in f.hosts:
        assert f"{h.target}: 2 worker(s): 2 idle" in r.stdout

    assert fab("resque.stop", "--config", config).returncode == 0
    assert all(f.workers(h, "shop") == [] for h in f.hosts)
    assert fab("resque.start", "--config", config).returncode == 0
    assert running(f, NEW)
    before = {(h.name, w.pid) for h in f.hosts for w in f.workers(h, "shop")}
    assert fab("resque.restart", "--config", config).returncode == 0
    after = {(h.name, w.pid) for h in f.hosts for w in f.workers(h, "shop")}
    assert len(after) == 4 and not before & after

    assert fab("resque.pause", "--config", config).returncode == 0
    assert running(f, states=("paused",))
    assert fab("resque.resume", "--config", config).returncode == 0
    wait_for(lambda: running(f, states=("idle",)), 10, "workers idle after resume")

    enqueue(jobs, "deploytest", "SleepJob", 1, "deploy-user-drain")
    wait_for(lambda: any(w.busy for h in f.hosts for w in f.workers(h, "shop")), 10, "a busy worker")
    r = fab("resque.drain", "--deadline", "30", "--config", config)
    assert r.returncode == 0, r.stderr
    assert finished(jobs, "deploy-user-drain")
    assert all(f.workers(h, "shop") == [] for h in f.hosts)
    assert fab("resque.start", "--config", config).returncode == 0

    r = fab("resque.logs", "--lines", "5", "--config", config)
    assert r.returncode == 0, r.stderr
    assert all(f"{h.target} | " in r.stdout for h in f.hosts)

    monit_settled(f)
    r = fab("resque.doctor", "--config", config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout
    for h in f.hosts:
        assert f"{h.target}: pass  monitrc" in r.stdout
    assert running(f, NEW) and worker_users(f) == {LOGIN}
