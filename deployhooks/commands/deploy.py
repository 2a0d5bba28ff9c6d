"""`fab deploy` and `fab rollback`: a release to every host, steps as barriers, one switch.

Order (Engine Yard's: docs/engineyard.md, "Deploy hooks: the twelve points"), each step finishing
on every host before the next starts:

    lock -> upload -> link shared -> before_migrate -> migrate (one host) -> before_symlink
    -> switch current -> after_symlink -> restart app servers -> cleanup -> unlock

Before the switch any refusal or failure aborts cleanly: `current` is untouched everywhere,
the new release moves to `releases_failed/`, and what the guard stopped starts again. After
the switch nothing is undone automatically; the summary names the hosts that switched and
says to run `fab rollback`. One SSH connection per host serves the whole deploy.
"""

from __future__ import annotations

import getpass
import io
import shlex
import socket
import subprocess
import time
from typing import Callable

from ..errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    CommandFailed,
    ConfigError,
    DeployhooksError,
    Refused,
)
from ..facts import release as release_mod
from ..guard import fleet as fleetguard
from ..guard import onehost as guard
from ..remote import cancel
from ..remote.fleet import Session, overall_code
from ..remote.host import Host
from ..settings import Settings
from . import apphooks, deploylock, hooks, steps
from .deploylock import lock_path, lock_status, take_lock, unlock  # noqa: F401  (the tasks' names)
from .report import DeployReport, StepReport, summary_lines  # noqa: F401  (the tasks' names)

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


class Deploy:
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
        self.dry = dry
        self.ref, self.sha = ref, sha
        self.s = settings
        self.hosts = hosts
        self.archive = archive
        self.say = say
        self.release = release or time.strftime("%Y%m%d%H%M%S", time.gmtime())
        self.release_path = f"{settings.releases_path}/{self.release}"
        self.roles_of = roles_of or settings.roles_of
        self.session = Session(hosts, settings, config)
        self.app_hooks = apphooks.in_archive(archive)
        self.report = DeployReport(self.release)
        self.report.queues = [",".join(w.queues) for w in settings.resque.workers]
        self.locked: list[str] = []
        self.uploaded: list[str] = []
        self.guarded: list[str] = []

    # --- plumbing ---------------------------------------------------------------------------

    def _host(self, name: str, conn) -> Host:
        return Host(conn, self.s, name, dry=self.dry, say=self.say)

    def host(self, name: str) -> Host:
        return Host(self.session.conns[name], self.s, name, dry=self.dry, say=self.say)

    def step(self, name: str, fn: Callable[[Host], object], hosts: list[str] | None = None) -> StepReport:
        """Run `fn` on every host in parallel and wait for all (a barrier)."""
        hosts = self.hosts if hosts is None else hosts
        report = StepReport(name)
        started = time.monotonic()
        self.say(f"==> {name} ({len(hosts)} host(s))")
        results = self.session.each(lambda h, conn: fn(self._host(h, conn)), hosts)
        report.seconds = time.monotonic() - started
        report.hosts = {r.host: (r.error if r.code else "ok") for r in results}
        self.report.steps.append(report)
        failed = {r.host: r for r in results if r.code}
        if failed:
            for r in failed.values():
                self.say(r.error)
            raise _StepFailed(name, overall_code(results), {h: r.error for h, r in failed.items()})
        return report

    def _each(self, fn: Callable[[Host], object], names) -> list:
        """`fn(host)` on `names` in parallel, results per host (the fleet guard's runner)."""
        return self.session.each(lambda h, conn: fn(self._host(h, conn)), list(names))

    def _runs_workers(self, name: str) -> bool:
        return bool(set(self.roles_of(name)) & set(self.s.resque.roles))

    def _guard_fleet(self, name: str, among: list[str] | None = None) -> None:
        """The guard on every host of `among` (default: all) that runs workers, at once (see
        `fleetguard`): a job anywhere refuses with no host stopped; otherwise every group is
        stopped, and recorded in `guarded` for an abort to start again."""
        hosts = [h for h in (self.hosts if among is None else among) if self._runs_workers(h)]
        report = StepReport(name)
        self.report.steps.append(report)
        self.say(f"==> {name} ({len(hosts)} host(s))")
        started = time.monotonic()
        try:
            paused = fleetguard.guard_fleet(
                self._each, hosts, self.s, self.say, release=self.release, action=self.kind, dry=self.dry
            )
        except Refused as exc:
            self.say(str(exc))
            report.hosts = {h: "refused" for h in hosts}
            raise _StepFailed(name, EXIT_REFUSED, {"fleet": str(exc).splitlines()[0]}) from None
        except DeployhooksError as exc:
            self.say(str(exc))
            errors = getattr(exc, "errors", None) or {"fleet": str(exc)}
            report.hosts = {h: errors.get(h, "put back") for h in hosts}
            raise _StepFailed(name, exc.exit_code, errors) from None
        finally:
            report.seconds = time.monotonic() - started
        report.hosts = {h: "ok" for h in hosts}
        self.guarded.extend(hosts)
        self.report.paused_at.update(paused)

    def _inputs(self, host: Host) -> hooks.HookInputs:
        return hooks.resolve(
            self.s,
            release_path=self.release_path,
            roles=",".join(self.roles_of(host.name)) or None,
            host=host.name,
            environ={},
        )

    # --- steps ------------------------------------------------------------------------------

    def _lock(self, host: Host) -> None:
        lock = self._lock_path
        info = deploylock.lock_info(self.release)
        while True:
            if self.dry:
                r = host.run(f"test ! -e {q(lock)}", warn=True)  # a fact: is it held now?
                if r.exited == 0:
                    host.would(f"take the deploy lock {lock}")
            else:
                # mkdir is atomic: exactly one deploy creates the folder.
                r = host.run(deploylock.take_command(self.s, info), warn=True, change=True)
            if r.exited == 0:
                break
            if self.dry or time.monotonic() >= self.lock_deadline:
                holder = deploylock.holder_text(self.s.app, host.read_file(lock + "/info"))
                raise Refused(
                    f"{host.name}: {'[dry run] would refuse: ' if self.dry else ''}"
                    f"{holder}. If that deploy is dead, release it: fab deploy.unlock "
                    f"(or remove {lock} on {host.name})"
                )
            cancel.check(host.name)
            time.sleep(1.0)  # --lock-wait: the other deploy may finish meanwhile
        self.locked.append(host.name)

    lock_deadline = 0.0  # monotonic time until which a held lock is waited for (--lock-wait)

    def _lock_all(self) -> None:
        """Lock host after host in one fixed order, so two deploys started together cannot each
        win some hosts and both be refused: whoever takes the first host takes them all."""
        report = StepReport("lock")
        started = time.monotonic()
        self.say(f"==> lock ({len(self.hosts)} host(s))")
        self.report.steps.append(report)
        for name in sorted(self.hosts):
            [result] = self.session.each(lambda h, conn: self._lock(self._host(h, conn)), [name])
            report.hosts[name] = result.error if result.code else "ok"
            report.seconds = time.monotonic() - started
            if result.code:
                self.say(result.error)
                raise _StepFailed("lock", result.code, {name: result.error})

    def _unlock(self, host: Host) -> None:
        host.run(f"rm -rf {q(self._lock_path)}", change=True)

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

    def _link_shared(self, host: Host) -> None:
        command = steps.link_shared_command(self.s, self.release_path)
        if command:
            host.run(command, change=True)

    def _link_resque_yml(self, host: Host) -> None:
        hooks.before_migrate(host, self._inputs(host), self.say, run_guard=False)

    def _migrate(self, host: Host) -> None:
        d = self.s.deploy
        self.say(f"{host.name}: {d.migrate_command}")
        self._in_release(host, "migration", d.migrate_command)

    def _prepare_switch(self, host: Host) -> None:
        # The new link is made on every host first, so a host lost now aborts the deploy before
        # any `current` moves; the switch proper is then one rename per host.
        self.report.previous[host.name] = release_mod.current_release(host) or "(none)"
        host.run(steps.prepare_switch_command(self.s, self.release), change=True)

    def _switch(self, host: Host) -> None:
        # rename(2) is atomic: `current` always resolves, to the old release or to the new one.
        host.run(steps.switch_command(self.s, self.release), change=True)
        if self.dry:
            host.would(f"switch current: {self.report.previous.get(host.name, '?')} -> {self.release}")
        self.report.switched.append(host.name)

    def _after_symlink(self, host: Host) -> None:
        hooks.after_symlink(host, self._inputs(host), self.say)
        if host.name in self.report.paused_at:
            self.report.running_at[host.name] = time.time()

    def _restart_app(self, host: Host) -> None:
        cmd = self.s.deploy.restart_command
        if cmd and set(self.roles_of(host.name)) & set(self.s.deploy.restart_roles):
            r = host.run(steps.restart_app_command(self.s), warn=True, change=True)
            if r.exited != 0:
                raise CommandFailed(
                    f"{host.name}: app server restart failed (exit {r.exited}): {(r.stderr or r.stdout).strip()[-300:]}"
                )

    def _cleanup(self, host: Host) -> None:
        if self.dry:
            listing = host.run(f"ls -1 {q(self.s.releases_path)}", warn=True).stdout.split()
            doomed = steps.prune_plan(listing, self.release, self.s.keep_releases)
            host.would(f"prune to keep_releases {self.s.keep_releases}: remove {' '.join(doomed) or 'nothing'}")
            self.report.pruned[host.name] = doomed
            return
        self.report.pruned[host.name] = host.run(steps.prune_command(self.s, self.release), change=True).stdout.split()

    def _move_aside(self, host: Host) -> None:
        host.run(steps.move_aside_command(self.s, self.release), change=True)

    # --- the whole deploy -------------------------------------------------------------------

    def run(self) -> DeployReport:
        started = time.monotonic()
        try:
            try:
                self.step("connect", lambda host: host.c.open())
                self._lock_all()
                self._before_switch()
            except (_StepFailed, KeyboardInterrupt) as exc:
                cancel.CANCELLED.clear()  # the cleanup below must be allowed to wait
                with cancel.shielded():
                    self._abort_before_switch(exc)
                return self.report
            try:
                self._after_switch()
            except (_StepFailed, KeyboardInterrupt) as exc:
                cancel.CANCELLED.clear()
                self._fail_after_switch(exc)
                return self.report
            self.report.message = self._done_message(time.monotonic() - started)
            if self.dry:
                self.report.message = "[dry run] nothing was changed; the real run would have: " + self.report.message
            return self.report
        finally:
            with cancel.shielded():
                self._log_revisions()
                stuck = {}
                for h in list(self.locked):
                    try:
                        self._unlock(self.host(h))
                    except Exception as exc:  # reported, never masks the deploy's own outcome
                        self.say(f"{h}: could not remove the deploy lock: {exc}")
                        stuck[h] = str(exc)
                if stuck:
                    self._left_behind(
                        {
                            h: f"the deploy lock {self._lock_path} is still there (remove it: rm -rf {self._lock_path})"
                            for h in stuck
                        }
                    )
            self.session.close()

    def _log_revisions(self) -> None:
        """A line per deploy or rollback in `<deploy_to>/revisions.log` on every host it held
        the lock on, as Capistrano keeps one: time, who, ref, sha, release, outcome."""
        if not self.locked:
            return
        outcome = {EXIT_OK: "done", EXIT_REFUSED: "refused", EXIT_INTERRUPTED: "interrupted"}.get(
            self.report.code, "failed"
        ) + (" after the switch" if self.report.switched and self.report.code else "")
        line = (
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {self.kind} "
            f"by={getpass.getuser()}@{socket.gethostname()} ref={self.ref or '-'} "
            f"sha={self.sha or '-'} release={self.release} outcome={outcome}"
        )
        for h in self.locked:
            try:
                self.host(h).run(steps.revisions_log_command(self.s, line), change=True)
            except Exception as exc:  # the record is worth a warning, not the deploy's outcome
                self.say(f"{h}: could not append to {self.s.deploy_to}/revisions.log: {exc}")

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
                self._guard_fleet(f"guard{label}", batch)
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

    @property
    def _lock_path(self) -> str:
        return deploylock.lock_path(self.s)

    def _left_behind(self, what: dict[str, str]) -> None:
        """An undo did not complete: the outcome is a failure (exit 3) whose last lines name each
        host, what is left there and how to repair it; nothing claims more than was done."""
        self.report.code = EXIT_FAILED
        self.report.message += "\nNOT everything was put back:\n" + "\n".join(
            f"  {host}: {text}" for host, text in what.items()
        )

    def _before_switch(self) -> None:
        if self.s.deploy.required_files:
            self.step("check linked files", self._check_linked_files)
        self.step("upload", self._upload)
        self.step("link shared", self._link_shared)
        self._app_hook("before_deploy")
        self._app_hook("before_bundle")
        if self.s.deploy.bundle_command:
            self.step("bundle", lambda host: self._in_release(host, "bundle", self.s.deploy.bundle_command))
        self._app_hook("after_bundle")
        self._app_hook("before_compile_assets")
        assets_hosts = [h for h in self.hosts if set(self.roles_of(h)) & set(self.s.deploy.assets_roles)]
        if self.s.deploy.assets_command and assets_hosts:
            self.step(
                "assets", lambda host: self._in_release(host, "assets", self.s.deploy.assets_command), assets_hosts
            )
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
            self._guard_fleet("guard (before_symlink" + (", batch 1)" if rolling else ")"), first)

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

    def _abort_before_switch(self, exc: BaseException) -> None:
        interrupted = isinstance(exc, KeyboardInterrupt)
        if self.dry:
            self.report.code = EXIT_INTERRUPTED if interrupted else exc.code
            why = (
                "interrupted (Ctrl-C)"
                if interrupted
                else f"step {exc.step}: " + "; ".join(f"{h}: {e}" if h != "fleet" else e for h, e in exc.errors.items())
            )
            self.report.message = f"[dry run] the {self.kind} would stop here ({why}). Nothing was changed."
            return
        self.say("==> aborting before the switch: current is untouched on every host")
        left: dict[str, str] = {}
        self.not_moved: list[str] = []
        for name in self.uploaded:
            try:
                self._move_aside(self.host(name))
            except Exception as again:
                self.say(f"{name}: could not move {self.release_path} aside: {again}")
                self.not_moved.append(name)
                left[name] = (
                    f"the new release {self.release_path} is still in releases/ (remove it: rm -rf {self.release_path})"
                )
        for name in self.guarded:
            try:
                guard.undo(self.host(name), self.say)
            except Exception as again:
                self.say(f"{name}: could not start the workers again: {again}")
                left[name] = (
                    f"workers stopped or paused by the guard ({again}); repair: "
                    f"fab hooks.deploy-failed (or hooks/deploy_failed on {name})"
                )
        if interrupted:
            self.report.code, why = EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
        else:
            self.report.code = exc.code
            why = (
                f"step {exc.step} "
                + ("refused" if exc.code == EXIT_REFUSED else "failed")
                + (f": {exc.errors['fleet']}" if list(exc.errors) == ["fleet"] else " on " + ", ".join(exc.errors))
            )
        what = self.kind if self.release_pending else f"{self.kind} of {self.release}"
        self.report.message = f"{what} stopped: {why}. " + self._kept(left)
        if left:
            self._left_behind(left)

    kind = "deploy"
    release_pending = False  # a rollback before it knows where to go

    def _workers_back(self, left: dict[str, str]) -> str:
        left = {h: why for h, why in left.items() if "workers" in why}
        if not self.guarded:
            return "no worker was stopped"
        if not left:
            return f"the workers the {self.kind} stopped are running again"
        return f"the workers the {self.kind} stopped are running again except on {', '.join(left)}"

    def _kept(self, left: dict[str, str]) -> str:
        """What an abort before the switch leaves, in words that claim only what was done."""
        workers_back = self._workers_back(left)
        not_moved = getattr(self, "not_moved", [])
        moved = (
            "the new release was moved to releases_failed/"
            if not not_moved
            else f"the new release is still in releases/ on {', '.join(not_moved)} (moved aside elsewhere)"
        )
        return (
            f"[Relax] Your site is still running the old code on every host: current was "
            f"not switched, {moved}, and {workers_back}."
        )

    def _fail_after_switch(self, exc: BaseException) -> None:
        switched = self.report.switched
        not_switched = [h for h in self.hosts if h not in switched]
        if isinstance(exc, KeyboardInterrupt):
            step = "interrupted (Ctrl-C)"
        elif isinstance(exc, _StepFailed) and exc.code == EXIT_REFUSED:
            # A later batch of a rolling deploy found jobs: its hosts were put back as they were.
            step = f"step {exc.step} refused ({exc.errors.get('fleet', ', '.join(exc.errors))})"
        else:
            step = f"step {exc.step} failed on {', '.join(exc.errors)}"  # type: ignore[attr-defined]
        self.report.code = EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_FAILED
        previous = {self.report.previous.get(h) for h in switched}
        back = (
            f"'fab rollback --release {previous.pop()}'"
            if len(previous) == 1 and None not in previous and "(none)" not in previous
            else "'fab rollback'"
        )
        self.report.message = (
            f"{self.kind} of {self.release} {step} AFTER the switch. current points at "
            f"{self.release} on: {', '.join(switched) or 'no host'}; still on the previous "
            f"release: {', '.join(not_switched) or 'no host'}. Run {back} to switch every "
            f"host back (and restart the workers there), or fix the cause and deploy again."
        )


class _StepFailed(Exception):
    def __init__(self, step: str, code: int, errors: dict[str, str]):
        super().__init__(step)
        self.step, self.code, self.errors = step, code, errors
