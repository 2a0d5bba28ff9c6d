"""One host as the rest of the toolkit sees it: a context plus the facts read through it.

A `Host` wraps an invoke `Context` (code running on the server itself: the hooks) or a fabric
`Connection` (code running on a workstation). Every fact and action goes through `run()`, so
the same functions serve both; the single difference, reading processes with psutil locally
and with one `ps` command remotely, is kept here.
"""

from __future__ import annotations

import posixpath
import shlex
import socket
from typing import Callable, Iterable

from ..errors import CommandFailed
from ..facts import processes
from ..facts.monit import Monit
from ..facts.processes import WorkerProcess
from ..facts.shell import as_root, with_sudo
from ..settings import Settings


def _is_remote(c) -> bool:
    try:
        from fabric import Connection
    except ImportError:  # pragma: no cover - fabric is a dependency
        return False
    return isinstance(c, Connection)


class DryResult:
    """What a withheld change returns under a dry run: success, no output."""

    exited = 0
    stdout = ""
    stderr = ""
    ok = True


def _print(line: str) -> None:
    print(line, flush=True)


class Host:
    """A host, its name for messages, and the app settings that apply to it.

    Every command is a *fact* (read-only: always run) or a *change* (`run(..., change=True)`,
    `signal`, `write_file`, `remove_file`, monit actions). With `dry`, changes are printed as
    `<host>: [dry run] would ...` instead of run, so a dry run is the same code path with the
    changes withheld, and what it shows (the guard's verdict, the releases) is read for real.
    """

    def __init__(
        self,
        c,
        settings: Settings,
        name: str | None = None,
        *,
        dry: bool = False,
        say: Callable[[str], None] | None = None,
    ):
        self.c = c
        self.settings = settings
        self.remote = _is_remote(c)
        self.name = name or (getattr(c, "original_host", None) if self.remote else None) or socket.gethostname()
        self.dry = dry
        self.say = say or _print
        self.monit = Monit.of(settings, c, host=self.name, would=self.would if dry else None)

    def would(self, what: str) -> None:
        """Say what a dry run withholds."""
        self.say(f"{self.name}: [dry run] would {what}")

    def run(self, command: str, *, warn: bool = False, timeout: float | None = None, change: bool = False):
        """Run a shell command; a failure raises `CommandFailed` naming the host and command.
        `change`: the command changes the host; under a dry run it is printed, not run."""
        if change and self.dry:
            self.would(f"run: {command}")
            return DryResult()
        result = self.c.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
        if result.exited != 0 and not warn:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise CommandFailed(
                f"{self.name}: '{command}' failed (exit {result.exited})" + (f": {detail[-1]}" if detail else "")
            )
        return result

    def processes(self) -> list[processes.RawProcess]:
        """Raw process rows that mention resque: psutil here, or one `ps` over SSH."""
        root = self.settings.deploy_to
        try:
            return processes.remote_processes(self.c, root) if self.remote else processes.local_processes(root)
        except CommandFailed as exc:  # a listing cut short or forged: say which host
            raise CommandFailed(f"{self.name}: {exc}") from None

    def all_workers(self) -> list[WorkerProcess]:
        """Every resque worker on the host, whatever its app (for "has this pid exited?")."""
        return processes.workers_from(self.processes(), {self.settings.app: self.settings.deploy_to})

    def workers(self, *, unplaced: bool = False) -> list[WorkerProcess]:
        """This app's resque workers on the host (other apps' workers are left out).

        With `unplaced`, also the workers whose working directory could not be read (another
        user's process, or a host whose find lacks -printf): they may be this app's, and the
        guard must not take a job it cannot place for someone else's.
        """
        return [w for w in self.all_workers() if w.app == self.settings.app or (unplaced and w.cwd is None)]

    def signal(self, signame: str, pids: Iterable[int]) -> None:
        """Send a signal to pids; pids that have exited meanwhile are not an error.

        The workers run as `resque.user`, so a login that is that user (or root) signals them
        with a plain `kill`: a deploy user's sudo needs no rule for it. With `resque.sudo` and any
        other login, `sudo -n -u <resque.user> kill`: the narrowest rule that reaches them, never
        a kill as root that could signal any process (`sudo -n kill` only when resque.user is unset).
        """
        import os
        import pwd

        pids = sorted(set(pids))
        if not pids:
            return
        if self.dry:
            self.would(f"send {signame} to pid(s) {', '.join(map(str, pids))}")
            return
        r = self.settings.resque
        if self.remote:
            login = self.c.user
        else:
            login = "root" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if not (r.sudo and login not in ("root", r.user)):
            # One kill per pid, so one pid that exited in between does not hide the others' result.
            self.run(" ; ".join(f"kill -{signame} {int(p)} 2>/dev/null" for p in pids) + " ; true")
            return
        kills = (shlex.join(with_sudo(["kill", f"-{signame}", str(int(p))], user=r.user)) for p in pids)
        out = self.run(" ; ".join(f"{kill} 2>&1" for kill in kills) + " ; true").stdout
        # A pid gone meanwhile is fine; sudo refusing is not, and would otherwise only show up
        # later as workers that "did not take the pause".
        if "a password is required" in out or "a terminal is required" in out:
            target = r.user or "root"
            raise CommandFailed(
                f"{self.name}: sudo -n refused 'kill -{signame}' as {target}: allow "
                f"'{login} ALL=({target}) NOPASSWD: /usr/bin/kill' in sudoers, or "
                f"log in as the workers' user"
            )

    def read_file(self, path: str) -> str | None:
        """A file's text, or None when it does not exist."""
        q = shlex.quote(path)
        result = self.run(f"if [ -e {q} ]; then cat {q}; else echo __deployhooks_absent__ >&2; exit 4; fi", warn=True)
        if result.exited == 4 and "__deployhooks_absent__" in result.stderr:
            return None
        if result.exited != 0:
            raise CommandFailed(f"{self.name}: cannot read {path}: {result.stderr.strip()}")
        return result.stdout

    def write_file(self, path: str, text: str, *, sudo: bool = False, mode: int = 0o644) -> None:
        """Replace `path` with `text` atomically, creating its folder; `sudo`: through `sudo -n`.

        The temporary file is made by `mktemp` (O_EXCL, so no planted link is written through)
        in the target's folder and renamed over it. When the writer is root and the nearest
        existing folder on the way is someone else's (the deploy user's `shared/`), the whole
        write runs with that owner's uid and gid (`setpriv`): root then does nothing there the
        owner could not, and a link the owner planted leads nowhere they could not write.
        """
        folder = posixpath.dirname(path) or "/"
        name = posixpath.basename(path)
        writer = (
            f'mkdir -p -- "$1" && t=$(mktemp -- "$1/.$3.XXXXXX") && cat > "$t" && '
            f'chmod {mode:o} "$t" && mv -f -- "$t" "$2"'
        )
        script = (
            f'd={shlex.quote(folder)}; a=$d; while [ ! -e "$a" ] && [ ! -L "$a" ]; do a=$(dirname -- "$a"); done; '
            f"o=$(stat -c '%u %g' -- \"$a\") || exit 1; set -- ${{o% *}} ${{o#* }}; "
            f'if [ "$(id -u)" = 0 ] && [ "$1" != 0 ]; then '
            f"set -- setpriv --reuid=$1 --regid=$2 --clear-groups --; else set --; fi; "
            f'printf %s {shlex.quote(text)} | "$@" sh -c {shlex.quote(writer)} sh "$d" '
            f"{shlex.quote(path)} {shlex.quote(name)}"
        )
        command = as_root(script, sudo)
        if self.dry:
            self.would(f"write {path} ({len(text.encode())} bytes)")
            return
        result = self.run(command, warn=True)
        if result.exited != 0:
            why = (result.stderr or result.stdout).strip().splitlines()
            raise CommandFailed(f"{self.name}: cannot write {path}: {why[-1] if why else f'exit {result.exited}'}")

    def remove_file(self, path: str) -> None:
        self.run(f"rm -f {shlex.quote(path)}", change=True)
