"""`resque.doctor`'s checks: pure functions from facts (texts and small records) to a `Check`,
one line of the checklist with its verdict and, when it is not a pass, the fix."""

from __future__ import annotations

import difflib
import re
import shlex
from dataclasses import dataclass
from typing import Mapping, Sequence

import yaml

from ..facts import rakefile, trust
from ..facts import status as status_mod
from ..facts.pidfiles import PidFile
from ..facts.resqueyml import RedisTarget, redis_target

# The 600-line wrapper for one regex: it belongs with the other title facts (facts/proclines)
# once the wrapper's split settles; imported from here meanwhile.
from ..resque.supervisor import WORKER_CMDLINE_RE
from ..settings import Settings
from . import installplan

PASS, WARN, FAIL = "pass", "warn", "fail"
MONIT_DEFAULT_TIMEOUT = 30  # seconds monit gives a stop program without `with timeout`

PRELOAD_FIX = (
    'task "resque:setup" => :environment do\n  ActiveRecord::Base.send(:subclasses).each { |klass| klass.columns }\nend'
)


@dataclass(frozen=True)
class Check:
    """One line of the checklist: what was checked, the verdict, what was seen, how to fix it."""

    name: str
    verdict: str
    detail: str
    fix: str | None = None


# --- resque.yml and redis ----------------------------------------------------------------------


def check_resque_yml(text: str | None, env: str, path: str) -> tuple[Check, RedisTarget | None]:
    """resque.yml exists, is YAML, has an entry for `env` that names a redis; and where."""
    name = "resque.yml"
    fix_entry = f"add '{env}: <redis host>:<port>' (or redis://host:port/db) to {path}"
    if text is None:
        return Check(name, FAIL, f"{path} is missing", f"create it: {fix_entry}"), None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else path
        return Check(
            name,
            FAIL,
            f"{where} is not valid YAML ({getattr(exc, 'problem', exc)})",
            f"fix the YAML in {path}; {fix_entry}",
        ), None
    if not isinstance(data, dict) or data.get(env) in (None, ""):
        envs = ", ".join(map(str, data)) if isinstance(data, dict) else "none"
        return Check(
            name, FAIL, f"{path} has no entry for the framework env '{env}' (entries: {envs})", fix_entry
        ), None
    target = redis_target(data[env])
    if target is None:
        return Check(
            name,
            WARN,
            f"{path} has '{env}: {data[env]!r}', which deployhooks cannot "
            f"read as a redis address (so redis was not checked)",
            f"use '{env}: host:port' or redis://host:port/db",
        ), None
    return Check(name, PASS, f"{path} is valid; {env} -> {target}"), target


def check_redis(target: RedisTarget, rc: int, output: str, host: str, path: str, env: str) -> Check:
    """Did redis answer the PING? PONG, or an AUTH demand, both prove it is there."""
    out = " ".join(output.split())
    if "PONG" in out:
        return Check("redis", PASS, f"{target} answers PING from {host}")
    if "NOAUTH" in out:
        return Check("redis", PASS, f"{target} answers from {host} (it requires AUTH)")
    why = out or ("no answer within 5s" if rc == 124 else f"exit {rc}")
    return Check(
        "redis",
        FAIL,
        f"{target} did not answer PING from {host}: {why}",
        f"start redis at {target}, open the way from this host to it (firewall, bind "
        f"address), or point '{env}:' in {path} at a redis this host can reach",
    )


# --- conf files, monitrc, monit ----------------------------------------------------------------


def check_wrapper(configured: str, resolved: str | None, source: str) -> Check:
    if resolved:
        return Check("wrapper", PASS, f"{configured} -> {resolved}")
    return Check(
        "wrapper",
        FAIL,
        f"the worker wrapper {configured} is not an executable here (monit runs programs with a minimal PATH)",
        f"install deployhooks on this host, or set resque.wrapper in {source} to the "
        f"absolute path of deployhooks-resque; then run resque.setup",
    )


def check_ownership(chains: Mapping[str, tuple[str, list[trust.PathEntry]]], source: str) -> list[Check]:
    """Root runs the wrapper (and its interpreter), reads the monitrc and writes in pid_dir:
    each must be something only root can change (see deployhooks.facts.trust)."""
    subjects = [
        ("root owns wrapper", ("wrapper", "interpreter"), "file", installplan.WRAPPER_TRUST_FIX),
        (
            "root owns pid_dir",
            ("pid_dir",),
            "folder",
            f"chown root:root and chmod 755 the folder and each parent, or set resque.pid_dir "
            f"in {source} to a folder under /run or /var/run",
        ),
        (
            "root owns monitrc",
            ("monitrc",),
            "file",
            "chown root:root and chmod 644 (or 600) the file; chmod go-w each parent folder",
        ),
    ]
    checks = []
    for name, labels, kind, fix in subjects:
        present = [chains[label] for label in labels if label in chains]
        if not present:
            continue
        why = [p for path, entries in present for p in trust.problems(path, entries, kind=kind)]
        if name == "root owns monitrc" and any(f"{present[0][0]} does not exist" == w for w in why):
            continue  # no monitrc yet: the monitrc check says so
        shown = ", ".join(path for path, _ in present)
        checks.append(
            Check(name, FAIL, "; ".join(why), fix)
            if why
            else Check(name, PASS, f"{shown}: root's, not writable by others")
        )
    return checks


def check_confs(settings: Settings, confs: Mapping[int, str]) -> Check:
    """Each configured worker has its resque_N.conf with its queues, and no other conf is left."""
    wanted = {w.index: installplan.conf_text(w.queues) for w in settings.resque.workers}
    missing = [n for n in sorted(wanted) if n not in confs]
    differ = [n for n in sorted(wanted) if n in confs and confs[n] != wanted[n]]
    extra = [n for n in sorted(confs) if n not in wanted]
    if not (missing or differ or extra):
        return Check(
            "conf files",
            PASS,
            f"resque_0..{len(wanted) - 1}.conf match the config"
            if len(wanted) > 1
            else "resque_0.conf matches the config",
        )
    parts = []
    if missing:
        parts.append("missing: " + ", ".join(f"resque_{n}.conf" for n in missing))
    if differ:
        parts.append(
            "queues differ from the config: "
            + ", ".join(
                f"resque_{n}.conf ({' '.join(confs[n].split()) or 'empty'}; config says {wanted[n].strip()})"
                for n in differ
            )
        )
    if extra:
        parts.append("not in the config: " + ", ".join(f"resque_{n}.conf" for n in extra))
    return Check(
        "conf files",
        FAIL,
        f"in {settings.shared_path}/config: " + "; ".join(parts),
        "run resque.setup (it writes them, and stops the workers removed from the config)",
    )


def check_monitrc(path: str, installed: str | None, desired: str | None) -> Check:
    """The installed monitrc is exactly what the config renders (`desired` None: unknown)."""
    if installed is None:
        return Check(
            "monitrc",
            FAIL,
            f"{path} is missing",
            "run resque.setup (it writes the monitrc, checks it with monit -t and reloads)",
        )
    if desired is None:
        return Check("monitrc", WARN, f"{path} not compared: the wrapper path is unknown", "fix the wrapper first")
    if installed == desired:
        return Check("monitrc", PASS, f"{path} matches the config")
    diff = difflib.unified_diff(installed.splitlines(), desired.splitlines(), lineterm="", n=0)
    changed = sum(1 for line in diff if line[:1] in "+-" and line[:3] not in ("+++", "---"))
    return Check(
        "monitrc",
        FAIL,
        f"{path} differs from what the config renders ({changed} line(s))",
        "run resque.setup to see the diff and install it (or fix the config)",
    )


_STANZA = re.compile(r"^\s*check\s+\w+\s+(?P<name>\S+)", re.I)
_STOP = re.compile(r'^\s*(?P<kind>stop|restart)\s+(?:program\s*)?=\s*"(?P<program>[^"]*)"(?P<rest>.*)$', re.I)
_TIMEOUT = re.compile(r"\btimeout\s+(?P<n>\d+)\s*(?:seconds?|s)\b", re.I)
_GRACE_OPT = re.compile(r"--grace-time[= ](?P<n>\d+(?:\.\d+)?)")
_GRACE_ENV = re.compile(r"\bGRACE_TIME=(?P<n>\d+(?:\.\d+)?)")


def stop_timeouts(text: str) -> list[tuple[str, int, float | None]]:
    """(service, timeout, grace time the program passes or None) per stop and restart program line.

    A restart program (the wrapper's ``restart``) drains the job too, under the same one budget, so
    its timeout must outlast GRACE_TIME as well; its lines are named ``<service> restart``.
    """
    out = []
    service = "?"
    for line in text.splitlines():
        line = line.split("#", 1)[0]  # monit: '#' starts a comment anywhere on a line
        m = _STANZA.match(line)
        if m:
            service = m["name"]
            continue
        stop = _STOP.match(line)
        if stop:
            t = _TIMEOUT.search(stop["rest"])
            g = _GRACE_OPT.search(stop["program"]) or _GRACE_ENV.search(stop["program"])
            label = service if stop["kind"].lower() == "stop" else f"{service} restart"
            out.append((label, int(t["n"]) if t else MONIT_DEFAULT_TIMEOUT, float(g["n"]) if g else None))
    return out


def check_stop_timeout(path: str, installed: str | None, grace_time: int) -> Check:
    """monit must outwait the drain: every stop timeout must exceed GRACE_TIME."""
    name = "monit stop timeout"
    if installed is None:
        return Check(name, WARN, f"not checked: {path} is missing", "run resque.setup")
    lines = stop_timeouts(installed)
    if not lines:
        return Check(name, WARN, f"{path} has no stop program lines", "run resque.setup")
    short = [
        (s, t, g if g is not None else grace_time) for s, t, g in lines if t <= (g if g is not None else grace_time)
    ]
    if not short:
        worst = min(t - (g if g is not None else grace_time) for _, t, g in lines)
        return Check(name, PASS, f"every stop timeout exceeds GRACE_TIME (by {worst:g}s or more)")
    detail = ", ".join(f"{s}: timeout {t}s <= GRACE_TIME {g:g}s" for s, t, g in short)
    return Check(
        name,
        FAIL,
        f"in {path}: {detail}: monit gives up (and reports 'Not monitored') "
        f"while the worker is still draining its job, and ends the wrapper "
        f"before it can force the worker down",
        "set 'with timeout' on the stop and restart lines above GRACE_TIME "
        "(resque.setup renders GRACE_TIME + 30s, and the start timeout more on restart)",
    )


def check_monit(settings: Settings, facts: status_mod.HostFacts) -> Check:
    """The monit daemon answers and its group lists exactly the configured services."""
    group = settings.resque.monit_group
    if facts.monit_error:
        return Check("monit", FAIL, facts.monit_error.split(": ", 1)[-1], "start monit and run resque.setup")
    wanted = installplan.desired_services(settings)
    have = list(facts.services)
    if sorted(have) == sorted(wanted):
        return Check("monit", PASS, f"group {group} lists {', '.join(wanted)}")
    return Check(
        "monit",
        FAIL,
        f"group {group} lists {', '.join(have) or 'nothing'}; the config has {', '.join(wanted)}",
        "run resque.setup",
    )


def check_releases(facts: status_mod.HostFacts, app: str) -> Check:
    """No worker of the app runs code from an old or deleted release; strays are warned about."""
    name = "worker releases"
    current = facts.current_release
    stale = [w for w in facts.workers if w.release_deleted or w.release != current]
    managed = {s.pid for s in facts.services.values() if s.pid}
    strays = [w for w in facts.workers if w.pid not in managed]
    if stale:
        return Check(
            name,
            FAIL,
            "workers not on the current release "
            f"({current or 'current does not point into releases/'}): "
            + ", ".join(
                f"pid {w.pid} on {w.release or 'an unknown directory'}" + (" (deleted)" if w.release_deleted else "")
                for w in stale
            ),
            "restart them from the current release: deployhooks resque.restart (on the "
            "host) or fab resque.restart; the after_symlink hook does this on deploy",
        )
    if strays:
        return Check(
            name,
            WARN,
            "workers that monit does not run: " + ", ".join(f"pid {w.pid}" for w in strays),
            "stop them (kill -QUIT <pid>); monit runs the configured ones",
        )
    if not facts.workers:
        return Check(name, PASS, f"no worker of {app} is running")
    return Check(name, PASS, f"{len(facts.workers)} worker(s), all on release {current}")


# --- pidfiles and locks ------------------------------------------------------------------------


def stale_reason(f: PidFile) -> str | None:
    """Why a pidfile or lock is stale, or None. A lock only needs a live holder; a pidfile
    needs a live resque worker, since monit trusts any live pid and would never start ours."""
    if not f.pid:
        return "holds no pid"
    if not f.alive:
        return f"names pid {f.pid}, which is not running"
    if f.kind == "pidfile" and not WORKER_CMDLINE_RE.search(f.cmdline):
        return f"names pid {f.pid}, which is not a resque worker ({f.cmdline.strip()[:60] or '?'})"
    return None


def check_pidfiles(files: Sequence[PidFile], pid_dir: str) -> Check:
    stale = [(f, stale_reason(f)) for f in files]
    stale = [(f, why) for f, why in stale if why]
    if not stale:
        return Check(
            "pidfiles and locks", PASS, f"{sum(f.kind == 'pidfile' for f in files)} pidfile(s) in {pid_dir}, none stale"
        )
    return Check(
        "pidfiles and locks",
        FAIL,
        "; ".join(f"{f.path} {why}" for f, why in stale),
        "remove them (rm " + " ".join(shlex.quote(f.path) for f, _ in stale) + "); monit "
        "starts a worker whose pidfile names no live process on its next cycle",
    )


# --- the app's Rakefile ------------------------------------------------------------------------


def check_rakefile(files: Mapping[str, str], current: str | None) -> Check:
    """The seed's "Frequent Small Jobs": a `resque:setup` that loads the environment but touches
    no model makes every forked job load each model again (a SHOW FIELDS per model per job)."""
    name = "Rakefile"
    if current is None:
        return Check(name, WARN, "not checked: current does not point at a release yet", "deploy first")
    tasks = [(path, line, body) for path, text in files.items() for line, body in rakefile.setup_tasks(text)]
    if not tasks:
        return Check(name, PASS, "no resque:setup task in current/Rakefile or lib/tasks/*.rake (nothing to preload)")
    lazy = [(path, line) for path, line, body in tasks if not rakefile.preloads(body)]
    if not lazy:
        return Check(name, PASS, "resque:setup preloads models (" + ", ".join(f"{p}:{l}" for p, l, _ in tasks) + ")")
    where = ", ".join(f"{p}:{l}" for p, l in lazy)
    return Check(
        name,
        WARN,
        f"{where} defines resque:setup without preloading models: each "
        f"forked job loads every model it touches again (a SHOW FIELDS per "
        f"model per job), which dominates frequent small jobs",
        "preload them in the parent, e.g.\n" + PRELOAD_FIX,
    )
