"""One host's worth of deployed apps under real monit: the layout, the monitrc and our config.

Used by the integration tests and the sandbox: `AppHost.add_app()` lays out an app (releases,
`current`, shared config, `resque.yml`, a monitrc through `deployhooks-resque`, and a
`deployhooks.yml` pointing at all of it); the caller starts one monit daemon that includes
`AppHost.monitrc_glob`.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from ..resque.monitrc import render_monitrc
from .applayout import AppLayout, make_app


def wrapper_path() -> str:
    """The installed `deployhooks-resque` beside this interpreter (or on PATH)."""
    here = Path(sys.executable).parent / "deployhooks-resque"
    return str(here) if here.exists() else (shutil.which("deployhooks-resque") or str(here))


@dataclass
class DeployedApp:
    layout: AppLayout
    config: Path
    monitrc: Path

    @property
    def app(self) -> str:
        return self.layout.app

    def new_release(self, name: str) -> Path:
        """Create `releases/<name>` as a deploy would before the hooks run; return its path."""
        path = self.layout.deploy_to / "releases" / name
        (path / "config").mkdir(parents=True, exist_ok=True)
        return path

    def switch_current(self, release: Path) -> None:
        """Point `current` at `release` atomically (a new link renamed over the old)."""
        tmp = self.layout.deploy_to / ".current.switch"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(release)
        os.replace(tmp, self.layout.current)


class AppHost:
    """Apps laid out under `root`, sharing one monit daemon (started by the caller)."""

    def __init__(self, root: Path, redis_url: str):
        self.root = Path(root)
        self.redis_url = redis_url
        self.monitrc_dir = self.root / "monit.d"
        self.monitrc_dir.mkdir(parents=True, exist_ok=True)
        self.monit_control: Path | None = None

    @property
    def monitrc_glob(self) -> str:
        return str(self.monitrc_dir / "*.monitrc")

    def add_app(
        self,
        app: str,
        *,
        workers=("deploytest", "deploytest"),
        stop: str = "quit",
        grace_time: int = 10,
        resque_extra: str = "",
        top_extra: str = "",
        releases=("20260101000000", "20260102000000"),
        redis_entry: str | None = None,
        interval: float = 0.2,
    ) -> DeployedApp:
        layout = make_app(
            self.root / "data",
            app,
            releases=list(releases),
            workers=list(workers),
            redis_url=self.redis_url,
            interval=interval,
        )
        layout.pid_dir.mkdir(parents=True, exist_ok=True)
        url = urlparse(self.redis_url)
        (layout.config_dir / "resque.yml").write_text(
            redis_entry if redis_entry is not None else f"production: {url.hostname}:{url.port}\n"
        )
        monitrc = self.monitrc_dir / f"resque_{app}.monitrc"
        monitrc.write_text(
            render_monitrc(
                app,
                "production",
                layout.group,
                len(workers),
                wrapper=wrapper_path(),
                deploy_to=str(layout.deploy_to),
                pid_dir=str(layout.pid_dir),
                stop_action=stop,
                grace_time=grace_time,
                start_timeout=30,
                user=layout.user,
                worker_command=layout.worker_command,
            )
        )
        config = self.root / f"{app}.deployhooks.yml"
        worker_lines = "".join(f"    - queues: [{q}]\n" for q in workers)
        config.write_text(
            f"app: {app}\n"
            f"deploy_to: {layout.deploy_to}\n"
            f"{top_extra}"
            f"resque:\n"
            f"{layout.resque_yaml()}"
            f"  stop: {stop}\n"
            f"  grace_time: {grace_time}\n"
            f"  workers:\n{worker_lines}"
            f"  monit_command: [monit, -c, {self.control_path}]\n"
            f"  pause_timeout: 10\n"
            f"  start_timeout: 30\n"
            f"{resque_extra}"
        )
        return DeployedApp(layout, config, monitrc)

    @property
    def control_path(self) -> Path:
        """Where the monit control file lives (the caller writes it there)."""
        return self.monit_control or (self.root / "monit" / "monitrc")
