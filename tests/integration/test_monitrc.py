"""render_monitrc / render_monit_control: the text, its validation, and real monit reading it."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from deployhooks.resque.monitrc import render_monit_control, render_monitrc
from deployhooks.testing.applayout import make_app
from tests.fixtures.monit import MONIT, WRAPPER, gone, job_child, pidfile_worker, wait_for, write_app_monitrc

BASE = dict(
    wrapper="/usr/local/bin/deployhooks-resque",
    deploy_to="/data/shop",
    pid_dir="/var/run/deployhooks/resque/shop",
    stop_action="stop",
    grace_time=300,
)


def test_one_stanza_per_worker_with_wrapper_commands_and_timeouts():
    text = render_monitrc("shop", "production", "shop_resque", 2, **BASE, totalmem_mb=300)
    assert text.count("check process ") == 2
    assert "check process resque_shop_0 with pidfile /var/run/deployhooks/resque/shop/resque_0.pid\n" in text
    assert (
        '  start program = "/usr/local/bin/deployhooks-resque --deploy-to /data/shop '
        '--pid-dir /var/run/deployhooks/resque/shop shop start production resque_1.conf" with timeout 30 seconds\n'
    ) in text
    # The stop timeout must outlast GRACE_TIME (EY: 90 s against GRACE_TIME=300, so monit gave up first).
    assert (
        '  stop program = "/usr/local/bin/deployhooks-resque --deploy-to /data/shop '
        '--pid-dir /var/run/deployhooks/resque/shop --grace-time 300 shop stop production resque_0.conf"'
        " with timeout 330 seconds\n"
    ) in text
    # monit's restart is one wrapper run, ending the worker as the stop program would; its timeout
    # covers both halves.
    assert (
        '  restart program = "/usr/local/bin/deployhooks-resque --deploy-to /data/shop '
        "--pid-dir /var/run/deployhooks/resque/shop --grace-time 300 --restart-with stop shop restart production "
        'resque_0.conf" with timeout 360 seconds\n'
    ) in text
    assert text.count("  if totalmem is greater than 300 MB for 2 cycles then restart\n") == 2
    assert text.count("  group shop_resque\n") == 2


def test_worker_list_margin_and_no_memory_rule():
    text = render_monitrc(
        "shop",
        "staging",
        "g",
        [3, 5],
        **{**BASE, "grace_time": 2.5, "stop_action": "term"},
        start_timeout=12,
        margin=4,
    )
    assert "resque_shop_3 " in text and "resque_shop_5 " in text and "resque_shop_0" not in text
    assert '--grace-time 2.5 shop term staging resque_5.conf" with timeout 7 seconds' in text
    assert "with timeout 12 seconds" in text
    assert "totalmem" not in text


@pytest.mark.parametrize(
    "override",
    [
        {"wrapper": "/opt/my tools/deployhooks-resque"},
        {"wrapper": "bin/deployhooks-resque"},
        {"deploy_to": "/data/shop'x"},
        {"pid_dir": '/run/"x"'},
        {"pid_dir": "/run/x#y"},
        {"deploy_to": "/data/shop\tx"},
        {"stop_action": "pause"},
        {"grace_time": -1},
        {"totalmem_mb": 0},
    ],
)
def test_values_monit_would_misread_raise(override):
    with pytest.raises(ValueError):
        render_monitrc("shop", "production", "shop_resque", 1, **{**BASE, **override})


@pytest.mark.parametrize(
    "app,env,group,workers",
    [
        ("my app", "production", "g", 1),
        ("shop", "prod uction", "g", 1),
        ("shop", "production", "g'", 1),
        ("shop", "production", "g", [0, 0]),
        ("shop", "production", "g", -1),
    ],
)
def test_bad_names_and_worker_lists_raise(app, env, group, workers):
    with pytest.raises(ValueError):
        render_monitrc(app, env, group, workers, **BASE)


def test_control_file_has_allow_line_and_state_under_statedir():
    text = render_monit_control(statedir="/s", socket="/s/m.sock", include="/etc/m.d/*.monitrc", password="pw")
    assert "set daemon 1\n" in text
    for name in ("log /s/monit.log", "pidfile /s/monit.pid", "idfile /s/monit.id", "statefile /s/monit.state"):
        assert f"set {name}\n" in text
    # Without an allow line monit 5.33 starts no httpd and every CLI call fails.
    assert "set httpd unixsocket /s/m.sock\n    allow deployhooks:pw\n" in text
    assert text.endswith("include /etc/m.d/*.monitrc\n")
    # a fresh random token each time unless one is given
    assert render_monit_control(statedir="/s", socket="/s/m.sock") != render_monit_control(
        statedir="/s", socket="/s/m.sock"
    )
    with pytest.raises(ValueError):
        render_monit_control(statedir="/s x", socket="/s/m.sock")


def _syntax_check(tmp_path, monitrc_text, mode=0o600):
    (tmp_path / "app.monitrc").write_text(monitrc_text)
    control = tmp_path / "control"
    control.write_text(
        render_monit_control(
            statedir=str(tmp_path), socket=str(tmp_path / "m.sock"), include=str(tmp_path / "app.monitrc")
        )
    )
    os.chmod(control, mode)
    return subprocess.run([MONIT, "-t", "-c", str(control)], capture_output=True, text=True, timeout=30)


def test_rendered_monitrc_passes_monit_t(tmp_path):
    text = render_monitrc(
        "shop",
        "production",
        "shop_resque",
        3,
        wrapper=WRAPPER,
        deploy_to=str(tmp_path / "shop"),
        pid_dir=str(tmp_path / "pids"),
        stop_action="stop",
        grace_time=600,
        totalmem_mb=300,
    )
    result = _syntax_check(tmp_path, text)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Control file syntax OK" in result.stdout
    # monit -t only *warns* ("Program does not exist") about a missing program and still says OK.
    assert "does not exist" not in result.stdout + result.stderr


def test_monit_refuses_control_file_readable_by_others(tmp_path):
    result = _syntax_check(tmp_path, "", mode=0o644)
    assert result.returncode == 1
    assert "permission 0644 is wrong" in result.stdout + result.stderr


def _push(client, queue, seconds, tag):
    client.sadd("resque:queues", queue)
    client.rpush(f"resque:queue:{queue}", json.dumps({"class": "SleepJob", "args": [seconds, tag]}))


def _finished(client):
    return [t.decode() if isinstance(t, bytes) else t for t in client.lrange("resque:test:finished", 0, -1)]


def test_group_start_and_stop_all_end_to_end(tmp_path, monit_daemon, redis_server, redis_client):
    """monit start/stop all -g through the rendered monitrc: workers drain, pidfiles go, no process stays."""
    layout = make_app(tmp_path, "shop", workers=["grp_a", "grp_b"], redis_url=redis_server.url)
    write_app_monitrc(layout, tmp_path / "monit.d", grace_time=2, totalmem_mb=500)
    monit = monit_daemon(tmp_path / "monit.d" / "*.monitrc")

    assert monit.run("start", "all", "-g", layout.group).returncode == 0
    workers = [wait_for(lambda n=n: pidfile_worker(layout.pidfile(n)), what=f"worker {n}") for n in (0, 1)]
    for n in (0, 1):
        monit.wait_status(layout.service(n), "OK")
    assert workers[0].pid != workers[1].pid

    # A 1 s job on worker 0 finishes inside the 2 s grace; a 60 s job on worker 1 is killed after it.
    _push(redis_client, "grp_a", 1.0, "short-job")
    _push(redis_client, "grp_b", 60, "long-job")
    kids = [wait_for(lambda w=w: job_child(w), what="job child") for w in workers]
    started = time.monotonic()
    assert monit.run("stop", "all", "-g", layout.group).returncode == 0
    wait_for(lambda: all(gone(p) for p in [*workers, *kids]), timeout=20, what="workers and job children gone")
    elapsed = time.monotonic() - started
    for n in (0, 1):
        monit.wait_status(layout.service(n), "Not monitored")
        assert not layout.pidfile(n).exists()
    assert _finished(redis_client) == ["short-job"]
    # monit stops group members one after another: the 60 s job costs the 2 s grace, the 1 s job at most 1 s more.
    assert 2 <= elapsed < 8, elapsed
    assert "stop action done" in monit.log_text()
