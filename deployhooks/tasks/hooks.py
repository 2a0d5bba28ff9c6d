"""`hooks.*` tasks: run a deploy hook here (on a server) or on every configured host over SSH."""

from __future__ import annotations

from .common import LazyModule, finish, load_settings, say, select_hosts, task

# Imported when a hook first uses them (see LazyModule): every `fab` call imports this file.
hooks_mod = LazyModule("deployhooks.commands.hooks")
fleetguard = LazyModule("deployhooks.guard.fleet")

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

    def inputs_of(host):
        return hooks_mod.resolve(
            settings, release_path=release_path, app=app, framework_env=framework_env, roles=roles, host=host.name
        )

    def one(host):
        inputs = inputs_of(host)
        if fleet:
            # The guard's part runs below, across every host at once.
            fn(host, inputs, say, run_guard=False)
            return inputs.runs_workers
        fn(host, inputs, say)
        return inputs.runs_workers

    # Every server of the deploy runs the hooks (Engine Yard dispatches them to all). From a
    # workstation the guard then decides once for all of them (see fleetguard): a job on one
    # host refuses with no host stopped, and Ctrl-C or a failure puts every host back. On a
    # server (the console script) it is the one-host case, run by the hook itself.
    with select_hosts(c, settings, None, list(settings.hosts)) as hosts:
        fleet = hook in GUARD_HOOKS and not hosts.local
        results = hosts.each(one)
        if fleet and hook == settings.resque.guard_at and not any(r.code for r in results):
            workers_hosts = [r.host for r in results if r.value]
            name = None if not release_path else release_path.rstrip("/").rsplit("/", 1)[-1]
            fleetguard.guard_fleet(hosts.each, workers_hosts, settings, say, release=name, dry=hosts.dry)
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
