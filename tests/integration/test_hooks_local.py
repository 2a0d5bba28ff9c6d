"""The hook executables on one host, against real monit, redis and resque-faithful workers."""

from __future__ import annotations

import json
import os
import threading
import time

from .conftest import wait_for

NEW = "20260103000000"


def test_idle_workers_pass_and_come_back_on_the_new_release(host):
    shop = host.add_app("shop")
    host.start()
    release = shop.new_release(NEW)

    r = host.hook("before_migrate", shop, release)
    assert r.returncode == 0, r.stderr
    link = release / "config" / "resque.yml"
    assert link.is_symlink() and os.readlink(link) == str(shop.layout.config_dir / "resque.yml")
    assert host.workers(shop) == []
    assert all(s.stopped for s in host.services(shop).values())

    # idempotent: a second run re-links and passes with nothing to stop
    assert host.hook("before_migrate", shop, release).returncode == 0

    shop.switch_current(release)
    r = host.hook("after_symlink", shop, release)
    assert r.returncode == 0, r.stderr
    workers = host.workers(shop)
    assert len(workers) == 2 and {w.release for w in workers} == {NEW}
    assert not (shop.layout.deploy_to / "shared" / "deployhooks" / "guard.json").exists()


def test_busy_worker_under_quit_refuses_and_the_job_completes(host):
    shop = host.add_app("shop", stop="quit", resque_extra="  on_busy: abort\n")
    host.start()
    before = {s.name: s.pid for s in host.services(shop).values()}
    host.gate("deploytest", "long-job")
    host.wait_busy(shop)

    r = host.hook("before_migrate", shop, shop.new_release(NEW))
    assert r.returncode == 1
    busy = [w for w in host.workers(shop) if w.busy]
    assert f"pid {busy[0].pid} busy on deploytest [GateJob]" in r.stderr
    assert "refusing to deploy" in r.stderr and "resumed" in r.stderr
    # nothing was stopped: same workers, all monitored, and none left paused
    assert {s.name: s.pid for s in host.services(shop).values()} == before
    host.open_gate("long-job")
    wait_for(lambda: "long-job" in host.finished(), 15, "the job to finish")
    assert host.failed() == []
    wait_for(lambda: all(w.state == "idle" for w in host.workers(shop)), 10, "workers idle again")
    host.enqueue("deploytest", 0.1, "after")  # and they still take jobs
    wait_for(lambda: "after" in host.finished(), 10, "a new job to be taken")


def test_busy_worker_with_wait_proceeds_after_the_job(host):
    shop = host.add_app("shop", resque_extra="  on_busy: wait\n  wait_timeout: 30\n")
    host.start()
    host.gate("deploytest", "waited-for")
    host.wait_busy(shop)
    release = shop.new_release(NEW)
    result = {}
    hook = threading.Thread(target=lambda: result.update(r=host.hook("before_migrate", shop, release)))
    hook.start()
    # the guard has paused the idle worker and is waiting for the busy one: let the job end
    wait_for(lambda: any(w.state == "paused" for w in host.workers(shop)), 30, "the guard's pause")
    time.sleep(1)
    assert hook.is_alive() and host.workers(shop)  # still waiting, nothing stopped yet
    host.open_gate("waited-for")
    hook.join(60)
    r = result["r"]
    assert r.returncode == 0, r.stderr
    assert "waiting for 1 job(s) to finish" in r.stdout
    assert "waited-for" in host.finished() and host.failed() == []
    assert host.workers(shop) == []


def test_wait_that_runs_out_refuses_and_resumes(host):
    shop = host.add_app("shop", resque_extra="  on_busy: wait\n  wait_timeout: 2\n")
    host.start()
    host.gate("deploytest", "too-long")
    host.wait_busy(shop)
    r = host.hook("before_migrate", shop, shop.new_release(NEW))
    assert r.returncode == 1 and "wait_timeout" in r.stderr
    host.open_gate("too-long")
    wait_for(lambda: "too-long" in host.finished(), 15, "the job to finish")
    wait_for(lambda: all(w.state == "idle" for w in host.workers(shop)), 10, "workers idle again")


def test_busy_worker_under_term_refuses_and_stops_nothing(host):
    shop = host.add_app("shop", stop="term")
    host.start()
    pids = sorted(w.pid for w in host.workers(shop))
    host.gate("deploytest", "must-not-die")
    host.wait_busy(shop)
    r = host.hook("before_migrate", shop, shop.new_release(NEW))
    assert r.returncode == 1
    assert sorted(w.pid for w in host.workers(shop)) == pids
    assert all(s.running for s in host.services(shop).values())
    host.open_gate("must-not-die")
    wait_for(lambda: "must-not-die" in host.finished(), 15, "the job to finish")
    assert host.failed() == []


def test_guard_at_before_symlink(host):
    shop = host.add_app("shop", resque_extra="  guard_at: before_symlink\n")
    host.start()
    release = shop.new_release(NEW)
    assert host.hook("before_migrate", shop, release).returncode == 0
    assert len(host.workers(shop)) == 2  # linked resque.yml only
    r = host.hook("before_symlink", shop, release)
    assert r.returncode == 0, r.stderr
    assert host.workers(shop) == []


def test_two_apps_on_one_host_are_kept_apart(host):
    shop = host.add_app("shop", workers=("shopq",))
    blog = host.add_app("blog", workers=("blogq",))
    host.start()
    host.gate("shopq", "shop-job")
    host.wait_busy(shop)
    # blog's guard does not see shop's job
    r = host.hook("before_migrate", blog, blog.new_release(NEW))
    assert r.returncode == 0, r.stderr
    assert host.workers(blog) == [] and len(host.workers(shop)) == 1
    r = host.hook("before_migrate", shop, shop.new_release(NEW))
    assert r.returncode == 1
    host.open_gate("shop-job")
    wait_for(lambda: "shop-job" in host.finished(), 15, "shop's job")


def test_deploy_failed_starts_again_what_the_guard_stopped(host):
    shop = host.add_app("shop")
    host.start()
    r = host.hook("deploy_failed", shop)
    assert r.returncode == 0 and "nothing to undo" in r.stdout
    assert host.hook("before_migrate", shop, shop.new_release(NEW)).returncode == 0
    assert host.workers(shop) == []
    r = host.hook("deploy_failed", shop)
    assert r.returncode == 0, r.stderr
    workers = host.workers(shop)
    assert len(workers) == 2 and {w.release for w in workers} == {"20260102000000"}
    assert host.hook("deploy_failed", shop).returncode == 0  # record gone: nothing more to do


def test_after_symlink_names_a_worker_left_on_an_old_release(host):
    shop = host.add_app("shop", workers=("deploytest",))
    host.start()
    import subprocess
    import sys

    stray = subprocess.Popen(
        [sys.executable, "-m", "deployhooks.testing.fakeresque", "resque:work"],
        cwd=shop.layout.releases[0],
        start_new_session=True,
        env={**os.environ, "QUEUE": "other", "REDIS_URL": host.host.redis_url, "INTERVAL": "0.2"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: any(w.pid == stray.pid and w.state == "idle" for w in host.workers(shop)), 10, "the stray worker"
        )
        release = shop.new_release(NEW)
        shop.switch_current(release)
        r = host.hook("after_symlink", shop, release)
        assert r.returncode == 3
        assert f"pid {stray.pid} runs from {shop.layout.releases[0]}" in r.stderr
    finally:
        stray.kill()
        stray.wait()


def test_monit_daemon_down_is_a_clear_failure(host):
    shop = host.add_app("shop")
    host.start()
    host.monit.stop()
    r = host.hook("before_migrate", shop, shop.new_release(NEW))
    assert r.returncode == 3
    assert "the monit daemon is not running" in r.stderr


def test_unknown_group_is_named(host):
    shop = host.add_app("shop", resque_extra="  monit_group: nosuch_resque\n")
    host.start()
    r = host.hook("before_migrate", shop, shop.new_release(NEW))
    assert r.returncode == 3 and "no group 'nosuch_resque'" in r.stderr


def test_malformed_config_exits_2_naming_the_line_and_touches_nothing(host):
    shop = host.add_app("shop", resque_extra="  on_busy: sometimes\n")
    host.start()
    pids = sorted(w.pid for w in host.workers(shop))
    release = shop.new_release(NEW)
    r = host.hook("before_migrate", shop, release)
    assert r.returncode == 2
    assert f"{shop.config}:" in r.stderr and "resque.on_busy: expected one of abort, wait" in r.stderr
    assert not (release / "config" / "resque.yml").exists()
    assert sorted(w.pid for w in host.workers(shop)) == pids


def test_resque_yml_without_the_env_refuses_before_stopping(host):
    shop = host.add_app("shop", redis_entry="development: localhost:6379\n")
    host.start()
    release = shop.new_release(NEW)
    r = host.hook("before_migrate", shop, release)
    assert r.returncode == 2 and "no entry for the framework env 'production'" in r.stderr
    assert len(host.workers(shop)) == 2
    assert not (release / "config" / "resque.yml").exists()


def test_engine_yard_environment_and_roles_without_workers(host):
    shop = host.add_app("shop")
    host.start()
    release = shop.new_release(NEW)
    env = {
        "EY_DEPLOY_APP": "shop",
        "EY_DEPLOY_RELEASE_PATH": str(release),
        "EY_DEPLOY_FRAMEWORK_ENV": "production",
        "EY_DEPLOY_CURRENT_ROLES": "app_master",
    }
    r = host.hook("before_migrate", shop, None, env=env)
    assert r.returncode == 0, r.stderr
    assert "run no resque workers" in r.stdout
    assert (release / "config" / "resque.yml").is_symlink() and len(host.workers(shop)) == 2
    env["EY_DEPLOY_CURRENT_ROLES"] = "util"
    r = host.hook("before_migrate", shop, None, env=env)
    assert r.returncode == 0, r.stderr
    assert host.workers(shop) == []
    env["EY_DEPLOY_APP"] = "other"
    assert host.hook("before_migrate", shop, None, env=env).returncode == 2


def test_a_refusing_guard_keeps_an_earlier_guards_record(host):
    shop = host.add_app("shop")
    host.start()
    assert host.hook("before_migrate", shop, shop.new_release(NEW)).returncode == 0
    record = shop.layout.deploy_to / "shared" / "deployhooks" / "guard.json"
    assert json.loads(record.read_text())["stopped"] is True
    # that deploy died without deploy_failed; someone starts the workers by hand, a job runs,
    # and the next deploy's guard refuses: the earlier record must survive the refusal
    host.monit.run("start", "all", "-g", shop.layout.group)
    host.wait_running(shop)
    host.gate("deploytest", "later-job")
    host.wait_busy(shop)
    assert host.hook("before_migrate", shop, shop.new_release("20260104000000")).returncode == 1
    assert json.loads(record.read_text())["stopped"] is True
    host.open_gate("later-job")
    assert host.hook("deploy_failed", shop).returncode == 0
    assert not record.exists() and len(host.workers(shop)) == 2


def test_engine_yard_instance_names_pick_the_utility_instances_that_run_workers(host):
    """Engine Yard's on_utilities("resque") runs on utility instances by name: another utility
    instance must not run the guard (found: every utility instance did, and one without the
    monit group failed the deploy)."""
    shop = host.add_app("shop", resque_extra="  utility_names: [resque]\n")
    host.start()
    host.gate("deploytest", "ey-names-job")
    host.wait_busy(shop)
    release = shop.new_release(NEW)
    elsewhere = host.hook(
        "before_migrate", shop, release, env={"EY_DEPLOY_CURRENT_ROLES": "util", "EY_DEPLOY_CURRENT_NAME": "sidekiq"}
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    assert "utility instance sidekiq is not one of resque.utility_names (resque)" in elsewhere.stdout
    named = host.hook(
        "before_migrate", shop, release, env={"EY_DEPLOY_CURRENT_ROLES": "util", "EY_DEPLOY_CURRENT_NAME": "resque"}
    )
    assert named.returncode == 1 and "refusing to deploy" in named.stderr
    host.open_gate("ey-names-job")
    wait_for(lambda: "ey-names-job" in host.finished(), 15, "the job to finish")
    assert host.failed() == []
