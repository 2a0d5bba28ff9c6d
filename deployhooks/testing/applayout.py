"""Build a deployed-app directory tree the way Engine Yard lays one out, for tests and sandboxes.

::

    <root>/<app>/                      deploy_to
        releases/<r1>, releases/<r2>   one directory per release (mtime order = list order)
        current -> releases/<last>     symlink
        shared/config/resque_<N>.conf  QUEUE=<queues of worker N>
        shared/config/env.custom       RESQUE_WORKER_COMMAND (the fake resque worker), REDIS_URL, INTERVAL
        shared/log/
    <root>/pids/<app>/                 pid_dir for deployhooks-resque

The worker command is this interpreter running ``deployhooks.testing.fakeresque``, so no Ruby is
needed; ``worker_command`` replaces it (a string, as it would appear in env.custom).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AppLayout", "make_app", "fake_worker_command"]


def fake_worker_command() -> str:
    """The RESQUE_WORKER_COMMAND that runs the resque-faithful Python test worker."""
    return f"{shlex.quote(sys.executable)} -m deployhooks.testing.fakeresque resque:work"


@dataclass
class AppLayout:
    """Paths of one app built by :func:`make_app`."""

    app: str
    framework_env: str
    deploy_to: Path
    pid_dir: Path
    releases: list[Path]
    current: Path
    config_dir: Path
    log_dir: Path
    confs: list[Path] = field(default_factory=list)

    @property
    def group(self) -> str:
        """The monit group name Engine Yard used: ``<app>_resque``."""
        return f"{self.app}_resque"

    def pidfile(self, n: int) -> Path:
        return self.pid_dir / f"resque_{n}.pid"

    def logfile(self, n: int) -> Path:
        return self.log_dir / f"resque_{n}.log"

    def service(self, n: int) -> str:
        """The monit service name of worker n."""
        return f"resque_{self.app}_{n}"

    def wrapper_args(self, action: str, n: int, *options: str) -> list[str]:
        """Arguments for deployhooks-resque acting on worker n (options go before the positionals)."""
        return [
            "--deploy-to", str(self.deploy_to), "--pid-dir", str(self.pid_dir), *options,
            self.app, action, self.framework_env, f"resque_{n}.conf",
        ]


def make_app(
    root: Path,
    app: str,
    releases: list[str] = ("20260101000000", "20260102000000"),
    workers: list[str] = ("*",),
    framework_env: str = "production",
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    interval: float = 0.2,
    worker_command: str | None = None,
    extra_env: dict[str, str] | None = None,
) -> AppLayout:
    """Create the layout above under ``root`` and return its paths.

    ``workers`` holds one QUEUE value per worker (worker N gets ``resque_N.conf``). ``extra_env``
    adds KEY=VALUE lines to env.custom. Existing files are overwritten, so a test can re-point
    ``current`` by calling this again with more releases.
    """
    root = Path(root)
    deploy_to = root / app
    release_dirs = []
    for name in releases:
        path = deploy_to / "releases" / name
        path.mkdir(parents=True, exist_ok=True)
        release_dirs.append(path)
    if not release_dirs:
        raise ValueError("make_app needs at least one release")
    current = deploy_to / "current"
    tmp_link = deploy_to / ".current.tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(release_dirs[-1])
    tmp_link.replace(current)  # atomic, like a deploy's `ln -nfs` + `mv -T`

    config_dir = deploy_to / "shared" / "config"
    log_dir = deploy_to / "shared" / "log"
    config_dir.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    confs = []
    for n, queues in enumerate(workers):
        conf = config_dir / f"resque_{n}.conf"
        conf.write_text(f"QUEUE={shlex.quote(queues)}\n")
        confs.append(conf)
    env = {
        "RESQUE_WORKER_COMMAND": worker_command or fake_worker_command(),
        "REDIS_URL": redis_url,
        "INTERVAL": f"{interval:g}",
        **(extra_env or {}),
    }
    (config_dir / "env.custom").write_text(
        "# written by deployhooks.testing.applayout\n"
        + "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    )
    pid_dir = root / "pids" / app
    return AppLayout(
        app=app,
        framework_env=framework_env,
        deploy_to=deploy_to,
        pid_dir=pid_dir,
        releases=release_dirs,
        current=current,
        config_dir=config_dir,
        log_dir=log_dir,
        confs=confs,
    )
