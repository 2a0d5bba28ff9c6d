"""A host's resque status in one round trip: processes, monit's view, and where `current` points.

`status_command()` builds one shell command whose sections `parse_status_output()` splits
again; `rows_for()` joins monit services to worker processes (pure). One command per host is
what makes `fab resque.status` cost about what a bare `ps` over SSH costs.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import asdict, dataclass

from ..errors import CommandFailed
from ..settings import Settings
from . import monit
from . import release as release_mod
from .monit import ServiceStatus
from .processes import WorkerProcess, parse_listing, ps_command, rebase, workers_from
from .shell import section, split_sections


def status_command(settings: Settings) -> str:
    """One shell command printing processes (with `current`'s link), then `monit -B status`."""
    monit_status = monit.Monit.of(settings).status_command(settings.resque.monit_group)
    revision = shlex.quote(f"{settings.current_path}/REVISION")
    rc = section('"rc $?"')  # monit's exit code, expanded by the shell right after monit ran
    return (
        f"{ps_command(settings.current_path, settings.deploy_to)}; {section('revision')}; "
        f"head -c 100 {revision} 2>/dev/null; {section('monit')}; "
        f"{monit_status} 2>&1; {rc}; true"
    )


release_of = release_mod.release_of  # one reading of `current`, shared with deploy and rollback


@dataclass
class HostFacts:
    """What one host said: workers of the app, monit's services (or why they are unknown)."""

    workers: list[WorkerProcess]
    services: dict[str, ServiceStatus]
    monit_error: str | None
    current_release: str | None
    revision: str | None = None  # the git sha in current/REVISION, when a deploy wrote one


def _sections(rest: str) -> tuple[dict[str, list[str]], int]:
    """The sections that follow the process listing (`name -> lines`) and the exit code the
    `rc` mark reports (0 when there is no such mark, 1 when it is unreadable)."""
    sections: dict[str, list[str]] = {}
    rc = 0
    for name, lines in split_sections(rest):
        words = name.split()
        if words[:1] == ["rc"]:  # monit's exit code travels in its mark: `rc <n>`
            rc = int(words[1]) if len(words) > 1 and words[1].isdigit() else 1
        else:
            sections[name] = lines
    return sections, rc


def parse_status_output(text: str, settings: Settings, host: str) -> HostFacts:
    """What `status_command` printed on `host`, as facts. A process listing that is cut short
    or names a pid twice raises `CommandFailed` naming the host: the listing is parsed by its
    own NUL-separated framing first, so no folder name can reach the section marks below."""
    try:
        listing = parse_listing(text)
    except CommandFailed as exc:
        raise CommandFailed(f"{host}: {exc}") from None
    links = listing.links
    rows = rebase(listing.rows, links.get(settings.deploy_to), settings.deploy_to)
    sections, rc = _sections(listing.rest)
    monit_text = "\n".join(sections.get("monit", []))
    services, error = {}, None
    if rc == 0:
        services = monit.parse_status(monit_text)
    else:
        error = str(
            monit.classify_failure(
                rc,
                "",
                monit_text,
                group=settings.resque.monit_group,
                host=host,
                command=settings.resque.monit_command,
                sudo=settings.resque.sudo,
            )
        )
    # A worker whose cwd could not be read is this app's when monit's group runs its pid; shown
    # without a release rather than its service shown down.
    managed = {s.pid for s in services.values() if s.pid}
    workers = [
        w
        for w in workers_from(rows, {settings.app: settings.deploy_to})
        if w.app == settings.app or (w.cwd is None and w.pid in managed)
    ]
    release = release_of(links.get(settings.current_path), settings)
    sha = next((w for w in sections.get("revision", []) if w.strip()), "").strip()
    return HostFacts(workers, services, error, release, sha if release_mod.REVISION_RE.fullmatch(sha) else None)


@dataclass
class Row:
    """One line of the status table."""

    host: str
    service: str | None
    pid: int | None = None
    state: str = "down"
    queue: str | None = None
    job_class: str | None = None
    busy_for: int | None = None
    rss_kb: int | None = None
    release: str | None = None
    release_mark: str | None = None  # current / old / deleted
    monit: str | None = None
    error: str | None = None

    @property
    def problems(self) -> list[str]:
        """Why `--check` would fail on this row."""
        out = []
        if self.error:
            out.append("unreachable")
        if self.state == "busy":
            out.append("busy")
        if self.state == "down":
            out.append("not running")
        if self.release_mark in ("old", "deleted"):
            out.append(f"stale ({self.release_mark} release)")
        if self.service is None and self.pid is not None:
            out.append("not under monit")
        elif self.monit is not None and self.monit != "OK":
            out.append(f"monit: {self.monit}")
        return out


def _mark(worker: WorkerProcess, current: str | None) -> str | None:
    if worker.release_deleted:
        return "deleted"
    if worker.release is None:
        return None
    return "current" if worker.release == current else "old"


def rows_for(host: str, facts: HostFacts, now: float | None = None) -> list[Row]:
    """Join monit's services to worker processes by pid; strays get a row with no service."""
    now = time.time() if now is None else now
    by_pid = {w.pid: w for w in facts.workers}
    rows: list[Row] = []

    def worker_row(service: str | None, status: str | None, w: WorkerProcess | None, pid: int | None) -> Row:
        if w is None:
            return Row(host, service, pid, "down", monit=status)
        return Row(
            host,
            service,
            w.pid,
            w.state,
            w.queue or (",".join(w.queues) or None),
            w.job_class,
            int(now - w.busy_since) if w.busy and w.busy_since else None,
            w.rss_kb,
            w.release,
            _mark(w, facts.current_release),
            status,
        )

    for name, s in facts.services.items():
        rows.append(worker_row(name, s.status, by_pid.pop(s.pid, None) if s.pid else None, s.pid))
    for w in by_pid.values():
        rows.append(worker_row(None, None, w, w.pid))
    if facts.monit_error and not rows:
        rows.append(Row(host, None, error=facts.monit_error, state="unknown"))
    elif facts.monit_error:
        for r in rows:
            r.error = facts.monit_error
    return rows


def as_json(rows: list[Row]) -> list[dict]:
    return [dict(asdict(r), problems=r.problems) for r in rows]


COLUMNS = [
    ("HOST", "host"),
    ("SERVICE", "service"),
    ("PID", "pid"),
    ("STATE", "state"),
    ("QUEUE", "queue"),
    ("JOB", "job_class"),
    ("BUSY FOR", "busy_for"),
    ("RSS", "rss_kb"),
    ("RELEASE", "release"),
    ("MONIT", "monit"),
]


def _cell(row: Row, attr: str) -> str:
    value = getattr(row, attr)
    if value is None:
        return "-"
    if attr == "busy_for":
        return f"{value}s"
    if attr == "rss_kb":
        return f"{value / 1024:.1f}M"
    if attr == "release":
        return f"{value} ({row.release_mark})" if row.release_mark else str(value)
    return str(value)


def render_table(rows: list[Row]) -> str:
    """A fixed-width table (rows that carry an error show it instead of the columns)."""
    body = [[_cell(r, a) for _, a in COLUMNS] for r in rows if not (r.error and r.pid is None)]
    widths = [max([len(h)] + [len(b[i]) for b in body]) for i, (h, _) in enumerate(COLUMNS)]
    lines = ["  ".join(h.ljust(w) for (h, _), w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    lines += [f"{r.host}  ERROR  {r.error}" for r in rows if r.error and r.pid is None]
    return "\n".join(lines)


def summary(rows: list[Row], hosts: list[str]) -> list[str]:
    """One line per host and one for the fleet: counts by state, and problems."""
    lines = []
    total: dict[str, int] = {}
    for host in hosts:
        mine = [r for r in rows if r.host == host]
        if any(r.error and r.pid is None for r in mine):
            lines.append(f"{host}: unreachable or unknown: {mine[0].error}")
            total["unreachable host(s)"] = total.get("unreachable host(s)", 0) + 1
            continue
        counts: dict[str, int] = {}
        for r in mine:
            counts[r.state] = counts.get(r.state, 0) + 1
            total[r.state] = total.get(r.state, 0) + 1
        problems = sorted({p for r in mine for p in r.problems if p != "busy"})
        lines.append(
            f"{host}: {len(mine)} worker(s): "
            + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            + (f"; problems: {', '.join(problems)}" if problems else "")
        )
    lines.append(f"fleet: {len(hosts)} host(s): " + ", ".join(f"{n} {s}" for s, n in sorted(total.items())))
    return lines
