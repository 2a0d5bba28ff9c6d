"""resque.setup and resque.doctor against a real monit daemon, redis, sshd and workers."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from invoke import Context

from deployhooks import settings as settings_mod
from deployhooks.commands import doctorchecks
from deployhooks.commands import install as setup_mod
from deployhooks.errors import CommandFailed
from deployhooks.facts import resqueyml
from deployhooks.remote.host import Host
from deployhooks.testing.apphost import wrapper_path
from deployhooks.testing.sshserver import free_port

from .conftest import REPO, deployhooks_bin, wait_for

NEW = "20260103000000"


class Fresh:
    """One app laid out on the host with no conf files and no monitrc yet, and its config."""

    def __init__(self, host, monit_daemon, sshd=None, app="shop"):
        self.host = host
        self.deployed = host.add_app(app, workers=("q1", "q2"))
        self.layout = self.deployed.layout
        self.app = app
        self.sshd = sshd
        self.monitrc = self.deployed.monitrc
        self.monitrc.unlink()
        for conf in self.layout.confs:
            conf.unlink()
        host.monit = monit_daemon(host.host.monitrc_glob)  # no services yet
        self.write_config([["q1", "high"], ["q2"]])

    def write_config(self, workers, extra="", hosts=None, wrapper=None):
        hosts = hosts or (self.sshd.host if self.sshd else "localhost")
        ssh = self.sshd.ssh_settings_yaml() if self.sshd else ""
        lines = "".join(f"    - queues: [{', '.join(q)}]\n" for q in workers)
        self.deployed.config.write_text(
            f"app: {self.app}\ndeploy_to: {self.layout.deploy_to}\nhosts:\n  util: [{hosts}]\n{ssh}"
            f"resque:\n{self.layout.resque_yaml()}  grace_time: 10\n  workers:\n{lines}"
            f"  monit_command: [monit, -c, {self.host.host.control_path}]\n"
            f"  monitrc_path: {self.monitrc}\n  pid_dir: {self.layout.pid_dir}\n"
            f"  wrapper: {wrapper or wrapper_path()}\n  pause_timeout: 10\n  start_timeout: 30\n{extra}"
        )

    @property
    def settings(self):
        return settings_mod.load(str(self.deployed.config))

    def services(self):
        return self.host.services(self.deployed)

    def running(self, names):
        """Wait until monit runs exactly `names`, each with a live worker; return their pids."""

        def ok():
            services = self.services()
            pids = {w.pid for w in self.host.workers(self.deployed) if w.state in ("idle", "busy")}
            return sorted(services) == sorted(names) and all(s.running and s.pid in pids for s in services.values())

        wait_for(ok, 30, f"services {names} running")
        return {n: s.pid for n, s in self.services().items()}

    def reloads(self):
        return self.host.monit.log_text().count("Reinitializing monit daemon")


def fab(*args, timeout=120):
    result = subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    print(f"--- fab {' '.join(args)} exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def on_server(*args, timeout=120):
    result = subprocess.run(
        [deployhooks_bin(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    print(f"--- deployhooks {' '.join(args)} exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def test_setup_over_ssh_installs_converges_and_removes_a_worker(host, monit_daemon, sshd):
    fresh = Fresh(host, monit_daemon, sshd)
    config = str(fresh.deployed.config)
    r = fab("resque.setup", "--config", config)
    assert r.returncode == 0, r.stderr
    confs = fresh.layout.config_dir
    assert (confs / "resque_0.conf").read_text() == "QUEUE=q1,high\n"
    assert (confs / "resque_1.conf").read_text() == "QUEUE=q2\n"
    text = fresh.monitrc.read_text()
    assert "check process resque_shop_0 " in text and "check process resque_shop_1 " in text
    assert (
        f"{wrapper_path()} --user {fresh.layout.user} --deploy-to {fresh.layout.deploy_to} "
        f"--pid-dir {fresh.layout.pid_dir}" in text
    )
    assert "with timeout 40 seconds" in text  # grace 10 + margin
    # a diff per file, each line prefixed by the host
    assert f"{sshd.host}: +++ {fresh.monitrc}" in r.stdout
    assert f"{sshd.host}: +QUEUE=q1,high" in r.stdout
    assert not [p for p in os.listdir(fresh.monitrc.parent) if p.startswith(".")]  # no candidate left
    pids = fresh.running(["resque_shop_0", "resque_shop_1"])
    workers = {w.pid: w for w in host.workers(fresh.deployed)}
    assert workers[pids["resque_shop_0"]].queues == ("q1", "high")
    assert fresh.reloads() == 1

    # again: nothing written, nothing reloaded
    mtime = fresh.monitrc.stat().st_mtime_ns
    conf_mtime = (confs / "resque_0.conf").stat().st_mtime_ns
    r = fab("resque.setup", "--config", config)
    assert r.returncode == 0, r.stderr
    assert "no change" in r.stdout and "+++" not in r.stdout
    assert fresh.monitrc.stat().st_mtime_ns == mtime
    assert (confs / "resque_0.conf").stat().st_mtime_ns == conf_mtime
    assert fresh.reloads() == 1
    assert fresh.running(["resque_shop_0", "resque_shop_1"]) == pids

    # worker 1 leaves the config: monit stops it first, then its conf and stanza go
    fresh.write_config([["q1", "high"]])
    r = fab("resque.setup", "--config", config)
    assert r.returncode == 0, r.stderr
    assert not (confs / "resque_1.conf").exists()
    assert "resque_shop_1" not in fresh.monitrc.read_text()
    assert f"{sshd.host}: -check process resque_shop_1" in r.stdout
    assert fresh.running(["resque_shop_0"]) == {"resque_shop_0": pids["resque_shop_0"]}
    assert pids["resque_shop_1"] not in {w.pid for w in host.workers(fresh.deployed)}
    assert "'resque_shop_1' stop action done" in host.monit.log_text()
    assert fresh.reloads() == 2


def test_setup_refuses_what_monit_rejects_and_changes_nothing(host, monit_daemon):
    fresh = Fresh(host, monit_daemon)
    config = str(fresh.deployed.config)
    r = on_server("resque.setup", "--config", config)  # the console script: a local Context
    assert r.returncode == 0, r.stderr
    pids = fresh.running(["resque_shop_0", "resque_shop_1"])
    before, mtime = fresh.monitrc.read_text(), fresh.monitrc.stat().st_mtime_ns

    # a leftover monit file already defines the service a third worker would get
    legacy = fresh.monitrc.parent / "legacy.monitrc"
    legacy.write_text(
        f'check process resque_shop_2 with pidfile {fresh.layout.pid_dir}/legacy.pid\n  start program = "/bin/true"\n'
    )
    fresh.write_config([["q1", "high"], ["q2"], ["q3"]])
    r = on_server("resque.setup", "--config", config)
    assert r.returncode == 3
    assert "Service name conflict" in r.stderr and "was left as it was" in r.stderr
    assert fresh.monitrc.read_text() == before and fresh.monitrc.stat().st_mtime_ns == mtime
    assert not (fresh.layout.config_dir / "resque_2.conf").exists()
    assert sorted(os.listdir(fresh.monitrc.parent)) == ["legacy.monitrc", "resque_shop.monitrc"]
    assert fresh.reloads() == 1
    legacy.unlink()

    # a candidate monit -t rejects on its own never reaches the installed file
    h = Host(Context(), fresh.settings, "here")
    with pytest.raises(CommandFailed, match="monit -t refused the new monitrc"):
        setup_mod.check_candidate(h, "check process broken with pidfile\n  bogus = 1\n")
    assert fresh.monitrc.read_text() == before and fresh.monitrc.stat().st_mtime_ns == mtime
    assert sorted(os.listdir(fresh.monitrc.parent)) == ["resque_shop.monitrc"]

    # a wrapper the host does not have: refused before anything is touched
    fresh.write_config([["q1", "high"], ["q2"], ["q3"]], extra="")
    text = fresh.deployed.config.read_text().replace(
        f"wrapper: {wrapper_path()}", "wrapper: no-such-deployhooks-resque"
    )
    fresh.deployed.config.write_text(text)
    r = on_server("resque.setup", "--config", config)
    assert r.returncode == 3
    assert "no-such-deployhooks-resque" in r.stderr and "resque.wrapper" in r.stderr
    assert fresh.monitrc.stat().st_mtime_ns == mtime
    assert fresh.running(["resque_shop_0", "resque_shop_1"]) == pids


def _doctor(config, expect):
    r = on_server("resque.doctor", "--config", config)
    assert r.returncode == expect, r.stdout + r.stderr
    return r.stdout


def _line(out, name):
    """The checklist line of check `name` and the fix lines under it."""
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^\S+: (pass|warn|FAIL)\s+{re.escape(name)}\s", line):
            rest = []
            for more in lines[i + 1 :]:
                if not re.match(r"^\S+:\s{6,}", more):
                    break
                rest.append(more)
            return "\n".join([line] + rest)
    raise AssertionError(f"no line for {name!r} in:\n{out}")


PRELOADING = (
    'task "resque:setup" => :environment do\n'
    "  ActiveRecord::Base.send(:subclasses).each { |klass| klass.columns }\nend\n"
)


def test_doctor_passes_a_good_host_and_names_each_fault_with_its_fix(host, monit_daemon, sshd, redis_server, tmp_path):
    fresh = Fresh(host, monit_daemon, sshd)
    config = str(fresh.deployed.config)
    assert on_server("resque.setup", "--config", config).returncode == 0
    fresh.running(["resque_shop_0", "resque_shop_1"])
    rakefile = fresh.layout.current / "Rakefile"
    rakefile.write_text("require 'resque/tasks'\n\n" + PRELOADING)

    r = fab("resque.doctor", "--config", config)  # over SSH
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{sshd.host}: 13 pass, 0 warn, 0 fail" in r.stdout
    assert "PONG" not in r.stdout and f"127.0.0.1:{redis_server.port} answers PING" in r.stdout

    # the seed's frequent-small-jobs advice: a warning, not a failure
    (fresh.layout.current / "lib" / "tasks").mkdir(parents=True)
    rakefile.write_text("require 'resque/tasks'\n")
    (fresh.layout.current / "lib" / "tasks" / "resque.rake").write_text(
        "require 'resque/tasks'\n\ntask \"resque:setup\" => :environment\n"
    )
    out = _doctor(config, 0)
    line = _line(out, "Rakefile")
    assert "warn" in line and "current/lib/tasks/resque.rake:3" in line
    assert "klass.columns" in line

    yml = fresh.layout.config_dir / "resque.yml"
    good = yml.read_text()
    yml.write_text(f"staging: 127.0.0.1:{redis_server.port}\n")
    line = _line(_doctor(config, 1), "resque.yml")
    assert "FAIL" in line and "no entry for the framework env 'production'" in line
    assert "fix: add 'production: <redis host>:<port>'" in line

    yml.write_text(f"production: redis://127.0.0.1:{free_port()}/0\n")
    line = _line(_doctor(config, 1), "redis")
    assert "FAIL" in line and "did not answer PING" in line and "fix: start redis" in line
    yml.write_text(good)

    installed = fresh.monitrc.read_text()
    fresh.monitrc.write_text(installed.replace("with timeout 40 seconds", "with timeout 10 seconds"))
    out = _doctor(config, 1)
    line = _line(out, "monit stop timeout")
    assert "FAIL" in line and "resque_shop_0: timeout 10s <= GRACE_TIME 10s" in line
    assert "FAIL" in _line(out, "monitrc") and "resque.setup" in _line(out, "monitrc")
    fresh.monitrc.write_text(installed)

    # a release went live without a restart: the workers run the old code
    fresh.deployed.switch_current(fresh.deployed.new_release(NEW))
    line = _line(_doctor(config, 1), "worker releases")
    assert "FAIL" in line and "on 20260102000000" in line and "resque.restart" in line
    fresh.deployed.switch_current(fresh.layout.releases[-1])

    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = fresh.layout.pid_dir / "resque_7.pid"
    stale.write_text(f"{dead.pid}\n")
    foreign = fresh.layout.pid_dir / "resque_8.pid"
    foreign.write_text(f"{os.getpid()}\n")
    try:
        line = _line(_doctor(config, 1), "pidfiles and locks")
    finally:
        stale.unlink()
        foreign.unlink()
    assert "FAIL" in line and f"{stale} names pid {dead.pid}, which is not running" in line
    assert f"{foreign} names pid {os.getpid()}, which is not a resque worker" in line
    assert f"fix: remove them (rm {stale} {foreign})" in line

    # redis-cli or not: the bash /dev/tcp fallback gets the same answer
    h = Host(Context(), fresh.settings, "here")
    up = resqueyml.RedisTarget("127.0.0.1", redis_server.port)
    down = resqueyml.RedisTarget("127.0.0.1", free_port())
    for cli in (True, False):
        result = h.run(resqueyml.ping_command(up, redis_cli=cli), warn=True)
        assert doctorchecks.check_redis(up, result.exited, result.stdout, "here", "y", "production").verdict == "pass"
        result = h.run(resqueyml.ping_command(down, redis_cli=cli), warn=True)
        assert doctorchecks.check_redis(down, result.exited, result.stdout, "here", "y", "production").verdict == "fail"

    # a host that cannot be reached: exit 3
    fresh.write_config([["q1", "high"], ["q2"]], hosts="root@127.0.0.1:1")
    r = fab("resque.doctor", "--config", config)
    assert r.returncode == 3 and "root@127.0.0.1:1" in r.stderr


def _planted_wrapper(folder, owner_uid):
    """A copy of the real wrapper in `folder`, as a deploy user (or a careless install) leaves it."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "deployhooks-resque"
    copy.write_text(open(wrapper_path()).read())
    copy.chmod(0o755)
    os.chown(copy, owner_uid, -1)
    return copy


def test_setup_refuses_a_wrapper_root_cannot_trust_and_doctor_fails_it(host, monit_daemon, sshd):
    """A wrapper the deploy user owns, or a root-owned one in a folder the deploy user can
    write, went into the monitrc root's monit runs, and doctor said pass."""
    import pwd

    fresh = Fresh(host, monit_daemon, sshd)
    config = str(fresh.deployed.config)
    deploy = pwd.getpwnam(fresh.layout.user)
    owned = _planted_wrapper(fresh.layout.deploy_to / "bin", deploy.pw_uid)
    os.chown(owned.parent, deploy.pw_uid, deploy.pw_gid)
    writable_dir = fresh.layout.deploy_to / "shared" / "bin"
    in_writable = _planted_wrapper(writable_dir, 0)
    os.chown(writable_dir, deploy.pw_uid, deploy.pw_gid)
    for wrapper, why in [
        (owned, f"{owned} is owned by uid {deploy.pw_uid}, not root"),
        (in_writable, f"{fresh.layout.deploy_to} is owned by uid {deploy.pw_uid}"),
    ]:
        fresh.write_config([["q1", "high"], ["q2"]], wrapper=wrapper)
        r = fab("resque.setup", "--config", config)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "is not safe for root's monit to run" in r.stderr and why in r.stderr
        assert not fresh.monitrc.exists()
        out = _doctor(config, 1)
        line = _line(out, "root owns wrapper")
        assert "FAIL" in line and why in line and "root-owned" in line
    # The wrapper's interpreter counts too: a #! line naming a python the deploy user owns.
    python = fresh.layout.deploy_to / "python3"
    python.symlink_to(sys.executable)
    os.lchown(python, deploy.pw_uid, deploy.pw_gid)
    trusted_dir = fresh.layout.pid_dir.parent / "trusted-bin"
    script = _planted_wrapper(trusted_dir, 0)
    script.write_text(f"#!{python}\n" + "".join(script.read_text().splitlines(True)[1:]))
    fresh.write_config([["q1", "high"], ["q2"]], wrapper=script)
    r = fab("resque.setup", "--config", config)
    assert r.returncode == 2 and f"{fresh.layout.deploy_to} is owned by uid" in r.stderr, r.stderr
