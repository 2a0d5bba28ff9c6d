"""What a failed switch leaves behind, undone as far as it can be, and said in words that claim
only what was done (a mixin of `switch.ReleaseSwitch`).

Before the switch every change is undone: the new release moves to `releases_failed/`, the
workers the guard stopped start again (or resume), `current` is untouched. After the switch
nothing moves back on its own, but no worker is left stopped or paused: the hosts the guard held
get their workers back from its record, and the report names the hosts on each release, the
hosts still running the previous release's code, and the `fab rollback` that puts them back.
An undo that fails makes the outcome exit 3, naming each host, what is left and the repair.
"""

from __future__ import annotations

from typing import Callable

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_REFUSED
from ..guard import onehost as guard
from ..remote.host import Host
from .report import DeployReport


class _StepFailed(Exception):
    def __init__(self, step: str, code: int, errors: dict[str, str]):
        super().__init__(step)
        self.step, self.code, self.errors = step, code, errors


class SwitchOutcome:
    """The abort before the switch and the failure after it, for `ReleaseSwitch`, which gives
    these (declared here for the type checker)."""

    kind: str
    release: str
    release_path: str
    release_pending: bool
    dry: bool
    hosts: list[str]
    report: DeployReport
    guarded: list[str]
    uploaded: list[str]
    left_paused: set[str]
    say: Callable[[str], None]

    def host(self, name: str) -> Host:
        raise NotImplementedError

    def _move_aside(self, host: Host) -> None:
        raise NotImplementedError

    def _left_behind(self, what: dict[str, str]) -> None:
        """An undo did not complete: the outcome is a failure (exit 3) whose last lines name each
        host, what is left there and how to repair it; nothing claims more than was done."""
        self.report.code = EXIT_FAILED
        self.report.message += "\nNOT everything was put back:\n" + "\n".join(
            f"  {host}: {text}" for host, text in what.items()
        )

    def _abort_before_switch(self, exc: _StepFailed | KeyboardInterrupt) -> None:
        if self.dry:
            if isinstance(exc, _StepFailed):
                self.report.code = exc.code
                why = f"step {exc.step}: " + "; ".join(
                    f"{h}: {e}" if h != "fleet" else e for h, e in exc.errors.items()
                )
            else:
                self.report.code, why = EXIT_INTERRUPTED, "interrupted (Ctrl-C)"
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
        if not isinstance(exc, _StepFailed):
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

    def _put_back_after_switch(self) -> None:
        """After a failure past the switch, no worker is left stopped or paused: every host the
        guard stopped or paused and whose restart did not finish gets its workers back from the
        guard's record (a stopped group starts, on whatever `current` now points at; paused
        workers resume, with the code they had loaded). Hosts where that fails are named with
        their repair; hosts resumed after their switch are named as running the old code."""
        pending = [h for h in self.guarded if h not in self.report.running_at]
        if not pending or self.dry:
            return
        self.say(f"==> putting back the workers the guard held on {', '.join(pending)}")
        left: dict[str, str] = {}
        for name in pending:
            try:
                guard.undo(self.host(name), self.say)
            except Exception as again:
                left[name] = (
                    f"workers stopped or paused by the guard ({again}); repair: "
                    f"fab hooks.deploy-failed (or hooks/deploy_failed on {name})"
                )
        stale = [h for h in pending if h in self.left_paused and h in self.report.switched and h not in left]
        back = [h for h in pending if h not in left]
        if back:
            self.report.message += f"\nThe workers the guard held on {', '.join(back)} run again"
            self.report.message += (
                f"; on {', '.join(stale)} they still run the previous release's code: move them to "
                f"{self.release} with fab resque.restart."
                if stale
                else "."
            )
        if left:
            self._left_behind(left)

    def _fail_after_switch(self, exc: _StepFailed | KeyboardInterrupt) -> None:
        switched = self.report.switched
        not_switched = [h for h in self.hosts if h not in switched]
        if isinstance(exc, KeyboardInterrupt):
            step = "interrupted (Ctrl-C)"
        elif isinstance(exc, _StepFailed) and exc.code == EXIT_REFUSED:
            # A later batch of a rolling deploy found jobs: its hosts were put back as they were.
            step = f"step {exc.step} refused ({exc.errors.get('fleet', ', '.join(exc.errors))})"
        else:
            step = f"step {exc.step} failed on {', '.join(exc.errors)}"
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
