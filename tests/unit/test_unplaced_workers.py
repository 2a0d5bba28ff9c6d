"""Workers whose working directory cannot be read: the guard counts a busy one as this app's
(refusing rather than stopping a group under a job it cannot place); the rest of the toolkit
still tells apps apart. Wiring only: the rows are given, not read from a host."""

from invoke import Context

from deployhooks import settings
from deployhooks.facts.processes import RawProcess
from deployhooks.guard import onehost as guard
from deployhooks.remote.host import Host

CFG = settings.parse("app: shop\n")
ROWS = [
    RawProcess(10, 1, 100, "/data/shop/releases/1", "resque-3.0.0: Waiting for a"),
    RawProcess(20, 1, 100, "/data/blog/releases/1", "resque-3.0.0: Forked 21 at 1700000000"),
    RawProcess(21, 20, 100, "/data/blog/releases/1", "resque-3.0.0: Processing a since 1700000000 [Post]"),
    RawProcess(30, 1, 100, None, "resque-3.0.0: Forked 31 at 1700000000"),
    RawProcess(31, 30, 100, None, "resque-3.0.0: Processing a since 1700000000 [Mail]"),
]


def _host(monkeypatch) -> Host:
    host = Host(Context(), CFG, "web1")
    monkeypatch.setattr(host, "processes", lambda: list(ROWS))
    return host


def test_only_the_guard_asks_for_workers_it_cannot_place(monkeypatch):
    host = _host(monkeypatch)
    assert [w.pid for w in host.workers()] == [10]
    assert [w.pid for w in host.workers(unplaced=True)] == [10, 30]
    assert [w.pid for w in host.all_workers()] == [10, 20, 30]


def test_a_busy_unplaced_worker_is_named_with_the_reason(monkeypatch):
    host = _host(monkeypatch)
    busy = [w for w in host.workers(unplaced=True) if w.busy]
    text = guard.busy_lines(host.name, busy, 1700000010)
    assert [w.pid for w in busy] == [30]
    assert "pid 30 busy on a [Mail]" in text and "working directory could not be read" in text
