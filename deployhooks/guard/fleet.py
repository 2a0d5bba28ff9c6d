"""The guard across many hosts: pause everywhere, decide once, stop only when all are idle.

The per-host guard (`guard.guard`, what a pipeline's hook runs on one server) decides alone: a
job on one host refuses there while the idle hosts have already stopped. Run from a workstation
over every host at once, the same phases become barriers:

1. `guard.pause` on every host (record, USR2, wait until each worker took the pause);
2. look at every host's busy workers and decide for the fleet (`policy.guard_verdict`): a job
   anywhere under `on_busy: abort` resumes every host and refuses, so no host stopped anything;
   under `on_busy: wait` the look repeats, with one progress line for the fleet, until every
   host is idle or `wait_timeout` runs out (then resume everywhere and refuse);
3. `guard.stop_paused` on every host, only once no host has a job.

Any failure or Ctrl-C puts every host back as it was (resumed, or started again from its
record) before the exception goes on; when that undo itself fails, `UndoFailed` (exit 3)
names each host, what is left and the command that repairs it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from ..errors import EXIT_FAILED, CommandFailed, DeployhooksError, Refused
from ..remote import cancel
from ..remote.host import Host
from ..settings import Settings
from . import onehost as guard
from . import policy, workers
from .workers import Say, _quiet

# run(fn, names) -> one result per host with .host, .code, .error and .value (fleet.HostResult).
Run = Callable[[Callable[[Host], Any], Sequence[str]], list]

REPAIR = "fab hooks.deploy-failed"  # starts what a guard record says was stopped, resumes the rest


class FleetFailed(DeployhooksError):
    """A phase failed on some hosts; `errors` maps each to its message (every host was put back)."""

    def __init__(self, message: str, code: int, errors: dict[str, str]):
        super().__init__(message)
        self.exit_code = code
        self.errors = errors


class UndoFailed(CommandFailed):
    """Putting hosts back failed: the message names each, what is left and the repair."""

    exit_code = EXIT_FAILED

    def __init__(self, errors: dict[str, str], cause: BaseException | None = None):
        lines = [f"  {host}: {error}" for host, error in errors.items()]
        super().__init__(
            "could not put every host back as it was:\n" + "\n".join(lines) + "\n"
            f"  Left behind on {', '.join(errors)}: workers stopped or paused by the guard, and "
            f"its record (shared/deployhooks/guard.json). Repair: {REPAIR} --roles ... (or "
            f"hooks/deploy_failed on each of those hosts) once they answer"
            + (f"\n  (this undo followed: {cause})" if cause else "")
        )
        self.errors = errors


def _failures(results) -> dict[str, str]:
    return {r.host: r.error for r in results if r.code}


def _worst(results) -> int:
    from ..remote.fleet import overall_code  # the one ranking of exit codes

    return overall_code([r for r in results if r.code])


def put_back(run: Run, names: Sequence[str], say: Say = _quiet) -> dict[str, str]:
    """`guard.undo` on each host (start what its record says was stopped, resume what was
    paused), shielded from Ctrl-C; returns the hosts where that failed, with why."""
    if not names:
        return {}
    cancel.CANCELLED.clear()  # the undo's own waits must run
    with cancel.shielded():
        return _failures(run(lambda host: guard.undo(host, say), list(names)))


def _unpause(run: Run, paused: dict[str, guard.Paused], say: Say) -> dict[str, str]:
    if not paused:
        return {}
    cancel.CANCELLED.clear()
    with cancel.shielded():
        return _failures(run(lambda host: guard.unpause(host, paused[host.name], say), list(paused)))


def guard_fleet(
    run: Run,
    hosts: Sequence[str],
    settings: Settings,
    say: Say = _quiet,
    *,
    release: str | None = None,
    on_busy: str | None = None,
    wait_timeout: float | None = None,
    action: str = "deploy",
    dry: bool = False,
    stop: bool = True,
) -> dict[str, float]:
    """Run the guard's phases across `hosts` as barriers; returns the hosts whose group it
    stopped (all of them), each with the time (epoch) its workers were told to pause, with no
    job running anywhere.

    `stop=False` ends after the look: every worker stays paused and idle, on record as paused
    (not stopped), for a restart that follows at once (a deploy at before_symlink restarts the
    group right after the switch; one monit restart is shorter than a stop and a start).

    Raises `Refused` (exit 1) when a job runs and the policy gives up, `FleetFailed` when a host
    fails, `KeyboardInterrupt` on Ctrl-C; in each case every host is first put back as it was
    (`UndoFailed`, exit 3, when that fails).
    """
    on_busy = on_busy or settings.resque.on_busy
    wait_timeout = settings.resque.wait_timeout if wait_timeout is None else wait_timeout
    paused: dict[str, guard.Paused] = {}

    def pause(host: Host) -> None:
        # Recorded as soon as it is done: if another host's Ctrl-C or failure ends the phase,
        # this host must still be resumed.
        paused[host.name] = guard.pause(host, release, say)

    try:
        results = run(pause, list(hosts))
        failed = _failures(results)
        if failed:
            raise FleetFailed(f"the guard could not pause the workers on {', '.join(failed)}", _worst(results), failed)
        first_look = {name: state.busy for name, state in paused.items() if state.busy is not None}
        wait_until_idle(
            run,
            list(paused),
            say,
            on_busy=on_busy,
            wait_timeout=wait_timeout,
            action=action,
            dry=dry,
            first_look=first_look if len(first_look) == len(paused) else None,
        )
    except BaseException as exc:
        left = _unpause(run, paused, say)
        # A host whose pause failed (cut off after USR2, say) cleaned up itself if it could;
        # if it could not, its record is there: put it back from that, or name it and the repair.
        left.update(put_back(run, [h for h in hosts if h not in paused], say))
        if left:
            raise UndoFailed(left, exc) from exc
        raise
    if not stop:
        say(
            f"no job running on any of {len(paused)} host(s); workers stay paused until their restart"
            if not dry
            else f"[dry run] would keep the workers of {len(paused)} host(s) paused until their restart"
        )
        return {name: state.at for name, state in paused.items()}
    try:
        results = run(lambda host: guard.stop_paused(host, paused[host.name], say), list(paused))
    except KeyboardInterrupt:
        # A host cut off mid-stop started its group again itself; those that had stopped hold a
        # record that says so: start them again too.
        left = put_back(run, list(paused), say)
        if left:
            raise UndoFailed(left) from None
        raise
    failed = _failures(results)
    if failed:
        # Every host holds a record saying its group was stopped: start each again, those
        # whose stop failed too (a host cut off mid-stop could not start itself again).
        left = put_back(run, list(paused), say)
        if left:
            raise UndoFailed(left)
        raise FleetFailed(f"the guard could not stop the workers on {', '.join(failed)}", _worst(results), failed)
    say(
        f"no job running on any of {len(paused)} host(s); workers stopped"
        if not dry
        else f"[dry run] would stop the workers of {len(paused)} host(s) once none has a job"
    )
    return {name: state.at for name, state in paused.items()}


def wait_until_idle(
    run: Run,
    names: Sequence[str],
    say: Say,
    *,
    on_busy: str,
    wait_timeout: float,
    action: str = "deploy",
    dry: bool = False,
    first_look: dict[str, list] | None = None,
) -> None:
    """Look at every host until none has a busy worker (return) or the policy refuses (raise
    `Refused` naming every job). A host that cannot be looked at fails the whole wait. A dry
    run looks once and says what the policy would do with what it sees now. `first_look`
    (host -> busy workers), when given, stands for the first look: the listings in which every
    host's workers showed they took the pause (`guard.Paused.busy`)."""
    start = time.monotonic()
    last_report = -1e9
    while True:
        if first_look is not None:
            busy, first_look = {name: b for name, b in first_look.items() if b}, None
        else:
            looks = run(guard.busy_workers, list(names))
            failed = _failures(looks)
            if failed:
                raise FleetFailed(f"could not look for jobs on {', '.join(failed)}", _worst(looks), failed)
            busy = {r.host: r.value for r in looks if r.value}
        waited = time.monotonic() - start
        jobs = [w for b in busy.values() for w in b]
        verdict = policy.guard_verdict(jobs, on_busy, waited, wait_timeout)
        if verdict == policy.PROCEED:
            return
        now = time.time()
        if verdict == policy.REFUSE:
            raise Refused(guard.refusal(busy, on_busy, waited, wait_timeout, now, action=action, dry=dry))
        if dry:
            say(
                f"[dry run] would wait up to {wait_timeout:g}s for {len(jobs)} job(s) to "
                f"finish:\n" + "\n".join(guard.busy_lines(n, b, now) for n, b in busy.items())
            )
            return
        cancel.check()
        if waited - last_report >= 5:
            say(
                f"waiting for {len(jobs)} job(s) on {len(busy)} host(s) to finish "
                f"({int(waited)}s of {wait_timeout:g}s):\n"
                + "\n".join(guard.busy_lines(name, b, now) for name, b in busy.items())
            )
            last_report = waited
        time.sleep(workers.poll_delay(time.monotonic() - start))


def after_guard(run: Run, stopped: Sequence[str], then: Callable[[Host], Any], say: Say = _quiet) -> list:
    """`then(host)` on the hosts the guard stopped; returns its per-host results.

    A host where `then` failed, and every host on Ctrl-C, is started again from its guard
    record before the results (or the KeyboardInterrupt) go back; if that fails, `UndoFailed`
    names each host left behind, what `then` said there, and the repair."""
    try:
        results = run(then, list(stopped))
    except KeyboardInterrupt:
        left = put_back(run, list(stopped), say)
        if left:
            raise UndoFailed(left) from None
        raise
    failed = _failures(results)
    if failed:
        left = put_back(run, list(failed), say)
        if left:
            raise UndoFailed(left, FleetFailed("; ".join(failed.values()), _worst(results), failed))
    return results


def act_when_idle(
    run: Run,
    names: Sequence[str],
    settings: Settings,
    then: Callable[[Host], Any],
    say: Say = _quiet,
    *,
    action: str,
    dry: bool = False,
    on_busy: str | None = None,
    wait_timeout: float | None = None,
    stop: bool = True,
) -> list:
    """The fleet guard over `names` (pause, look, wait or refuse, stop only idle workers), then
    `then(host)` on every host it held (see `after_guard`): what resque.stop, restart and
    drain do. With `stop=False` the idle workers are left paused for `then` (a restart: one
    monit restart instead of a stop and a start). Raises as `guard_fleet` does; returns the
    per-host results of `then`."""
    held = guard_fleet(
        run, names, settings, say, action=action, dry=dry, on_busy=on_busy, wait_timeout=wait_timeout, stop=stop
    )
    return after_guard(run, list(held), then, say)


def running_jobs(run: Run, names: Sequence[str]) -> tuple[list[tuple[str, Any]], list]:
    """Every busy worker on `names`, as (host, worker), and the results of hosts that could
    not be looked at: what a forced stop or restart names before it ends them."""
    looks = run(guard.busy_workers, list(names))
    return [(r.host, w) for r in looks if not r.code for w in r.value], [r for r in looks if r.code]
