"""Pure decisions of the guard and of the waits: facts and settings in, a verdict out.

No I/O here, so every branch is a plain unit test.

The guard pauses the app's workers (USR2) before it looks for jobs, under both stop policies.
A paused worker finishes its job and takes no new one, so the look cannot race a worker that
picks up a job a moment later (the seed's Case 2 could TERM such a job), and a refusal needs
no stop at all (the seed's Case 1 stopped the workers and left them stopped when it refused).
`stop: quit|term` still decides how monit's stop program ends a worker; after the pause and an
idle verdict, both stop only idle workers.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from ..facts.monit import ServiceStatus
from ..facts.processes import WorkerProcess
from ..facts.proclines import STARTING

PROCEED, REFUSE, WAIT = "proceed", "refuse", "wait"


def pids_to_pause(workers: Iterable[WorkerProcess], managed: Iterable[int]) -> list[int]:
    """The monit-managed workers the guard pauses: those not already paused by someone else.

    Only workers that monit runs are paused, because only they are stopped and started again
    afterwards; a worker someone paused by hand stays paused and is not resumed by us.
    """
    managed = set(managed)
    return sorted(w.pid for w in workers if w.pid in managed and w.state != "paused")


def pause_acknowledged(workers: Iterable[WorkerProcess], paused: Iterable[int]) -> list[int]:
    """Pids among `paused` that have not yet shown they took the pause.

    A worker acknowledges by showing `Paused` (on its next poll) or by being busy: a busy
    worker checks the pause flag only between jobs, and the job it holds is what we look for.
    A pid that is gone needs no acknowledgement.
    """
    by_pid = {w.pid: w for w in workers}
    return sorted(p for p in paused if p in by_pid and by_pid[p].state in ("idle", "starting"))


def guard_verdict(busy: Sequence[WorkerProcess], on_busy: str, waited: float, wait_timeout: float) -> str:
    """proceed when no job runs; otherwise refuse (abort, or the wait ran out) or wait."""
    if not busy:
        return PROCEED
    if on_busy == "wait" and waited < wait_timeout:
        return WAIT
    return REFUSE


def stop_settled(services: Mapping[str, ServiceStatus], alive: Iterable[int]) -> bool:
    """The group is stopped: monit has nothing pending, and none of its workers still runs.

    Both are needed: monit reports `Not monitored` after a stop timeout while the worker is
    still alive (docs/monit.md, "Stop and start timeouts").
    """
    return all(s.stopped and not s.pending for s in services.values()) and not list(alive)


def start_settled(
    services: Mapping[str, ServiceStatus],
    workers: Iterable[WorkerProcess],
    release: str | None = None,
    old_pids: Iterable[int] = (),
) -> bool:
    """Every service runs a worker (not one of `old_pids`) seen in the process table, past
    its start-up (resque's "Starting" title: it takes no job yet), from `release` when given.

    Until then the queue has no worker on this host: a restart reported done earlier would
    understate the queue's downtime, and a job enqueued then would wait."""
    by_pid = {w.pid: w for w in workers}
    old = set(old_pids)
    for s in services.values():
        if not s.running or s.pending or s.pid in old or s.pid not in by_pid:
            return False
        if by_pid[s.pid].state == STARTING:
            return False
        if release is not None and by_pid[s.pid].release != release:
            return False
    return True


def stale_workers(workers: Iterable[WorkerProcess], release: str) -> list[WorkerProcess]:
    """Workers not running from `release` (an old release, a deleted one, or unknown)."""
    return [w for w in workers if w.release != release or w.release_deleted]
