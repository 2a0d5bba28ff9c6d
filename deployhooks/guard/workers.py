"""Actions on a host's workers that wait until monit and the process table agree.

monit's CLI returns before anything happened; these functions return only when the thing is
done, or raise `CommandFailed` naming what did not happen within a bound derived from
`grace_time` (see `ResqueSettings.settle_timeout`).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from ..errors import CommandFailed
from ..facts import status
from ..facts.monit import ServiceStatus
from ..facts.processes import WorkerProcess
from ..remote import cancel
from ..remote.host import Host
from . import policy

Say = Callable[[str], None]
POLL = 0.1  # each poll is one ~10 ms round trip; waits end sooner
MAX_POLL = 1.0
LATE_SHARE = 0.1


def poll_delay(waited: float) -> float:
    """Seconds to sleep before the next look, `waited` seconds into a wait.

    POLL for the first second (restarts and pauses end there, and are seen at once), then a
    tenth of the time waited, up to MAX_POLL: a wait is seen to end at most ~10% later than it
    did, while a long one (a job draining for minutes, a host with many workers) costs every
    host a look a second instead of ten, and the client hundreds of commands a second less."""
    return min(MAX_POLL, max(POLL, waited * LATE_SHARE))


def _quiet(_: str) -> None:
    pass


def wait_until(
    check: Callable[[], bool], timeout: float, *, tick: Callable[[float], None] | None = None, every: float = 5.0
) -> bool:
    """Poll `check` until it is true (True) or `timeout` seconds pass (False).

    `tick(elapsed)` is called about every `every` seconds, for progress lines.
    """
    start = time.monotonic()
    last_tick = start
    while True:
        cancel.check()
        if check():
            return True
        now = time.monotonic()
        if now - start >= timeout:
            return False
        if tick and now - last_tick >= every:
            tick(now - start)
            last_tick = now
        time.sleep(poll_delay(time.monotonic() - start))


def group_facts(host: Host) -> tuple[dict[str, ServiceStatus], list[WorkerProcess]]:
    """monit's view of the app's group and the app's workers (with those the group runs whose
    working directory could not be read), read together: over SSH one round trip, the one
    `resque.status` makes. The waits below poll this; two commands per poll on every host
    of a fleet cost as much CPU as the restarts they wait for."""
    group = host.settings.resque.monit_group
    if not host.remote:
        services = host.monit.status(group)
        managed = {s.pid for s in services.values() if s.pid}
        return services, [w for w in host.workers(unplaced=True) if w.cwd is not None or w.pid in managed]
    facts = status.parse_status_output(
        host.run(status.status_command(host.settings), warn=True).stdout, host.settings, host.name
    )
    if facts.monit_error:
        raise CommandFailed(facts.monit_error)
    if not facts.services:
        raise CommandFailed(f"{host.name}: monit group '{group}' has no services")
    return facts.services, facts.workers


def _services_line(services) -> str:
    return ", ".join(f"{s.name}: {s.status}" + (f" (pid {s.pid})" if s.pid else "") for s in services.values())


def stop_group(host: Host, say: Say = _quiet) -> None:
    """`monit stop` the app's group and wait until every one of its workers has exited."""
    r = host.settings.resque
    group = r.monit_group
    before = host.monit.status(group)
    pids = {s.pid for s in before.values() if s.pid}
    say(f"{host.name}: monit stop all -g {group} ({len(before)} services, stop policy {r.stop})")
    host.monit.action("stop", group)
    if host.dry:
        host.would(
            f"wait until monit and the process table agree pid(s) "
            f"{', '.join(map(str, sorted(pids))) or 'none'} have exited"
        )
        return
    state: dict[str, Any] = {}

    def settled() -> bool:
        state["services"], seen = group_facts(host)
        state["alive"] = sorted(pids & {w.pid for w in seen})
        return policy.stop_settled(state["services"], state["alive"])

    tick = lambda t: say(
        f"{host.name}: waiting for group {group} to stop ({int(t)}s): {_services_line(state.get('services', {}))}"
    )
    if not wait_until(settled, r.settle_timeout, tick=tick):
        alive = state.get("alive") or []
        raise CommandFailed(
            f"{host.name}: monit did not stop group {group} within {r.settle_timeout}s. "
            f"monit says: {_services_line(state.get('services', {}))}"
            + (f"; workers still running: {', '.join(map(str, alive))}" if alive else "")
        )
    say(f"{host.name}: group {group} stopped")


def start_group(
    host: Host,
    *,
    restart: bool = False,
    release: str | None = None,
    say: Say = _quiet,
    refuse_busy: bool = False,
) -> float:
    """`monit start` (or `restart`) the group and wait until every service runs a worker;
    returns when that was seen (epoch): from then on the host serves its queues.

    With `release`, wait until every worker runs from that release; with `restart`, until no
    service still shows a pid from before the restart. With `refuse_busy` (workers a guard
    left paused for this restart), a worker found busy raises instead: it took its job after
    the guard's look, and a restart must not end it.
    """
    r = host.settings.resque
    group = r.monit_group
    before, seen = group_facts(host)  # one round trip: this wait is inside the queues' downtime
    busy = [w for w in seen if w.busy]
    if refuse_busy and busy and not host.dry:
        raise CommandFailed(
            f"{host.name}: not restarting the workers: a job started after the guard's look "
            f"({'; '.join(w.describe(time.time()) for w in busy)}); once it is done: fab resque.restart"
        )
    old = {s.pid for s in before.values() if s.pid} if restart else set()
    verb = "restart" if restart else "start"
    say(f"{host.name}: monit {verb} all -g {group}")
    host.monit.action(verb, group)
    if host.dry:
        host.would(
            f"wait until every service of {group} runs a new worker" + (f" on release {release}" if release else "")
        )
        return time.time()
    state: dict[str, Any] = {}

    def settled() -> bool:
        state["services"], seen = group_facts(host)
        state["workers"] = [w for w in seen if w.cwd is not None]
        return policy.start_settled(state["services"], state["workers"], release, old)

    timeout = r.settle_timeout if restart else r.start_timeout * max(1, len(before))
    tick = lambda t: say(
        f"{host.name}: waiting for group {group} to {verb} ({int(t)}s): {_services_line(state.get('services', {}))}"
    )
    if not wait_until(settled, timeout, tick=tick):
        detail = _services_line(state.get("services", {}))
        running = {s.pid for s in state.get("services", {}).values() if s.pid}
        blind = sorted(w.pid for w in host.workers(unplaced=True) if w.cwd is None and w.pid in running)
        if blind:
            detail += (
                f"; cannot tell which release pid(s) {', '.join(map(str, blind))} run "
                f"from: their working directory could not be read (run as the workers' "
                f"user or root; the host's find needs GNU -printf)"
            )
        if release is not None:
            stale = policy.stale_workers(state.get("workers", []), release)
            if stale:
                detail += (
                    "; workers not on release "
                    + release
                    + ": "
                    + ", ".join(
                        f"pid {w.pid} on {w.release or 'an unknown directory'}"
                        + (" (deleted)" if w.release_deleted else "")
                        for w in stale
                    )
                )
        raise CommandFailed(f"{host.name}: monit did not {verb} group {group} within {timeout}s: {detail}")
    up = time.time()
    say(f"{host.name}: group {group} running" + (f" on release {release}" if release else ""))
    return up


def pause(host: Host, say: Say = _quiet) -> list[int]:
    """USR2 every worker of this app on the host not paused yet, and wait until each shows
    it took the pause (a busy one finishes its job first); returns the pids paused.

    `resque.pause` pauses every worker of the app, as asked; the guard pauses only those
    monit will stop (see `onehost.pause`), since it must stop what it paused."""
    pids = [w.pid for w in host.workers() if w.state != "paused"]
    host.signal("USR2", pids)
    if host.dry:
        return pids
    timeout = host.settings.resque.pause_timeout
    if not wait_until(lambda: not policy.pause_acknowledged(host.workers(), pids), timeout):
        late = policy.pause_acknowledged(host.workers(), pids)
        raise CommandFailed(
            f"{host.name}: worker(s) {', '.join(map(str, late))} did not take the pause within {timeout}s"
        )
    say(f"{host.name}: paused {len(pids)} worker(s): they finish their job and take no new one")
    return pids


def resume_paused(host: Host, say: Say = _quiet) -> list[int]:
    """CONT every paused worker of this app on the host; returns the pids resumed."""
    pids = resume(host, [w.pid for w in host.workers() if w.state == "paused"], say)
    if not pids:
        say(f"{host.name}: no paused worker")
    return pids


def resume(host: Host, pids: Iterable[int], say: Say = _quiet) -> list[int]:
    """CONT the given pids that are still this app's workers; returns the pids resumed.

    Checking the process table first means a pid reused by another process is left alone.
    """
    ours = {w.pid for w in host.workers(unplaced=True)}
    live = sorted(set(pids) & ours)
    if live:
        host.signal("CONT", live)
        say(f"{host.name}: resumed workers {', '.join(map(str, live))}")
    return live
