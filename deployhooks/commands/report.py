"""What a deploy or rollback did: each step's time and hosts, what moved, and queue downtime.

Queue downtime is what a queue's users feel: from the moment the guard told a host's workers to
pause until every worker of that host ran again on the new release, the host served none of the
app's queues; while every host is inside its window, no worker anywhere takes a job.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from ..errors import EXIT_OK


@dataclass
class StepReport:
    name: str
    seconds: float = 0.0
    hosts: dict[str, str] = field(default_factory=dict)  # host -> "ok" / error text


@dataclass
class DeployReport:
    release: str
    steps: list[StepReport] = field(default_factory=list)
    switched: list[str] = field(default_factory=list)
    previous: dict[str, str] = field(default_factory=dict)  # host -> release current was on
    pruned: dict[str, list[str]] = field(default_factory=dict)
    code: int = EXIT_OK
    message: str = ""
    # Per host, when its workers were told to pause and when all ran again (epoch seconds):
    # between the two, that host served none of the app's queues.
    paused_at: dict[str, float] = field(default_factory=dict)
    running_at: dict[str, float] = field(default_factory=dict)
    queues: list[str] = field(default_factory=list)

    def downtime(self) -> dict[str, float]:
        """Seconds each guarded host served no queue: from the pause to all workers up again."""
        return {h: self.running_at[h] - t for h, t in self.paused_at.items() if h in self.running_at}

    def fleet_downtime(self) -> float:
        """Seconds no guarded host served the app's queues at all (the windows' overlap)."""
        if not self.paused_at or set(self.paused_at) - set(self.running_at):
            return 0.0
        return max(0.0, min(self.running_at.values()) - max(self.paused_at.values()))

    def as_json(self) -> dict:
        """The report for scripts (`fab deploy --json`)."""
        down = self.downtime()
        return {
            "release": self.release,
            "code": self.code,
            "message": self.message,
            "steps": [{"name": s.name, "seconds": round(s.seconds, 3), "hosts": s.hosts} for s in self.steps],
            "switched": self.switched,
            "previous": self.previous,
            "pruned": self.pruned,
            "queue_downtime": {
                "per_host": {h: round(d, 3) for h, d in down.items()},
                "queues": {
                    q: {
                        "worst": round(max(down.values()), 3),
                        "median": round(statistics.median(down.values()), 3),
                        "hosts": len(down),
                    }
                    for q in self.queues
                }
                if down
                else {},
                "no_worker_anywhere": round(self.fleet_downtime(), 3),
            },
        }


def summary_lines(report: DeployReport) -> list[str]:
    lines = [f"{'step':<22}{'seconds':>9}  hosts"]
    for s in report.steps:
        ok = sum(1 for v in s.hosts.values() if v == "ok")
        lines.append(f"{s.name:<22}{s.seconds:>9.2f}  {ok}/{len(s.hosts)} ok")
    if report.switched:
        # What changed, grouped so a fleet of identical hosts reads as one line.
        moves: dict[str, list[str]] = {}
        for host in report.switched:
            moves.setdefault(report.previous.get(host, "?"), []).append(host)
        for old, hosts in moves.items():
            lines.append(f"current: {old} -> {report.release} on {', '.join(hosts)}")
        pruned: dict[str, list[str]] = {}
        for host, names in report.pruned.items():
            pruned.setdefault(" ".join(names) or "nothing", []).append(host)
        for what, hosts in pruned.items():
            lines.append(f"pruned: {what} on {', '.join(hosts)}")
    down = report.downtime()
    if down:
        worst, median = max(down.values()), statistics.median(down.values())
        lines.append(
            "queue downtime (no worker of the host running and unpaused, from the "
            "guard's pause to every worker up on the new release):"
        )
        for queue in report.queues:
            lines.append(f"  {queue}: worst {worst:.2f}s, median {median:.2f}s across {len(down)} host(s)")
        lines.append(f"  no worker on any host: {report.fleet_downtime():.2f}s")
    return lines
