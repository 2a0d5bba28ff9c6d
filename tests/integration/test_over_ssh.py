"""The same facts and hooks through a real SSH connection as through psutil on the host."""

from __future__ import annotations

import dataclasses
import subprocess

from deployhooks import settings as settings_mod
from deployhooks.facts.processes import local_processes, remote_processes, workers_from
from deployhooks.remote.fleet import connect
from tests.helpers import fab, wait_for

NEW = "20260103000000"


def _comparable(workers):
    # rss is sampled at two instants; everything else must match exactly.
    return sorted((dataclasses.replace(w, rss_kb=0) for w in workers), key=lambda w: w.pid)


def test_psutil_and_ps_over_ssh_agree(host, sshd):
    top = f"hosts:\n  util: [{sshd.host}]\n" + sshd.ssh_settings_yaml()
    shop = host.add_app("shop", workers=("shopq", "shopq"), top_extra=top)
    blog = host.add_app("blog", workers=("blogq",), top_extra=top)
    host.start()
    host.gate("shopq", "agree-job")
    host.wait_busy(shop)
    idle = [w for w in host.workers(shop) if not w.busy][0]
    subprocess.run(["kill", "-USR2", str(idle.pid)], check=True)
    wait_for(lambda: any(w.state == "paused" for w in host.workers(shop)), 10, "a paused worker")

    settings = settings_mod.load(str(shop.config))
    apps = {"shop": str(shop.layout.deploy_to), "blog": str(blog.layout.deploy_to)}
    conn = connect(sshd.host, settings)
    try:
        for _ in range(5):  # a worker may change state between the two samples; retry then
            over_ssh = _comparable(workers_from(remote_processes(conn), apps))
            here = _comparable(workers_from(local_processes(), apps))
            if over_ssh == here:
                break
    finally:
        conn.close()
        host.open_gate("agree-job")
    assert over_ssh == here
    states = sorted((w.app, w.state) for w in here if w.app)
    assert states == [("blog", "idle"), ("shop", "busy"), ("shop", "paused")]
    busy = next(w for w in here if w.busy and w.app == "shop")  # other tests run workers too
    assert (busy.queue, busy.job_class, busy.release) == ("shopq", "GateJob", "20260102000000")
    assert busy.job_pid and busy.busy_since


def test_fab_runs_the_hooks_over_ssh_with_the_same_outcomes(host, sshd):
    top = f"hosts:\n  util: [{sshd.host}]\n" + sshd.ssh_settings_yaml()
    shop = host.add_app("shop", top_extra=top)
    host.start()
    release = shop.new_release(NEW)

    host.gate("deploytest", "ssh-job")
    host.wait_busy(shop)
    r = fab("hooks.before-migrate", "--release-path", str(release), "--config", str(shop.config))
    assert r.returncode == 1
    assert f"{sshd.host}: refusing to deploy" in r.stderr and "GateJob" in r.stderr
    host.open_gate("ssh-job")
    wait_for(lambda: "ssh-job" in host.finished(), 15, "the job")
    wait_for(lambda: all(w.state == "idle" for w in host.workers(shop)), 10, "workers idle")

    r = fab("hooks.before-migrate", "--release-path", str(release), "--config", str(shop.config))
    assert r.returncode == 0, r.stderr
    assert host.workers(shop) == [] and (release / "config" / "resque.yml").is_symlink()
    shop.switch_current(release)
    r = fab("hooks.after-symlink", "--release-path", str(release), "--config", str(shop.config))
    assert r.returncode == 0, r.stderr
    assert {w.release for w in host.workers(shop)} == {NEW}


def test_unknown_host_key_is_refused_with_the_fix(host, sshd, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    top = f"hosts:\n  util: [{sshd.host}]\nssh:\n  known_hosts: {empty}\n  identity_file: {sshd.client_key}\n"
    shop = host.add_app("shop", top_extra=top)
    host.start()
    r = fab("hooks.before-migrate", "--release-path", str(shop.new_release(NEW)), "--config", str(shop.config))
    assert r.returncode == 3
    assert "unknown host key" in r.stderr and "ssh-keyscan" in r.stderr
    assert len(host.workers(shop)) == 2  # nothing touched


def test_host_down_exits_3_naming_it(host, sshd):
    top = (
        f"hosts:\n  util: [root@127.0.0.1:1]\nssh:\n  strict_host_keys: false\n"
        f"  identity_file: {sshd.client_key}\n  connect_timeout: 3\n"
    )
    shop = host.add_app("shop", top_extra=top)
    host.start()
    r = fab("hooks.before-migrate", "--release-path", str(shop.new_release(NEW)), "--config", str(shop.config))
    assert r.returncode == 3
    assert "root@127.0.0.1:1: cannot connect" in r.stderr


def test_status_over_ssh_shows_jobs_memory_releases_and_checks(host, sshd):
    import json

    top = f"hosts:\n  util: [{sshd.host}]\n" + sshd.ssh_settings_yaml()
    shop = host.add_app("shop", top_extra=top)
    host.start()
    r = fab("resque.status", "--config", str(shop.config))
    assert r.returncode == 0, r.stderr
    assert "resque_shop_0" in r.stdout and "20260102000000 (current)" in r.stdout
    assert fab("resque.status", "--check", "--config", str(shop.config)).returncode == 0

    host.gate("deploytest", "status-job")
    host.wait_busy(shop)
    r = fab("resque.status", "--json", "--check", "--config", str(shop.config))
    assert r.returncode == 1
    data = json.loads(r.stdout)
    busy = [w for w in data["workers"] if w["state"] == "busy"]
    assert len(busy) == 1 and busy[0]["job_class"] == "GateJob" and busy[0]["rss_kb"] > 0
    assert busy[0]["monit"] == "OK" and busy[0]["problems"] == ["busy"]

    # a new release becomes current without a restart: the workers are now on the old one
    shop.switch_current(shop.new_release(NEW))
    r = fab("resque.status", "--config", str(shop.config))
    assert "20260102000000 (old)" in r.stdout
    host.open_gate("status-job")
    r = fab("resque.restart", "--config", str(shop.config))
    assert r.returncode == 0, r.stderr
    assert {w.release for w in host.workers(shop)} == {NEW}
    assert "status-job" in host.finished()
