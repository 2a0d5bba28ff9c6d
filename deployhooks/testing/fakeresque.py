"""A Python stand-in for a resque 3.0.0 worker (``rake resque:work``).

Ruby gems cannot be installed where the tests and the demo sandbox run, so this
module plays the worker. Seen from outside -- ``ps``, signals, exit status and
the keys in redis -- it behaves like resque 3.0.0 as documented in
``docs/resque.md`` ("Process titles", "Signals", "Job fate", "The rake task and its environment", "Redis keys"):

* proclines ``resque: Starting``, ``<P>resque-3.0.0: Waiting for q1,q2``,
  ``... Paused``, ``... Processing <q> since <epoch> [<Class>]`` (set by the
  parent before fork, inherited by the child) and ``... Forked <pid> at <epoch>``;
* QUIT/TERM/INT/USR1/USR2/CONT in the parent, the child's own handlers (with and
  without TERM_CHILD), ``Resque::DirtyExit`` for a child killed by a signal;
* registration, heartbeat, per-job payload, stats, failures and dead-worker
  pruning in the ``resque:`` namespace.

Run it as ``python -m deployhooks.testing.fakeresque resque:work``; extra
arguments are ignored (they only make the initial command line look like
rake's). Configuration is by environment, as for resque: QUEUE/QUEUES, INTERVAL,
TERM_CHILD, RESQUE_TERM_TIMEOUT, RESQUE_PRE_SHUTDOWN_TIMEOUT, GRACEFUL_TERM,
FORK_PER_JOB, RESQUE_PROCLINE_PREFIX, VERBOSE/LOGGING/VVERBOSE, PIDFILE,
BACKGROUND, plus REDIS_URL (ours; resque itself has no such variable).

The job classes it knows are test doubles, see ``JOB_CLASSES``; ``enqueue``
pushes a job as ``Resque.enqueue`` does.

Known differences from a real worker: ``/proc/PID/comm`` (and so psutil's
``name()``) is the Python interpreter's name rather than ``rake``/``ruby``; no
hooks, plugins, RUN_AT_EXIT_HOOKS or MIN_INTERVAL/MAX_INTERVAL/BACKOFF_INTERVAL;
the heartbeat is refreshed from the main loop, so it is not refreshed during an
in-process (FORK_PER_JOB=false) job; a job's failure backtrace lists Python frames.
"""

from __future__ import annotations

import datetime
import fnmatch
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, Mapping, Sequence, cast

import redis
import setproctitle

VERSION = "3.0.0"
NAMESPACE = "resque:"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
NO_QUEUE_MESSAGE = "set QUEUE env var, e.g. $ QUEUE=critical,high rake resque:work"

# Resque.heartbeat_interval and Resque.prune_interval defaults (seconds).
HEARTBEAT_INTERVAL = 60.0
PRUNE_INTERVAL = 5 * HEARTBEAT_INTERVAL

# Keys (all under the resque: namespace, as redis-namespace writes them).
WORKERS_KEY = NAMESPACE + "workers"
HEARTBEAT_KEY = NAMESPACE + "workers:heartbeat"
QUEUES_KEY = NAMESPACE + "queues"
FAILED_KEY = NAMESPACE + "failed"
PROCESSED_STAT_KEY = NAMESPACE + "stat:processed"
FAILED_STAT_KEY = NAMESPACE + "stat:failed"
PAUSE_ALL_KEY = NAMESPACE + "pause-all-workers"
PRUNING_LOCK_KEY = NAMESPACE + "pruning_dead_workers_in_progress"
# Written by the SleepJob test double so tests can see a job start and finish.
STARTED_KEY = NAMESPACE + "test:started"
FINISHED_KEY = NAMESPACE + "test:finished"

# The environment variables this worker reads; handy for tests that need a clean slate.
ENV_VARS = (
    "QUEUE",
    "QUEUES",
    "INTERVAL",
    "REDIS_URL",
    "RESQUE_PROCLINE_PREFIX",
    "FORK_PER_JOB",
    "TERM_CHILD",
    "RESQUE_TERM_TIMEOUT",
    "RESQUE_PRE_SHUTDOWN_TIMEOUT",
    "GRACEFUL_TERM",
    "VERBOSE",
    "LOGGING",
    "VVERBOSE",
    "PIDFILE",
    "BACKGROUND",
)


def queue_key(queue: str) -> str:
    """Return the redis list that holds the jobs of ``queue``."""
    return f"{NAMESPACE}queue:{queue}"


def worker_key(worker_id: str) -> str:
    """Return the key that holds what ``worker_id`` is working on, if anything."""
    return f"{NAMESPACE}worker:{worker_id}"


def worker_started_key(worker_id: str) -> str:
    """Return the key that holds when ``worker_id`` started."""
    return f"{NAMESPACE}worker:{worker_id}:started"


def encode(obj: Any) -> str:
    """Encode like Ruby's JSON.generate: compact, non-ASCII left as is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def enqueue(client: redis.Redis, queue: str, job_class: str, *args: Any) -> None:
    """Push a job the way ``Resque.enqueue`` does.

    The queue is added to ``resque:queues`` and the payload
    ``{"class": job_class, "args": [...]}`` is RPUSHed to ``resque:queue:<queue>``.
    """
    pipe = client.pipeline(transaction=False)
    pipe.sadd(QUEUES_KEY, queue)
    pipe.rpush(queue_key(queue), encode({"class": job_class, "args": list(args)}))
    pipe.execute()


# --------------------------------------------------------------------------
# Exceptions, named as resque and Ruby name them in resque:failed.


class RubyNamed:
    """Mixin: ``ruby_name`` is the class name written to resque:failed."""

    ruby_name = "Exception"


class SignalException(RubyNamed, BaseException):
    """Ruby's SignalException.

    It derives from BaseException so that a job's ``except Exception`` cannot
    swallow it, just as Ruby's ``rescue => e`` does not catch SignalException.
    """

    ruby_name = "SignalException"


class Interrupt(SignalException):
    """Ruby's Interrupt, raised by its default SIGINT handler (empty message)."""

    ruby_name = "Interrupt"


class TermException(SignalException):
    """``Resque::TermException``: raised in a TERM_CHILD child on SIGTERM."""

    ruby_name = "Resque::TermException"


class DirtyExit(RubyNamed, Exception):
    """``Resque::DirtyExit``: the job's process went away without finishing it."""

    ruby_name = "Resque::DirtyExit"


class PruneDeadWorkerDirtyExit(DirtyExit):
    """``Resque::PruneDeadWorkerDirtyExit``: a worker's heartbeat expired mid-job."""

    ruby_name = "Resque::PruneDeadWorkerDirtyExit"

    def __init__(self, worker_id: str, job_class: str | None) -> None:
        super().__init__(f"Worker {worker_id} did not gracefully exit while processing {job_class or '<Unknown Job>'}")


class JobNameError(RubyNamed, Exception):
    """Ruby's NameError, as raised when a payload names a class the worker lacks."""

    ruby_name = "NameError"


class NoQueueError(Exception):
    """Neither QUEUES nor QUEUE named a queue."""


def ruby_class_name(exc: BaseException) -> str:
    """Return the exception class name as a Ruby worker would record it."""
    return getattr(exc, "ruby_name", type(exc).__name__)


def ruby_message(exc: BaseException) -> str:
    """Return ``exception.to_s``: the message, or the class name when there is none."""
    return str(exc) if exc.args else ruby_class_name(exc)


def ruby_inspect_exception(exc: BaseException) -> str:
    """Return Ruby 3.1's ``exception.inspect``, e.g. ``#<Resque::TermException: SIGTERM>``."""
    message = ruby_message(exc)
    return f"#<{ruby_class_name(exc)}: {message}>" if message else ruby_class_name(exc)


def ruby_float(value: float) -> str:
    """Format a float like Ruby's Float#to_s (``5.0``, ``1.0e+20``, ``Infinity``)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    mantissa, e, exponent = text.partition("e")
    if e and "." not in mantissa:
        text = f"{mantissa}.0e{exponent}"
    return text


def ruby_inspect(obj: Any) -> str:
    """Render a decoded JSON value the way Ruby's ``inspect`` would (for log lines)."""
    if obj is None:
        return "nil"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, float):
        return ruby_float(obj)
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, list):
        return "[" + ", ".join(ruby_inspect(item) for item in obj) + "]"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{ruby_inspect(k)}=>{ruby_inspect(v)}" for k, v in obj.items()) + "}"
    return repr(obj)


def ruby_to_f(text: str | None, default: float) -> float:
    """Convert like Ruby's String#to_f: a leading number, else 0.0 (never raises)."""
    if text is None:
        return default
    match = re.match(r"\s*[-+]?(\d[\d_]*)?(\.\d+)?([eE][-+]?\d+)?", text)
    number = match.group(0).replace("_", "").strip() if match else ""
    try:
        return float(number)
    except ValueError:
        return 0.0


def ruby_split_commas(text: str) -> list[str]:
    """Split like Ruby's ``String#split(',')``: trailing empty fields are dropped."""
    parts = text.split(",")
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def process_status_to_s(pid: int, status: int) -> str:
    """Return Ruby's ``Process::Status#to_s`` for a child killed by a signal.

    e.g. ``pid 17974 SIGKILL (signal 9)``.
    """
    signum = os.WTERMSIG(status)
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"SIG{signum}"
    text = f"pid {pid} {name} (signal {signum})"
    if os.WCOREDUMP(status):
        text += " (core dumped)"
    return text


# --------------------------------------------------------------------------
# Settings and logging


def _fnmatch_ruby(name: str, pattern: str) -> bool:
    """Approximate Ruby's ``File.fnmatch?(pattern, name)`` without flags.

    Like Ruby without FNM_DOTMATCH, wildcards do not match a leading ".".
    """
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


@dataclass(frozen=True)
class Settings:
    """The worker's configuration, read from the environment as resque 3.0.0 reads it."""

    queues: tuple[str, ...]
    interval: float = 5.0
    redis_url: str = DEFAULT_REDIS_URL
    procline_prefix: str = ""
    fork_per_job: bool = True
    term_child: bool = False
    graceful_term: bool = False
    term_timeout: float = 4.0
    pre_shutdown_timeout: float = 0.0
    verbosity: str = "quiet"  # "quiet", "verbose" or "very_verbose"
    pidfile: str | None = None
    background: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        """Build settings from ``environ``.

        Raises NoQueueError when no queue is named and ValueError when INTERVAL
        is not a number. Boolean switches follow Ruby truthiness: set at all
        (even to "" or "0") means on; FORK_PER_JOB is off only for "false".
        """
        # QUEUES wins even when set to "" (an empty Ruby string is truthy).
        raw = environ.get("QUEUES")
        if raw is None:
            raw = environ.get("QUEUE", "")
        queues = tuple(q.strip() for q in ruby_split_commas(raw))
        if not queues:
            raise NoQueueError("Please give each worker at least one queue.")
        interval_text = environ.get("INTERVAL")
        try:
            interval = 5.0 if interval_text is None else float(interval_text)
        except ValueError:
            raise ValueError(f'invalid value for Float(): "{interval_text}"') from None
        if "VVERBOSE" in environ:
            verbosity = "very_verbose"
        elif "VERBOSE" in environ or "LOGGING" in environ:
            verbosity = "verbose"
        else:
            verbosity = "quiet"
        return cls(
            queues=queues,
            interval=interval,
            redis_url=environ.get("REDIS_URL", DEFAULT_REDIS_URL),
            procline_prefix=environ.get("RESQUE_PROCLINE_PREFIX", ""),
            fork_per_job=environ.get("FORK_PER_JOB") != "false",
            term_child="TERM_CHILD" in environ,
            graceful_term="GRACEFUL_TERM" in environ,
            term_timeout=ruby_to_f(environ.get("RESQUE_TERM_TIMEOUT"), 4.0),
            pre_shutdown_timeout=ruby_to_f(environ.get("RESQUE_PRE_SHUTDOWN_TIMEOUT"), 0.0),
            verbosity=verbosity,
            pidfile=environ.get("PIDFILE") or None,
            background="BACKGROUND" in environ,
        )

    @property
    def dynamic_queues(self) -> bool:
        """True when the queue list holds a glob, so it is expanded at each poll."""
        return any(char in "".join(self.queues) for char in "*?{}[]")


class Logger:
    """Resque's logger on stdout: quiet, VerboseFormatter or VeryVerboseFormatter.

    Lines are written with a single ``os.write`` so that logging from a signal
    handler can never re-enter a buffered stream, and every line is flushed.
    """

    LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}

    def __init__(self, verbosity: str = "quiet", fd: int = 1) -> None:
        self.verbosity = verbosity
        self.fd = fd

    def log(self, severity: str, message: str) -> None:
        """Write ``message`` if the verbosity lets ``severity`` through."""
        if self.verbosity == "quiet":
            return
        if self.verbosity == "verbose":
            if self.LEVELS[severity] < self.LEVELS["info"]:
                return
            line = f"*** {message}\n"
        else:
            stamp = time.strftime("%H:%M:%S %Y-%m-%d")
            line = f"** [{stamp}] {os.getpid()}: {message}\n"
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError:
            pass  # a closed or full stdout must not take the worker down

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def error(self, message: str) -> None:
        self.log("error", message)


# --------------------------------------------------------------------------
# Process title


_original_comm: str | None = None


def set_process_title(title: str) -> None:
    """Make ``ps -o args=`` show exactly ``title``, like Ruby's ``$0 = title``.

    setproctitle also renames the process (``/proc/PID/comm``) to the first 15
    characters of the title; Ruby leaves comm alone (it stays ``rake``/``ruby``,
    so ``pgrep resque`` finds no real worker), so we put the original name back.
    """
    global _original_comm
    if _original_comm is None:
        try:
            with open("/proc/self/comm", encoding="utf-8") as f:
                _original_comm = f.read().rstrip("\n")
        except OSError:
            _original_comm = ""
    setproctitle.setproctitle(title)
    if _original_comm:
        try:
            with open("/proc/self/comm", "w", encoding="utf-8") as f:
                f.write(_original_comm)
        except OSError:
            pass


# --------------------------------------------------------------------------
# Jobs (test doubles)


class SleepJob:
    """args ``[seconds, tag]``: RPUSH tag to resque:test:started, sleep, RPUSH tag to resque:test:finished."""

    @staticmethod
    def perform(client: redis.Redis, seconds: float, tag: Any = None) -> None:
        if tag is not None:
            client.rpush(STARTED_KEY, str(tag))
        time.sleep(float(seconds))
        if tag is not None:
            client.rpush(FINISHED_KEY, str(tag))


class StubbornJob:
    """Like SleepJob, but swallows TermException and sleeps on (a job that ignores TERM)."""

    @staticmethod
    def perform(client: redis.Redis, seconds: float, tag: Any = None) -> None:
        if tag is not None:
            client.rpush(STARTED_KEY, str(tag))
        deadline = time.monotonic() + float(seconds)
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                time.sleep(remaining)
            except TermException:
                continue
        if tag is not None:
            client.rpush(FINISHED_KEY, str(tag))


class GateJob:
    """args ``[tag, max_seconds]``: runs until the test opens its gate (sets the redis key
    ``resque:test:gate:<tag>``) or ``max_seconds`` pass, then finishes like SleepJob.

    A test that needs a job to be running while it looks does not have to guess how long the
    look takes on a loaded machine: the job runs exactly until the test lets it end.
    """

    @staticmethod
    def perform(client: redis.Redis, tag: Any, max_seconds: float = 120) -> None:
        client.rpush(STARTED_KEY, str(tag))
        deadline = time.monotonic() + float(max_seconds)
        while time.monotonic() < deadline and not client.exists(gate_key(tag)):
            time.sleep(0.05)
        client.rpush(FINISHED_KEY, str(tag))


def gate_key(tag: Any) -> str:
    return f"resque:test:gate:{tag}"


def open_gate(client: redis.Redis, tag: Any) -> None:
    """Let the GateJob tagged `tag` finish."""
    client.set(gate_key(tag), "1")


class FailJob:
    """args ``[tag]``: raises RuntimeError, so the job lands in resque:failed."""

    @staticmethod
    def perform(client: redis.Redis, tag: Any = None) -> None:
        raise RuntimeError(f"FailJob failed: {tag}")


JOB_CLASSES: dict[str, Any] = {
    "SleepJob": SleepJob,
    "StubbornJob": StubbornJob,
    "GateJob": GateJob,
    "FailJob": FailJob,
}


@dataclass
class Job:
    """A reserved job: the queue it came from and its decoded payload."""

    queue: str
    payload: Any

    @property
    def class_name(self) -> str:
        """``payload_class_name``: the class string, as shown in the procline."""
        value = self.payload.get("class") if isinstance(self.payload, dict) else None
        return "" if value is None else str(value)

    @property
    def args(self) -> list:
        value = self.payload.get("args") if isinstance(self.payload, dict) else None
        return list(value) if isinstance(value, list) else []

    def inspect(self) -> str:
        """Return resque's ``Job#inspect``, e.g. ``(Job{q} | SleepJob | [1.0, "a"])``."""
        args = self.payload.get("args") if isinstance(self.payload, dict) else None
        return f"(Job{{{self.queue}}} | {self.class_name} | {ruby_inspect(args)})"

    def invoke(self, client: redis.Redis) -> None:
        """Run the job; an unknown class raises NameError as Ruby's constantize does."""
        job_class = JOB_CLASSES.get(self.class_name)
        if job_class is None:
            raise JobNameError(f"uninitialized constant {self.class_name}")
        job_class.perform(client, *self.args)


def _is_worker_frame(frame: traceback.FrameSummary) -> bool:
    # The worker's own frames (the perform wrapper, Job.invoke, signal handlers)
    # are left out, as resque's filter_backtrace cuts its own lib/resque/job.rb frames.
    return frame.filename == __file__ and (frame.name.startswith("_") or frame.name == "invoke")


def ruby_backtrace(exc: BaseException) -> list[str]:
    """Return the job's frames, innermost first, as Ruby-style ``file:line:in `name'`` strings."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_worker_frame(f)]
    return [f"{f.filename}:{f.lineno}:in `{f.name}'" for f in reversed(frames)]


# --------------------------------------------------------------------------
# The worker


def _now_to_s() -> str:
    """Ruby's ``Time.now.to_s``: ``2026-11-27 09:08:05 +0000``."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _iso8601_local(epoch: float) -> str:
    """Ruby's ``Time.at(epoch).iso8601``: local time with offset, e.g. ``...T09:08:05+00:00``."""
    return datetime.datetime.fromtimestamp(int(epoch)).astimezone().isoformat()


def linux_worker_pids() -> set[str]:
    """Pids (as strings) of processes that look like resque workers, as resque's ps|grep finds them."""
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid,command"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return set()
    pattern = re.compile(r"resque:work|resque:\sStarting|resque-[0-9]")
    pids = set()
    for line in out.splitlines()[1:]:
        if pattern.search(line) and "resque-web" not in line:
            pids.add(line.split()[0])
    return pids


# The signals a worker handles (see register_signal_handlers in resque's worker.rb).
_HANDLED_SIGNALS = {
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
}


class Worker:
    """One resque 3.0.0 worker: the parent that polls, forks a child per job and handles signals."""

    def __init__(self, settings: Settings, logger: Logger | None = None) -> None:
        self.settings = settings
        self.logger = logger or Logger(settings.verbosity)
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        # The id keeps the raw queue list ("*" stays "*").
        self.id = f"{self.hostname}:{self.pid}:{','.join(settings.queues)}"
        # decode_responses: every reply is str (or None), never bytes, as the casts below rely on;
        # redis-py's annotations do not follow it (bytes | str from redis 8, Awaitable | Any before).
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self._shutdown = False
        self._paused = False
        self._cached_pause_value = False
        self._child: int | None = None
        self._performing_in_process = False
        self._ignore_term = False
        self._child_term_raised = False
        # new_kill_child (TERM_CHILD) runs as a small state machine in the
        # wait loop rather than inside the handler, which only records the request.
        self._kill_requested_at: float | None = None
        self._term_sent_at: float | None = None
        self._kill_sent = False
        self._next_heartbeat = 0.0
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # ---- lifecycle --------------------------------------------------------

    def work(self) -> None:
        """Run the worker until a shutdown signal (or, with INTERVAL=0, until the queues are empty).

        Mirrors ``Worker#work``: startup, then poll/perform, then unregister.
        Any exception is logged and the worker unregisters before returning.
        """
        interval = self.settings.interval
        try:
            self._startup()
            while not self._shutdown:
                if not self._work_one_job():
                    if interval == 0:
                        break
                    self.logger.debug(f"Sleeping for {ruby_float(interval)} seconds")
                    if self._paused or self._cached_pause_value:
                        self._procline("Paused")
                    else:
                        self._procline(f"Waiting for {','.join(self.queues())}")
                    self._sleep(interval)
            self.unregister_worker(self.id)
        except BaseException as exc:  # Ruby's `rescue Exception`: everything, then unregister
            self.logger.error(f"Failed to start worker : {ruby_inspect_exception(exc)}")
            self.unregister_worker(self.id, exc)

    def _startup(self) -> None:
        set_process_title("resque: Starting")  # no prefix, no version, in every resque version
        self._register_signal_handlers()
        self._start_heartbeat()
        self._prune_dead_workers()
        self._register_worker()

    def queues(self) -> list[str]:
        """The queues to poll, in order; globs are expanded against ``resque:queues`` (sorted)."""
        if not self.settings.dynamic_queues:
            return list(dict.fromkeys(self.settings.queues))
        known = cast("set[str]", self.redis.smembers(QUEUES_KEY))  # decode_responses
        expanded: list[str] = []
        for pattern in self.settings.queues:
            expanded.extend(sorted(q for q in known if _fnmatch_ruby(q, pattern)))
        return list(dict.fromkeys(expanded))

    def _procline(self, text: str) -> None:
        title = f"{self.settings.procline_prefix}resque-{VERSION}: {text}"
        set_process_title(title)
        self.logger.debug(title)

    def _sleep(self, seconds: float) -> None:
        """Sleep between polls; a shutdown signal cuts it short, pause/unpause does not."""
        deadline = time.monotonic() + seconds
        while not self._shutdown:
            now = time.monotonic()
            if now >= deadline:
                return
            until_heartbeat = self._heartbeat_if_due(now)
            self._wait_readable([self._wake_r], min(deadline - now, until_heartbeat))

    def _wait_readable(self, fds: Sequence[int], timeout: float | None) -> None:
        """Block until one of ``fds`` is readable or ``timeout`` passes, then drain the wake pipe."""
        try:
            ready, _, _ = select.select(list(fds), [], [], timeout)
        except InterruptedError:
            ready = []
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass

    def _wake(self) -> None:
        """Wake the main loop out of ``select`` (safe to call from a signal handler)."""
        if self._wake_w is None:
            return
        try:
            os.write(self._wake_w, b"\0")
        except OSError:
            pass  # the pipe is full: the loop is awake already

    # ---- jobs ---------------------------------------------------------------

    def _work_one_job(self) -> bool:
        """Reserve and process one job; False if paused or every queue is empty."""
        self._cached_pause_value = self._pause_all_workers()
        if self._paused or self._cached_pause_value:
            return False
        job = self._reserve()
        if job is None:
            return False
        self._working_on(job)
        self._procline(f"Processing {job.queue} since {int(time.time())} [{job.class_name}]")
        self.logger.info(f"got: {job.inspect()}")
        if self.settings.fork_per_job:
            self._perform_with_fork(job)
        else:
            self._performing_in_process = True
            try:
                self._perform(job)
            finally:
                self._performing_in_process = False
        self._done_working()
        return True

    def _pause_all_workers(self) -> bool:
        value = cast("str | None", self.redis.get(PAUSE_ALL_KEY))  # decode_responses
        return value is not None and value.strip().lower() == "true"

    def _reserve(self) -> Job | None:
        for queue in self.queues():
            self.logger.debug(f"Checking {queue}")
            raw = cast("str | None", self.redis.lpop(queue_key(queue)))  # one item (no count): str or None
            if raw is not None:
                self.logger.debug(f"Found job on {queue}")
                return Job(queue, json.loads(raw))
        return None

    def _perform(self, job: Job) -> None:
        """Run ``job``, recording any failure (in the child, or in-process without fork)."""
        try:
            job.invoke(self.redis)
        except BaseException as exc:  # resque rescues Object: even signals fail the job
            self._report_failed_job(job, exc)
        else:
            self.logger.info(f"done: {job.inspect()}")

    def _perform_with_fork(self, job: Job) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        # Hold our signals across fork: the parent must know the child's pid before a
        # TERM can ask it to kill that child, and the child must have its own handlers
        # before it acts on any signal. Held signals are delivered on unblocking.
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                try:
                    self._become_child()
                    signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)
                    self._perform(job)
                finally:
                    # Ruby's `exit!` (no at_exit hooks); its default status is false, i.e. 1.
                    os._exit(1)
            self._child = pid
        finally:
            # Only the parent gets here (the child always leaves through os._exit).
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED_SIGNALS)
        self._procline(f"Forked {pid} at {int(time.time())}")
        status = self._wait_for_child(pid)
        self._child = None
        self._kill_requested_at = self._term_sent_at = None
        self._kill_sent = False
        if status is not None and os.WIFSIGNALED(status):
            self._fail_job(
                job, DirtyExit(f"Child process received unhandled signal {process_status_to_s(pid, status)}")
            )

    def _wait_for_child(self, pid: int) -> int | None:
        """Wait for the forked child, carrying out kill requests and heartbeats meanwhile.

        Returns the wait status, or None if the child could not be waited for.
        """
        try:
            pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            pidfd = None  # fall back to polling
        try:
            while True:
                try:
                    waited, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    return None
                if waited == pid:
                    return status
                now = time.monotonic()
                timeouts = [self._heartbeat_if_due(now)]
                step = self._advance_child_kill(pid, now)
                if step is not None:
                    timeouts.append(step)
                if pidfd is None:
                    timeouts.append(0.05)
                fds = [self._wake_r] + ([pidfd] if pidfd is not None else [])
                self._wait_readable(fds, max(0.0, min(timeouts)))
        finally:
            if pidfd is not None:
                os.close(pidfd)

    def _advance_child_kill(self, pid: int, now: float) -> float | None:
        """Carry out ``new_kill_child``: wait the pre-shutdown timeout, TERM, wait, KILL.

        Returns the seconds until the next step is due, or None if nothing is pending.
        """
        if self._kill_requested_at is None or self._kill_sent:
            return None
        if self._term_sent_at is None:
            due = self._kill_requested_at + self.settings.pre_shutdown_timeout
            if now < due:
                return due - now
            self.logger.debug(f"Sending TERM signal to child {pid}")
            self._signal_child(pid, signal.SIGTERM)
            self._term_sent_at = now
            return self.settings.term_timeout
        due = self._term_sent_at + self.settings.term_timeout
        if now < due:
            return due - now
        self.logger.debug(f"Sending KILL signal to child {pid}")
        self._signal_child(pid, signal.SIGKILL)
        self._kill_sent = True
        return None

    @staticmethod
    def _signal_child(pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _become_child(self) -> None:
        """Set up the forked child: its own signal handlers and its own redis connection."""
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        # None only in the forked child, which never waits on the pipe; _wake(), which a signal
        # handler may still call there, checks for None.
        self._wake_r = self._wake_w = None  # type: ignore[assignment]
        self._register_child_signal_handlers()
        # resque reconnects after fork; a connection shared with the parent would interleave replies.
        self.redis = redis.Redis.from_url(self.settings.redis_url, decode_responses=True)

    def _report_failed_job(self, job: Job, exc: BaseException) -> None:
        """Record a job's own failure: a resque:failed entry plus the failed stats."""
        self.logger.error(f"{job.inspect()} failed: {ruby_inspect_exception(exc)}")
        try:
            self._fail_job(job, exc, backtrace=ruby_backtrace(exc))
        except Exception as error:
            self.logger.error(f"Received exception when reporting failure: {ruby_inspect_exception(error)}")
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.incr(FAILED_STAT_KEY)
            pipe.incr(f"{FAILED_STAT_KEY}:{self.id}")
            pipe.execute()
        except Exception as error:
            self.logger.error(
                "Received exception when increasing failed jobs counter (redis issue) : "
                f"{ruby_inspect_exception(error)}"
            )

    def _fail_job(
        self, job: Job, exc: BaseException, *, worker_id: str | None = None, backtrace: list[str] | None = None
    ) -> None:
        """``Job#fail``: push a resque:failed entry (does not touch stat:failed)."""
        data = {
            "failed_at": time.strftime("%Y/%m/%d %H:%M:%S %Z"),
            "payload": job.payload,
            "exception": ruby_class_name(exc),
            "error": ruby_message(exc),
            "backtrace": backtrace if backtrace is not None else [],
            "worker": worker_id or self.id,
            "queue": job.queue,
        }
        self.redis.rpush(FAILED_KEY, encode(data))

    # ---- redis bookkeeping ----------------------------------------------------

    def _register_worker(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(WORKERS_KEY, self.id)
        pipe.set(worker_started_key(self.id), _now_to_s())
        pipe.execute()

    def _working_on(self, job: Job) -> None:
        run_at = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.redis.set(worker_key(self.id), encode({"queue": job.queue, "run_at": run_at, "payload": job.payload}))

    def _done_working(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(worker_key(self.id))
        pipe.incr(PROCESSED_STAT_KEY)
        pipe.incr(f"{PROCESSED_STAT_KEY}:{self.id}")
        pipe.execute()

    def unregister_worker(self, worker_id: str, exception: BaseException | None = None) -> None:
        """Remove ``worker_id`` from redis; a job it still claims is failed first.

        The failure is ``exception`` or ``DirtyExit("Job still being processed")``.
        Used for this worker on exit and for dead workers found by pruning.
        """
        raw = cast("str | None", self.redis.get(worker_key(worker_id)))  # decode_responses
        if raw:
            processing = json.loads(raw)
            if processing:
                job = Job(processing.get("queue"), processing.get("payload"))
                failure = exception or DirtyExit("Job still being processed")
                backtrace = ruby_backtrace(failure) if failure.__traceback__ else []
                self._fail_job(job, failure, worker_id=worker_id, backtrace=backtrace)
        pipe = self.redis.pipeline(transaction=False)
        pipe.srem(WORKERS_KEY, worker_id)
        pipe.delete(worker_key(worker_id), worker_started_key(worker_id))
        pipe.hdel(HEARTBEAT_KEY, worker_id)
        pipe.delete(f"{PROCESSED_STAT_KEY}:{worker_id}", f"{FAILED_STAT_KEY}:{worker_id}")
        pipe.execute()

    def _server_time(self) -> float:
        seconds, _micros = cast("tuple[int, int]", self.redis.time())
        return float(seconds)

    def _start_heartbeat(self) -> None:
        self.redis.hdel(HEARTBEAT_KEY, self.id)
        self._next_heartbeat = 0.0
        self._heartbeat_if_due(time.monotonic())

    def _heartbeat_if_due(self, now: float) -> float:
        """Write the heartbeat if due; return the seconds until the next one."""
        if now >= self._next_heartbeat:
            try:
                self.redis.hset(HEARTBEAT_KEY, self.id, _iso8601_local(self._server_time()))
            except redis.RedisError as error:
                # resque's heartbeat thread dies quietly on errors; the worker itself carries on.
                self.logger.error(f"Heartbeat failed: {error!r}")
            self._next_heartbeat = now + HEARTBEAT_INTERVAL
        return self._next_heartbeat - now

    def _prune_dead_workers(self) -> None:
        """Unregister workers that are dead: expired heartbeat, or same host/queues and no such process.

        Only one worker prunes per heartbeat interval (a redis lock with expiry).
        """
        if not self.redis.set(PRUNING_LOCK_KEY, self.id, ex=int(HEARTBEAT_INTERVAL), nx=True):
            return
        worker_ids = sorted(cast("set[str]", self.redis.smembers(WORKERS_KEY)))  # decode_responses
        if not worker_ids:
            return
        known_pids = linux_worker_pids()
        heartbeats = cast("dict[str, str]", self.redis.hgetall(HEARTBEAT_KEY))  # decode_responses
        now = self._server_time()
        own_queues = set(self.settings.queues)
        for worker_id in worker_ids:
            beat = heartbeats.get(worker_id)
            if beat and self._heartbeat_expired(beat, now):
                self.logger.info(f"Pruning dead worker: {worker_id}")
                job_class = None
                raw = cast("str | None", self.redis.get(worker_key(worker_id)))  # decode_responses
                if raw:
                    try:
                        job_class = json.loads(raw)["payload"]["class"]
                    except (ValueError, KeyError, TypeError):
                        job_class = None
                self.unregister_worker(worker_id, PruneDeadWorkerDirtyExit(worker_id, job_class))
                continue
            parts = worker_id.split(":")
            if len(parts) < 3:
                continue
            host, pid, raw_queues = parts[0], parts[1], parts[2]
            # A worker on other queues may be another program entirely: leave it alone.
            if "*" not in own_queues and set(ruby_split_commas(raw_queues)) != own_queues:
                continue
            if host != self.hostname or pid in known_pids:
                continue
            self.logger.debug(f"Pruning dead worker: {worker_id}")
            self.unregister_worker(worker_id)

    @staticmethod
    def _heartbeat_expired(beat: str, now: float) -> bool:
        try:
            when = datetime.datetime.fromisoformat(beat.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return False
        return int(now - when) > PRUNE_INTERVAL

    # ---- signals --------------------------------------------------------------

    def _register_signal_handlers(self) -> None:
        """Install the parent's handlers, overriding any inherited SIG_IGN."""
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_int)
        signal.signal(signal.SIGQUIT, self._on_quit)
        signal.signal(signal.SIGUSR1, self._on_usr1)
        signal.signal(signal.SIGUSR2, self._on_usr2)
        signal.signal(signal.SIGCONT, self._on_cont)
        # An inherited SIG_IGN for SIGCHLD would make the kernel reap our children
        # and leave us no exit status to tell a killed child from a finished one.
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        self.logger.debug("Registered signals")

    def _register_child_signal_handlers(self) -> None:
        """Install the child's handlers explicitly (never trust inherited dispositions).

        Without TERM_CHILD, TERM/INT/QUIT only set a flag: the job runs on. With
        TERM_CHILD, TERM raises TermException once; INT/QUIT/USR1/USR2 raise as
        Ruby's default handlers do.
        """
        if self.settings.term_child:
            signal.signal(signal.SIGTERM, self._child_on_term)
            for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
                signal.signal(signum, self._child_raise_signal)
        else:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(signum, self._child_on_shutdown)
            signal.signal(signal.SIGUSR1, self._child_ignore)
            signal.signal(signal.SIGUSR2, self._on_usr2)
        signal.signal(signal.SIGCONT, self._on_cont)

    def _on_term(self, signum: int, frame: Any) -> None:
        if self._ignore_term:
            return
        if self.settings.graceful_term:
            self._shutdown_gracefully()
        else:
            self._shutdown_now()

    def _on_int(self, signum: int, frame: Any) -> None:
        self._shutdown_now()

    def _on_quit(self, signum: int, frame: Any) -> None:
        self._shutdown_gracefully()

    def _on_usr1(self, signum: int, frame: Any) -> None:
        if self.settings.term_child:
            self._request_child_kill()
        else:
            self._kill_child()

    def _on_usr2(self, signum: int, frame: Any) -> None:
        self.logger.info("USR2 received; pausing job processing")
        self._paused = True

    def _on_cont(self, signum: int, frame: Any) -> None:
        self.logger.info("CONT received; resuming job processing")
        self._paused = False

    def _shutdown_gracefully(self) -> None:
        """``shutdown``: finish the current job, then exit."""
        self.logger.info("Exiting...")
        self._shutdown = True
        self._wake()

    def _shutdown_now(self) -> None:
        """``shutdown!``: exit now, killing the current job (how depends on TERM_CHILD)."""
        self._shutdown_gracefully()
        if not self.settings.term_child:
            self._kill_child()
        elif self.settings.fork_per_job:
            self._request_child_kill()
        else:
            self._ignore_term = True  # resque traps later TERMs to a no-op
            if self._performing_in_process:
                raise TermException("SIGTERM")

    def _kill_child(self) -> None:
        """``kill_child``: SIGKILL the child at once, if there is one."""
        child = self._child
        if child:
            self.logger.debug(f"Killing child at {child}")
            self._signal_child(child, signal.SIGKILL)

    def _request_child_kill(self) -> None:
        """``new_kill_child``: ask the wait loop to TERM, then KILL, the child."""
        if self._child and self._kill_requested_at is None:
            self._kill_requested_at = time.monotonic()
            self._wake()

    def _child_on_shutdown(self, signum: int, frame: Any) -> None:
        # The child inherits resque's traps: shutdown only flags, and there is no child to kill.
        self.logger.info("Exiting...")
        self._shutdown = True

    def _child_ignore(self, signum: int, frame: Any) -> None:
        pass

    def _child_on_term(self, signum: int, frame: Any) -> None:
        if self._child_term_raised:
            return  # resque ignores later TERMs in the child
        self._child_term_raised = True
        raise TermException("SIGTERM")

    def _child_raise_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            raise Interrupt("")
        raise SignalException(signal.Signals(signum).name)


# --------------------------------------------------------------------------
# Entry point


def _daemonize() -> None:
    """``Process.daemon(true)``: fork, parent exits 0, new session, stdio on /dev/null."""
    if os.fork():
        os._exit(0)
    try:
        os.setsid()
    except OSError:
        pass
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run a worker configured from ``environ`` (default: os.environ); return the exit status.

    ``argv`` is accepted and ignored, like rake's ``resque:work`` task name.
    """
    environ = os.environ if environ is None else environ
    try:
        settings = Settings.from_env(environ)
    except NoQueueError:
        sys.stderr.write(NO_QUEUE_MESSAGE + "\n")
        return 1
    except ValueError as error:
        sys.stderr.write(f"rake aborted!\nArgumentError: {error}\n")
        return 1
    if settings.background:
        _daemonize()
    if settings.pidfile:
        # Written after daemonizing and never removed, as resque does.
        with open(settings.pidfile, "w", encoding="ascii") as f:
            f.write(str(os.getpid()))
    worker = Worker(settings)
    worker.logger.info(f"Starting worker {worker.id}")
    worker.work()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
