"""The wrapper's pidfiles in pid_dir and Engine Yard's /tmp lock files, as read on a host: one
command and its parser (whether one is stale is the doctor's verdict)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..settings import Settings


@dataclass(frozen=True)
class PidFile:
    """A pidfile or lock as read on the host: the pid in it and that process, if alive."""

    kind: str  # pidfile | lock
    path: str
    pid: str  # the digits found in the file ("" when none)
    state: str = ""  # /proc/<pid>/stat state letter; "" when no such process
    cmdline: str = ""

    @property
    def alive(self) -> bool:
        return bool(self.state) and self.state not in ("Z", "X")


def pidfiles_command(settings: Settings) -> str:
    """One command listing pidfiles in pid_dir and Engine Yard's /tmp locks of our workers."""
    locks = " ".join(f"/tmp/resque_{w.index}.monit-lock" for w in settings.resque.workers)
    return (
        'show() { pid=$(head -c 32 "$2" 2>/dev/null | tr -dc 0-9); st=; cmd=; '
        'if [ -n "$pid" ] && [ -r /proc/$pid/stat ]; then '
        "st=$(sed 's/^.*) //' /proc/$pid/stat | cut -d' ' -f1); "
        "cmd=$(tr '\\000\\t\\n' '   ' < /proc/$pid/cmdline 2>/dev/null); fi; "
        'printf \'%s\\t%s\\t%s\\t%s\\t%s\\n\' "$1" "$2" "$pid" "$st" "$cmd"; }; '
        f'for f in {shlex.quote(settings.resque.pid_dir)}/*.pid; do [ -f "$f" ] && show pidfile "$f"; done; '
        f'for f in {locks}; do [ -f "$f" ] && show lock "$f"; done; true'
    )


def parse_pidfiles(text: str) -> list[PidFile]:
    """The records `pidfiles_command` printed (lines that do not fit are skipped)."""
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) == 5 and parts[0] in ("pidfile", "lock"):
            out.append(PidFile(*parts))
    return out
