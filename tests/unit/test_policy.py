"""The guard's decisions, one test per branch."""

import pytest

from deployhooks.facts.monit import ServiceStatus
from deployhooks.facts.processes import WorkerProcess
from deployhooks.guard.onehost import policy


def w(pid, state, release="r2", deleted=False):
    return WorkerProcess(pid=pid, ppid=1, state=state, title="", release=release, release_deleted=deleted)


def test_pause_only_managed_workers_not_already_paused():
    workers = [w(1, "idle"), w(2, "busy"), w(3, "paused"), w(4, "idle")]
    assert policy.pids_to_pause(workers, managed=[1, 2, 3]) == [1, 2]


def test_pause_is_acknowledged_by_paused_busy_or_gone():
    workers = [w(1, "paused"), w(2, "busy"), w(3, "idle"), w(5, "starting")]
    assert policy.pause_acknowledged(workers, [1, 2, 3, 4, 5]) == [3, 5]


def test_verdicts():
    busy = [w(2, "busy")]
    assert policy.guard_verdict([], "abort", 0, 10) == policy.PROCEED
    assert policy.guard_verdict(busy, "abort", 0, 10) == policy.REFUSE
    assert policy.guard_verdict(busy, "wait", 3, 10) == policy.WAIT
    assert policy.guard_verdict(busy, "wait", 10, 10) == policy.REFUSE


def test_stop_is_settled_only_when_monit_and_processes_agree():
    stopped = {"a": ServiceStatus("a", "Not monitored")}
    pending = {"a": ServiceStatus("a", "OK - stop pending", pid=7)}
    assert policy.stop_settled(stopped, alive=[])
    assert not policy.stop_settled(stopped, alive=[7])  # monit gave up; the worker lives on
    assert not policy.stop_settled(pending, alive=[])


def test_start_settled_wants_new_pids_on_the_release():
    services = {"a": ServiceStatus("a", "OK", pid=8)}
    assert policy.start_settled(services, [w(8, "idle")], "r2")
    assert not policy.start_settled(services, [w(8, "idle", release="r1")], "r2")
    assert not policy.start_settled(services, [w(8, "idle")], "r2", old_pids=[8])
    assert not policy.start_settled(services, [], "r2")
    assert not policy.start_settled({"a": ServiceStatus("a", "Initializing")}, [w(8, "idle")])
    # still loading (resque: Starting): it takes no job yet, so the queue has no worker here
    assert not policy.start_settled(services, [w(8, "starting")], "r2")
    assert policy.start_settled(services, [w(8, "busy")], "r2")


def test_stale_workers():
    assert [
        x.pid for x in policy.stale_workers([w(1, "idle"), w(2, "idle", "r1"), w(3, "idle", "r2", deleted=True)], "r2")
    ] == [2, 3]


def test_waits_look_often_at_first_then_at_a_tenth_of_the_time_waited():
    from deployhooks.guard.workers import MAX_POLL, POLL, poll_delay

    assert [poll_delay(t) for t in (0, 0.5, 1.0)] == [POLL, POLL, POLL]
    assert poll_delay(3.0) == pytest.approx(0.3)
    assert poll_delay(10.0) == MAX_POLL and poll_delay(600.0) == MAX_POLL
    # Never later than ~10% of the wait (plus one poll), and monotonic: a long wait only slows down.
    delays = [poll_delay(t / 10) for t in range(0, 6000)]
    assert delays == sorted(delays)
    assert all(d <= max(POLL, t / 100) + 1e-9 for t, d in enumerate(delays))
