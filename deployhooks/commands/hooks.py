"""The deploy hooks: what `hooks/before_migrate`, `before_symlink`, `after_symlink` and
`deploy_failed` do on one host.

Inputs come, in order of precedence, from arguments, from Engine Yard's executable-hook
environment (`EY_DEPLOY_APP`, `EY_DEPLOY_RELEASE_PATH`, `EY_DEPLOY_FRAMEWORK_ENV`,
`EY_DEPLOY_CURRENT_ROLES`), and from the config file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from typing import Mapping

from ..errors import CommandFailed, ConfigError
from ..facts import release
from ..guard import onehost as guard
from ..guard import policy, workers
from ..guard.workers import Say, _quiet
from ..remote.host import Host
from ..settings import NAME_RE, Settings


@dataclass(frozen=True)
class HookInputs:
    """What one hook run is about: the settings (with the env resolved), release and roles."""

    settings: Settings
    release_path: str | None
    roles: tuple[str, ...]
    name: str | None = None  # Engine Yard's instance name (EY_DEPLOY_CURRENT_NAME)

    @property
    def runs_workers(self) -> bool:
        """This host's roles include one of resque.roles, and, when resque.utility_names is set,
        a utility instance is one of those names (Engine Yard's on_utilities("resque"))."""
        r = self.settings.resque
        if not set(self.roles) & set(r.roles):
            return False
        if r.utility_names and "util" in self.roles and not set(self.roles) & (set(r.roles) - {"util"}):
            return self.name in r.utility_names
        return True


def resolve(
    settings: Settings,
    *,
    release_path: str | None = None,
    app: str | None = None,
    framework_env: str | None = None,
    roles: str | None = None,
    host: str = "",
    environ: Mapping[str, str] = os.environ,
) -> HookInputs:
    """Merge arguments, EY_DEPLOY_* variables and the config; ConfigError on any conflict."""
    app = app or environ.get("EY_DEPLOY_APP")
    if app and app != settings.app:
        raise ConfigError(
            f"app {app!r} (from arguments or EY_DEPLOY_APP) is not the config's "
            f"app {settings.app!r} ({settings.source})"
        )
    env = framework_env or environ.get("EY_DEPLOY_FRAMEWORK_ENV")
    if env:
        if not NAME_RE.match(env):
            raise ConfigError(f"framework env {env!r} is not a name (letters, digits, _ and -)")
        settings = dataclasses.replace(settings, framework_env=env)
    release_path = release_path or environ.get("EY_DEPLOY_RELEASE_PATH") or None
    role_text = roles if roles is not None else environ.get("EY_DEPLOY_CURRENT_ROLES")
    if role_text is not None:
        role_list = tuple(r for r in re.split(r"[\s,]+", role_text) if r)
        bad = [r for r in role_list if not NAME_RE.match(r)]
        if bad:
            raise ConfigError(f"role {bad[0]!r} is not a name (letters, digits, _ and -)")
    elif not settings.hosts:
        # No inventory at all: a single server that runs everything (Engine Yard's "solo").
        role_list = settings.resque.roles
    else:
        role_list = settings.roles_of(host)
        if not role_list:
            raise ConfigError(
                f"cannot tell this host's roles: '{host}' is not listed under hosts "
                f"in {settings.source}; pass --roles or set EY_DEPLOY_CURRENT_ROLES"
            )
    name = environ.get("EY_DEPLOY_CURRENT_NAME") or None
    if name is not None and not NAME_RE.fullmatch(name):
        raise ConfigError(f"instance name {name!r} (EY_DEPLOY_CURRENT_NAME) is not a name (letters, digits, _ and -)")
    return HookInputs(settings, release_path, role_list, name)


def _need_release(inputs: HookInputs, hook: str) -> str:
    if not inputs.release_path:
        raise ConfigError(f"{hook}: no release path: pass --release-path or set EY_DEPLOY_RELEASE_PATH")
    return inputs.release_path


def _no_workers(host: Host, inputs: HookInputs, say: Say) -> bool:
    if inputs.runs_workers:
        return False
    r = inputs.settings.resque
    if set(inputs.roles) & set(r.roles):
        say(
            f"{host.name}: utility instance {inputs.name or '(no EY_DEPLOY_CURRENT_NAME)'} is not "
            f"one of resque.utility_names ({', '.join(r.utility_names)}): it runs no workers; "
            f"nothing to do"
        )
        return True
    say(
        f"{host.name}: roles {', '.join(inputs.roles) or '(none)'} run no resque workers "
        f"(resque.roles: {', '.join(r.roles)}): nothing to do"
    )
    return True


def before_migrate(host: Host, inputs: HookInputs, say: Say = _quiet, *, run_guard: bool = True) -> None:
    """Link the shared resque.yml into the release; run the guard if `guard_at` says so
    (`run_guard=False`: the caller runs it across every host at once, see `fleetguard`)."""
    path = _need_release(inputs, "before_migrate")
    name = release.release_name(host, path)
    say(release.link_resque_yml(host, path))
    if run_guard and inputs.settings.resque.guard_at == "before_migrate" and not _no_workers(host, inputs, say):
        guard.guard(host, name, say)


def before_symlink(host: Host, inputs: HookInputs, say: Say = _quiet, *, run_guard: bool = True) -> None:
    """Run the guard if `guard_at` is before_symlink; otherwise say it already ran."""
    path = _need_release(inputs, "before_symlink")
    name = release.release_name(host, path)
    if inputs.settings.resque.guard_at != "before_symlink":
        say(f"{host.name}: the guard runs at {inputs.settings.resque.guard_at}: nothing to do here")
        return
    if run_guard and not _no_workers(host, inputs, say):
        guard.guard(host, name, say)


def after_symlink(host: Host, inputs: HookInputs, say: Say = _quiet, *, refuse_busy: bool = False) -> float | None:
    """Restart the group and wait until every worker runs from the new release; returns when
    they were seen up (epoch), None on a host that runs no workers.

    A worker of this app still on an old or deleted release afterwards (one monit does not
    manage, say) is named and the hook fails: it would run stale code.
    """
    path = _need_release(inputs, "after_symlink")
    name = release.release_name(host, path)
    if _no_workers(host, inputs, say):
        return None
    up = workers.start_group(host, restart=True, release=name, say=say, refuse_busy=refuse_busy)
    if host.dry:
        return up  # nothing was restarted: the workers are, rightly, still on the old release
    stale = policy.stale_workers(host.workers(), name)
    if stale:
        raise CommandFailed(
            f"{host.name}: worker(s) not on release {name} after the restart: "
            + "; ".join(f"pid {w.pid} runs from {w.cwd or 'an unreadable directory'}" for w in stale)
            + ". They run stale code: stop them (kill -QUIT <pid>) or add them to monit group "
            f"{inputs.settings.resque.monit_group}"
        )
    guard.clear_record(host)
    say(f"{host.name}: all {len(inputs.settings.resque.workers)} worker(s) run release {name}")
    return up


def deploy_failed(host: Host, inputs: HookInputs, say: Say = _quiet) -> None:
    """Undo the guard on this host after a deploy failed elsewhere: start what it stopped."""
    if _no_workers(host, inputs, say):
        return
    guard.undo(host, say)


HOOKS = {
    "before_migrate": before_migrate,
    "before_symlink": before_symlink,
    "after_symlink": after_symlink,
    "deploy_failed": deploy_failed,
}
