"""`fab deploy` runs the app's own Engine Yard hooks (`deploy/<name>`) and checks linked files.

Found before: an app's deploy/before_migrate etc. were never run by `fab deploy`, and a
deploy.shared_files entry missing from shared/config was silently not linked (Capistrano's
deploy:check:linked_files fails instead).
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from deployhooks.testing.fleet import AppSpec
from tests.helpers import REPO, fab, make_repo, monit_settled

SHOP = AppSpec("shop", workers=("deploytest",))
PREV = "20260102000000"

RECORD = """#!/bin/sh
echo "$0 $EY_DEPLOY_APP $EY_DEPLOY_FRAMEWORK_ENV $EY_DEPLOY_CURRENT_ROLES $EY_DEPLOY_CURRENT_NAME $(pwd -P)" \\
  >> /data/shop/shared/hooks.log
"""


@pytest.fixture(scope="module")
def shop(module_fleet):
    f = module_fleet(2, [SHOP])
    monit_settled(f)
    return f, str(f.config_path("shop"))


def current(f, h):
    return f.run(h, "readlink /data/shop/current").stdout.strip().rsplit("/", 1)[-1]


def commit(repo, files: dict[str, tuple[str, int]]):
    for name, (text, mode) in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "hooks"],
        check=True,
    )


def test_the_apps_hooks_run_in_engine_yard_order_on_every_host(shop, tmp_path):
    f, config = shop
    repo = make_repo(tmp_path / "repo")
    commit(
        repo,
        {
            "deploy/before_migrate": (RECORD, 0o755),
            "deploy/after_restart": (RECORD, 0o755),
            "deploy/before_deploy": (RECORD, 0o755),
            "deploy/before_symlink": (RECORD, 0o644),  # not executable: skipped with a warning
            # deployhooks' own shim: fab deploy runs the guard itself, so this one is left alone
            "deploy/after_symlink": ((REPO / "hooks" / "after_symlink").read_text(), 0o755),
        },
    )
    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning: deploy/before_symlink is not executable: skipped" in r.stdout
    new = current(f, 1)
    for h in f.hosts:
        lines = f.run(h, "cat /data/shop/shared/hooks.log").stdout.splitlines()
        names = [line.split()[0].rsplit("/", 1)[-1] for line in lines]
        assert names == ["before_deploy", "before_migrate", "after_restart"]
        for line in lines:
            _, app, env, roles, name, cwd = line.split()
            assert (app, env, name) == ("shop", "production", h.target)
            assert "util" in roles and cwd == f"/data/shop/releases/{new}"


def test_a_failing_hook_aborts_before_the_switch(shop, tmp_path):
    f, config = shop
    before = {h.name: current(f, h) for h in f.hosts}
    repo = make_repo(tmp_path / "repo")
    commit(repo, {"deploy/before_migrate": ("#!/bin/sh\necho 'assets missing' >&2\nexit 7\n", 0o755)})
    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "the app's deploy/before_migrate hook failed (exit 7): assets missing" in r.stdout + r.stderr
    assert "still running the old code on every host" in r.stderr
    assert {h.name: current(f, h) for h in f.hosts} == before


def test_a_missing_linked_file_stops_the_deploy_before_anything_moves(shop, tmp_path):
    f, config = shop
    cfg = tmp_path / "deployhooks.yml"
    text = open(config).read()
    cfg.write_text(
        text + "deploy:\n  shared_files: [database.yml]\n"
        if "\ndeploy:" not in text
        else text.replace("\ndeploy:\n", "\ndeploy:\n  shared_files: [database.yml]\n")
    )
    before = {h.name: (current(f, h), f.run(h, "ls /data/shop/releases").stdout) for h in f.hosts}
    r = fab("deploy", "--repo", str(make_repo(tmp_path / "repo")), "--config", str(cfg))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "linked file(s) missing: /data/shop/shared/config/database.yml" in r.stdout + r.stderr
    assert {h.name: (current(f, h), f.run(h, "ls /data/shop/releases").stdout) for h in f.hosts} == before
    shutil.rmtree(tmp_path / "repo")


def test_lock_status_unlock_and_lock_wait(shop, tmp_path):
    """No way to see or release a deploy lock except by hand on each host, and no way to wait
    for one: now deploy.lock-status, deploy.unlock (naming the holder, confirmed) and
    --lock-wait."""
    import json
    import threading
    import time

    f, config = shop
    lock = "/data/shop/shared/deployhooks/deploy.lock"
    info = json.dumps({"by": "alice@laptop", "since": "2026-12-01 09:00:00 UTC", "release": "20261201090000"})
    f.run(1, f"mkdir -p {lock} && printf %s '{info}' > {lock}/info", check=True)
    r = fab("deploy.lock-status", "--config", config)
    assert r.returncode == 0, r.stderr
    assert f"{f.host(1).target}: deploy lock held by alice@laptop, since 2026-12-01 09:00:00 UTC" in r.stdout
    assert f"{f.host(2).target}: no deploy lock" in r.stdout

    repo = make_repo(tmp_path / "repo")
    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 1 and "fab deploy.unlock" in r.stdout + r.stderr

    release = threading.Timer(2.0, lambda: f.run(1, f"rm -rf {lock}"))
    release.start()
    started = time.monotonic()
    r = fab("deploy", "--lock-wait", "30", "--repo", str(repo), "--config", config)
    release.join()
    assert r.returncode == 0, r.stdout + r.stderr
    assert time.monotonic() - started >= 2

    f.run(2, f"mkdir -p {lock} && printf %s '{info}' > {lock}/info", check=True)
    r = fab("deploy.unlock", "--config", config)  # no terminal to confirm in
    assert r.returncode == 2 and "--yes" in r.stderr
    assert f.run(2, f"test -d {lock}").returncode == 0
    r = fab("deploy.unlock", "--yes", "--config", config)
    assert r.returncode == 0 and "held by alice@laptop" in r.stdout
    assert f.run(2, f"test -d {lock}").returncode == 1


def test_fabrics_own_flags_reach_the_connections(shop, tmp_path):
    """Each task built a fresh Config, so Fabric's -i (and -t, fabric.yaml, FABRIC_*) had no
    effect. With no identity_file in our config, fab -i KEY now logs in with that key."""
    f, config = shop
    cfg = tmp_path / "deployhooks.yml"
    cfg.write_text("".join(line for line in open(config).read().splitlines(True) if "identity_file" not in line))
    r = fab("resque.status", "--config", str(cfg))
    assert r.returncode == 3, r.stdout + r.stderr  # no key: authentication fails
    r = fab("-i", str(f.client_key), "resque.status", "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{f.host(1).target}: 1 worker(s)" in r.stdout


def test_built_in_bundle_and_assets_steps_run_in_the_release(shop, tmp_path):
    f, config = shop
    cfg = tmp_path / "deployhooks.yml"
    text = open(config).read()
    extra = '  bundle_command: echo "$RAILS_ENV" > BUNDLED\n  assets_command: touch ASSETS\n  assets_roles: [util]\n'
    cfg.write_text(
        text.replace("\ndeploy:\n", "\ndeploy:\n" + extra) if "\ndeploy:\n" in text else text + "deploy:\n" + extra
    )
    r = fab("deploy", "--repo", str(make_repo(tmp_path / "repo")), "--config", str(cfg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "==> bundle (2 host(s))" in r.stdout and "==> assets (2 host(s))" in r.stdout
    for h in f.hosts:
        assert f.run(h, "cat /data/shop/current/BUNDLED").stdout == "production\n"
        assert f.run(h, "test -e /data/shop/current/ASSETS").returncode == 0


def test_fab_dash_h_acts_on_the_hosts_together_with_one_table(shop):
    """fab -H a,b ran the task once per host, one after another, each with its own table."""
    f, config = shop
    hosts = ",".join(h.target for h in f.hosts)
    r = fab("-H", hosts, "resque.status", "--config", config)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("fleet: 2 host(s)") == 1 and r.stdout.count("HOST ") == 1
    for h in f.hosts:
        assert f"{h.target}: 1 worker(s)" in r.stdout
