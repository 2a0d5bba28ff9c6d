"""`deployhooks init`: what an app needs to deploy with deployhooks, written into the app.

Like `cap install` or `kamal init`: a commented `config/deployhooks.yml` with the app's name and
`deploy_to` filled in, a `fabfile.py` that gives `fab` the tasks, and the Engine Yard hook shims
in `deploy/` (each execs the installed `deployhooks` console script, so they work wherever
deployhooks is installed). Nothing is overwritten without `force`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

# The shims a pipeline runs on each server (Engine Yard runs deploy/<name> when executable).
SHIMS = ("before_migrate", "before_symlink", "after_symlink", "deploy_failed")
_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


def shim_text(name: str) -> str:
    """The shim for hook `name`, as shipped in this repository's hooks/ folder."""
    task = name.replace("_", "-")
    return f"""#!/bin/sh
# Deploy hook '{name}': a pipeline runs this on each server (Engine Yard: copy it to
# <app>/deploy/{name}, executable). Exit 0 go on, 1 refused (jobs running), 2 bad config or
# usage, 3 a command failed. Arguments and EY_DEPLOY_* variables: see README.md.
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${{DEPLOYHOOKS_BIN:-}}" ]; then bin=$DEPLOYHOOKS_BIN
elif command -v deployhooks >/dev/null 2>&1; then bin=deployhooks
elif [ -x "$here/../.venv/bin/deployhooks" ]; then bin=$here/../.venv/bin/deployhooks
else echo "{name}: deployhooks is not installed (pip install deployhooks, or set DEPLOYHOOKS_BIN)" >&2; exit 3
fi
exec "$bin" hooks.{task} "$@"
"""


FABFILE = '''"""`fab --list` shows the deployhooks tasks; `fab <task>` runs them against config/deployhooks.yml's hosts."""
from deployhooks.tasks import ns  # noqa: F401
'''


def config_text(app: str, deploy_to: str, user: str) -> str:
    """A commented config with the app's name, deploy_to and worker user filled in."""
    return f"""# deployhooks: how {app} is deployed and how its Resque workers run under monit.
# Every key is described in deployhooks' README ("Configuration"); a bad value is refused with
# the file, line and key before anything runs.
app: {app}
framework_env: production
deploy_to: {deploy_to}
user: {user}                 # the SSH login of fab, and the user the workers run as
keep_releases: 3
hosts:                        # role -> hosts ([user@]name[:port])
  util: [util1]
  # app_master: [web1]
resque:
  roles: [util, solo]         # roles whose hosts run workers
  stop: quit                  # quit: let a job finish (grace_time); term: end it at once
  grace_time: 300
  workers:                    # one resque_N.conf each
    - queues: "*"
  on_busy: abort              # abort | wait, when a job runs as a deploy begins
  guard_at: before_migrate    # before_migrate | before_symlink
  sudo: true                  # run monit through sudo -n (sudoers: {user} may run /usr/bin/monit)
  # worker_command: bundle exec rake -f {{current}}/Rakefile resque:work
deploy:
  # shared_files: [database.yml]   # each must exist in shared/config
  # migrate_command: bundle exec rake db:migrate
  # migrate_role: app_master
  # restart_command: touch tmp/restart.txt
"""


def plan(root: Path, app: str, deploy_to: str | None = None, user: str = "deploy") -> dict[Path, tuple[str, int]]:
    """The files `init` writes under `root`: path -> (text, mode). ConfigError on a bad name."""
    if not _NAME_RE.fullmatch(app):
        raise ConfigError(f"--app {app!r}: letters, digits, _ and - only")
    if not _USER_RE.fullmatch(user) or user == "root":
        raise ConfigError(f"--user {user!r}: a user name other than root (the workers run as it)")
    deploy_to = deploy_to or f"/data/{app}"
    if not deploy_to.startswith("/") or os.path.normpath(deploy_to) != deploy_to or deploy_to == "/":
        raise ConfigError(f"--deploy-to {deploy_to!r}: an absolute, normalized path")
    files = {
        root / "config" / "deployhooks.yml": (config_text(app, deploy_to, user), 0o644),
        root / "fabfile.py": (FABFILE, 0o644),
    }
    for name in SHIMS:
        files[root / "deploy" / name] = (shim_text(name), 0o755)
    return files


def write(files: dict[Path, tuple[str, int]], *, force: bool = False) -> list[Path]:
    """Write `files`; ConfigError (nothing written) if one exists and not `force`."""
    existing = [p for p in files if p.exists()]
    if existing and not force:
        raise ConfigError("not overwriting " + ", ".join(str(p) for p in existing) + " (pass --force to replace them)")
    for path, (text, mode) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
    return list(files)
