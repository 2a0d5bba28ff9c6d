"""deployhooks-resque against real monit and real (resque-faithful) workers.

Workers are started through monit, as in production, so they end up under the fixture's reaper.
Tests that then drive the wrapper by hand first ``unmonitor`` the service: otherwise monit would
see the worker gone and start a new one in its next cycle.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import signal
import subprocess
import sys
import time

import psutil
import pytest

from deployhooks.testing.applayout import fake_worker_argv, make_app
from tests.fixtures.monit import WRAPPER, gone, job_child, pidfile_worker, procline, wait_for, write_app_monitrc

GRACE = 2.0
# Python start-up of the wrapper plus psutil polling; generous for a loaded CI machine.
SLACK = 1.5


def wrapper(layout, action, n=0, *options, env=None, timeout=60):
    """Run deployhooks-resque on worker n of ``layout``; returns the CompletedProcess."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [WRAPPER, *layout.wrapper_args(action, n, *options)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def script_command(folder, body, *args):
    """A worker command running the shell script `body` (root's file, which others may run)."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"worker{len(list(folder.iterdir()))}.sh"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return (str(script), *args)


def _ignore_quit_and_int():
    signal.signal(signal.SIGQUIT, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def wrapper_under_reaper(layout, action, n, out_path, *options, ignore_quit=False):
    """Start the wrapper under a reaper that outlives it, for actions that launch a worker by hand.

    The reaper adopts the worker once the wrapper exits and exits itself, with the wrapper's exit
    status, when that worker is gone.
    """
    out = open(out_path, "wb")
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "deployhooks.testing.reaper",
                "--",
                WRAPPER,
                *layout.wrapper_args(action, n, *options),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # As monit or nohup may leave them: ignored dispositions survive fork and exec.
            preexec_fn=_ignore_quit_and_int if ignore_quit else None,
        )
    finally:
        out.close()


@contextlib.contextmanager
def reaped(layout, action, n, out_path, *options, ignore_quit=False):
    """`wrapper_under_reaper`, terminated on the way out if it is still running."""
    reaper = wrapper_under_reaper(layout, action, n, out_path, *options, ignore_quit=ignore_quit)
    try:
        yield reaper
    finally:
        if reaper.poll() is None:
            reaper.terminate()
            reaper.wait(timeout=10)


def _restarted(layout, old):
    return wait_for(
        lambda: (w := pidfile_worker(layout.pidfile(0))) and w.pid != old.pid and w, timeout=15, what="new worker"
    )


@contextlib.contextmanager
def restarting(layout, old, tmp_path, *options):
    """Restart worker 0 (replacing `old`) under a reaper and yield the new worker; on the way
    out stop it: the wrapper that restarted it exited 0 and the new worker is gone."""
    out = tmp_path / "restart.out"
    with reaped(layout, "restart", 0, out, *options) as reaper:
        new = _restarted(layout, old)
        yield new
        assert wrapper(layout, "stop", 0, "--grace-time", str(GRACE)).returncode == 0
        assert reaper.wait(timeout=10) == 0, out.read_text()
        assert gone(new)


def push_job(client, queue, seconds, tag):
    client.sadd("resque:queues", queue)
    client.rpush(f"resque:queue:{queue}", json.dumps({"class": "SleepJob", "args": [seconds, tag]}))


def finished(client):
    return [t.decode() if isinstance(t, bytes) else t for t in client.lrange("resque:test:finished", 0, -1)]


@pytest.fixture
def deployed(tmp_path, monit_daemon, redis_server):
    """Factory: build apps, render their monitrc, start one monit daemon, start every group.

    ``deployed({"shop": ["q1"]})`` returns (monit, {app: layout}, {app: [worker processes]}).
    """

    def make(apps, *, monitor=True, worker_command=None, extra_env=None, before_start=None, **monitrc_kwargs):
        monit_d = tmp_path / "monit.d"
        layouts = {}
        for app, queues in apps.items():
            layouts[app] = make_app(
                tmp_path,
                app,
                workers=queues,
                redis_url=redis_server.url,
                worker_command=worker_command,
                extra_env=extra_env,
            )
            write_app_monitrc(layouts[app], monit_d, **monitrc_kwargs)
            if before_start:
                before_start(layouts[app])
        monit = monit_daemon(monit_d / "*.monitrc")
        workers = {}
        for app, layout in layouts.items():
            assert monit.run("start", "all", "-g", layout.group).returncode == 0
        for app, layout in layouts.items():
            workers[app] = [
                wait_for(lambda n=n: pidfile_worker(layout.pidfile(n)), what=f"{app} worker {n} waiting")
                for n in range(len(layout.confs))
            ]
            for n in range(len(layout.confs)):
                monit.wait_status(layout.service(n), "OK")
                if not monitor:
                    assert monit.run("unmonitor", layout.service(n)).returncode == 0
                    monit.wait_status(layout.service(n), "Not monitored")
        return monit, layouts, workers

    return make


# --- usage -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv,bad",
    [
        (["my app", "start", "production", "resque_0.conf"], "app"),
        (["shop/../x", "start", "production", "resque_0.conf"], "app"),
        (["shop", "start", "prod;rm", "resque_0.conf"], "framework_env"),
        (["shop", "start", "production", "../resque_0.conf"], "conf"),
        (["shop", "start", "production", "resque_0"], "conf"),
        (["shop", "frobnicate", "production", "resque_0.conf"], "action"),
        (["shop", "start", "production"], "conf"),
        (["--grace-time", "soon", "shop", "stop", "production", "resque_0.conf"], "grace-time"),
        (["--restart-with", "pause", "shop", "restart", "production", "resque_0.conf"], "restart-with"),
    ],
)
def test_bad_arguments_exit_2(tmp_path, argv, bad):
    result = subprocess.run(
        [WRAPPER, "--pid-dir", str(tmp_path / "pids"), "--deploy-to", str(tmp_path / "app"), *argv],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert bad in result.stderr
    assert not (tmp_path / "pids").exists()


# --- start -----------------------------------------------------------------------------------


def _processes_in(deploy_to):
    """Pids of processes whose cwd is inside ``deploy_to`` (other tests' workers run elsewhere)."""
    root = os.path.realpath(deploy_to) + os.sep
    pids = set()
    for proc in psutil.process_iter():
        try:
            if (proc.cwd() + os.sep).startswith(root) and proc.status() != psutil.STATUS_ZOMBIE:
                pids.add(proc.pid)
        except psutil.Error:
            pass
    return pids


def _old_log_line(layout):
    layout.logfile(0).write_text("line from an earlier worker\n")
    user = pwd.getpwnam(layout.user)
    os.chown(layout.logfile(0), user.pw_uid, user.pw_gid)


def test_start_under_monit_then_start_again_refuses(deployed, redis_client, tmp_path):
    # The procline overwrites /proc/<pid>/environ, so the worker's environment is dumped by a shell
    # that then execs the worker (pid unchanged, as with `bundle exec`).
    command = script_command(tmp_path / "bin", 'env > worker.env; exec "$@"', *fake_worker_argv())
    monit, layouts, workers = deployed(
        {"shop": ["start_q"]}, worker_command=command, extra_env={"VERBOSE": "1"}, before_start=_old_log_line
    )
    layout, worker = layouts["shop"], workers["shop"][0]

    # The pidfile holds the worker's own pid; the wrapper's session and the launching wrapper are gone.
    assert layout.pidfile(0).read_text() == f"{worker.pid}\n"
    assert worker.cwd() == os.path.realpath(layout.releases[-1])
    assert os.getsid(worker.pid) == worker.pid
    env = dict(
        line.split("=", 1) for line in (layout.releases[-1] / "worker.env").read_text().splitlines() if "=" in line
    )
    assert env["APP_ROOT"] == str(layout.current)
    assert env["RAILS_ENV"] == env["RACK_ENV"] == "production"
    assert env["QUEUE"] == "start_q" and "QUEUES" not in env
    assert env["VERBOSE"] == "1" and "VVERBOSE" not in env  # passed only when set (resque: set = on)
    assert not [k for k in env if k.startswith("MONIT_")]
    log = layout.logfile(0).read_text()
    assert log.startswith("line from an earlier worker\n")  # appended, never truncated
    assert f"started worker pid {worker.pid}" in log
    assert "*** Starting worker" in log  # the worker's own stdout
    assert "start requested" in log

    before = _processes_in(layout.deploy_to)
    assert before == {worker.pid}
    again = wrapper(layout, "start")
    assert again.returncode == 1
    assert f"already running with pid {worker.pid}" in again.stderr
    assert _processes_in(layout.deploy_to) == before
    assert layout.pidfile(0).read_text() == f"{worker.pid}\n"


def test_start_refusals_launch_nothing(tmp_path, redis_server):
    layout = make_app(tmp_path, "shop", workers=["q"], redis_url=redis_server.url)
    (layout.config_dir / "resque_0.conf").write_text("# no queue here\nINTERVAL=1\n")
    result = wrapper(layout, "start")
    assert result.returncode == 1 and "QUEUE or QUEUES must be set" in result.stderr

    layout.confs[0].unlink()
    result = wrapper(layout, "start")
    assert result.returncode == 1 and "resque_0.conf is missing" in result.stderr

    make_app(tmp_path, "shop", workers=["q"], redis_url=redis_server.url)
    layout.current.unlink()
    result = wrapper(layout, "start")
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert not layout.pidfile(0).exists()


def test_worker_dying_at_start_fails_with_its_log(tmp_path, redis_server):
    command = script_command(tmp_path / "bin", "echo 'rake aborted! No Rakefile found'; exit 3", "resque:work")
    layout = make_app(tmp_path, "shop", workers=["q"], redis_url=redis_server.url, worker_command=command)
    result = wrapper(layout, "start")
    assert result.returncode == 1
    assert "exited at once with status 3" in result.stderr
    assert "rake aborted! No Rakefile found" in result.stderr
    assert not layout.pidfile(0).exists()


def test_start_replaces_stale_pidfile_of_unrelated_process(tmp_path, redis_server):
    layout = make_app(tmp_path, "shop", workers=["stale_q"], redis_url=redis_server.url)
    sleeper = subprocess.Popen(["sleep", "100"])
    reaper = None
    try:
        layout.pid_dir.mkdir(parents=True)
        layout.pidfile(0).write_text(f"{sleeper.pid}\n")
        reaper = wrapper_under_reaper(layout, "start", 0, tmp_path / "start.out")
        worker = wait_for(lambda: pidfile_worker(layout.pidfile(0)), what="worker replacing the stale pidfile")
        assert worker.pid != sleeper.pid and sleeper.poll() is None
        stopped = wrapper(layout, "stop", 0, "--grace-time", str(GRACE))
        assert stopped.returncode == 0, stopped.stderr
        assert reaper.wait(timeout=10) == 0, (tmp_path / "start.out").read_text()
        assert "which is not this app's worker (it is not a resque worker)" in (tmp_path / "start.out").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
        if reaper is not None and reaper.poll() is None:
            reaper.terminate()
            reaper.wait(timeout=10)


def test_root_starts_worker_as_the_monitrc_user_with_default_signals(tmp_path, redis_server):
    """As root the worker runs as --user (not the owner of current), and QUIT works even if our
    caller ignored it: a non-interactive shell cannot un-ignore a signal ignored on entry, so
    only the wrapper's reset lets QUIT end it."""
    assert os.geteuid() == 0, "the wrapper's privilege drop can only be tested as root"
    command = script_command(
        tmp_path / "bin", "id -un > whoami; env > worker.env; while :; do sleep 0.1; done", "resque:work"
    )
    layout = make_app(tmp_path, "shop", workers=["q"], redis_url=redis_server.url, worker_command=command)
    user = pwd.getpwnam(layout.user)
    os.chown(layout.releases[-1], 0, 0)  # the owner of current no longer says who the worker is
    os.chmod(layout.releases[-1], 0o777)
    with reaped(layout, "start", 0, tmp_path / "start.out", ignore_quit=True) as reaper:
        whoami = layout.releases[-1] / "whoami"
        wait_for(lambda: whoami.exists() and whoami.read_text().strip(), what="worker writing whoami")
        assert whoami.read_text().strip() == layout.user
        # The script may write whoami before the wrapper (after spawn returns) writes the pidfile.
        pid_text = wait_for(
            lambda: layout.pidfile(0).exists() and layout.pidfile(0).read_text().strip(), what="the pidfile"
        )
        worker = psutil.Process(int(pid_text))
        assert worker.uids().real == user.pw_uid and worker.gids().real == user.pw_gid
        env_file = layout.releases[-1] / "worker.env"
        # whoami is written before worker.env; wait for the second file to be complete.
        wait_for(
            lambda: "USER=" in (env_file.read_text() if env_file.exists() else ""),
            what="worker writing its environment",
        )
        env = env_file.read_text().splitlines()
        assert f"HOME={user.pw_dir}" in env and f"USER={layout.user}" in env
        assert (layout.log_dir / "resque_0.log").stat().st_uid == user.pw_uid  # opened as the user

        stopped = wrapper(layout, "quit", 0, "--grace-time", "5")
        assert stopped.returncode == 0, stopped.stderr
        assert "killing" not in stopped.stderr and "exited after" in stopped.stdout
        assert reaper.wait(timeout=10) == 0, (tmp_path / "start.out").read_text()


# --- stop / term -----------------------------------------------------------------------------


def test_quit_waits_for_the_running_job(deployed, redis_client):
    monit, layouts, workers = deployed({"shop": ["drain_q"]}, monitor=False)
    layout, worker = layouts["shop"], workers["shop"][0]
    push_job(redis_client, "drain_q", 2.0, "drained")
    child = wait_for(lambda: job_child(worker), what="job child")

    started = time.monotonic()
    result = wrapper(layout, "quit", 0, "--grace-time", "6")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert finished(redis_client) == ["drained"]
    assert gone(worker) and gone(child)
    assert not layout.pidfile(0).exists()
    assert 0.5 < elapsed < 6, elapsed  # waited for the job, not for the whole grace time
    assert "exited after" in result.stdout


def test_job_longer_than_grace_is_killed_after_grace_seconds(deployed, redis_client):
    monit, layouts, workers = deployed({"shop": ["long_q"]}, monitor=False)
    layout, worker = layouts["shop"], workers["shop"][0]
    push_job(redis_client, "long_q", 60, "too-long")
    child = wait_for(lambda: job_child(worker), what="job child")

    started = time.monotonic()
    result = wrapper(layout, "stop", 0, "--grace-time", str(GRACE))
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert GRACE <= elapsed < GRACE + SLACK, elapsed  # seconds, not EY's quarter-seconds
    assert gone(worker) and gone(child)
    assert finished(redis_client) == []
    assert not layout.pidfile(0).exists()
    assert f"killing job child(ren) {child.pid}" in result.stderr


def test_term_ends_the_job_at_once(deployed, redis_client):
    monit, layouts, workers = deployed({"shop": ["term_q"]}, monitor=False)
    layout, worker = layouts["shop"], workers["shop"][0]
    push_job(redis_client, "term_q", 60, "terminated")
    child = wait_for(lambda: job_child(worker), what="job child")

    started = time.monotonic()
    result = wrapper(layout, "term")
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert elapsed < SLACK, elapsed
    assert gone(worker) and gone(child)
    assert finished(redis_client) == []
    assert "killing" not in result.stderr  # resque itself ended the job; no forced end needed


def test_stale_pidfile_of_unrelated_process_is_not_signalled(tmp_path):
    layout = make_app(tmp_path, "shop", workers=["q"])
    layout.pid_dir.mkdir(parents=True)
    sleeper = subprocess.Popen(["sleep", "100"])
    try:
        for action in ("stop", "term", "pause", "abort"):
            layout.pidfile(0).write_text(f"{sleeper.pid}\n")
            result = wrapper(layout, action)
            assert result.returncode == 0, result.stderr
            assert not layout.pidfile(0).exists()
            assert sleeper.poll() is None, f"{action} signalled an unrelated process"
        result = wrapper(layout, "stop")  # no pidfile at all
        assert result.returncode == 0 and "nothing to stop" in result.stdout
    finally:
        sleeper.kill()
        sleeper.wait()


# --- signals, restart ------------------------------------------------------------------------


def test_pause_cont_and_abort(deployed, redis_client):
    monit, layouts, workers = deployed({"shop": ["sig_q"]}, monitor=False)
    layout, worker = layouts["shop"], workers["shop"][0]

    assert wrapper(layout, "pause").returncode == 0
    wait_for(lambda: "Paused" in procline(worker), what="Paused procline")
    assert wrapper(layout, "cont").returncode == 0
    wait_for(lambda: "Waiting for" in procline(worker), what="Waiting procline after CONT")

    push_job(redis_client, "sig_q", 60, "aborted")
    child = wait_for(lambda: job_child(worker), what="job child")
    assert wrapper(layout, "abort").returncode == 0
    wait_for(lambda: gone(child), timeout=5, what="job child killed by USR1")
    assert not gone(worker)
    assert finished(redis_client) == []


def test_restart_replaces_the_worker(deployed, tmp_path):
    monit, layouts, workers = deployed({"shop": ["restart_q"]}, monitor=False)
    layout, old = layouts["shop"], workers["shop"][0]
    with restarting(layout, old, tmp_path):
        assert gone(old)


def test_restart_drains_the_running_job_by_default(deployed, redis_client, tmp_path):
    monit, layouts, workers = deployed({"shop": ["rquit_q"]}, monitor=False)
    layout, old = layouts["shop"], workers["shop"][0]
    push_job(redis_client, "rquit_q", 1.5, "drained")
    wait_for(lambda: job_child(old), what="job child")
    with restarting(layout, old, tmp_path, "--grace-time", "30"):
        assert finished(redis_client) == ["drained"]  # QUIT: the job ran to its end first
        assert gone(old)


def test_restart_with_term_ends_the_job_as_term_does(deployed, redis_client, tmp_path):
    monit, layouts, workers = deployed({"shop": ["rterm_q"]}, monitor=False)
    layout, old = layouts["shop"], workers["shop"][0]
    push_job(redis_client, "rterm_q", 60, "terminated")
    child = wait_for(lambda: job_child(old), what="job child")
    started = time.monotonic()
    with restarting(layout, old, tmp_path, "--restart-with", "term"):
        assert time.monotonic() - started < 60
        assert gone(old) and gone(child)
        assert finished(redis_client) == []  # TERM: resque ended the job; the restart did not wait 60 s


def test_monit_restarts_through_the_wrappers_restart_program(deployed):
    monit, layouts, workers = deployed({"shop": ["mrestart_q"]})
    layout, old = layouts["shop"], workers["shop"][0]
    assert monit.run("restart", layout.service(0)).returncode == 0
    new = _restarted(layout, old)
    assert gone(old)
    service = layout.service(0)
    log = wait_for(
        lambda: (
            (text := monit.log_text().partition(f"'{service}' restart on user request")[2])
            and f"'{service}' restart action done" in text
            and text
        ),
        what="monit's restart to finish",
    )
    # One run of the restart program, not a stop program and a start program.
    assert f"'{service}' restart: '" in log, log
    assert f"'{service}' stop: '" not in log and f"'{service}' start: '" not in log, log
    monit.wait_status(service, "OK")
    assert pidfile_worker(layout.pidfile(0)).pid == new.pid


# --- two apps, locks -------------------------------------------------------------------------


def test_two_apps_with_the_same_worker_numbers_do_not_collide(deployed):
    monit, layouts, workers = deployed({"alpha": ["a_q"], "beta": ["b_q"]})
    alpha, beta = layouts["alpha"], layouts["beta"]
    assert alpha.pidfile(0) != beta.pidfile(0)
    assert workers["alpha"][0].pid != workers["beta"][0].pid

    # Hold alpha's resque_0 lock as another wrapper would: alpha waits and gives up, beta is free.
    alpha.pid_dir.mkdir(parents=True, exist_ok=True)
    with open(alpha.pid_dir / "resque_0.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        fast = {"DEPLOYHOOKS_LOCK_TIMEOUT": "0.5"}
        busy = wrapper(alpha, "pause", env=fast)
        assert busy.returncode == 1
        assert f"another deployhooks-resque is acting on alpha resque_0.conf (pid {os.getpid()})" in busy.stderr
        assert wrapper(beta, "pause", env=fast).returncode == 0
    assert wrapper(alpha, "pause").returncode == 0  # the lock died with its holder's fd

    assert monit.run("stop", "all", "-g", alpha.group).returncode == 0
    wait_for(lambda: gone(workers["alpha"][0]), what="alpha worker gone")
    monit.wait_status(alpha.service(0), "Not monitored")
    assert not gone(workers["beta"][0])
    assert beta.pidfile(0).read_text() == f"{workers['beta'][0].pid}\n"
