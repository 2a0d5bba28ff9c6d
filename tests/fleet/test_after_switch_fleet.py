"""A failure after the switch leaves no worker stopped or paused.

Found before: an app hook failing after the switch (deploy/after_symlink here; Ctrl-C there is
the same path) ended the deploy with the workers the guard had stopped still stopped on every
host: the queues had no worker until someone ran the repair by hand.
"""

from __future__ import annotations

import pytest

from deployhooks.facts.monit import parse_status
from deployhooks.testing.fleet import AppSpec
from tests.fleet.test_app_hooks_fleet import commit
from tests.helpers import fab, make_repo, monit_settled, wait_for

PREV = "20260102000000"
FAIL = "#!/bin/sh\necho 'cache warm-up failed' >&2\nexit 1\n"


def current(f, h):
    return f.run(h, "readlink /data/shop/current").stdout.strip().rsplit("/", 1)[-1]


def serving(f, release):
    """Every host: its worker idle (not paused, not stopped) on `release`, and monit monitoring it."""
    for h in f.hosts:
        ws = f.workers(h, "shop")
        services = parse_status(f.monit(h, "-B", "status", "-g", "shop_resque").stdout)
        if not (len(ws) == 1 and ws[0].state == "idle" and ws[0].release == release):
            return False
        if not services or not all(s.running and not s.pending for s in services.values()):
            return False
    return True


@pytest.mark.parametrize("guard_at", ["before_migrate", "before_symlink"])
def test_a_failing_after_symlink_hook_leaves_every_worker_running(fleet, tmp_path, guard_at):
    f = fleet(2, [AppSpec("shop", workers=("deploytest",), resque_extra=f"  guard_at: {guard_at}\n")])
    monit_settled(f)
    config = str(f.config_path("shop"))
    repo = make_repo(tmp_path / "repo")
    commit(repo, {"deploy/after_symlink": (FAIL, 0o755)})
    r = fab("deploy", "--repo", str(repo), "--config", config)
    assert r.returncode == 3, r.stderr
    out = r.stdout + r.stderr
    new = current(f, 1)
    assert new != PREV and current(f, 2) == new
    assert "AFTER the switch" in out and "cache warm-up failed" in out
    assert "run again" in out
    if guard_at == "before_migrate":
        # the stopped groups were started again: on current, the new release
        wait_for(lambda: serving(f, new), 30, "every worker running on the new release")
    else:
        # the paused workers were resumed: they still hold the old code, and the output says so
        wait_for(lambda: serving(f, PREV), 30, "every worker resumed")
        assert "still run the previous release's code" in out and "fab resque.restart" in out
        assert fab("resque.restart", "--config", config).returncode == 0
        wait_for(lambda: serving(f, new), 30, "every worker restarted on the new release")
    assert all(f.run(h, "test -e /data/shop/shared/deployhooks/guard.json").returncode == 1 for h in f.hosts)
