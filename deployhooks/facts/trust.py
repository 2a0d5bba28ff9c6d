"""Is a path on a host safe for root to run or to trust? A fact (one command) and a pure verdict.

monit runs the wrapper named in the monitrc as root. If the deploy user (or anyone but root) can
change that file, the interpreter its ``#!`` line names, or any folder on the way to either
(rename a parent, replace a link), they choose what root runs. The same holds for the monitrc
itself and for the wrapper's ``pid_dir``. A path is trusted when every file and folder met while
resolving it is owned by root and not writable by group or others; an ancestor folder that is
world-writable but sticky (``/tmp``) is allowed, since nobody else can rename or remove root's
entries in it. Symlinks are judged by the folder that holds them (their own mode means nothing
on Linux) and by their target's chain.
"""

from __future__ import annotations

import shlex
import stat
from dataclasses import dataclass

__all__ = ["chain_command", "wrapper_chain_command", "parse_chain", "problems", "PathEntry"]

# stat(1) prints owner uid, raw mode in hex, and the name; a name is printed last so spaces in it
# cannot shift the fields.
_CHAIN_FN = (
    "chain() { p=$1; while :; do "
    "stat -c '%u %f %n' -- \"$p\" 2>/dev/null || printf 'missing - %s\\n' \"$p\"; "
    '[ "$p" = / ] && return; p=$(dirname -- "$p"); done; }; '
    'both() { echo "@ $1 $2"; chain "$2"; r=$(readlink -m -- "$2") && [ "$r" != "$2" ] && chain "$r"; '
    'echo "@ end"; }; '
)


@dataclass(frozen=True)
class PathEntry:
    """One file or folder met while resolving a checked path."""

    uid: int | None  # None: missing
    mode: int
    path: str


def chain_command(paths: dict[str, str]) -> str:
    """One shell command printing, for each `label -> path`, every entry of the path's chain
    (itself and each parent, as given and resolved), framed by `@ <label> <path>` / `@ end`."""
    body = "".join(f"both {shlex.quote(label)} {shlex.quote(path)}; " for label, path in paths.items())
    return _CHAIN_FN + body + "true"


def wrapper_chain_command(wrapper: str, others: dict[str, str] | None = None) -> str:
    """Like :func:`chain_command` for the wrapper and ``others``, plus the interpreter named
    by the wrapper's ``#!`` line (label ``interpreter``) when it has one."""
    q = shlex.quote(wrapper)
    interpreter = (
        f"i=$(head -n1 -- {q} 2>/dev/null | tr -d '\\000' | sed -n 's/^#![[:space:]]*\\([^[:space:]]*\\).*/\\1/p'); "
        '[ -n "$i" ] && both interpreter "$i"; '
    )
    body = "".join(f"both {shlex.quote(label)} {shlex.quote(path)}; " for label, path in (others or {}).items())
    return _CHAIN_FN + f"both wrapper {q}; " + interpreter + body + "true"


UNREADABLE = -1  # the uid of an entry standing for output that is no entry: never root's


def parse_chain(text: str) -> dict[str, tuple[str, list[PathEntry]]]:
    """`label -> (path, entries)` from a chain command's output.

    Names are printed as they are, so a name with a newline in it (a link's target is anyone's
    choice who can write the link's folder) could print lines of its own: a second section for
    a label, an early `@ end`, entries that are not stat lines. Such output never replaces or
    cuts short what was printed: it adds an entry with uid `UNREADABLE` to the label it came
    in, which `problems` refuses."""
    result: dict[str, tuple[str, list[PathEntry]]] = {}
    label: str | None = None
    last: str | None = None

    def unreadable(where: str | None, line: str) -> None:
        if where is not None:
            result[where][1].append(PathEntry(UNREADABLE, 0, line[:120]))

    for line in text.splitlines():
        if line.startswith("@ "):
            parts = line[2:].split(" ", 1)
            if parts[0] == "end":
                last, label = label or last, None
                continue
            if parts[0] in result:
                unreadable(parts[0], line)  # a second section for a label: forged
                label = None
                last = parts[0]
                continue
            label = last = parts[0]
            result[label] = (parts[1] if len(parts) > 1 else "", [])
            continue
        if label is None:
            if line.strip():
                unreadable(last, line)  # after an `@ end`: a section cut short, or forged
            continue
        parts = line.split(" ", 2)
        if len(parts) != 3:
            unreadable(label, line)
            continue
        if parts[0] == "missing":
            result[label][1].append(PathEntry(None, 0, parts[2]))
            continue
        try:
            result[label][1].append(PathEntry(int(parts[0]), int(parts[1], 16), parts[2]))
        except ValueError:
            unreadable(label, line)
    return result


def problems(path: str, entries: list[PathEntry], *, kind: str = "file") -> list[str]:
    """Why root should not trust `path` (empty when it may), from its chain's entries.

    `kind` is what `path` itself must be: "file" (the wrapper, an interpreter, the monitrc) or
    "folder" (pid_dir). Missing entries are reported only for the path itself.
    """
    found: list[str] = []
    if not entries:
        return [f"{path}: could not be inspected"]
    for i, entry in enumerate(entries):
        # Each chain runs from the path up to "/": the entry after a "/" starts the next one.
        is_self = i == 0 or entries[i - 1].path == "/"
        if entry.uid == UNREADABLE:
            found.append(
                f"{path}: its check printed a line that is no entry ({entry.path!r}): a name with a "
                f"newline on the way to it?"
            )
            continue
        if entry.uid is None:
            # A missing pid_dir is made by the wrapper, as root, under the folders checked here.
            if entry.path == path and kind == "file":
                found.append(f"{path} does not exist")
            continue
        mode = entry.mode
        if stat.S_ISLNK(mode):
            continue
        if entry.uid != 0:
            found.append(f"{entry.path} is owned by uid {entry.uid}, not root")
        if mode & 0o022 and not (stat.S_ISDIR(mode) and mode & stat.S_ISVTX and not is_self):
            found.append(f"{entry.path} is writable by group or others (mode {stat.S_IMODE(mode):o})")
        if is_self and kind == "folder" and not stat.S_ISDIR(mode):
            found.append(f"{path} is not a folder")
    return list(dict.fromkeys(found))
