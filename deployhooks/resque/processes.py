"""The resque workers on a host, as records, from either of two adapters that must agree.

- `local_processes()` reads the local process table with psutil (hooks run on the server).
- `ps_command()` + `parse_ps_output()` do the same over any context in one round trip (`ps` and
  `/proc/<pid>/cwd`), so a Fabric connection sees what psutil would see on that host.

Both produce `RawProcess` rows; `workers_from()` turns rows into `WorkerProcess` records. Only
`workers_from()` decides anything, so both adapters are held to the same rules.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

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
        rest = path[len(root):].split("/")
        if rest[0] == "releases" and len(rest) > 1 and rest[1]:
            return app, rest[1], deleted
        if rest[0] == "current":
            return app, "current", deleted
        return app, None, deleted
    return None, None, deleted


def workers_from(rows: Iterable[RawProcess], apps: Mapping[str, str]) -> list[WorkerProcess]:
    """Worker records from raw rows: job children are folded into their parent worker.

    A `Processing` process whose parent is a worker is that worker's job child (resque 1.24+
    titles the parent `Processing` for an instant before it forks, so the parent's own title
    is not enough). A `Processing` process with no worker parent is a non-forking worker, or a
    job child orphaned by a KILLed parent; either way a job is running there, so it is busy.
    """
    parsed = {r.pid: (r, proclines.parse(r.title)) for r in rows}
    parsed = {pid: (r, p) for pid, (r, p) in parsed.items() if p is not None}
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
        common = dict(pid=pid, ppid=row.ppid, title=row.title, version=p.version,
                      rss_kb=row.rss_kb + (child.rss_kb if child else 0), cwd=row.cwd,
                      app=app, release=release, release_deleted=deleted)
        if p.kind in (FORKED, PROCESSING):
            info = child_line if child_line is not None else p
            workers.append(WorkerProcess(
                state=BUSY, queue=info.queue, job_class=info.job_class,
                busy_since=p.since if p.since is not None else info.since,
                job_pid=child.pid if child else p.child_pid, **common))
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
            # in another mount namespace.
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
# With a root, the same sh also prints where that folder really is (`pwd -P`, a builtin): the
# kernel reports a worker's cwd fully resolved, and deploy_to is often a symlink. The link and
# the root travel in the environment, so no quoting of them reaches awk or the shell it starts.
LINKS_MARK = "__deployhooks_links__"
_AWK_PROGRAM = r"""$4 !~ /^Z/ && /[r]esque/ { print; if ($1 ~ /^[0-9]+$/) p = p " /proc/" $1 "/cwd" }
END {
  print "@MARK@"; fflush(); c = ""; x = ENVIRON["DEPLOYHOOKS_LINK"] != ""
  if (p != "" || x) c = "find" p (x ? " \"$DEPLOYHOOKS_LINK\"" : "") " -maxdepth 0 -printf \"%p\\t%l\\n\" 2>/dev/null; "
  if (ENVIRON["DEPLOYHOOKS_ROOT"] != "") c = c "cd \"$DEPLOYHOOKS_ROOT\" 2>/dev/null && printf \"%s\\t\" \"$DEPLOYHOOKS_ROOT\" && pwd -P"
  if (c != "") system(c)
}""".replace("@MARK@", LINKS_MARK)


def ps_command(link: str | None = None, root: str | None = None) -> str:
    """The process listing command; with `link`, also that symlink's raw target, and with
    `root`, where that folder resolves to (both in `parse_links`)."""
    env = "".join(f"{name}={shlex.quote(value)} " for name, value in
                  (("DEPLOYHOOKS_LINK", link), ("DEPLOYHOOKS_ROOT", root)) if value)
    return f"ps axww -o pid=,ppid=,rss=,stat=,args= | {env}awk '{_AWK_PROGRAM}'"


PS_COMMAND = ps_command()


def _split_at_mark(text: str) -> tuple[list[str], list[str]]:
    """`ps_command`'s output as (process lines, link lines). The mark counts only as a whole
    line: the shell running the command is itself a row when its command line mentions resque
    (a monit group `<app>_resque`), and that row contains the mark's text."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == LINKS_MARK:
            return lines[:i], lines[i + 1:]
    return lines, []


def parse_links(text: str) -> dict[str, str]:
    """`path -> raw symlink target` for the lines after the mark in `ps_command`'s output."""
    return dict(line.split("\t", 1) for line in _split_at_mark(text)[1] if "\t" in line)


def parse_ps_output(text: str) -> list[RawProcess]:
    """Rows from `ps_command`'s output (ps lines, the mark, then `path<TAB>link` lines); lines
    that do not fit are skipped, and a pid without a cwd line has cwd None."""
    links = parse_links(text)
    rows = []
    for line in _split_at_mark(text)[0]:
        parts = line.split(None, 4)
        if len(parts) != 5 or not parts[0].isdigit() or not parts[1].isdigit():
            continue
        pid, ppid, rss, _stat, title = parts
        rows.append(RawProcess(int(pid), int(ppid), int(rss) if rss.isdigit() else 0,
                               links.get(f"/proc/{pid}/cwd") or None, normalize_title(title)))
    return rows


def rebase(rows: Iterable[RawProcess], resolved: str | None, root: str) -> list[RawProcess]:
    """Rows whose cwd lies under `resolved` (where `root` really is on the host) told as paths
    under `root`, so a symlinked deploy_to still owns its workers; other rows unchanged."""
    rows = list(rows)
    if not resolved or resolved.rstrip("/") == root.rstrip("/"):
        return rows
    prefix, into = resolved.rstrip("/") + "/", root.rstrip("/") + "/"
    return [replace(r, cwd=into + r.cwd[len(prefix):]) if r.cwd and r.cwd.startswith(prefix) else r
            for r in rows]


def remote_processes(c, root: str | None = None) -> list[RawProcess]:
    """Rows from any invoke Context or fabric Connection, in one command; with `root`, cwds
    under the folder it resolves to are told under `root` (see `rebase`)."""
    text = c.run(ps_command(root=root), hide=True, warn=True, in_stream=False).stdout
    rows = parse_ps_output(text)
    return rebase(rows, parse_links(text).get(root), root) if root else rows
