"""The resque workers on a host, as records, from either of two adapters that must agree.

- `local_processes()` reads the local process table with psutil (hooks run on the server).
- `ps_command()` + `parse_listing()` do the same over any context in one round trip (`ps` and
  `/proc/<pid>/cwd`), so a Fabric connection sees what psutil would see on that host. Paths
  come back NUL-separated, so no folder's name can add or move a line of the listing.

Both produce `RawProcess` rows; `workers_from()` turns rows into `WorkerProcess` records. Only
`workers_from()` decides anything, so both adapters are held to the same rules.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from typing import Iterable, Mapping, TypedDict

from ..errors import CommandFailed
from . import proclines
from .proclines import FORKED, IDLE, PAUSED, PROCESSING, STARTING

BUSY = "busy"
DELETED_SUFFIX = " (deleted)"


@dataclass(frozen=True)
class RawProcess:
    """One process as an adapter saw it; `cwd` is None when it could not be read."""

    pid: int
    ppid: int
    rss_kb: int
    cwd: str | None
    title: str


@dataclass(frozen=True)
class WorkerProcess:
    """A resque worker as seen from outside.

    state is starting / idle / paused / busy. For a busy worker, `queue`, `job_class`,
    `busy_since` (epoch) and `job_pid` describe the job. `app` and `release` come from the
    worker's working directory: `<deploy_to>/releases/<release>`; `release_deleted` is True
    when that directory no longer exists (the seed's `NameError: uninitialized constant`).
    """

    pid: int
    ppid: int
    state: str
    title: str
    version: str | None = None
    queues: tuple[str, ...] = ()
    queue: str | None = None
    job_class: str | None = None
    busy_since: int | None = None
    job_pid: int | None = None
    rss_kb: int = 0
    cwd: str | None = None
    app: str | None = None
    release: str | None = None
    release_deleted: bool = False

    @property
    def busy(self) -> bool:
        return self.state == BUSY

    def describe(self, now: float | None = None) -> str:
        """One line for a person: pid, state, and for a busy worker queue, class and age."""
        if not self.busy:
            return f"pid {self.pid} {self.state}"
        job = f"{self.queue or '?'} [{self.job_class or 'unknown class'}]"
        age = ""
        if now is not None and self.busy_since is not None:
            age = f", busy for {max(0, int(now - self.busy_since))}s"
        return f"pid {self.pid} busy on {job}{age}"


def release_of(cwd: str | None, apps: Mapping[str, str]) -> tuple[str | None, str | None, bool]:
    """(app, release, deleted) for a working directory, given app name -> deploy_to.

    A worker started from `<deploy_to>/current` has its cwd resolved by the kernel to the
    release it pointed at then, which is exactly what tells a stale worker from a fresh one.
    """
    if not cwd:
        return None, None, False
    deleted = cwd.endswith(DELETED_SUFFIX)
    path = cwd[: -len(DELETED_SUFFIX)] if deleted else cwd
    for app, deploy_to in apps.items():
        root = deploy_to.rstrip("/") + "/"
        if not path.startswith(root):
            continue
        rest = path[len(root) :].split("/")
        if rest[0] == "releases" and len(rest) > 1 and rest[1]:
            return app, rest[1], deleted
        if rest[0] == "current":
            return app, "current", deleted
        return app, None, deleted
    return None, None, deleted


class _Common(TypedDict):
    """The fields of a `WorkerProcess` that `workers_from()` sets the same way for every state."""

    pid: int
    ppid: int
    title: str
    version: str | None
    rss_kb: int
    cwd: str | None
    app: str | None
    release: str | None
    release_deleted: bool


def workers_from(rows: Iterable[RawProcess], apps: Mapping[str, str]) -> list[WorkerProcess]:
    """Worker records from raw rows: job children are folded into their parent worker.

    A `Processing` process whose parent is a worker is that worker's job child (resque 1.24+
    titles the parent `Processing` for an instant before it forks, so the parent's own title
    is not enough). A `Processing` process with no worker parent is a non-forking worker, or a
    job child orphaned by a KILLed parent; either way a job is running there, so it is busy.
    """
    seen = {r.pid: (r, proclines.parse(r.title)) for r in rows}
    parsed = {pid: (r, p) for pid, (r, p) in seen.items() if p is not None}
    children: dict[int, RawProcess] = {}
    for pid, (row, p) in parsed.items():
        parent = parsed.get(row.ppid)
        if p.kind == PROCESSING and parent is not None and parent[1].kind in (FORKED, PROCESSING):
            children[row.ppid] = row
    child_pids = {c.pid for c in children.values()}
    workers = []
    for pid, (row, p) in sorted(parsed.items()):
        if pid in child_pids:
            continue
        child = children.get(pid)
        child_line = proclines.parse(child.title) if child else None
        app, release, deleted = release_of(row.cwd, apps)
        common = _Common(
            pid=pid,
            ppid=row.ppid,
            title=row.title,
            version=p.version,
            rss_kb=row.rss_kb + (child.rss_kb if child else 0),
            cwd=row.cwd,
            app=app,
            release=release,
            release_deleted=deleted,
        )
        if p.kind in (FORKED, PROCESSING):
            info = child_line if child_line is not None else p
            workers.append(
                WorkerProcess(
                    state=BUSY,
                    queue=info.queue,
                    job_class=info.job_class,
                    busy_since=p.since if p.since is not None else info.since,
                    job_pid=child.pid if child else p.child_pid,
                    **common,
                )
            )
        elif p.kind == IDLE:
            workers.append(WorkerProcess(state="idle", queues=p.queues or (), **common))
        elif p.kind == PAUSED:
            workers.append(WorkerProcess(state="paused", **common))
        elif p.kind == STARTING:
            workers.append(WorkerProcess(state="starting", **common))
    return workers


def normalize_title(title: str) -> str:
    """Collapse whitespace: ps shows NUL padding and newlines as spaces, psutil splits on them."""
    return " ".join(title.split())


# --- adapter 1: psutil, for code running on the host itself -------------------------------------


def local_processes(root: str | None = None) -> list[RawProcess]:
    """Rows for every local process whose title mentions resque (psutil); with `root`, cwds
    under the folder it resolves to are told under `root` (see `rebase`)."""
    if root:
        return rebase(local_processes(), os.path.realpath(root), root)
    import psutil

    rows = []
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "memory_info", "status"]):
        info = proc.info
        title = " ".join(info["cmdline"] or ()).strip()
        if "resque" not in title or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            # The raw link, as `readlink` shows it: psutil.cwd() strips the kernel's
            # " (deleted)" mark, and a path check from here would misjudge processes that live
            # in another mount namespace. One link per call, so a newline in it is just a
            # character: nothing here or downstream splits a cwd into lines.
            cwd = os.readlink(f"/proc/{info['pid']}/cwd")
        except OSError:
            cwd = None
        rss = (info["memory_info"].rss // 1024) if info["memory_info"] else 0
        rows.append(RawProcess(info["pid"], info["ppid"], rss, cwd, normalize_title(title)))
    return rows


# --- adapter 2: one shell command, for any invoke/fabric context --------------------------------

# One round trip, three programs whatever the number of workers: ps for the table; awk to keep
# the lines that mention resque and are not zombies (state Z, left out as on psutil's side),
# and, once at the end, a single GNU find that prints the working directory link of every kept
# pid (and the one extra link a caller asks for). The earlier form ran a subshell and readlink
# per process, which cost more than ps itself (bench/status.py). `[r]esque` keeps awk from
# matching its own command line; fflush() puts the rows before what the END block prints.
# With a root, the same sh also prints where that folder really is (`cd -P` sets $PWD to it):
# the kernel reports a worker's cwd fully resolved, and deploy_to is often a symlink. The link
# and the root travel in the environment, so no quoting of them reaches awk or the shell.
#
# Paths are anyone's to name: a folder called "x\n/proc/<pid>/cwd\t/elsewhere" would add a
# line that moves another process. So after the mark every record ends with NUL, the one byte
# no path holds, and an end record closes the listing; ps itself prints no newline inside a
# row (procps shows control characters in args as '?' or a space).
LINKS_MARK = "__deployhooks_links__"
LINKS_END = "__deployhooks_end__"
_AWK_PROGRAM = r"""$4 !~ /^Z/ && /[r]esque/ { print; if ($1 ~ /^[0-9]+$/) p = p " /proc/" $1 "/cwd" }
END {
  print "@MARK@"; fflush(); c = ""; x = ENVIRON["DEPLOYHOOKS_LINK"] != ""
  if (p != "" || x) c = "find" p (x ? " \"$DEPLOYHOOKS_LINK\"" : "") " -maxdepth 0 -printf \"%p\\t%l\\0\" 2>/dev/null; "
  if (ENVIRON["DEPLOYHOOKS_ROOT"] != "") c = c "cd -P \"$DEPLOYHOOKS_ROOT\" 2>/dev/null && printf \"%s\\t%s\\0\" \"$DEPLOYHOOKS_ROOT\" \"$PWD\"; "
  system(c "printf \"@END@\\0\"")
}""".replace("@MARK@", LINKS_MARK).replace("@END@", LINKS_END)


def ps_command(link: str | None = None, root: str | None = None) -> str:
    """The process listing command; with `link`, also that symlink's raw target, and with
    `root`, where that folder resolves to (both in `parse_listing`'s links)."""
    env = "".join(
        f"{name}={shlex.quote(value)} "
        for name, value in (("DEPLOYHOOKS_LINK", link), ("DEPLOYHOOKS_ROOT", root))
        if value
    )
    return f"ps axww -o pid=,ppid=,rss=,stat=,args= | {env}awk '{_AWK_PROGRAM}'"


PS_COMMAND = ps_command()


@dataclass(frozen=True)
class Listing:
    """`ps_command`'s output, parsed: the rows, `path -> raw link target` for every record
    (cwds, the asked link, the asked root), and `rest`, whatever the same output carried
    after the listing (`status_command` puts monit's answer there)."""

    rows: list[RawProcess]
    links: dict[str, str]
    rest: str


def _split_at_mark(text: str) -> tuple[str, str]:
    """(ps rows, what follows the mark line). The mark counts only as a whole line: the shell
    running the command is itself a row when its command line mentions resque (a monit group
    `<app>_resque`), and that row contains the mark's text. Rows come before any record, so
    the first whole-line mark is the real one."""
    at = ("\n" + text).find("\n" + LINKS_MARK + "\n")
    if at < 0:
        raise CommandFailed("the process listing has no links mark: ps or awk did not run")
    return text[:at], text[at + len(LINKS_MARK) + 1 :]


def _split_records(text: str) -> tuple[list[str], str]:
    """(NUL-terminated records up to the end record, what follows it). No record can be the
    end record by accident: a record starts with its path, /proc/<pid>/cwd or a caller's."""
    records: list[str] = []
    start = 0
    while True:
        stop = text.find("\0", start)
        if stop < 0:
            raise CommandFailed("the process listing was cut short (no end record)")
        record = text[start:stop]
        start = stop + 1
        if record == LINKS_END:
            return records, text[start:]
        records.append(record)


def _links(records: list[str]) -> dict[str, str]:
    """`path -> target` from `path<TAB>target` records. Only the first tab separates: the path
    is /proc/<pid>/cwd or a configured path, a target may hold tabs. A path seen twice is an
    error: letting the last record win is how a forged record would move a worker."""
    links: dict[str, str] = {}
    for record in records:
        if "\t" not in record:
            continue
        path, target = record.split("\t", 1)
        if path in links:
            raise CommandFailed(f"the process listing gives {path} twice")
        links[path] = target
    return links


def _rows(ps_text: str, links: Mapping[str, str]) -> list[RawProcess]:
    """Rows from the ps lines (lines that do not fit are skipped); a pid without a cwd record,
    or with an empty one (unreadable), has cwd None. A pid seen twice is an error."""
    rows: dict[int, RawProcess] = {}
    for line in ps_text.split("\n"):
        parts = line.split(None, 4)
        if len(parts) != 5 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        pid, ppid, rss, _stat, title = parts
        if int(pid) in rows:
            raise CommandFailed(f"the process listing shows pid {int(pid)} twice")
        rows[int(pid)] = RawProcess(
            int(pid),
            int(ppid),
            int(rss) if rss.isdigit() else 0,
            links.get(f"/proc/{pid}/cwd") or None,
            normalize_title(title),
        )
    return list(rows.values())


def parse_listing(text: str) -> Listing:
    """`ps_command`'s output as rows, links and the rest. Raises `CommandFailed` (naming no
    host: the caller knows it) when the listing is cut short or names a pid or a path twice,
    since either would let the guard see fewer busy workers than there are."""
    ps_text, after = _split_at_mark(text)
    records, rest = _split_records(after)
    links = _links(records)
    return Listing(_rows(ps_text, links), links, rest)


def parse_links(text: str) -> dict[str, str]:
    """`path -> raw symlink target` for the records in `ps_command`'s output."""
    return parse_listing(text).links


def parse_ps_output(text: str) -> list[RawProcess]:
    """The rows of `ps_command`'s output (see `parse_listing`)."""
    return parse_listing(text).rows


def rebase(rows: Iterable[RawProcess], resolved: str | None, root: str) -> list[RawProcess]:
    """Rows whose cwd lies under `resolved` (where `root` really is on the host) told as paths
    under `root`, so a symlinked deploy_to still owns its workers; other rows unchanged."""
    rows = list(rows)
    if not resolved or resolved.rstrip("/") == root.rstrip("/"):
        return rows
    prefix, into = resolved.rstrip("/") + "/", root.rstrip("/") + "/"
    return [replace(r, cwd=into + r.cwd[len(prefix) :]) if r.cwd and r.cwd.startswith(prefix) else r for r in rows]


def remote_processes(c, root: str | None = None) -> list[RawProcess]:
    """Rows from any invoke Context or fabric Connection, in one command; with `root`, cwds
    under the folder it resolves to are told under `root` (see `rebase`)."""
    text = c.run(ps_command(root=root), hide=True, warn=True, in_stream=False).stdout
    listing = parse_listing(text)
    return rebase(listing.rows, listing.links.get(root), root) if root else listing.rows
