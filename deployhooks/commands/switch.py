"""Moving a fleet to a release: the lock, the guard and the switch as barriers, abort and report.

`ReleaseSwitch` is what `Deploy` and `Rollback` share: one SSH connection per host for the whole
run, each step run on every host in parallel and finished everywhere before the next starts
(`step`), the deploy lock taken host after host in one order, the fleet-wide guard, the
two-phase switch of `current` (a new link made everywhere first, then one rename per host), and
what happens when something fails:

- before the switch, every change is undone: the new release moves to `releases_failed/`, the
  workers the guard stopped start again, and `current` is untouched everywhere;
- after the switch nothing is undone automatically; the report names the hosts on each release
  and the `fab rollback` that puts them back.

`run()` never raises: it returns the `DeployReport`, whose code is the exit code.
"""

from __future__ import annotations

import getpass
import shlex
import socket
import time
from typing import Callable

from ..errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    CommandFailed,
    DeployhooksError,
    Refused,
)
from ..facts import release as release_mod
from ..guard import fleet as fleetguard
from ..remote import cancel
from ..remote.fleet import HostGroup
from ..remote.host import Host
from ..settings import Settings
from . import deploylock, hooks, steps
from .outcome import SwitchOutcome, _StepFailed
from .report import DeployReport, StepReport

Say = Callable[[str], None]
q = shlex.quote


class ReleaseSwitch(SwitchOutcome):
    """One run that moves `hosts` to a release; subclasses give `_before_switch`,
    `_after_switch` and `_done_message`."""

    kind = "deploy"

    def __init__(
        self,
        settings: Settings,
        hosts: list[str],
        *,
        release: str,
        say: Say = print,
        roles_of: Callable[[str], tuple[str, ...]] | None = None,
        dry: bool = False,
        config=None,
    ):
        self.dry = dry
        self.ref: str | None = None
        self.sha: str | None = None
        self.s = settings
        self.hosts = hosts
        self.say = say
        self.release = release
        self.release_path = f"{settings.releases_path}/{release}"
        self.roles_of = roles_of or settings.roles_of
        self.group = HostGroup.over_ssh(hosts, settings, config, dry=dry, say=say)
        self.report = DeployReport(release)
        self.report.queues = [",".join(w.queues) for w in settings.resque.workers]
        self.locked: list[str] = []
        self.uploaded: list[str] = []
        self.guarded: list[str] = []
        self.left_paused: set[str] = set()  # guarded hosts whose workers wait paused, not stopped

    def _before_switch(self) -> None:
        raise NotImplementedError

    def _after_switch(self) -> None:
        raise NotImplementedError

    def _done_message(self, seconds: float) -> str:
        raise NotImplementedError

    def host(self, name: str) -> Host:
        return self.group.host(name)

    def step(self, name: str, fn: Callable[[Host], object], hosts: list[str] | None = None) -> StepReport:
        """Run `fn` on every host in parallel and wait for all (a barrier)."""
        hosts = self.hosts if hosts is None else hosts
        report = StepReport(name)
        started = time.monotonic()
        self.say(f"==> {name} ({len(hosts)} host(s))")
        results = self.group.each(fn, hosts)
        report.seconds = time.monotonic() - started
        report.hosts = {r.host: (r.error if r.code else "ok") for r in results}
        self.report.steps.append(report)
        failed = results.failed
        if failed:
            for r in failed.values():
                self.say(r.error)
            raise _StepFailed(name, results.code, {h: r.error for h, r in failed.items()})
        return report

    def _each(self, fn: Callable[[Host], object], names) -> list:
        """`fn(host)` on `names` in parallel, results per host (the fleet guard's runner)."""
        return self.group.each(fn, list(names))

    def _runs_workers(self, name: str) -> bool:
        return bool(set(self.roles_of(name)) & set(self.s.resque.roles))

    def _guard_fleet(self, name: str, among: list[str] | None = None, *, stop: bool = True) -> None:
        """The guard on every host of `among` (default: all) that runs workers, at once (see
        `fleetguard`): a job anywhere refuses with no host stopped; otherwise every group is
        stopped (or, `stop=False`, left paused for the restart after the switch), and recorded
        in `guarded` for an abort to start again or resume."""
        hosts = [h for h in (self.hosts if among is None else among) if self._runs_workers(h)]
        report = StepReport(name)
        self.report.steps.append(report)
        self.say(f"==> {name} ({len(hosts)} host(s))")
        started = time.monotonic()
        try:
            paused = fleetguard.guard_fleet(
                self._each, hosts, self.s, self.say, release=self.release, action=self.kind, dry=self.dry, stop=stop
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
        if not stop:
            self.left_paused.update(hosts)

    def _inputs(self, host: Host) -> hooks.HookInputs:
        return hooks.resolve(
            self.s,
            release_path=self.release_path,
            roles=",".join(self.roles_of(host.name)) or None,
            host=host.name,
            environ={},
        )

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
            [result] = self.group.each(self._lock, [name])
            report.hosts[name] = result.error if result.code else "ok"
            report.seconds = time.monotonic() - started
            if result.code:
                self.say(result.error)
                raise _StepFailed("lock", result.code, {name: result.error})

    def _unlock(self, host: Host) -> None:
        deploylock.unlock(host)

    def _link_shared(self, host: Host) -> None:
        command = steps.link_shared_command(self.s, self.release_path)
        if command:
            host.run(command, change=True)

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
        # Workers the guard left paused and idle: one found busy now (monit started it after
        # the look, never paused) is not restarted under its job.
        up = hooks.after_symlink(host, self._inputs(host), self.say, refuse_busy=host.name in self.left_paused)
        if host.name in self.report.paused_at:
            # From the moment the workers were seen up, not after the checks that follow.
            self.report.running_at[host.name] = up or time.time()

    def _restart_app(self, host: Host) -> None:
        cmd = self.s.deploy.restart_command
        if cmd and set(self.roles_of(host.name)) & set(self.s.deploy.restart_roles):
            r = host.run(steps.restart_app_command(self.s), warn=True, change=True)
            if r.exited != 0:
                raise CommandFailed(
                    f"{host.name}: app server restart failed (exit {r.exited}): {(r.stderr or r.stdout).strip()[-300:]}"
                )

    def _move_aside(self, host: Host) -> None:
        host.run(steps.move_aside_command(self.s, self.release), change=True)

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
                with cancel.shielded():
                    self._fail_after_switch(exc)
                    self._put_back_after_switch()
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
            self.group.close()

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

    @property
    def _lock_path(self) -> str:
        return deploylock.lock_path(self.s)

    release_pending = False  # a rollback before it knows where to go
