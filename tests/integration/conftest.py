"""A host with deployed apps under a real monit daemon, real redis and resque-faithful workers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deployhooks.facts.processes import local_processes, workers_from
from deployhooks.testing.apphost import AppHost
from tests.helpers import REPO, wait_for  # noqa: F401  (wait_for re-exported for tests)


def deployhooks_bin() -> str:
    here = Path(sys.executable).parent / "deployhooks"
    return str(here) if here.exists() else shutil.which("deployhooks")


class HostUnderTest:
    """The test's view of one host: apps, monit, redis, and the hooks as a pipeline runs them."""

    def __init__(self, host: AppHost, monit_factory, redis):
        self.host, self._monit_factory, self.redis = host, monit_factory, redis
        self.monit = None
        self.apps = {}

    def add_app(self, app="shop", **kw):
        deployed = self.host.add_app(app, **kw)
        self.apps[app] = deployed
        return deployed

    def start(self, timeout=30):
        """Start monit on every app's monitrc and wait until each worker polls its queues."""
        self.monit = self._monit_factory(self.host.monitrc_glob)
        assert self.monit.control == self.host.control_path
        for deployed in self.apps.values():
            self.wait_running(deployed, timeout=timeout)

    def workers(self, deployed):
        apps = {deployed.app: str(deployed.layout.deploy_to)}
        return [w for w in workers_from(local_processes(), apps) if w.app == deployed.app]

    def services(self, deployed):
        out = self.monit.run("-B", "status", "-g", deployed.layout.group).stdout
        from deployhooks.facts.monit import parse_status

        return parse_status(out)

    def wait_running(self, deployed, n=None, release=None, timeout=30):
        n = n if n is not None else len(deployed.layout.confs)

        def ok():
            ws = [w for w in self.workers(deployed) if w.state in ("idle", "busy")]
            if release:
                ws = [w for w in ws if w.release == release]
            services = self.services(deployed)
            return len(ws) >= n and all(s.running for s in services.values())

        wait_for(ok, timeout, f"{deployed.app}: {n} workers running")

    def enqueue(self, queue, first, second, job_class="SleepJob"):
        """Queue a job: SleepJob [seconds, tag] by default."""
        self.redis.sadd("resque:queues", queue)
        self.redis.rpush(f"resque:queue:{queue}", json.dumps({"class": job_class, "args": [first, second]}))

    def gate(self, queue, tag):
        """Queue a job that runs until `open_gate(tag)`: busy for exactly as long as needed."""
        self.enqueue(queue, tag, 120, job_class="GateJob")

    def open_gate(self, tag):
        self.redis.set(f"resque:test:gate:{tag}", "1")

    def wait_busy(self, deployed, count=1, timeout=15):
        wait_for(
            lambda: len([w for w in self.workers(deployed) if w.busy]) >= count, timeout, f"{count} busy worker(s)"
        )

    def finished(self):
        return list(self.redis.lrange("resque:test:finished", 0, -1))

    def failed(self):
        return [json.loads(f) for f in self.redis.lrange("resque:failed", 0, -1)]

    def hook(self, name, deployed, release=None, *args, env=None, timeout=120):
        """Run hooks/<name> as a pipeline would; returns the CompletedProcess."""
        argv = [str(REPO / "hooks" / name), "--config", str(deployed.config)]
        if release is not None:
            argv += ["--release-path", str(release)]
        environ = {k: v for k, v in os.environ.items() if not k.startswith("EY_DEPLOY_")}
        environ["DEPLOYHOOKS_BIN"] = deployhooks_bin()
        environ.update(env or {})
        result = subprocess.run(
            argv + list(args), capture_output=True, text=True, timeout=timeout, env=environ, stdin=subprocess.DEVNULL
        )
        print(f"--- {name} exit {result.returncode}\n{result.stdout}\n{result.stderr}")
        return result


@pytest.fixture
def host(tmp_path, monit_daemon, redis_client, redis_server):
    app_host = AppHost(tmp_path / "host", redis_server.url)
    # monit_daemon puts its first daemon's control file here; the configs must name it up front.
    app_host.monit_control = tmp_path / "monit0" / "monitrc"
    return HostUnderTest(app_host, monit_daemon, redis_client)
