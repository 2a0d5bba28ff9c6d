"""`resque.setup` and `resque.doctor`: install the workers' files under monit, and check a host."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from invoke import Exit

from ..errors import EXIT_FAILED
from .common import finish, load_settings, on_hosts, say, task

if TYPE_CHECKING:
    from ..remote.host import Host

_ROLES = "comma-separated roles to act on (default: resque.roles from the config)"
_CONFIG = "path of deployhooks.yml (default config/deployhooks.yml or DEPLOYHOOKS_CONFIG)"


@task(help={"roles": _ROLES, "config": _CONFIG})
def setup(c, roles=None, config=None):
    """Write resque_N.conf files and the monitrc, check them with monit -t, reload monit.

    Changes nothing when the host already matches the config; prints a diff of each file it
    changes; stops (through monit) the workers removed from the config before dropping them.
    """
    from ..commands import install as setup_mod  # here, not at the top: every fab call imports this file

    settings = load_settings(config)
    finish(on_hosts(c, settings, roles, settings.resque.roles, lambda host: setup_mod.setup_host(host, say)))


@task(help={"roles": _ROLES, "config": _CONFIG})
def doctor(c, roles=None, config=None):
    """Check each host: resque.yml and redis, conf files, monitrc, monit, releases, pidfiles.

    Exit 0 when everything passes or warns, 1 when a check fails, 3 when a host is unreachable.
    """
    from ..commands import doctor as doctor_mod  # here, not at the top: every fab call imports this file

    settings = load_settings(config)

    def one(host: Host) -> list:
        checks = doctor_mod.run_checks(settings, doctor_mod.gather(host), host.name)
        say(doctor_mod.render(host.name, checks))
        return checks

    results = on_hosts(c, settings, roles, settings.resque.roles, one)
    unreachable = [r for r in results if r.code]
    for r in unreachable:
        print(r.error, file=sys.stderr, flush=True)
    if unreachable:
        raise Exit(code=EXIT_FAILED)
    if any(doctor_mod.exit_code(r.value) for r in results):
        raise Exit(code=1)


@task(
    help={
        "app": "the app's name (default: the folder's name)",
        "deploy_to": "where releases go on the hosts (default /data/<app>)",
        "user": "the SSH login and the workers' user (default deploy; never root)",
        "path": "the app's folder (default: here)",
        "force": "replace files that exist",
    }
)
def init(c, app=None, deploy_to=None, user="deploy", path=".", force=False):
    """Write config/deployhooks.yml, fabfile.py and the deploy/ hook shims into an app."""
    from pathlib import Path

    from ..commands import scaffold
    from ..errors import DeployhooksError

    root = Path(path).resolve()
    try:
        written = scaffold.write(scaffold.plan(root, app or root.name, deploy_to, user), force=force)
    except DeployhooksError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None
    for p in written:
        say(f"wrote {p}")
    say(
        "next: list your hosts in config/deployhooks.yml, then `fab resque.setup` (as root on the "
        "hosts) and `fab deploy`"
    )
