"""The per-app deploy lock: `<shared>/deployhooks/deploy.lock`, a folder made with `mkdir`.

mkdir is atomic, so of two deploys (or a deploy and a `resque.restart`) exactly one takes a
host's lock; its `info` file says who holds it, since when and for what, so a refusal can name
the holder and `fab deploy.unlock` can ask before releasing it (Capistrano's deploy lock, made
atomic).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import shlex
import socket
import time
from typing import Any, Callable, Iterator, Sequence

from ..errors import EXIT_REFUSED, CommandFailed, Refused
from ..remote.host import Host
from ..settings import Settings

# run(fn, names) -> one result per host with .host, .code and .error (remote.fleet.HostResult)
Run = Callable[[Callable[[Host], Any], Sequence[str]], list]
Say = Callable[[str], None]

q = shlex.quote


def lock_path(settings: Settings) -> str:
    return f"{settings.shared_path}/deployhooks/deploy.lock"


def lock_info(what: str) -> str:
    """The info file's JSON: who takes the lock, when, and for what (a release or a task)."""
    return json.dumps(
        {
            "by": f"{getpass.getuser()}@{socket.gethostname()}",
            "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "release": what,
        }
    )


def take_command(settings: Settings, info: str) -> str:
    """Shell text that takes the lock (exit 0) or fails because it is held."""
    path = lock_path(settings)
    return (
        f"mkdir -p {q(settings.shared_path + '/deployhooks')} && mkdir {q(path)} "
        f"&& printf %s {q(info)} > {q(path + '/info')}"
    )


def lock_fields(content: str | None) -> tuple[str, str, str] | None:
    """(by, since, release) from a lock's info file as `lock_info` writes it, or None for
    anything else: another tool's file, a partial write, or an info file not yet written
    (the lock folder is made first)."""
    try:
        who = json.loads(content) if content else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(who, dict):
        return None
    fields = (who.get("by"), who.get("since"), who.get("release", "?"))
    # Printable single-line strings only: they go into a one-line message.
    if not all(isinstance(f, str) and f and len(f) <= 200 and f.isprintable() for f in fields):
        return None
    return fields  # type: ignore[return-value]  # checked to be three str just above


def holder_text(app: str, content: str | None) -> str:
    """Who holds the deploy lock, for a refusal: 'another deploy of <app> holds the lock
    (by, since ..., release ...)' when the info file is ours, else 'deploy lock held by an
    unknown holder (file content ...)', the content shortened to one line."""
    fields = lock_fields(content)
    if fields is not None:
        return f"another deploy of {app} holds the lock ({fields[0]}, since {fields[1]}, release {fields[2]})"
    shown = "none: no info file" if content is None else repr(content if len(content) <= 80 else content[:80] + "...")
    return f"deploy lock held by an unknown holder (file content {shown})"


def lock_status(host: Host) -> str | None:
    """Who holds the deploy lock on the host ('by, since ..., release ...'), or None if free."""
    path = lock_path(host.settings)
    if host.run(f"test -e {q(path)}", warn=True).exited != 0:
        return None
    content = host.read_file(path + "/info")
    fields = lock_fields(content)
    if fields is None:
        return f"an unknown holder (info {content!r:.80})" if content else "an unknown holder"
    return f"{fields[0]}, since {fields[1]}, release {fields[2]}"


def unlock(host: Host) -> None:
    host.run(f"rm -rf {q(lock_path(host.settings))}", change=True)


def take_lock(host: Host, what: str) -> None:
    """The per-app deploy lock for `what` (e.g. resque.restart), or Refused naming its holder:
    a deploy's guard and a restart's guard on the same hosts would undo each other's pauses
    and records, and one's stop could end a job the other's look had not seen."""
    s = host.settings
    r = host.run(take_command(s, lock_info(what)), warn=True, change=True)
    if r.exited != 0:
        holder = lock_status(host) or "another run"
        raise Refused(
            f"{host.name}: another deploy of {s.app} holds the lock ({holder}); "
            f"{what} waits for it: run it again when that is done (fab deploy.lock-status)"
        )


@contextlib.contextmanager
def held(
    run: Run, names: Sequence[str], settings: Settings, what: str, warn: Say, *, dry: bool = False
) -> Iterator[None]:
    """Hold the deploy lock on every host of `names` for `what` (taken host after host in one
    order, as a deploy takes it, so it never runs under a deploy, a rollback or another task).

    A host that refuses raises `Refused` naming the holder, after the hosts taken so far are
    released. On the way out the lock is removed; a lock that stays is named with its repair:
    through `warn` when another failure is already on its way out, else as `CommandFailed`.
    A dry run takes no lock."""
    taken: list[str] = []
    try:
        for name in [] if dry else sorted(names):
            [result] = run(lambda host: take_lock(host, what), [name])
            if result.code:
                raise (Refused if result.code == EXIT_REFUSED else CommandFailed)(result.error)
            taken.append(name)
        yield
    except BaseException:
        # The failure in flight is the one to report; a lock that stays is said, not raised.
        for line in _release(run, taken, settings):
            warn(line)
        raise
    stuck = _release(run, taken, settings)
    if stuck:
        raise CommandFailed("\n".join(stuck))


def _release(run: Run, taken: list[str], settings: Settings) -> list[str]:
    """Remove the lock on `taken`; a line per host where it stays, with its error and repair."""
    path = lock_path(settings)
    stuck = [r for r in (run(unlock, taken) if taken else []) if r.code]
    return [
        f"{r.error}\n{r.host}: the deploy lock {path} is still there: release it with "
        f"fab deploy.unlock (or rm -rf {path} on {r.host})"
        for r in stuck
    ]
