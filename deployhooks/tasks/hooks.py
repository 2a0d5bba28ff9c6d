"""`hooks.*` tasks: run a deploy hook here (on a server) or on every configured host over SSH."""

from __future__ import annotations

from .. import cancel, guard
from .. import hooks as hooks_mod
from .common import Hosts, finish, load_settings, say, task

_HELP = {
    "release_path": "the release being deployed: <deploy_to>/releases/<name> (or EY_DEPLOY_RELEASE_PATH)",
    "app": "the app name; must match the config (or EY_DEPLOY_APP)",
    "framework_env": "e.g. production (or EY_DEPLOY_FRAMEWORK_ENV; default from the config)",
    "roles": "this host's roles, comma-separated (or EY_DEPLOY_CURRENT_ROLES; default from hosts)",
    "config": "path of deployhooks.yml (default config/deployhooks.yml or DEPLOYHOOKS_CONFIG)",
}


def _run(c, hook, release_path, app, framework_env, roles, config):
    settings = load_settings(config)
    fn = hooks_mod.HOOKS[hook]

    def one(host):
        inputs = hooks_mod.resolve(settings, release_path=release_path, app=app,
                                   framework_env=framework_env, roles=roles, host=host.name)
        fn(host, inputs, say)

    def undo(host):
        return guard.undo(host, say)

    # Every server of the deploy runs the hooks (Engine Yard dispatches them to all).
    with Hosts(c, settings, None, list(settings.hosts)) as hosts:
        fleet = hook in GUARD_HOOKS and not hosts.local
        try:
            results = hosts.each(one)
        except KeyboardInterrupt:
            # Each host's guard has already resumed what it paused; hosts that had passed have
            # stopped their workers, and nothing else would start them again.
            if fleet:
                cancel.CANCELLED.clear()
                say("interrupted: starting again the workers the guard stopped")
                with cancel.shielded():
                    finish(hosts.each(undo))
            raise
        passed = [r.host for r in results if not r.code]
        if fleet and passed and len(passed) < len(results):
            # The deploy stops here for everyone: hosts that passed have stopped their workers,
            # and nothing else would start them again (a pipeline would call deploy_failed).
            say(f"the deploy cannot go on; starting the workers again on {', '.join(passed)}")
            finish([r for r in results if r.code] + hosts.each(undo, passed))
        finish(results)


GUARD_HOOKS = ("before_migrate", "before_symlink")


@task(help=_HELP)
def before_migrate(c, release_path=None, app=None, framework_env=None, roles=None, config=None):
    """Link shared resque.yml into the release; guard against running jobs (guard_at)."""
    _run(c, "before_migrate", release_path, app, framework_env, roles, config)


@task(help=_HELP)
def before_symlink(c, release_path=None, app=None, framework_env=None, roles=None, config=None):
    """Guard against running jobs, when guard_at is before_symlink."""
    _run(c, "before_symlink", release_path, app, framework_env, roles, config)


@task(help=_HELP)
def after_symlink(c, release_path=None, app=None, framework_env=None, roles=None, config=None):
    """Restart the workers and wait until all run from the new release."""
    _run(c, "after_symlink", release_path, app, framework_env, roles, config)


@task(help=_HELP)
def deploy_failed(c, release_path=None, app=None, framework_env=None, roles=None, config=None):
    """Start again the workers the guard stopped, after a deploy failed elsewhere."""
    _run(c, "deploy_failed", release_path, app, framework_env, roles, config)
