"""Build a deployed-app directory tree the way Engine Yard lays one out, for tests and sandboxes.

::

    <root>/<app>/                      deploy_to
        releases/<r1>, releases/<r2>   one directory per release (mtime order = list order)
        current -> releases/<last>     symlink
        shared/config/resque_<N>.conf  QUEUE=<queues of worker N>
        shared/config/env.custom       REDIS_URL, INTERVAL
        shared/log/
    <root>/pids/<app>/                 pid_dir for deployhooks-resque (root's; the wrapper makes it)

``deploy_to`` belongs to the worker user (``deploy`` unless $DEPLOYHOOKS_TEST_USER says otherwise,
created by script/setup), as in production, and the wrapper is told that user and the command on
its command line, as a monitrc written by ``resque.setup`` tells it. The command is this
interpreter running ``deployhooks.testing.fakeresque``, so no Ruby is needed; ``worker_command``
replaces it.
"""

from __future__ import annotations

import json
import os
import pwd
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

__all__ = ["AppLayout", "make_app", "fake_worker_command", "fake_worker_argv", "test_user"]


def test_user() -> str:
    """The unprivileged user test and sandbox workers run as."""
    return os.environ.get("DEPLOYHOOKS_TEST_USER", "deploy")


def fake_worker_argv() -> tuple[str, ...]:
    """The command that runs the resque-faithful Python test worker."""
    return (sys.executable, "-m", "deployhooks.testing.fakeresque", "resque:work")


def fake_worker_command() -> str:
    """:func:`fake_worker_argv` as one shell-quoted string."""
    return shlex.join(fake_worker_argv())


def let_others_traverse(path: Path) -> None:
    """Add o+x to `path` and its parents inside the system temp folder (pytest makes them 0700),
    so the worker user can reach a tree laid out there; nothing outside it is touched."""
    temp = Path(tempfile.gettempdir()).resolve()
    path = Path(path).resolve()
    while path != temp and temp in path.parents:
        mode = path.stat().st_mode
        if not mode & 0o001:
            path.chmod((mode & 0o7777) | 0o001)
        path = path.parent


def chown_tree(path: Path, user: str) -> None:
    """Give `path` and everything under it to `user` (as a deploy would have made it)."""
    pw = pwd.getpwnam(user)
    for folder, dirs, files in os.walk(path):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.lchown(name, pw.pw_uid, pw.pw_gid)


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
    user: str | None = None
    worker_command: tuple[str, ...] = ()

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

    def resque_yaml(self) -> str:
        """The lines under `resque:` of a deployhooks.yml that name this layout's worker user
        and command, so `resque.setup` renders the same monitrc lines as the tests'."""
        lines = f"  user: {self.user}\n" if self.user else ""
        return lines + f"  worker_command: {json.dumps(list(self.worker_command))}\n"

    def wrapper_args(self, action: str, n: int, *options: str) -> list[str]:
        """Arguments for deployhooks-resque acting on worker n, as the monitrc gives them
        (options go before the positionals; the command follows `--` for start/restart)."""
        user = ["--user", self.user] if self.user else []
        command = ["--", *self.worker_command] if action in ("start", "restart") else []
        return [
            *user,
            "--deploy-to",
            str(self.deploy_to),
            "--pid-dir",
            str(self.pid_dir),
            *options,
            self.app,
            action,
            self.framework_env,
            f"resque_{n}.conf",
            *command,
        ]


def make_app(
    root: Path,
    app: str,
    releases: Sequence[str] = ("20260101000000", "20260102000000"),
    workers: Sequence[str] = ("*",),
    framework_env: str = "production",
    *,
    redis_url: str = "redis://127.0.0.1:6379/0",
    interval: float = 0.2,
    worker_command: str | tuple[str, ...] | None = None,
    extra_env: dict[str, str] | None = None,
    user: str | None = "",
) -> AppLayout:
    """Create the layout above under ``root`` and return its paths.

    ``workers`` holds one QUEUE value per worker (worker N gets ``resque_N.conf``). ``extra_env``
    adds KEY=VALUE lines to env.custom. ``worker_command`` (a shell-quoted string or argv) replaces
    the fake worker. ``user`` owns ``deploy_to`` (default :func:`test_user`; None leaves it to
    whoever runs this). Existing files are overwritten, so a test can re-point ``current`` by
    calling this again with more releases.
    """
    user = test_user() if user == "" else user
    if isinstance(worker_command, str):
        worker_command = tuple(shlex.split(worker_command))
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
        "REDIS_URL": redis_url,
        "INTERVAL": f"{interval:g}",
        **(extra_env or {}),
    }
    (config_dir / "env.custom").write_text(
        "# written by deployhooks.testing.applayout\n"
        + "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())
    )
    pid_dir = root / "pids" / app
    if user is not None:
        chown_tree(deploy_to, user)
        let_others_traverse(root)
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
        user=user,
        worker_command=worker_command or fake_worker_argv(),
    )
