"""deployhooks-resque: start, stop and signal one Resque worker for monit.

A drop-in for Engine Yard's ``/engineyard/bin/resque`` wrapper::

    deployhooks-resque [--user USER] [--deploy-to DIR] [--pid-dir DIR] [--grace-time SECONDS]
                       [--term-wait SECONDS] <app> <action> <framework_env> <conf> [-- COMMAND...]

``<conf>`` names ``<deploy_to>/shared/config/<conf>`` (e.g. ``resque_0.conf``); its stem
(``resque_0``) names the worker: pidfile ``<pid_dir>/resque_0.pid``, lock ``<pid_dir>/resque_0.lock``,
log ``<deploy_to>/shared/log/resque_0.log``.

Defaults: ``--deploy-to`` = $DEPLOYHOOKS_DEPLOY_TO or ``/data/<app>``; ``--pid-dir`` =
$DEPLOYHOOKS_PID_DIR or ``/var/run/deployhooks/resque/<app>``; ``--grace-time`` = $GRACE_TIME or 60;
``--term-wait`` = 5. $DEPLOYHOOKS_LOCK_TIMEOUT (default 10) is how long to wait for the lock.
``COMMAND`` (after ``--``) is what the worker execs, ``{current}`` standing for the release path;
default ``bundle exec rake -f {current}/Rakefile resque:work``.

Trust. monit runs this program as root, and the deploy user owns ``<deploy_to>``. So:

- The worker's user is ``--user`` (the monitrc line, which root owns), required when running
  as root and never root itself; Engine Yard took the owner of ``current``, which the deploy user
  can point anywhere (``ln -sfn /usr/share current`` made it root).
- The command comes from the monitrc line, never from files under ``<deploy_to>``. The conf and
  ``env.custom`` / ``env.cloud`` are read by the worker's process *after* it has become the
  user, as ``KEY=VALUE`` data; ``RESQUE_WORKER_COMMAND`` there is refused, ``PATH`` and ``LD_*``
  ignored with a warning (see :mod:`deployhooks.resque.envfile`).
- ``pid_dir`` must be a folder only root can change (created 0755 if missing; see
  :mod:`deployhooks.resque.safefs`); the lock is opened without following links and the
  pidfile is written through an exclusively created temporary file.
- The worker's log is opened by the worker's process as the user. The wrapper's own lines go
  to it only if it is a regular file owned by that user, with one link, reached without a
  symlink at its name.
- A pid read from the pidfile is signalled only if it is a live Resque worker of this app: a
  Resque command line, the worker's user, and a working directory under ``<deploy_to>``.

Actions:

- ``start``: launch the worker unless one is running, as above, in its own session, with stdout
  and stderr appended to its log, and APP_ROOT, RAILS_ENV, RACK_ENV set. QUEUE/QUEUES are
  required in the conf. The pidfile gets the worker's own pid.
- ``stop`` / ``quit``: QUIT (finish the job, then exit); after ``--grace-time`` seconds KILL the job
  child and the worker. ``term`` / ``kill``: TERM (Resque kills the job at once); after
  ``--term-wait`` seconds the same forced end. Both return once the worker is gone and remove the
  pidfile.
- ``restart``: end the worker as ``--restart-with`` (default ``quit``) would, then start, under one
  lock. The monitrc's ``restart program`` uses it, so monit's restart is one wrapper run instead of
  a stop program and a start program (one Python start and one of monit's 100 ms polls less per
  worker, and no window between them in which another wrapper could act).
- ``pause`` (USR2: take no new job), ``cont`` (CONT: resume), ``abort`` (USR1: kill the current job,
  keep the worker).

A pidfile naming a process that is not this app's live worker (after a crash or a reboot the
number may belong to anything) is stale: it is removed, nothing is signalled, and the action
goes on as if no worker ran.

Differences from Engine Yard's shipped script (ey-cookbooks-stable-v6/v7; docs/engineyard.md, "The
wrapper"):

- GRACE_TIME counts seconds and is honoured. EY documented "QUIT, wait GRACE_TIME, then kill -9",
  but its code counted quarter-seconds (60 meant 15 s) in a loop that ``stop``/``quit`` never
  reached: they sent QUIT and returned at once, leaving the pidfile behind.
- The pidfile holds the worker's pid, not the pid of the ``sudo`` that launched it, and is written
  atomically. ``stop`` kills the job child *before* the worker: a Resque parent killed first leaves
  an orphaned child that finishes its job unsupervised.
- The lock is an flock on a file in the app's pid directory. EY's ``/tmp/<worker>.monit-lock`` was
  shared by every app on the host and went stale when a wrapper died.
- There is a ``restart`` action; an unknown action is a usage error (EY: exit 1).
- Env files are parsed as the worker's user, not sourced by root.

Every step is logged to syslog (tag ``deployhooks-resque``; silently skipped without /dev/log) and
appended, timestamped, to the worker's log file (under the rule above).

Exit codes:

- 0: done (including "nothing to signal": no pidfile, stale pidfile).
- 1: refused or failed: already running, lock busy, unsafe pid_dir, conf missing or without
  QUEUE/QUEUES, ``current`` missing, bad env file, worker died at start, worker would not die.
- 2: usage error (bad option, action, app, framework_env, conf name or user; no --user as root).

The code: :mod:`.arguments` (the command line), :mod:`.worker` (one worker's paths and the step
log), :mod:`.pidtrust` (the pidfile, and whether its pid is this app's live worker),
:mod:`.actions` (the lock, start, stop and signals), :mod:`.launch` (drop privileges, then exec),
:mod:`.envfile` (conf and env files as data), :mod:`.safefs` (trusted folders, no links followed).
This module keeps the entry point and the names other code imports from it.
"""

from __future__ import annotations

import sys

import psutil

from .actions import (
    KILL_WAIT_SECONDS,
    LOG_TAIL_LINES,
    SIGNAL_ACTIONS,
    START_CHECK_SECONDS,
    ActionFailed,
    action_lock,
    is_gone,
    kill_quietly,
    prepare_pid_dir,
    run,
    send,
    start,
    stop,
    wait_gone,
)
from .arguments import (
    ACTIONS,
    CONF_RE,
    DEFAULT_GRACE_TIME,
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_TERM_WAIT,
    MAX_SECONDS,
    NAME_RE,
    USER_RE,
    build_parser,
    parse_args,
)
from .launch import LaunchFailed, LaunchSpec, WorkerUser, resolve_user, spawn
from .pidtrust import (
    DELETED_SUFFIX,
    PID_RE,
    WORKER_CMDLINE_RE,
    read_pid,
    remove_pidfile,
    running_worker,
    why_not_ours,
    write_pidfile,
)
from .worker import DEFAULT_WORKER_COMMAND, PROG, Log, Worker

# Everything this module defined before it was split stays importable from here
# (deployhooks.commands.doctor imports WORKER_CMDLINE_RE, now defined in .pidtrust).
__all__ = [
    "ACTIONS",
    "CONF_RE",
    "DEFAULT_GRACE_TIME",
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_TERM_WAIT",
    "DEFAULT_WORKER_COMMAND",
    "DELETED_SUFFIX",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "KILL_WAIT_SECONDS",
    "LOG_TAIL_LINES",
    "MAX_SECONDS",
    "NAME_RE",
    "PID_RE",
    "PROG",
    "SIGNAL_ACTIONS",
    "START_CHECK_SECONDS",
    "USER_RE",
    "WORKER_CMDLINE_RE",
    "ActionFailed",
    "LaunchFailed",
    "LaunchSpec",
    "Log",
    "Worker",
    "WorkerUser",
    "action_lock",
    "build_parser",
    "is_gone",
    "kill_quietly",
    "main",
    "parse_args",
    "prepare_pid_dir",
    "read_pid",
    "remove_pidfile",
    "resolve_user",
    "run",
    "running_worker",
    "send",
    "spawn",
    "start",
    "stop",
    "wait_gone",
    "why_not_ours",
    "write_pidfile",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    """Console entry point; returns the exit code described in the module docstring."""
    args, worker = parse_args(argv)
    log = Log(worker)
    log.info(f"{args.action} requested (deploy_to {worker.deploy_to}, pid_dir {worker.pid_dir})")
    try:
        run(args, worker, log)
    except ActionFailed as exc:
        log.error(f"{args.action} failed: {exc}")
        return EXIT_REFUSED
    except (OSError, psutil.Error) as exc:
        # e.g. pid dir not writable, or a worker owned by another user when not run as root
        log.error(f"{args.action} failed: {exc}")
        return EXIT_REFUSED
    log.info(f"{args.action} done")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
