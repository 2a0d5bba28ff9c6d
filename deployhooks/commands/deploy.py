"""`fab deploy`: a new release to every host, steps as barriers, one switch (see `switch`).

Order (Engine Yard's: docs/engineyard.md, "Deploy hooks: the twelve points"), each step finishing
on every host before the next starts:

    lock -> upload -> link shared -> before_migrate -> migrate (one host) -> before_symlink
    -> switch current -> after_symlink -> restart app servers -> cleanup -> unlock

With `deploy.batch_size`, the guard, switch, after_symlink and app restart run batch after
batch while the other hosts keep serving. Aborts and failures: see `switch.ReleaseSwitch`.
"""

from __future__ import annotations

import io
import shlex
import subprocess
import time
from typing import Callable

from ..errors import (
    CommandFailed,
    ConfigError,
)
from ..remote.host import Host
from ..settings import Settings
from . import apphooks, hooks, steps
from .deploylock import lock_path, lock_status, take_lock, unlock  # noqa: F401  (the tasks' names)
from .report import DeployReport, StepReport, summary_lines  # noqa: F401  (the tasks' names)
from .switch import ReleaseSwitch

Say = Callable[[str], None]
q = shlex.quote


def build_archive(repo: str, ref: str) -> bytes:
    """`git archive` of `ref` in `repo`, gzipped, built once on the workstation."""
    return build_release(repo, ref)[1]


def build_release(repo: str, ref: str) -> tuple[str, bytes]:
    """(the commit's sha, `git archive` of it gzipped) for `ref` in `repo`."""
    try:
        sha = subprocess.run(
            ["git", "-C", repo, "rev-parse", "--verify", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        data = subprocess.run(
            ["git", "-C", repo, "archive", "--format=tar.gz", sha], capture_output=True, check=True
        ).stdout
    except FileNotFoundError:
        raise ConfigError("git is not installed on this workstation") from None
    except subprocess.CalledProcessError as exc:
        err = (exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or "").strip()
        raise ConfigError(f"cannot build the release from {repo} at {ref!r}: {err}") from None
    return sha, data


class Deploy(ReleaseSwitch):
    """One deploy of one app to `hosts`; `run()` returns a `DeployReport`, never raises."""

    def __init__(
        self,
        settings: Settings,
        hosts: list[str],
        archive: bytes,
        *,
        say: Say = print,
        release: str | None = None,
        roles_of: Callable[[str], tuple[str, ...]] | None = None,
        dry: bool = False,
        ref: str | None = None,
        sha: str | None = None,
        config=None,
    ):
        super().__init__(
            settings,
            hosts,
            release=release or time.strftime("%Y%m%d%H%M%S", time.gmtime()),
            say=say,
            roles_of=roles_of,
            dry=dry,
            config=config,
        )
        self.ref, self.sha = ref, sha
        self.archive = archive
        self.app_hooks = apphooks.in_archive(archive)

    def _upload(self, host: Host) -> None:
        host.run(f"mkdir -p {q(self.s.releases_path)}", change=True)
        tarball = steps.tarball_path(self.s, self.release)
        if self.dry:
            host.would(f"upload {len(self.archive) / 1024:.1f} KiB to {tarball}")
        else:
            host.c.put(io.BytesIO(self.archive), remote=tarball)
        self.uploaded.append(host.name)
        host.run(steps.unpack_command(self.s, self.release), change=True)
        if self.sha:
            host.run(steps.revision_command(self.release_path, self.sha), change=True)

    def _link_resque_yml(self, host: Host) -> None:
        hooks.before_migrate(host, self._inputs(host), self.say, run_guard=False)

    def _migrate(self, host: Host) -> None:
        command = self.s.deploy.migrate_command
        assert command, "_migrate_hosts() picks no host without a migrate_command"
        self.say(f"{host.name}: {command}")
        self._in_release(host, "migration", command)

    def _cleanup(self, host: Host) -> None:
        if self.dry:
            listing = host.run(f"ls -1 {q(self.s.releases_path)}", warn=True).stdout.split()
            doomed = steps.prune_plan(listing, self.release, self.s.keep_releases)
            host.would(f"prune to keep_releases {self.s.keep_releases}: remove {' '.join(doomed) or 'nothing'}")
            self.report.pruned[host.name] = doomed
            return
        self.report.pruned[host.name] = host.run(steps.prune_command(self.s, self.release), change=True).stdout.split()

    def batches(self) -> list[list[str]]:
        """The hosts in switch order: one batch of all, or `deploy.batch_size` at a time."""
        size = self.s.deploy.batch_size or len(self.hosts) or 1
        return [self.hosts[i : i + size] for i in range(0, len(self.hosts), size)]

    def _after_switch(self) -> None:
        """Switch and restart batch after batch; the first batch's guard ran before the switch.

        While one batch restarts, the hosts of the others serve every queue (paused only
        within their own batch), on the old release or already on the new one."""
        batches = self.batches()
        for number, batch in enumerate(batches, 1):
            label = f" (batch {number}/{len(batches)})" if len(batches) > 1 else ""
            if number > 1:
                self._guard_fleet(f"guard{label}", batch, stop=False)
            self.step("switch current" + label, self._switch, batch)
            self._app_hook("after_symlink", batch, label)
            self.step("after_symlink" + label, self._after_symlink, batch)
            self._app_hook("before_restart", batch, label)
            self.step("restart app servers" + label, self._restart_app, batch)
            self._app_hook("after_restart", batch, label)
        self.step("cleanup", self._cleanup)
        self._app_hook("after_deploy")

    def _done_message(self, seconds: float) -> str:
        return f"deployed {self.release} to {len(self.hosts)} host(s) in {seconds:.1f}s"

    def _before_switch(self) -> None:
        if self.s.deploy.required_files:
            self.step("check linked files", self._check_linked_files)
        self.step("upload", self._upload)
        self.step("link shared", self._link_shared)
        self._app_hook("before_deploy")
        self._app_hook("before_bundle")
        bundle = self.s.deploy.bundle_command
        if bundle:
            self.step("bundle", lambda host: self._in_release(host, "bundle", bundle))
        self._app_hook("after_bundle")
        self._app_hook("before_compile_assets")
        assets_hosts = [h for h in self.hosts if set(self.roles_of(h)) & set(self.s.deploy.assets_roles)]
        assets = self.s.deploy.assets_command
        if assets and assets_hosts:
            self.step("assets", lambda host: self._in_release(host, "assets", assets), assets_hosts)
        self._app_hook("after_compile_assets")
        self._app_hook("before_migrate")
        # The hooks' work, with the guard run across every host at once at guard_at: a job on
        # one host refuses with no host stopped (the per-server hooks decide alone).
        self.step("before_migrate", self._link_resque_yml)
        if self.s.resque.guard_at == "before_migrate":
            self._guard_fleet("guard (before_migrate)")
        migrate_hosts = self._migrate_hosts()
        if migrate_hosts:
            self.step("migrate", self._migrate, migrate_hosts)
        self._app_hook("after_migrate")
        self._app_hook("before_symlink")
        # The new link is made everywhere before the guard at before_symlink, so the queues'
        # downtime is the switch and the restart only.
        self.step("prepare switch", self._prepare_switch)
        if self.s.resque.guard_at == "before_symlink":
            first = self.batches()[0]
            rolling = len(first) < len(self.hosts)
            # Left paused, not stopped: the restart right after the switch is one monit action.
            self._guard_fleet("guard (before_symlink" + (", batch 1)" if rolling else ")"), first, stop=False)

    def _in_release(self, host: Host, what: str, command: str) -> None:
        """`command` (the config author's shell text) in the release, with the framework env."""
        r = host.run(steps.in_release_command(self.release_path, self.s.framework_env, command), warn=True, change=True)
        if r.exited != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-5:])
            raise CommandFailed(f"{host.name}: {what} failed (exit {r.exited}): {tail}")

    def _check_linked_files(self, host: Host) -> None:
        """Every deploy.shared_files entry exists in shared/config, else nothing moves
        (Capistrano's deploy:check:linked_files)."""
        missing = host.run(steps.missing_files_command(self.s)).stdout.split()
        if missing:
            raise ConfigError(
                f"{host.name}: linked file(s) missing: {', '.join(missing)}: create "
                f"them (deploy.shared_files links each into the release's config/)"
            )

    def _app_hook(self, point: str, hosts: list[str] | None = None, label: str = "") -> None:
        """The app's `deploy/<point>` on every host, when the release has one (apphooks)."""
        if point not in self.app_hooks:
            return
        if not self.app_hooks[point]:
            self.say(f"warning: deploy/{point} is not executable: skipped (chmod +x it to run it)")
            return

        def run(host: Host) -> None:
            env = apphooks.environment(
                self.s.app, self.s.framework_env, self.release_path, self.roles_of(host.name), host.name
            )
            r = host.run(apphooks.command(self.release_path, point, env), warn=True, change=True)
            for line in r.stdout.strip().splitlines()[-20:]:
                self.say(f"{host.name}: deploy/{point}: {line}")
            if r.exited != 0:
                raise apphooks.failed(host.name, point, r.exited, r.stdout)

        self.step(f"deploy/{point}{label}", run, hosts)

    def _migrate_hosts(self) -> list[str]:
        d = self.s.deploy
        if not d.migrate_command:
            return []
        candidates = [h for h in self.hosts if d.migrate_role in self.roles_of(h)]
        return candidates[:1] or self.hosts[:1]
