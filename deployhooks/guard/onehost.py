"""The deploy guard: no deploy while a job runs, and nothing left stopped when it refuses.

Sequence on one host (decisions in `policy`, waits in `workers`):

1. ask monit for the group (refuses when the daemon is down or the group is unknown);
2. write the guard record, then pause (USR2) the monit-managed workers of this app;
3. wait until each paused worker shows `Paused` or is busy with a job; the listing that shows
   it is the first look for jobs (no worker that took the pause starts one after it);
4. busy workers: `on_busy: abort` -> resume what we paused and refuse (exit 1), naming each
   job; `on_busy: wait` -> wait up to `wait_timeout` for them to finish, showing progress;
5. no job running: `monit stop` the group and wait until every worker has exited.

The record (`shared/deployhooks/guard.json`) says what the guard paused and whether it stopped
the group, so `hooks/deploy_failed` can undo it on a host that passed while another refused.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass

from ..errors import CommandFailed, Refused
from ..remote import cancel
from ..remote.host import Host
from . import policy, workers
from .workers import Say, _quiet


def record_path(host: Host) -> str:
    return f"{host.settings.shared_path}/deployhooks/guard.json"


def read_record(host: Host) -> dict | None:
    """The guard's record on this host, or None. An unreadable record is an error, not None."""
    text = host.read_file(record_path(host))
    if text is None:
        return None
    try:
        record = json.loads(text)
        if not isinstance(record, dict):
            raise ValueError("not an object")
        return record
    except ValueError as exc:
        raise CommandFailed(
            f"{host.name}: the guard record {record_path(host)} is corrupt ({exc}); "
            f"check the workers with 'monit summary' and remove the file"
        ) from None


def write_record(host: Host, record: dict) -> None:
    host.write_file(record_path(host), json.dumps(record, sort_keys=True))


def clear_record(host: Host) -> None:
    host.remove_file(record_path(host))


def busy_lines(name: str, busy, now: float) -> str:
    return "\n".join(
        f"  {name}: {w.describe(now)}"
        + (
            " (app unknown: its working directory could not be read, so it is counted as this "
            "app's; run the hooks as the workers' user or root)"
            if w.cwd is None
            else ""
        )
        for w in busy
    )


@dataclass
class Paused:
    """What `pause` did on one host, for the phases after it."""

    host: str
    to_pause: list[int]
    record: dict
    previous: dict | None
    at: float = 0.0  # when the workers were told to pause (epoch): the queues' downtime starts
    # The app's busy workers in the listing that showed every pause taken, or None (a dry run
    # sends nothing and so sees nothing). That listing is as good as a later look: from it on a
    # paused worker takes no job, so the first look reuses it, one round trip less inside the
    # queues' downtime.
    busy: list | None = None


def pause(host: Host, release: str | None = None, say: Say = _quiet) -> Paused:
    """Phases 1-3 on one host: ask monit, write the record, pause (USR2) the monit-managed
    workers and wait until each shows it took the pause. On any failure (Ctrl-C included)
    what was paused is resumed and the record put back before it raises."""
    r = host.settings.resque
    group = r.monit_group
    services = host.monit.status(group)
    # monit learns a started worker's pid on its next cycle (30 s by default); the pidfile the
    # wrapper wrote names it at once. Without it, a worker started moments ago is not paused,
    # may take a job after the look, and the stop would end that job.
    managed = {s.pid for s in services.values() if s.pid} | _pidfile_pids(host)
    to_pause = policy.pids_to_pause(host.workers(unplaced=True), managed)
    # A record left by an earlier guard whose deploy failed without deploy_failed: its group is
    # still stopped, and that must stay on record until someone starts the workers again.
    previous = read_record(host)
    record = {
        "app": host.settings.app,
        "group": group,
        "host": host.name,
        "release": release,
        "paused": to_pause,
        "stopped": bool(previous and previous.get("stopped")),
        "at": int(time.time()),
    }
    # Written before the first signal, so that a guard killed half-way can still be undone.
    write_record(host, record)
    state = Paused(host.name, to_pause, record, previous, time.time())
    if host.dry:
        host.signal("USR2", to_pause)  # printed, not sent
        return state
    try:
        if to_pause:
            host.signal("USR2", to_pause)
            say(f"{host.name}: paused {len(to_pause)} worker(s) (USR2): they finish their job and take no new one")

        def acknowledged() -> bool:
            seen = host.workers(unplaced=True)
            state.busy = [w for w in seen if w.busy]
            return not policy.pause_acknowledged(seen, to_pause)

        if not workers.wait_until(acknowledged, r.pause_timeout):
            late = policy.pause_acknowledged(host.workers(unplaced=True), to_pause)
            raise CommandFailed(
                f"{host.name}: worker(s) {', '.join(map(str, late))} did not take "
                f"the pause (USR2) within {r.pause_timeout}s (resque.pause_timeout)"
            )
    except BaseException:
        unpause(host, state, say)
        raise
    return state


def _pidfile_pids(host: Host) -> set[int]:
    """The pids the wrapper's pidfiles name (`<pid_dir>/resque_N.pid`); a fact."""
    pid_dir = shlex.quote(host.settings.resque.pid_dir)
    text = host.run(f"cat {pid_dir}/resque_*.pid 2>/dev/null; true", warn=True).stdout
    return {int(w) for w in text.split() if w.isascii() and w.isdigit() and len(w) <= 10}


def busy_workers(host: Host) -> list:
    """This app's busy workers on the host, counting those that cannot be placed."""
    return [w for w in host.workers(unplaced=True) if w.busy]


def unpause(host: Host, state: Paused, say: Say = _quiet) -> None:
    """Resume what `pause` paused and put the record back as it was."""
    workers.resume(host, state.to_pause, say)
    if state.previous:
        write_record(host, state.previous)
    else:
        clear_record(host)


def stop_paused(host: Host, state: Paused, say: Say = _quiet) -> None:
    """Phase 5 on one host: stop the group (only idle, paused workers are left) and wait.
    If the stop fails, the group is started again and the workers resumed before it raises."""
    group = host.settings.resque.monit_group
    # On record before the stop is sent: a host cut off while monit stops its group must be
    # started again by deploy_failed, which starts only what the record says was stopped.
    state.record["stopped"] = True
    write_record(host, state.record)
    try:
        workers.stop_group(host, say)
    except BaseException:
        # Leave the record: if starting again fails too, deploy_failed can retry it.
        say(f"{host.name}: stopping failed; starting group {group} again")
        try:
            host.monit.action("start", group)
            workers.resume(host, state.to_pause, say)
        except Exception as again:  # the first failure is the one to report
            say(f"{host.name}: could not start group {group} again: {again}")
        raise


def guard(host: Host, release: str | None = None, say: Say = _quiet) -> None:
    """Run the guard on one host; returns when the group is stopped and no job runs.

    Raises `Refused` (exit 1) when jobs run, `CommandFailed` (exit 3) when monit or the host
    fails. On either, the workers the guard paused are resumed before it raises.
    """
    state = pause(host, release, say)
    try:
        _wait_for_jobs(host, say, first_look=state.busy)
    except BaseException:
        unpause(host, state, say)
        raise
    stop_paused(host, state, say)
    say(f"{host.name}: no job running; workers stopped. Go on.")


def refusal(
    busy: dict,
    on_busy: str,
    waited: float,
    wait_timeout: float,
    now: float,
    action: str = "deploy",
    *,
    dry: bool = False,
) -> str:
    """The refusal's text: every job still running, by host, and that nothing was stopped."""
    count = sum(len(b) for b in busy.values())
    why = f"waited {int(waited)}s (resque.wait_timeout is {wait_timeout:g}s) and " if on_busy == "wait" else ""
    lines = "\n".join(busy_lines(name, jobs, now) for name, jobs in busy.items() if jobs)
    where = next(iter(busy)) if len(busy) == 1 else "fleet"  # one host: its name, as before
    if action in ("deploy", "rollback"):
        again = f"{'Deploy' if action == 'deploy' else 'Roll back'} again when the jobs have finished" + (
            ", or set resque.on_busy: wait." if on_busy == "abort" else "."
        )
    else:
        again = f"Run {action} again when the jobs have finished, or add --force to end them now."
    verb = "roll back" if action == "rollback" else action
    if dry:
        return f"{where}: [dry run] would refuse to {verb}: {count} resque job(s) running now:\n{lines}"
    return (
        f"{where}: refusing to {verb}: {why}{count} resque job(s) still running:\n{lines}\n"
        f"  Nothing was stopped: the workers paused by the guard were resumed, so the old "
        f"code keeps serving the queues. {again}"
    )


def _wait_for_jobs(host: Host, say: Say, first_look: list | None = None) -> None:
    """Look until no job runs (`first_look`, when given, is the first look: see `Paused.busy`)."""
    r = host.settings.resque
    start = time.monotonic()
    last_report = -1e9
    while True:
        if first_look is not None:
            busy, first_look = first_look, None
        else:
            busy = busy_workers(host)
        waited = time.monotonic() - start
        verdict = policy.guard_verdict(busy, r.on_busy, waited, r.wait_timeout)
        if verdict == policy.PROCEED:
            return
        now = time.time()
        if verdict == policy.REFUSE:
            raise Refused(refusal({host.name: busy}, r.on_busy, waited, r.wait_timeout, now, dry=host.dry))
        if host.dry:
            host.would(
                f"wait up to {r.wait_timeout}s for {len(busy)} job(s) to finish:\n{busy_lines(host.name, busy, now)}"
            )
            return
        cancel.check(host.name)
        if waited - last_report >= 5:
            say(
                f"{host.name}: waiting for {len(busy)} job(s) to finish "
                f"({int(waited)}s of {r.wait_timeout}s):\n{busy_lines(host.name, busy, now)}"
            )
            last_report = waited
        time.sleep(workers.poll_delay(time.monotonic() - start))


def undo(host: Host, say: Say = _quiet) -> bool:
    """Start again what the guard stopped or paused on this host; False when there was nothing."""
    record = read_record(host)
    if record is None:
        say(f"{host.name}: no guard record: the guard stopped nothing here; nothing to undo")
        return False
    if record.get("stopped"):
        workers.start_group(host, say=say)
    workers.resume(host, record.get("paused") or [], say)
    clear_record(host)
    say(f"{host.name}: workers running again on the current release")
    return True
