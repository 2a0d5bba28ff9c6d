"""`resque.*` tasks: look at and steer the workers of every host that runs them."""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
import threading
import time
from typing import TYPE_CHECKING

from invoke import Exit

from ..errors import EXIT_REFUSED, Refused
from .common import (
    MAX_SECONDS,
    LazyModule,
    finish,
    load_settings,
    on_hosts,
    say,
    seconds,
    select_hosts,
    task,
    whole_number,
)

if TYPE_CHECKING:
    from ..remote.fleet import HostGroup, HostResult
    from ..remote.host import Host

# Imported when a task first uses them (see LazyModule): `resque.status` needs only status_mod.
deploylock = LazyModule("deployhooks.commands.deploylock")
release_mod = LazyModule("deployhooks.facts.release")
status_mod = LazyModule("deployhooks.facts.status")
fleetguard = LazyModule("deployhooks.guard.fleet")
guard = LazyModule("deployhooks.guard.onehost")
policy = LazyModule("deployhooks.guard.policy")
workers = LazyModule("deployhooks.guard.workers")

_ROLES = "comma-separated roles to act on (default: resque.roles from the config)"
_CONFIG = "path of deployhooks.yml (default config/deployhooks.yml or DEPLOYHOOKS_CONFIG)"


def _each(c, config, roles, fn) -> list[HostResult]:
    settings = load_settings(config)
    return on_hosts(c, settings, roles, settings.resque.roles, fn)


@task(
    default=True,
    help={
        "roles": _ROLES,
        "config": _CONFIG,
        "json": "print JSON for scripts",
        "check": "also exit 1 when a worker is busy, stale or not monitored",
    },
)
def status(c, roles=None, json=False, check=False, config=None):
    """Show every worker of every host: state, job, memory, release, monit's view."""
    settings = load_settings(config)
    command = status_mod.status_command(settings)

    def one(host: Host):
        text = host.run(command, warn=True).stdout
        return status_mod.parse_status_output(text, settings, host.name)

    results = on_hosts(c, settings, roles, settings.resque.roles, one)
    now = time.time()
    rows = []
    for r in results:
        if r.code:
            rows.append(status_mod.Row(r.host, None, state="unknown", error=r.error))
        else:
            rows.extend(status_mod.rows_for(r.host, r.value, now))
    current = {
        r.host: {"release": r.value.current_release, "revision": r.value.revision} for r in results if not r.code
    }
    if json:
        print(
            jsonlib.dumps(
                {
                    "hosts": [r.host for r in results],
                    "workers": status_mod.as_json(rows),
                    "current": current,
                    "unreachable": {r.host: r.error for r in results if r.code},
                },
                indent=2,
            )
        )
    else:
        print(status_mod.render_table(rows))
        print("\n".join(status_mod.summary(rows, [r.host for r in results])))
        for host, cur in current.items():
            print(
                f"{host}: current {cur['release'] or '(none)'}"
                + (f" (revision {cur['revision']})" if cur["revision"] else "")
            )
    for r in results:
        if r.code:
            print(r.error, file=sys.stderr, flush=True)
    unreachable = any(r.code for r in results)
    problems = any(row.problems for row in rows)
    if unreachable:
        raise Exit(code=3)
    if check and problems:
        raise Exit(code=EXIT_REFUSED)


_FORCE = (
    "act now even if jobs run: monit's stop ends them (QUIT, then KILL after grace_time; "
    "TERM under stop: term); the jobs it will end are listed first"
)


def _forced(settings, force: bool) -> bool:
    """Whether to skip the guard: asked for by name, or `stop: term` (which ends jobs anyway)."""
    return force or settings.resque.stop == "term"


def _announce_kills(hosts: HostGroup, verb: str) -> None:
    """Before a forced stop or restart: name every job it will end, by host, pid, class, age."""
    now = time.time()
    jobs, _unseen = fleetguard.running_jobs(hosts.each, hosts.names)
    if jobs:
        say(
            f"{verb} --force will end {len(jobs)} running job(s):\n"
            + "\n".join(f"  {host}: {w.describe(now)}" for host, w in jobs)
        )
    else:
        say(f"{verb} --force: no job running now")


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _through_guard(c, roles, config, force: bool, action: str, forced, after, stop: bool = True) -> None:
    """`after(host)` on every host once the fleet guard stopped its idle workers (or, with
    `stop=False`, left them paused); with --force (or stop: term), `forced(host)` at once,
    after naming the jobs it will end."""
    settings = load_settings(config)
    with (
        select_hosts(c, settings, roles, settings.resque.roles) as hosts,
        deploylock.held(hosts.each, hosts.names, settings, action, _warn, dry=hosts.dry),
    ):
        if _forced(settings, force):
            _announce_kills(hosts, action)
            finish(hosts.each(forced))
            return
        finish(
            fleetguard.act_when_idle(
                hosts.each, hosts.names, settings, after, say, action=action, dry=hosts.dry, stop=stop
            )
        )


@task(help={"roles": _ROLES, "config": _CONFIG, "force": _FORCE})
def stop(c, roles=None, force=False, config=None):
    """Stop the workers once no job runs (the guard: pause, look, wait or refuse per on_busy),
    and wait until they have exited; --force stops them now."""
    # Stopped is what was asked for: no guard record is left for deploy_failed to undo.
    _through_guard(
        c,
        roles,
        config,
        force,
        "resque.stop",
        forced=lambda host: workers.stop_group(host, say),
        after=guard.clear_record,
    )


@task(help={"roles": _ROLES, "config": _CONFIG})
def start(c, roles=None, config=None):
    """Start the workers and wait until monit and the process table agree they run."""
    finish(_each(c, config, roles, lambda host: workers.start_group(host, say=say)))


@task(help={"roles": _ROLES, "config": _CONFIG, "force": _FORCE})
def restart(c, roles=None, force=False, config=None):
    """Restart the workers once no job runs (the guard's pause and look, as resque.stop, then one
    monit restart of the paused, idle workers) and wait until all run new processes from the
    current release; --force restarts them now."""

    def forced(host: Host) -> None:
        workers.start_group(host, restart=True, release=release_mod.current_release(host), say=say)

    def restart_paused(host: Host) -> None:
        # The guard left every worker paused and idle: one monit restart, as a deploy at
        # before_symlink does, instead of a stop and then a start (two waits, each with the
        # queues unserved). A worker busy now took its job after the look (monit started it
        # since): refused, and after_guard resumes what the guard paused.
        workers.start_group(host, restart=True, release=release_mod.current_release(host), say=say, refuse_busy=True)
        guard.clear_record(host)

    _through_guard(c, roles, config, force, "resque.restart", forced=forced, after=restart_paused, stop=False)


@task(help={"roles": _ROLES, "config": _CONFIG})
def pause(c, roles=None, config=None):
    """Pause the workers (USR2): each finishes its job and takes no new one."""
    finish(_each(c, config, roles, lambda host: workers.pause(host, say)))


@task(help={"roles": _ROLES, "config": _CONFIG})
def resume(c, roles=None, config=None):
    """Resume paused workers (CONT)."""

    finish(_each(c, config, roles, lambda host: workers.resume_paused(host, say)))


@task(
    help={
        "roles": _ROLES,
        "config": _CONFIG,
        "deadline": f"seconds to wait for jobs in flight (default resque.wait_timeout, at most {MAX_SECONDS})",
    }
)
def drain(c, roles=None, deadline=None, config=None):
    """Pause, wait for every job in flight to finish, then stop; resume and exit 1 on the deadline.

    The whole fleet drains together: workers stop only once no host has a job left, and on
    the deadline or Ctrl-C every host is resumed, so no host is left stopped or paused.
    """
    limit = None if deadline is None else seconds("--deadline", deadline, MAX_SECONDS)
    settings = load_settings(config)
    limit = settings.resque.wait_timeout if limit is None else limit
    with (
        select_hosts(c, settings, roles, settings.resque.roles) as hosts,
        deploylock.held(hosts.each, hosts.names, settings, "resque.drain", _warn, dry=hosts.dry),
    ):
        try:
            results = fleetguard.act_when_idle(
                hosts.each,
                hosts.names,
                settings,
                guard.clear_record,
                say,
                action="resque.drain",
                dry=hosts.dry,
                on_busy="wait",
                wait_timeout=limit,
            )
        except (Refused, KeyboardInterrupt, fleetguard.FleetFailed):
            say("drain stopped: every paused worker was resumed")
            raise
        finish(results)


# The most lines `logs` prints per worker log: enough for any look back, and a bound on what a
# typo (an extra digit or two) can pour out of every host at once.
MAX_LOG_LINES = 100000


@task(
    help={
        "roles": _ROLES,
        "config": _CONFIG,
        "lines": f"lines per worker log (default 20, at most {MAX_LOG_LINES})",
        "follow": "keep printing new lines (Ctrl-C to stop)",
    }
)
def logs(c, roles=None, lines=None, follow=False, config=None):
    """The last lines of each worker's log, prefixed by host; --follow keeps streaming."""
    # No int default: invoke would then convert --lines itself, and 'abc' would be a traceback.
    count = 20 if lines is None else whole_number("--lines", lines, 0, MAX_LOG_LINES)
    lock = threading.Lock()

    class Prefixed:
        def __init__(self, host: str):
            self.host, self.buffer = host, ""

        def write(self, text: str) -> None:
            self.buffer += text
            *done, self.buffer = self.buffer.split("\n")
            with lock:
                for line in done:
                    sys.stdout.write(f"{self.host} | {line}\n")
                sys.stdout.flush()

        def flush(self) -> None:
            pass

    def one(host: Host):
        pattern = f"{shlex.quote(host.settings.shared_path + '/log')}/resque_*.log"
        cmd = f"tail -n {count} {'-F' if follow else ''} {pattern}"
        host.c.run(
            cmd,
            hide=False,
            warn=True,
            in_stream=False,
            out_stream=Prefixed(host.name),
            err_stream=Prefixed(host.name),
            pty=bool(follow) and host.remote,
        )

    settings = load_settings(config)
    hosts = select_hosts(c, settings, roles, settings.resque.roles)
    if not follow or hosts.local:
        # Here invoke itself passes Ctrl-C on to the local `tail`.
        with hosts:
            finish(hosts.each(one))
        return
    # Following several hosts: the per-host commands run in threads that never see Ctrl-C, so
    # the main thread waits for it and then closes the connections, which ends every `tail`.
    results: list[HostResult] = []
    runner = threading.Thread(target=lambda: results.extend(hosts.each(one)), daemon=True)
    runner.start()
    try:
        while runner.is_alive():
            runner.join(0.2)
    except KeyboardInterrupt:
        hosts.close()
        runner.join(5)
        return
    hosts.close()
    finish(results)
