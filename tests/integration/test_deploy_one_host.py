"""fab deploy / rollback against one real host over SSH (the fleet tests cover many hosts)."""

from __future__ import annotations

import os

from tests.helpers import fab, make_repo, wait_for


def test_deploy_switches_restarts_and_prunes_then_rolls_back(host, sshd, tmp_path):
    top = (
        f"hosts:\n  util: [{sshd.host}]\n"
        + sshd.ssh_settings_yaml()
        + "keep_releases: 2\ndeploy:\n  migrate_command: test -f VERSION\n  migrate_role: util\n"
    )
    shop = host.add_app("shop", top_extra=top)
    host.start()
    repo = make_repo(tmp_path / "repo")
    r = fab("deploy", "--repo", str(repo), "--config", str(shop.config))
    assert r.returncode == 0, r.stderr
    releases = sorted(os.listdir(shop.layout.deploy_to / "releases"))
    new = os.path.basename(os.readlink(shop.layout.current))
    assert new == releases[-1] and len(releases) == 2  # pruned to keep_releases
    assert (shop.layout.current / "VERSION").read_text() == "v1\n"
    assert (shop.layout.current / "app" / "jobs" / "sleep_job.rb").exists()
    assert (shop.layout.current / "config" / "resque.yml").is_symlink()
    assert os.readlink(shop.layout.current / "log") == str(shop.layout.deploy_to / "shared" / "log")
    assert {w.release for w in host.workers(shop)} == {new}
    assert not (shop.layout.deploy_to / "shared" / "deployhooks" / "deploy.lock").exists()

    r = fab("rollback", "--config", str(shop.config))
    assert r.returncode == 0, r.stderr
    assert os.path.basename(os.readlink(shop.layout.current)) == releases[0]
    assert {w.release for w in host.workers(shop)} == {releases[0]}
    assert (shop.layout.deploy_to / "releases_failed" / new).is_dir()


def test_busy_worker_refuses_the_deploy_and_nothing_switches(host, sshd, tmp_path):
    top = f"hosts:\n  util: [{sshd.host}]\n" + sshd.ssh_settings_yaml()
    shop = host.add_app("shop", top_extra=top)
    host.start()
    before = os.readlink(shop.layout.current)
    host.gate("deploytest", "deploy-busy")
    host.wait_busy(shop)
    r = fab("deploy", "--repo", str(make_repo(tmp_path / "repo")), "--config", str(shop.config))
    assert r.returncode == 1
    assert "still running the old code" in r.stderr and "GateJob" in r.stdout + r.stderr
    assert os.readlink(shop.layout.current) == before
    failed = os.listdir(shop.layout.deploy_to / "releases_failed")
    assert len(failed) == 1 and failed[0] not in os.listdir(shop.layout.deploy_to / "releases")
    host.open_gate("deploy-busy")
    wait_for(lambda: "deploy-busy" in host.finished(), 15, "the job")
    wait_for(lambda: len([w for w in host.workers(shop) if w.state == "idle"]) == 2, 10, "workers")
    assert not (shop.layout.deploy_to / "shared" / "deployhooks" / "deploy.lock").exists()


def test_a_held_lock_refuses_naming_the_holder(host, sshd, tmp_path):
    top = f"hosts:\n  util: [{sshd.host}]\n" + sshd.ssh_settings_yaml()
    shop = host.add_app("shop", top_extra=top)
    host.start()
    lock = shop.layout.deploy_to / "shared" / "deployhooks" / "deploy.lock"
    lock.mkdir(parents=True)
    (lock / "info").write_text('{"by": "alice@laptop", "since": "2026-11-27 10:00:00 UTC", "release": "x"}')
    r = fab("deploy", "--repo", str(make_repo(tmp_path / "repo")), "--config", str(shop.config))
    assert r.returncode == 1 and "alice@laptop" in r.stdout + r.stderr
    assert lock.exists()  # someone else's lock is left alone
    assert len(host.workers(shop)) == 2
