"""The fleet guard's first look is the listing in which every worker showed it took the pause:
no second round trip to every host inside the queues' downtime. Wiring only: the looks are
given, not read from hosts."""

import pytest

from deployhooks.errors import Refused
from deployhooks.facts.processes import RawProcess, workers_from
from deployhooks.guard import fleet
from deployhooks.remote.fleet import HostResult

BUSY = RawProcess(30, 1, 100, "/data/shop/releases/1", "resque-3.0.0: Forked 31 at 1700000000")
CHILD = RawProcess(31, 30, 100, "/data/shop/releases/1", "resque-3.0.0: Processing a since 1700000000 [Mail]")


def busy_worker():
    (worker,) = [w for w in workers_from([BUSY, CHILD], {"shop": "/data/shop"}) if w.busy]
    return worker


class CountingRun:
    """A fleet runner that answers every look with `answers`, counting the looks."""

    def __init__(self, answers):
        self.answers = answers
        self.calls = 0

    def __call__(self, fn, names):
        self.calls += 1
        return [HostResult(name, value=self.answers.get(name, [])) for name in names]


def test_an_idle_first_look_proceeds_without_looking_again():
    run = CountingRun({})
    fleet.wait_until_idle(run, ["h1", "h2"], print, on_busy="abort", wait_timeout=0, first_look={"h1": [], "h2": []})
    assert run.calls == 0


def test_a_job_in_the_first_look_is_refused_by_name_without_looking_again():
    run = CountingRun({})
    with pytest.raises(Refused) as refused:
        fleet.wait_until_idle(
            run, ["h1", "h2"], print, on_busy="abort", wait_timeout=0, first_look={"h1": [], "h2": [busy_worker()]}
        )
    assert run.calls == 0
    assert "h2" in str(refused.value) and "[Mail]" in str(refused.value)


def test_waiting_looks_again_after_the_first_look():
    run = CountingRun({})  # the job has finished by the second look
    fleet.wait_until_idle(run, ["h1"], print, on_busy="wait", wait_timeout=60, first_look={"h1": [busy_worker()]})
    assert run.calls == 1


def test_without_a_first_look_it_looks():
    run = CountingRun({"h1": [busy_worker()]})
    with pytest.raises(Refused):
        fleet.wait_until_idle(run, ["h1"], print, on_busy="abort", wait_timeout=0)
    assert run.calls == 1
