"""Session.each under Ctrl-C: no host's work may still be running when the interrupt reaches the
caller, wherever in `each` it lands, or the caller's cleanup (undo the guard, remove locks) races
it. A CI run once caught exactly that: the undo found no record while the guard went on stopping
the workers."""

import _thread
import threading
import time

import pytest

from deployhooks import settings
from deployhooks.remote import cancel
from deployhooks.remote.fleet import Session


@pytest.fixture(autouse=True)
def _clear_cancel():
    cancel.CANCELLED.clear()
    yield
    cancel.CANCELLED.clear()


def _session(n: int, max_workers: int = 32) -> Session:
    return Session([f"h{i}.invalid" for i in range(n)], settings.parse("app: shop\n"), max_workers=max_workers)


@pytest.mark.parametrize("n, max_workers", [(3, 32), (200, 32), (200, 4)])
def test_interrupt_returns_only_after_every_started_host_finished(n, max_workers):
    running, started, lock = set(), [], threading.Lock()

    def work(host, conn):
        with lock:
            started.append(host)
            running.add(host)
        try:
            if len(started) == 1:
                _thread.interrupt_main()  # Ctrl-C while the main thread may still be submitting
            deadline = time.monotonic() + 0.3
            while time.monotonic() < deadline:  # like a guard's wait loop: it polls the flag
                cancel.check(host)
                time.sleep(0.01)
        finally:
            time.sleep(0.05)  # its cleanup (resume what it paused) takes a moment too
            with lock:
                running.discard(host)

    with pytest.raises(KeyboardInterrupt):
        _session(n, max_workers).each(work)
    with lock:
        assert started, "no host started"
        assert not running, f"host work still running after the interrupt: {sorted(running)}"
    assert cancel.CANCELLED.is_set()


def test_without_interrupt_every_host_gives_a_result():
    results = _session(5).each(lambda host, conn: host.upper())
    assert [r.value for r in results] == [f"H{i}.INVALID" for i in range(5)]


def test_shielded_answers_a_second_ctrl_c_and_restores_the_handler(capfd):
    import signal as _signal

    before = _signal.getsignal(_signal.SIGINT)
    with cancel.shielded():
        _signal.raise_signal(_signal.SIGINT)  # would be KeyboardInterrupt without the shield
        time.sleep(0.01)
    assert _signal.getsignal(_signal.SIGINT) is before
    assert "Ctrl-C is ignored until that is done" in capfd.readouterr().err
