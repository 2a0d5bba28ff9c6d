"""deployhooks-resque as root against a deploy user who owns the app's tree and tries to steer it.

Each test is an attack that worked on the wrapper before it dropped privileges first and stopped
trusting files under deploy_to: run as root (as monit runs it), with the app owned by the
unprivileged test user.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import psutil
import pytest

from deployhooks.testing.applayout import make_app
from tests.fixtures.monit import WRAPPER, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the wrapper runs as root under monit")


def run_wrapper(args, timeout=30):
    return subprocess.run([WRAPPER, *args], capture_output=True, text=True, timeout=timeout)


def root_secret(tmp_path, text="root only\n"):
    """A root-only file outside the app, the target of the links the attacker plants."""
    path = tmp_path / "secret"
    path.write_text(text)
    path.chmod(0o600)
    return path


def as_user(layout, path, *, symlink_to=None):
    """Make `path` (a link when `symlink_to`) belong to the app's user, as the attacker would."""
    user = pwd.getpwnam(layout.user)
    if symlink_to is not None:
        path.symlink_to(symlink_to)
    os.lchown(path, user.pw_uid, user.pw_gid)


def test_current_pointing_at_a_root_folder_and_a_command_in_env_custom_run_nothing_as_root(tmp_path):
    """`ln -sfn /usr/share current` + RESQUE_WORKER_COMMAND in env.custom ran `id` as uid 0."""
    layout = make_app(tmp_path, "shop", workers=["q"])
    out = tmp_path / "pwned"
    layout.current.unlink()
    layout.current.symlink_to("/usr/share")
    env_custom = layout.config_dir / "env.custom"
    env_custom.write_text(f"RESQUE_WORKER_COMMAND=\"sh -c 'id -u > {out}'\"\n")
    as_user(layout, env_custom)

    result = run_wrapper(layout.wrapper_args("start", 0))
    assert result.returncode == 1, result.stderr
    assert "RESQUE_WORKER_COMMAND is not read from env files" in result.stderr
    assert not out.exists()

    # A monitrc line from before --user existed: refused, not run as the owner of current (root).
    legacy = [a for a in layout.wrapper_args("start", 0) if a not in ("--user", layout.user)]
    result = run_wrapper(legacy)
    assert result.returncode == 2 and "--user" in result.stderr, result.stderr
    assert not out.exists()
    assert not layout.pidfile(0).exists()


def test_path_and_loader_variables_from_env_files_are_ignored(tmp_path, redis_server):
    layout = make_app(
        tmp_path,
        "shop",
        workers=["q"],
        redis_url=redis_server.url,
        worker_command=("/bin/sh", "-c", "env>worker.env;exec${IFS}sleep${IFS}60", "resque:work"),
    )
    bin_dir = layout.deploy_to / "evil-bin"
    (layout.config_dir / "env.custom").write_text(f"PATH={bin_dir}\nLD_PRELOAD=/tmp/evil.so\nINTERVAL=0.2\n")
    result = run_wrapper(layout.wrapper_args("start", 0))
    assert result.returncode == 0, result.stderr
    assert "PATH ignored" in result.stderr and "LD_PRELOAD ignored" in result.stderr
    env_file = layout.releases[-1] / "worker.env"
    wait_for(lambda: env_file.exists() and "INTERVAL=" in env_file.read_text(), what="worker env")
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines() if "=" in line)
    assert str(bin_dir) not in env["PATH"] and "LD_PRELOAD" not in env and env["INTERVAL"] == "0.2"
    assert run_wrapper(layout.wrapper_args("term", 0)).returncode == 0


def test_worker_log_linked_to_a_root_file_is_not_written_by_root(tmp_path):
    layout = make_app(tmp_path, "shop", workers=["q"])
    secret = root_secret(tmp_path)
    log = layout.logfile(0)
    log.unlink(missing_ok=True)
    as_user(layout, log, symlink_to=secret)

    result = run_wrapper(layout.wrapper_args("start", 0))
    assert result.returncode == 1  # the user cannot open a root-only file through the link
    assert "cannot open the log" in result.stderr
    for action in ("stop", "pause", "cont"):
        run_wrapper(layout.wrapper_args(action, 0))
    assert secret.read_text() == "root only\n"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_hard_link_to_a_root_file_as_the_log_is_not_appended_to(tmp_path):
    layout = make_app(tmp_path, "shop", workers=["q"])
    secret = root_secret(tmp_path)
    layout.logfile(0).unlink(missing_ok=True)
    os.link(secret, layout.logfile(0))  # protected_hardlinks stops this for the user; root may
    run_wrapper(layout.wrapper_args("stop", 0))
    assert secret.read_text() == "root only\n"


def test_pid_dir_the_deploy_user_can_write_is_refused(tmp_path):
    layout = make_app(tmp_path, "shop", workers=["q"])
    secret = root_secret(tmp_path)
    layout.pid_dir.mkdir(parents=True)
    as_user(layout, layout.pid_dir)
    as_user(layout, layout.pid_dir / "resque_0.lock", symlink_to=secret)
    as_user(layout, layout.pid_dir / ".resque_0.pid.1.tmp", symlink_to=secret)
    for action in ("start", "pause", "stop"):
        result = run_wrapper(layout.wrapper_args(action, 0))
        assert result.returncode == 1, result.stderr
        assert "is not safe" in result.stderr and "owned by uid" in result.stderr
    assert secret.read_text() == "root only\n"
    assert secret.stat().st_mode & 0o777 == 0o600


def test_pid_dir_under_a_folder_the_deploy_user_owns_is_refused(tmp_path):
    layout = make_app(tmp_path, "shop", workers=["q"])
    args = layout.wrapper_args("pause", 0)
    pid_dir = layout.deploy_to / "shared" / "pids"
    args[args.index("--pid-dir") + 1] = str(pid_dir)
    result = run_wrapper(args)
    assert result.returncode == 1 and "is not safe" in result.stderr, result.stderr


@pytest.fixture
def foreign_resque_process():
    """Another user's process titled like another app's idle worker, sitting in /."""
    proc = subprocess.Popen(
        [
            "runuser",
            "-u",
            "nobody",
            "--",
            "bash",
            "-c",
            "cd / && exec -a 'resque-2.6.0: Waiting for otherapp' sleep 300",
        ]
    )
    wait_for(lambda: "resque-2.6.0" in " ".join(psutil.Process(proc.pid).cmdline()), what="foreign title")
    yield proc
    proc.kill()
    proc.wait()


def test_pidfile_naming_another_apps_worker_is_not_signalled(tmp_path, foreign_resque_process):
    layout = make_app(tmp_path, "shop", workers=["q"])
    layout.pid_dir.mkdir(parents=True)
    for action in ("stop", "term", "pause", "abort", "restart"):
        layout.pidfile(0).write_text(f"{foreign_resque_process.pid}\n")
        result = run_wrapper(layout.wrapper_args(action, 0, "--grace-time", "1"))
        assert "not this app's worker" in result.stderr, result.stderr
        assert foreign_resque_process.poll() is None, f"{action} signalled another user's process"
        assert psutil.Process(foreign_resque_process.pid).status() != psutil.STATUS_STOPPED
        if action != "restart":
            assert result.returncode == 0 and not layout.pidfile(0).exists()
        else:
            run_wrapper(layout.wrapper_args("term", 0))


@pytest.mark.parametrize("content", ["²\n", "١٢\n", "12abc\n", "-5\n", "\xff\xfe"])
def test_pidfile_that_is_not_an_ascii_number_is_removed_not_a_crash(tmp_path, content):
    layout = make_app(tmp_path, "shop", workers=["q"])
    layout.pid_dir.mkdir(parents=True)
    layout.pidfile(0).write_bytes(content.encode("utf-8", "surrogateescape") if content[0] != "\xff" else b"\xff\xfe")
    result = run_wrapper(layout.wrapper_args("stop", 0))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "unreadable pidfile" in result.stderr
    assert not layout.pidfile(0).exists()
