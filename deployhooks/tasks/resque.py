"""`resque.*` tasks: look at and steer the workers of every host that runs them."""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
import threading
import time

from fabric import task
from invoke import Exit

from .. import status as status_mod
from .. import policy, workers
from ..errors import EXIT_REFUSED, CommandFailed
from ..fleet import HostResult
from ..host import Host
from ..settings import MAX_SECONDS
from .common import Hosts, finish, load_settings, on_hosts, say, seconds, whole_number

class HostRefused(CommandFailed):
    """A host that could not do what was asked without ending a job (exit 1, not 3)."""

    exit_code = EXIT_REFUSED


_ROLES = "comma-separated roles to act on (default: resque.roles from the config)"
_CONFIG = "path of deployhooks.yml (default config/deployhooks.yml or DEPLOYHOOKS_CONFIG)"


def _each(c, config, roles, fn) -> list[HostResult]:
    settings = load_settings(config)
    return on_hosts(c, settings, roles, settings.resque.roles, fn)


@task(default=True, help={"roles": _ROLES, "config": _CONFIG, "json": "print JSON for scripts",
                          "check": "also exit 1 when a worker is busy, stale or not monitored"})
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
    if json:
        print(jsonlib.dumps({"hosts": [r.host for r in results], "workers": status_mod.as_json(rows),
                             "unreachable": {r.host: r.error for r in results if r.code}}, indent=2))
    else:
        print(status_mod.render_table(rows))
        print("\n".join(status_mod.summary(rows, [r.host for r in results])))
    for r in results:
        if r.code:
            print(r.error, file=sys.stderr, flush=True)
    unreachable = any(r.code for r in results)
    problems = any(row.problems for row in rows)
    if unreachable:
        raise Exit(code=3)
    if check and problems:
        raise Exit(code=EXIT_REFUSED)


@task(help={"roles": _ROLES, "config": _CONFIG})
def stop(c, roles=None, config=None):
    """Stop the workers (monit stop, per stop: quit|term) and wait until they have exited."""
    finish(_each(c, config, roles, lambda host: workers.stop_group(host, say)))


@task(help={"roles": _ROLES, "config": _CONFIG})
def start(c, roles=None, config=None):
    """Start the workers and wait until monit and the process table agree they run."""
    finish(_each(c, config, roles, lambda host: workers.start_group(host, say=say)))


def _current_release(host: Host) -> str | None:
    path = host.run(f"readlink -f {shlex.quote(host.settings.current_path)}", warn=True).stdout.strip()
    prefix = host.settings.releases_path + "/"
    return path[len(prefix):].split("/")[0] if path.startswith(prefix) else None


@task(help={"roles": _ROLES, "config": _CONFIG})
def restart(c, roles=None, config=None):
    """Restart the workers and wait until all run new processes from the current release."""
    def one(host: Host):
        workers.start_group(host, restart=True, release=_current_release(host), say=say)
    finish(_each(c, config, roles, one))


def _pause(host: Host) -> list[int]:
    pids = [w.pid for w in host.workers() if w.state != "paused"]
    host.signal("USR2", pids)
    if not workers.wait_until(lambda: not policy.pause_acknowledged(host.workers(), pids),
                              host.settings.resque.pause_timeout):
        late = policy.pause_acknowledged(host.workers(), pids)
        raise CommandFailed(f"{host.name}: worker(s) {', '.join(map(str, late))} did not take the "
                            f"pause within {host.settings.resque.pause_timeout}s")
    say(f"{host.name}: paused {len(pids)} worker(s): they finish their job and take no new one")
    return pids


@task(help={"roles": _ROLES, "config": _CONFIG})
def pause(c, roles=None, config=None):
    """Pause the workers (USR2): each finishes its job and takes no new one."""
    finish(_each(c, config, roles, _pause))


@task(help={"roles": _ROLES, "config": _CONFIG})
def resume(c, roles=None, config=None):
    """Resume paused workers (CONT)."""
    def one(host: Host):
        pids = [w.pid for w in host.workers() if w.state == "paused"]
        workers.resume(host, pids, say)
        if not pids:
            say(f"{host.name}: no paused worker")
    finish(_each(c, config, roles, one))


@task(help={"roles": _ROLES, "config": _CONFIG,
            "deadline": f"seconds to wait for jobs in flight (default resque.wait_timeout, "
                        f"at most {MAX_SECONDS})"})
def drain(c, roles=None, deadline=None, config=None):
    """Pause, wait for every job in flight to finish, then stop; resume and exit 1 on the deadline.

    The whole fleet drains together: workers stop only once no host has a job left, and on
    the deadline every host is resumed, so no host is left stopped while others serve.
    """
    limit = None if deadline is None else seconds("--deadline", deadline, MAX_SECONDS)
    settings = load_settings(config)
    limit = settings.resque.wait_timeout if limit is None else limit
    started = time.monotonic()
    with Hosts(c, settings, roles, settings.resque.roles) as hosts:
        paused = hosts.each(_pause)
        pids = {r.host: r.value for r in paused if not r.code}

        def wait_idle(host: Host):
            state = {}

            def idle() -> bool:
                state["busy"] = [w for w in host.workers() if w.busy]
                return not state["busy"]

            def tick(t: float) -> None:
                say(f"{host.name}: {len(state['busy'])} job(s) in flight after {int(t)}s: "
                    + "; ".join(w.describe(time.time()) for w in state["busy"]))

            remaining = max(0.0, limit - (time.monotonic() - started))
            if not workers.wait_until(idle, remaining, tick=tick):
                raise HostRefused(f"{host.name}: {len(state['busy'])} job(s) still running after "
                                  f"{int(limit)}s: " + "; ".join(
                                      w.describe(time.time()) for w in state["busy"]))

        waited = [r for r in paused if r.code] + hosts.each(wait_idle, list(pids))
        if any(r.code for r in waited):
            hosts.each(lambda host: workers.resume(host, pids[host.name], say), list(pids))
            say("drain stopped: every paused worker was resumed")
            finish(waited)
        finish(hosts.each(lambda host: workers.stop_group(host, say)))


# The most lines `logs` prints per worker log: enough for any look back, and a bound on what a
# typo (an extra digit or two) can pour out of every host at once.
MAX_LOG_LINES = 100000


@task(help={"roles": _ROLES, "config": _CONFIG,
            "lines": f"lines per worker log (default 20, at most {MAX_LOG_LINES})",
            "follow": "keep printing new lines (Ctrl-C to stop)"})
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
        host.c.run(cmd, hide=False, warn=True, in_stream=False, out_stream=Prefixed(host.name),
                   err_stream=Prefixed(host.name), pty=bool(follow) and host.remote)

    settings = load_settings(config)
    hosts = Hosts(c, settings, roles, settings.resque.roles)
    if not follow or hosts.local:
        # Here invoke itself passes Ctrl-C on to the local `tail`.
        with hosts:
            finish(hosts.each(one))
        return
    # Following several hosts: the per-host commands run in threads that never see Ctrl-C, so
    # the main thread waits for it and then closes the connections, which ends every `tail`.
    results = []
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
