"""The fake resque worker, run as a real process against a real redis, seen as ps and redis see it.

Each expectation comes from docs/resque.md (resque 3.0.0).
Every wait is a bounded poll; every worker is killed (with its job children) at teardown.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from deployhooks.testing import fakeresque
from deployhooks.testing.fakeresque import FAILED_KEY, FINISHED_KEY, STARTED_KEY, enqueue
from tests.helpers import wait_for as _wait_for

REPO = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()
QUEUE = "deploytest"


# ---------------------------------------------------------------------------
# helpers


def wait_for(predicate, timeout=5.0, what="condition"):
    return _wait_for(predicate, timeout, what, interval=0.02)


def holds_for(predicate: Callable[[], Any], seconds: float, what: str) -> None:
    """Assert ``predicate`` stays truthy for ``seconds`` (for "nothing happens" checks)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(0.02)


def ps_args(pid: int) -> str | None:
    """What ``ps -o args= -p PID`` prints for the process (None if it is gone)."""
    result = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True)
    return result.stdout.rstrip("\n") if result.returncode == 0 else None


def is_gone(pid: int) -> bool:
    """True if ``pid`` no longer runs (a zombie counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session ``sid`` other than its leader."""
    members = []
    for pid in psutil.pids():
        if pid == sid:
            continue
        try:
            if os.getsid(pid) == sid and not is_gone(pid):
                members.append(pid)
        except OSError:
            continue
    return members


class WorkerProcess:
    """A fake worker started with ``python -m deployhooks.testing.fakeresque resque:work``."""

    def __init__(self, proc: subprocess.Popen, queues: str | None, out: Path, err: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.id = f"{HOST}:{proc.pid}:{queues}"
        self.out = out
        self.err = err

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def procline(self) -> str | None:
        return ps_args(self.pid)

    def wait_procline(self, expected: str, timeout: float = 5.0) -> str:
        return wait_for(lambda: self.procline() == expected, timeout, f"procline {expected!r}") and expected

    def wait_exit(self, timeout: float = 5.0) -> int:
        """The worker's exit status; on a timeout, fail with what the worker logged."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {self.pid} still running after {timeout}s; its log:\n{self.stdout()}\n{self.stderr()}")

    def child(self, timeout: float = 5.0) -> int:
        """The pid of the (single) forked job child."""
        children = wait_for(lambda: psutil.Process(self.pid).children(), timeout, "a job child")
        assert len(children) == 1, children
        return children[0].pid

    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8")

    def kill_all(self) -> None:
        """Kill the worker and everything in its session, job children first.

        Children go first so a live worker reaps them: orphans would be re-parented to
        a PID 1 that, in some sandboxes, never reaps them.
        """
        for _ in range(50):
            members = session_members(self.pid)
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.02)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)


@pytest.fixture
def spawn_worker(redis_server, redis_client, tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start fake workers on the test redis; ``spawn_worker(queue, ignore=(...), **env)``.

    INTERVAL defaults to 0.1 s; an env value of None unsets the variable; ``ignore``
    lists signals the worker inherits as SIG_IGN, as from a backgrounding shell.
    """
    workers: list[WorkerProcess] = []

    def spawn(queue: str | None = QUEUE, *, ignore: tuple[int, ...] = (), **env: str | None) -> WorkerProcess:
        environ = {k: v for k, v in os.environ.items() if k not in fakeresque.ENV_VARS}
        environ.update(REDIS_URL=redis_server.url, INTERVAL="0.1")
        if queue is not None:
            environ["QUEUE"] = queue
        for key, value in env.items():
            if value is None:
                environ.pop(key, None)
            else:
                environ[key] = value

        def inherit_ignored() -> None:
            for signum in ignore:
                signal.signal(signum, signal.SIG_IGN)

        n = len(workers)
        out, err = tmp_path / f"worker{n}.out", tmp_path / f"worker{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(
                [sys.executable, "-m", "deployhooks.testing.fakeresque", "resque:work"],
                env=environ,
                cwd=REPO,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=inherit_ignored if ignore else None,
            )
        worker = WorkerProcess(proc, environ.get("QUEUES", environ.get("QUEUE")), out, err)
        workers.append(worker)
        return worker

    yield spawn
    for worker in workers:
        worker.kill_all()


def failures(client) -> list[dict]:
    return [json.loads(item) for item in client.lrange(FAILED_KEY, 0, -1)]


def started(client) -> list[str]:
    return client.lrange(STARTED_KEY, 0, -1)


def finished(client) -> list[str]:
    return client.lrange(FINISHED_KEY, 0, -1)


def assert_dirty_exit(entry: dict, worker: WorkerProcess, child: int, payload: dict) -> None:
    assert entry == {
        "failed_at": entry["failed_at"],
        "payload": payload,
        "exception": "Resque::DirtyExit",
        "error": f"Child process received unhandled signal pid {child} SIGKILL (signal 9)",
        "backtrace": [],
        "worker": worker.id,
        "queue": QUEUE,
    }
    assert re.fullmatch(r"\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \S+", entry["failed_at"])


# ---------------------------------------------------------------------------
# configuration and proclines


def test_without_a_queue_it_aborts_with_resque_message(spawn_worker):
    worker = spawn_worker(None)
    assert worker.wait_exit() == 1
    assert worker.stderr().startswith("set QUEUE env var")


def test_starting_then_waiting_with_prefix_registration_and_clean_exit(spawn_worker, redis_client, tmp_path):
    # Hold every redis command for a moment so the startup procline stays up long enough to see.
    redis_client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
    pidfile = tmp_path / "worker.pid"
    worker = spawn_worker(
        None,
        QUEUES="deploytest, alpha",
        QUEUE="ignored",
        RESQUE_PROCLINE_PREFIX="myapp-",
        PIDFILE=str(pidfile),
    )
    worker.id = f"{HOST}:{worker.pid}:deploytest,alpha"
    worker.wait_procline("resque: Starting", timeout=3)  # never prefixed
    worker.wait_procline("myapp-resque-3.0.0: Waiting for deploytest,alpha")

    assert pidfile.read_text() == str(worker.pid)
    assert redis_client.smembers("resque:workers") == {worker.id}
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", redis_client.get(f"resque:worker:{worker.id}:started")
    )
    beat = redis_client.hget("resque:workers:heartbeat", worker.id)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d([+-]\d\d:\d\d|Z)", beat)
    # As with ruby, comm keeps the interpreter's name: `pgrep resque` finds no worker.
    assert "resque" not in Path(f"/proc/{worker.pid}/comm").read_text()

    worker.send(signal.SIGQUIT)
    assert worker.wait_exit() == 0
    assert redis_client.smembers("resque:workers") == set()
    assert redis_client.keys("resque:worker:*") == []
    assert redis_client.hgetall("resque:workers:heartbeat") == {}


def test_busy_parent_shows_forked_child_shows_processing(spawn_worker, redis_client):
    payload = {"class": "SleepJob", "args": [2.0, "busy"]}
    enqueue(redis_client, QUEUE, "SleepJob", 2.0, "busy")
    worker = spawn_worker()
    wait_for(lambda: started(redis_client) == ["busy"], what="job start")
    child = worker.child()
    now = time.time()

    parent_line = wait_for(
        lambda: re.fullmatch(rf"resque-3\.0\.0: Forked {child} at (\d+)", worker.procline() or ""),
        what="Forked procline",
    )
    child_line = re.fullmatch(r"resque-3\.0\.0: Processing deploytest since (\d+) \[SleepJob\]", ps_args(child))
    assert child_line, ps_args(child)
    assert abs(int(parent_line.group(1)) - now) < 5
    assert abs(int(child_line.group(1)) - now) < 5
    assert psutil.Process(child).ppid() == worker.pid

    working = json.loads(redis_client.get(f"resque:worker:{worker.id}"))
    assert list(working) == ["queue", "run_at", "payload"]
    assert working["queue"] == QUEUE and working["payload"] == payload
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", working["run_at"])

    wait_for(lambda: finished(redis_client) == ["busy"], what="job end")
    worker.wait_procline("resque-3.0.0: Waiting for deploytest")
    assert is_gone(child)
    assert redis_client.get(f"resque:worker:{worker.id}") is None
    assert redis_client.get("resque:stat:processed") == "1"
    assert failures(redis_client) == []


def test_star_expands_to_sorted_current_queues_and_keeps_star_in_id(spawn_worker, redis_client):
    worker = spawn_worker("*")
    worker.wait_procline("resque-3.0.0: Waiting for ")  # no queues yet: note the trailing space
    assert redis_client.smembers("resque:workers") == {f"{HOST}:{worker.pid}:*"}

    redis_client.sadd("resque:queues", "zeta", "deploytest", "alpha")
    worker.wait_procline("resque-3.0.0: Waiting for alpha,deploytest,zeta")


def test_fork_per_job_false_is_one_process_and_term_lets_the_job_finish(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 1.0, "solo")
    worker = spawn_worker(FORK_PER_JOB="false")
    wait_for(lambda: started(redis_client) == ["solo"], what="job start")
    assert re.fullmatch(r"resque-3\.0\.0: Processing deploytest since \d+ \[SleepJob\]", worker.procline())
    assert psutil.Process(worker.pid).children() == []

    worker.send(signal.SIGTERM)  # no child to kill, no TERM_CHILD: the job runs to its end
    assert worker.wait_exit() == 0
    assert finished(redis_client) == ["solo"]
    assert failures(redis_client) == []


# ---------------------------------------------------------------------------
# signals


def test_quit_while_busy_finishes_the_job_then_exits_0(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 1.0, "q")
    worker = spawn_worker(VERBOSE="")  # set at all = on
    wait_for(lambda: started(redis_client) == ["q"], what="job start")

    worker.send(signal.SIGQUIT)
    time.sleep(0.2)
    assert worker.proc.poll() is None and finished(redis_client) == []
    assert worker.wait_exit() == 0
    assert finished(redis_client) == ["q"]
    assert failures(redis_client) == []
    assert redis_client.get("resque:stat:processed") == "1"
    assert redis_client.smembers("resque:workers") == set()
    log = worker.stdout().splitlines()
    assert log[0] == f"*** Starting worker {worker.id}"
    assert '*** got: (Job{deploytest} | SleepJob | [1.0, "q"])' in log
    assert "*** Exiting..." in log
    assert log[-1] == '*** done: (Job{deploytest} | SleepJob | [1.0, "q"])'


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_term_or_int_while_busy_kills_the_child_and_records_dirty_exit(spawn_worker, redis_client, signum):
    enqueue(redis_client, QUEUE, "SleepJob", 10, "t")
    worker = spawn_worker()
    wait_for(lambda: started(redis_client) == ["t"], what="job start")
    child = worker.child()

    worker.send(signum)
    assert worker.wait_exit(timeout=3) == 0
    wait_for(lambda: is_gone(child), 2, "child gone")
    [entry] = failures(redis_client)
    assert_dirty_exit(entry, worker, child, {"class": "SleepJob", "args": [10, "t"]})
    assert finished(redis_client) == []
    assert redis_client.get("resque:stat:failed") is None  # DirtyExit does not count as failed
    assert redis_client.get("resque:stat:processed") == "1"


def test_term_child_turns_term_into_term_exception(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 10, "tc")
    worker = spawn_worker(TERM_CHILD="", VVERBOSE="1")  # Ruby truthiness: set, even empty, means on
    wait_for(lambda: started(redis_client) == ["tc"], what="job start")

    worker.send(signal.SIGTERM)
    # Well under the 10 s job; the failure entry below tells TermException from the KILL that
    # would follow RESQUE_TERM_TIMEOUT (4 s), so a slow machine gets room without hiding that.
    assert worker.wait_exit(timeout=8) == 0
    [entry] = failures(redis_client)
    assert (entry["exception"], entry["error"]) == ("Resque::TermException", "SIGTERM")
    # The job's own frames only, innermost first, Ruby style; no worker or signal-handler frames.
    assert entry["backtrace"] and entry["backtrace"][0].endswith(":in `perform'"), entry["backtrace"]
    assert redis_client.get("resque:stat:failed") == "1"
    assert finished(redis_client) == []


def test_term_child_kills_a_child_that_ignores_term_after_the_timeout(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "StubbornJob", 10, "st")
    worker = spawn_worker(TERM_CHILD="1", RESQUE_TERM_TIMEOUT="0.5")
    wait_for(lambda: started(redis_client) == ["st"], what="job start")
    child = worker.child()

    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    assert worker.wait_exit(timeout=3) == 0
    assert time.monotonic() - sent >= 0.45
    [entry] = failures(redis_client)
    assert_dirty_exit(entry, worker, child, {"class": "StubbornJob", "args": [10, "st"]})


def test_usr1_kills_the_child_and_keeps_working(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 10, "doomed")
    enqueue(redis_client, QUEUE, "SleepJob", 0.1, "next")
    worker = spawn_worker()
    wait_for(lambda: started(redis_client) == ["doomed"], what="job start")
    child = worker.child()

    worker.send(signal.SIGUSR1)
    wait_for(lambda: finished(redis_client) == ["next"], what="the next job")
    worker.wait_procline("resque-3.0.0: Waiting for deploytest")
    [entry] = failures(redis_client)
    assert_dirty_exit(entry, worker, child, {"class": "SleepJob", "args": [10, "doomed"]})


def test_usr2_pauses_after_the_current_job_and_cont_resumes(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 0.8, "before")
    worker = spawn_worker()
    wait_for(lambda: started(redis_client) == ["before"], what="job start")

    worker.send(signal.SIGUSR2)
    enqueue(redis_client, QUEUE, "SleepJob", 0.1, "after")
    wait_for(lambda: finished(redis_client) == ["before"], what="the current job to finish")
    worker.wait_procline("resque-3.0.0: Paused")
    holds_for(lambda: started(redis_client) == ["before"], 0.5, "a paused worker took a job")
    assert redis_client.llen(f"resque:queue:{QUEUE}") == 1

    worker.send(signal.SIGCONT)
    wait_for(lambda: finished(redis_client) == ["before", "after"], what="the queued job after CONT")
    worker.wait_procline("resque-3.0.0: Waiting for deploytest")


def test_term_sent_to_the_child_alone_does_not_stop_the_job(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 1.0, "c")
    worker = spawn_worker()
    wait_for(lambda: started(redis_client) == ["c"], what="job start")
    child = worker.child()

    os.kill(child, signal.SIGTERM)
    wait_for(lambda: finished(redis_client) == ["c"], what="job end")
    worker.wait_procline("resque-3.0.0: Waiting for deploytest")
    assert failures(redis_client) == []
    assert worker.proc.poll() is None


def test_quit_works_even_when_inherited_ignored(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 0.8, "ign")
    worker = spawn_worker(ignore=(signal.SIGQUIT, signal.SIGINT))
    wait_for(lambda: started(redis_client) == ["ign"], what="job start")

    worker.send(signal.SIGQUIT)
    assert worker.wait_exit() == 0
    assert finished(redis_client) == ["ign"]


def test_term_child_child_raises_on_quit_even_when_inherited_ignored(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "SleepJob", 10, "cq")
    worker = spawn_worker(ignore=(signal.SIGQUIT, signal.SIGINT), TERM_CHILD="1")
    wait_for(lambda: started(redis_client) == ["cq"], what="job start")

    os.kill(worker.child(), signal.SIGQUIT)
    entry = wait_for(lambda: failures(redis_client), what="a failure")[0]
    assert (entry["exception"], entry["error"]) == ("SignalException", "SIGQUIT")
    worker.wait_procline("resque-3.0.0: Waiting for deploytest")


# ---------------------------------------------------------------------------
# jobs and redis bookkeeping


def test_failing_and_unknown_jobs_are_recorded_as_resque_does(spawn_worker, redis_client):
    enqueue(redis_client, QUEUE, "FailJob", "f")
    enqueue(redis_client, QUEUE, "NoSuchJob", 1)
    worker = spawn_worker()
    wait_for(lambda: len(failures(redis_client)) == 2, what="two failures")

    failed, unknown = failures(redis_client)
    assert list(failed) == ["failed_at", "payload", "exception", "error", "backtrace", "worker", "queue"]
    assert (failed["exception"], failed["error"]) == ("RuntimeError", "FailJob failed: f")
    assert failed["payload"] == {"class": "FailJob", "args": ["f"]}
    assert failed["worker"] == worker.id and failed["queue"] == QUEUE
    assert (unknown["exception"], unknown["error"]) == ("NameError", "uninitialized constant NoSuchJob")
    wait_for(lambda: redis_client.get("resque:stat:processed") == "2", what="processed stat")
    assert redis_client.get("resque:stat:failed") == "2"


def test_start_prunes_dead_workers_of_this_host_and_queues(spawn_worker, redis_client):
    dead = f"{HOST}:99999999:{QUEUE}"  # no such pid, so no such worker
    foreign = f"{HOST}:99999998:other"  # other queues: not ours to judge
    redis_client.sadd("resque:workers", dead, foreign)
    stale_job = {"queue": QUEUE, "run_at": "2026-01-01T00:00:00Z", "payload": {"class": "SleepJob", "args": [1]}}
    redis_client.set(f"resque:worker:{dead}", json.dumps(stale_job))

    worker = spawn_worker()
    worker.wait_procline("resque-3.0.0: Waiting for deploytest")
    assert redis_client.smembers("resque:workers") == {foreign, worker.id}
    [entry] = failures(redis_client)
    assert (entry["exception"], entry["error"]) == ("Resque::DirtyExit", "Job still being processed")
    assert entry["worker"] == dead and entry["payload"] == stale_job["payload"]
