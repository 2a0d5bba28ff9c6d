"""`resque.doctor`: a checklist per host, each line pass / warn / fail with the fix.

The checks (`doctorchecks`) are pure functions from facts (texts and small records) to a
`Check`; `gather()` reads the facts through a `Host` (one code path for a local Context and an
SSH Connection), each a command and a parser from `deployhooks.facts`, and `run_checks()` puts
the two together. A host that cannot be reached at all is the caller's
business (exit 3); everything a reachable host says, even a failing command, becomes a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..errors import CommandFailed, ConfigError
from ..facts import status as status_mod
from ..facts import trust
from ..facts.pidfiles import PidFile, parse_pidfiles, pidfiles_command
from ..facts.rakefile import parse_rake_files, rake_files_command
from ..facts.resqueyml import ping_command
from ..remote.host import Host
from ..settings import Settings
from . import install as setup_mod
from . import installplan
from .doctorchecks import (
    FAIL,
    PASS,
    WARN,
    Check,
    check_confs,
    check_monit,
    check_monitrc,
    check_ownership,
    check_pidfiles,
    check_rakefile,
    check_redis,
    check_releases,
    check_resque_yml,
    check_stop_timeout,
    check_wrapper,
)


def exit_code(checks: Iterable[Check]) -> int:
    """0 when every check passes or warns, 1 when any fails."""
    return 1 if any(c.verdict == FAIL for c in checks) else 0


# --- facts through a Host, and the whole checklist ---------------------------------------------


@dataclass
class Facts:
    """What one host said; every field is plain data, so `run_checks` is pure."""

    resque_yml: str | None
    redis: tuple[int, str] | None  # (rc, output) of the PING, when a target was read
    wrapper: str | None  # resolved absolute path, None when not found
    confs: dict[int, str]
    monitrc: str | None
    status: status_mod.HostFacts
    pidfiles: list[PidFile] = field(default_factory=list)
    rake_files: dict[str, str] = field(default_factory=dict)
    chains: dict[str, tuple[str, list[trust.PathEntry]]] = field(default_factory=dict)


def _read(host: Host, path: str, root: bool = False) -> str | None:
    try:
        return setup_mod.read_root_file(host, path) if root else host.read_file(path)
    except CommandFailed:
        return None


def gather(host: Host) -> Facts:
    s = host.settings
    yml_path = f"{s.shared_path}/config/resque.yml"
    yml = _read(host, yml_path)
    _, target = check_resque_yml(yml, s.framework_env, yml_path)
    redis = None
    if target is not None:
        r = host.run(ping_command(target), warn=True)
        redis = (r.exited, r.stdout + r.stderr)
    try:
        wrapper = setup_mod.find_wrapper(host)
    except CommandFailed:
        wrapper = None
    subjects = {"pid_dir": s.resque.pid_dir, "monitrc": s.resque.monitrc_path}
    chain_cmd = trust.wrapper_chain_command(wrapper, subjects) if wrapper else trust.chain_command(subjects)
    chains = trust.parse_chain(host.run(chain_cmd, warn=True).stdout)
    status = status_mod.parse_status_output(host.run(status_mod.status_command(s), warn=True).stdout, s, host.name)
    return Facts(
        resque_yml=yml,
        redis=redis,
        wrapper=wrapper,
        confs=setup_mod.read_confs(host),
        monitrc=_read(host, s.resque.monitrc_path, root=True),
        status=status,
        pidfiles=parse_pidfiles(host.run(pidfiles_command(s), warn=True).stdout),
        rake_files=parse_rake_files(host.run(rake_files_command(s), warn=True).stdout),
        chains=chains,
    )


def run_checks(settings: Settings, facts: Facts, host: str) -> list[Check]:
    """The checklist for one host, in a fixed order (pure)."""
    r = settings.resque
    yml_path = f"{settings.shared_path}/config/resque.yml"
    checks = []
    yml, target = check_resque_yml(facts.resque_yml, settings.framework_env, yml_path)
    checks.append(yml)
    if target is not None and facts.redis is not None:
        checks.append(check_redis(target, *facts.redis, host=host, path=yml_path, env=settings.framework_env))
    checks.append(check_wrapper(r.wrapper, facts.wrapper, settings.source))
    checks += check_ownership(facts.chains, settings.source)
    checks.append(check_confs(settings, facts.confs))
    desired = None
    if facts.wrapper:
        try:
            desired = installplan.desired_monitrc(settings, facts.wrapper)
        except ConfigError:
            desired = None
    checks.append(check_monitrc(r.monitrc_path, facts.monitrc, desired))
    checks.append(check_stop_timeout(r.monitrc_path, facts.monitrc, r.grace_time))
    checks.append(check_monit(settings, facts.status))
    checks.append(check_releases(facts.status, settings.app))
    checks.append(check_pidfiles(facts.pidfiles, r.pid_dir))
    checks.append(check_rakefile(facts.rake_files, facts.status.current_release))
    return checks


def render(host: str, checks: Sequence[Check]) -> str:
    """The checklist as text: one line per check, the fix indented under a warn or fail."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(
            f"{host}: {c.verdict.upper() if c.verdict == FAIL else c.verdict:4}  {c.name.ljust(width)}  {c.detail}"
        )
        if c.fix and c.verdict != PASS:
            fix = c.fix.splitlines()
            lines.append(f"{host}:       {' ' * width}  fix: {fix[0]}")
            lines += [f"{host}:       {' ' * width}       {l}" for l in fix[1:]]
    counts = {v: sum(c.verdict == v for c in checks) for v in (PASS, WARN, FAIL)}
    lines.append(f"{host}: {counts[PASS]} pass, {counts[WARN]} warn, {counts[FAIL]} fail")
    return "\n".join(lines)
