"""Resque process titles ($0), parsed: a pure function from one title to what it says.

Every form resque has used from 0.x to 3.0 (docs/resque.md, "Process titles"):

    resque: Starting                                          (all versions, no prefix/version)
    <P>resque-<X>: Waiting for q1,q2                          idle (1.5+; "resque: ..." before)
    <P>resque-<X>: Paused                                     paused (USR2)
    <P>resque-<X>: Forked <childpid> at <epoch>               parent while a job runs
    <P>resque-<X>: Processing <q> since <epoch> [<Class>]     job child, or a non-forking worker
    ruby .../rake -f Rakefile resque:work                     before the worker set its title

<P> is RESQUE_PROCLINE_PREFIX (1.26+). A title that merely contains the word (`grep resque`,
`tail -f resque_0.log`, `rake resque:workers`) is not a worker and parses to None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STARTING, IDLE, PAUSED, FORKED, PROCESSING = "starting", "idle", "paused", "forked", "processing"

# The prefix is whatever RESQUE_PROCLINE_PREFIX held; we accept it only without whitespace so
# that a command line like "grep resque-3.0.0: Forked" is not mistaken for a worker.
_VERSIONED = re.compile(r"^(?P<prefix>\S*?)resque-(?P<version>\d+(?:\.\d+)*(?:[.-][0-9A-Za-z.]+)?): (?P<msg>.*)$")
_BARE = re.compile(r"^resque: (?P<msg>.*)$")
_WAITING = re.compile(r"^Waiting for ?(?P<queues>.*)$")
_FORKED = re.compile(r"^Forked (?P<child>\d+) at (?P<since>\d+)$")
_PROCESSING = re.compile(r"^Processing (?P<queue>\S+) since (?P<since>\d+)(?: \[(?P<cls>[^\]]*)\])?$")
# Interpreters that run `rake resque:work` (or our test worker) before it renames itself.
_LAUNCHERS = re.compile(r"^(?:ruby[\d.]*|jruby|rake|bundle|python[\d.]*)$")


@dataclass(frozen=True)
class Procline:
    """What one resque title says. Fields that the form does not carry are None."""

    kind: str
    version: str | None = None
    prefix: str = ""
    queues: tuple[str, ...] | None = None
    queue: str | None = None
    since: int | None = None
    job_class: str | None = None
    child_pid: int | None = None


def parse(title: str) -> Procline | None:
    """Parse a process title; None when it is not a resque worker or job child."""
    title = title.replace("\x00", " ").strip()
    m = _VERSIONED.match(title)
    if m:
        body, version, prefix = m["msg"], m["version"], m["prefix"]
    else:
        m = _BARE.match(title)
        if not m:
            return _launcher(title)
        body, version, prefix = m["msg"], None, ""
    body = body.rstrip()
    if body == "Starting":
        return Procline(STARTING, version, prefix)
    if body == "Paused":
        return Procline(PAUSED, version, prefix)
    w = _WAITING.match(body)
    if w:
        queues = tuple(q for q in w["queues"].split(",") if q)
        return Procline(IDLE, version, prefix, queues=queues)
    f = _FORKED.match(body)
    if f:
        return Procline(FORKED, version, prefix, since=int(f["since"]), child_pid=int(f["child"]))
    p = _PROCESSING.match(body)
    if p:
        return Procline(
            PROCESSING, version, prefix, queue=p["queue"], since=int(p["since"]), job_class=p["cls"] or None
        )
    return None


def _launcher(title: str) -> Procline | None:
    """`ruby .../rake ... resque:work` before resque renamed the process: a starting worker."""
    words = title.split()
    if not words or "resque:work" not in words[1:]:
        return None
    program = words[0].rsplit("/", 1)[-1]
    if not _LAUNCHERS.match(program):
        return None
    return Procline(STARTING)
