"""`resque.setup`: write the workers' conf files and the monitrc, check them with monit, reload.

What the Engine Yard chef recipe did, made safe to run again and again:

- `<shared>/config/resque_N.conf` holds exactly `QUEUE=<queues>` for each configured worker;
- the monitrc (`resque.monitrc_path`) is `render_monitrc()` of the config;
- nothing is written and monit is not reloaded when files and monit's view already match;
- a changed monitrc is checked twice before monit may load it: alone, as a hidden candidate next
  to its place, under a throw-away control file (`monit -t` wants mode 0600); then in place,
  with `monit -v -t` on the real control file, which also catches a clash with the rest of the
  configuration (a service name defined twice) and a control file that does not include the
  path. A failed check restores the previous file (same inode, same mtime) and reloads nothing:
  monit's CLI refuses every command, and a reloading daemon exits, on a broken configuration;
- a worker removed from the config is stopped through monit (and waited for) before the reload
  drops its service, so no worker is left running that nothing supervises.

Decisions (`plan`, `check_failure`, ...) are pure, in `installplan`; this module reads the facts
and carries the plan out through a `Host`, so `fab resque.setup` and `deployhooks resque.setup`
share one code path.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
from dataclasses import dataclass
from typing import Callable, Sequence

from ..errors import CommandFailed, ConfigError
from ..facts import monit as monit_mod
from ..facts import trust
from ..facts.shell import as_root, with_sudo
from ..guard.workers import wait_until
from ..remote.host import Host
from ..resque.monitrc import render_monit_control
from .installplan import WRAPPER_TRUST_FIX, FileChange, check_failure, plan, unified_diff

Say = Callable[[str], None]

CONF_RE = re.compile(r"^resque_(\d+)\.conf$")


def _quiet(_: str) -> None:
    pass


# --- I/O through a Host ------------------------------------------------------------------------


def _as_root(host: Host, script: str) -> str:
    """`script` as one shell command, through `sudo -n sh -c` when resque.sudo is on (system files)."""
    return as_root(script, host.settings.resque.sudo)


def resolve_wrapper(host: Host) -> str:
    """The wrapper's absolute path on the host, once it is known to be safe for root to run
    (see :mod:`deployhooks.facts.trust`); ConfigError naming each problem otherwise."""
    found = find_wrapper(host)
    chain = trust.parse_chain(host.run(trust.wrapper_chain_command(found), warn=True).stdout)
    why = [p for label, (path, entries) in chain.items() for p in trust.problems(path, entries)]
    if why:
        raise ConfigError(
            f"{host.name}: the worker wrapper {found} is not safe for root's monit to run: "
            f"{'; '.join(why)}. {WRAPPER_TRUST_FIX}"
        )
    return found


def find_wrapper(host: Host) -> str:
    """The wrapper's absolute path on the host: monit runs programs with a minimal PATH."""
    wrapper = host.settings.resque.wrapper
    q = shlex.quote(wrapper)
    if wrapper.startswith("/"):
        found = host.run(f"test -f {q} && test -x {q} && echo {q}", warn=True).stdout.strip()
    else:
        found = host.run(f"command -v {q}", warn=True).stdout.strip()
    if not found.startswith("/"):
        where = wrapper if wrapper.startswith("/") else f"{wrapper} (not on the PATH of this login)"
        raise CommandFailed(
            f"{host.name}: the worker wrapper {where} is not an executable on this host: install "
            f"deployhooks there (pip install deployhooks), or set resque.wrapper in "
            f"{host.settings.source} to the absolute path of its deployhooks-resque"
        )
    return found.splitlines()[0]


def live_services(host: Host) -> dict[str, monit_mod.ServiceStatus]:
    """monit's view of the group; {} when monit knows no such group yet. The daemon must answer."""
    return host.monit.services(host.settings.resque.monit_group)


def read_confs(host: Host) -> dict[int, str]:
    """Worker number -> text of every `resque_N.conf` in the shared config folder."""
    folder = f"{host.settings.shared_path}/config"
    listing = host.run(f"ls -1 {shlex.quote(folder)} 2>/dev/null; true").stdout.split()
    confs = {}
    for name in listing:
        m = CONF_RE.match(name)
        if m:
            text = host.read_file(f"{folder}/{name}")
            if text is not None:
                confs[int(m.group(1))] = text
    return confs


def read_root_file(host: Host, path: str) -> str | None:
    """A system file's text, or None when absent. Read as the login when it may (a monitrc is
    world-readable, so a deploy user whose sudo allows only monit reads it too); only a file it
    may not read goes through `sudo -n cat` (resque.sudo), whose refusal is the error."""
    q = shlex.quote(path)
    unreadable = shlex.join(with_sudo(["cat", path])) if host.settings.resque.sudo else f"cat {q}"
    result = host.run(f"if [ ! -e {q} ]; then exit 4; elif [ -r {q} ]; then cat {q}; else {unreadable}; fi", warn=True)
    if result.exited == 4:
        return None
    if result.exited != 0:
        raise CommandFailed(
            f"{host.name}: cannot read {path}: {(result.stderr or result.stdout).strip() or f'exit {result.exited}'}"
        )
    return result.stdout


def write_file(host: Host, path: str, text: str, *, root: bool = False) -> None:
    """Write `path` atomically, mode 0644, creating its folder (see `Host.write_file`); `root`:
    a system file, through sudo when resque.sudo is on. A failure names the file, not the text."""
    sudo = root and host.settings.resque.sudo
    try:
        host.write_file(path, text, sudo=sudo)
    except CommandFailed as exc:
        hint = "" if sudo or not root else " (run as root, or set resque.sudo: true to write it through sudo -n)"
        raise CommandFailed(f"{exc}{hint}") from None


def _hidden(path: str, suffix: str) -> str:
    # A dot name: monit's include globs (glob(3) without GLOB_PERIOD) never pick it up.
    folder, name = os.path.split(path)
    return f"{folder}/.{name}.{suffix}"


def check_candidate(host: Host, text: str) -> None:
    """Write the monitrc as a hidden candidate beside its place and `monit -t` it alone.

    The candidate is left in place for `install_monitrc`; on failure it is removed and
    `CommandFailed` says what monit said. The installed file is not touched.
    """
    path = host.settings.resque.monitrc_path
    candidate = _hidden(path, "deployhooks-candidate")
    tmp = f"/tmp/deployhooks-monit-check.{secrets.token_hex(6)}"
    control = render_monit_control(statedir=tmp, socket=f"{tmp}/monit.sock", include=candidate)
    q = shlex.quote
    # The whole script runs as root when resque.sudo is on (monit wants its control file
    # owned by the user running it), so monit itself is not prefixed with sudo again.
    monit_t = host.monit.test_command(control=f"{tmp}/monitrc", sudo=False)
    write_file(host, candidate, text, root=True)
    script = (
        f"mkdir -m 700 {q(tmp)} && trap 'rm -rf {tmp}' EXIT && "
        f"(umask 077 && printf %s {q(control)} > {q(tmp + '/monitrc')}) && {monit_t}"
    )
    # A check, not a change: it writes only its own throw-away folder.
    result = host.run(_as_root(host, script), warn=True)
    if result.exited != 0:
        host.run(_as_root(host, f"rm -f {q(candidate)}"), warn=True, change=True)
        out = (result.stdout + result.stderr).strip().splitlines()
        raise CommandFailed(
            f"{host.name}: monit -t refused the new monitrc for {path} (nothing "
            f"installed): {'; '.join(out[-3:]) or f'exit {result.exited}'}"
        )


def install_monitrc(host: Host, services: Sequence[str]) -> None:
    """Rename the checked candidate into place, then `monit -v -t` the whole configuration.

    If monit refuses it, or the group would not hold exactly `services`, the previous file is
    put back (a hard link taken before the rename: same inode, same mtime) and `CommandFailed`
    explains; a reload never sees it.
    """
    r = host.settings.resque
    path = r.monitrc_path
    candidate, backup = _hidden(path, "deployhooks-candidate"), _hidden(path, "deployhooks-previous")
    q = shlex.quote
    host.run(
        _as_root(
            host,
            (
                f"rm -f {q(backup)} && if [ -e {q(path)} ]; then ln {q(path)} {q(backup)} 2>/dev/null "
                f"|| cp -p {q(path)} {q(backup)}; fi && mv -f {q(candidate)} {q(path)}"
            ),
        ),
        change=True,
    )
    result = host.monit.syntax_check(verbose=True)
    why = check_failure(result.exited, result.stdout + result.stderr, path=path, group=r.monit_group, wanted=services)
    if why is None:
        host.run(_as_root(host, f"rm -f {q(backup)}"), warn=True, change=True)
        return
    host.run(
        _as_root(host, f"if [ -e {q(backup)} ]; then mv -f {q(backup)} {q(path)}; else rm -f {q(path)}; fi"),
        change=True,
    )
    raise CommandFailed(f"{host.name}: {why}. {path} was left as it was and monit was not reloaded")


def stop_services(host: Host, names: Sequence[str], say: Say = _quiet) -> None:
    """`monit stop` each service and wait until monit says so and its worker has exited."""
    r = host.settings.resque
    before = live_services(host)
    pids = {before[n].pid for n in names if n in before and before[n].pid}
    for name in names:
        host.monit.service("stop", name)
    say(f"{host.name}: monit stop {', '.join(names)} (removed from the config)")
    state: dict = {}

    def stopped() -> bool:
        services = live_services(host)
        state["services"] = {n: services[n] for n in names if n in services}
        state["alive"] = sorted(pids & {w.pid for w in host.all_workers()})
        return all(s.stopped and not s.pending for s in state["services"].values()) and not state["alive"]

    timeout = len(names) * (r.grace_time + 10) + 30
    if not wait_until(stopped, timeout):
        raise CommandFailed(
            f"{host.name}: monit did not stop {', '.join(names)} within {timeout}s ("
            + ", ".join(f"{n}: {s.status}" for n, s in state.get("services", {}).items())
            + (f"; workers still running: {', '.join(map(str, state['alive']))}" if state.get("alive") else "")
            + "); nothing else was changed"
        )


def start_services(host: Host, names: Sequence[str]) -> None:
    """Best effort: give back to monit the services `stop_services` stopped (after a refusal)."""
    for name in names:
        host.monit.service("start", name, check=False)


def reload_and_wait(host: Host, services: Sequence[str], say: Say = _quiet) -> None:
    """`monit reload`, then wait until the group lists exactly `services` (reload returns at once)."""
    r = host.settings.resque
    host.monit.reload()
    state: dict = {"names": []}

    # When only a service's programs changed, the names match before and after the reload, so
    # this returns at once; monit applies the new programs at the next start/stop either way.
    def listed() -> bool:
        try:
            state["names"] = sorted(live_services(host))
        except CommandFailed:  # the daemon's httpd restarts while it reinitialises
            return False
        return state["names"] == sorted(services)

    # Services usually appear within a poll cycle or two, but the daemon takes the reload only
    # between cycles, and a cycle may be spent waiting on start programs (start_timeout each).
    timeout = 30 + r.start_timeout * max(1, len(services))
    if not wait_until(listed, timeout):
        raise CommandFailed(
            f"{host.name}: after monit reload, group {r.monit_group} lists "
            f"{', '.join(state['names']) or 'nothing'} instead of {', '.join(services)} "
            f"(waited {timeout}s): check monit's log"
        )
    say(f"{host.name}: monit reloaded; group {r.monit_group}: {', '.join(services)}")


def _write(host: Host, change: FileChange) -> None:
    if change.new is None:
        host.remove_file(change.path)
    else:
        write_file(host, change.path, change.new)


@dataclass
class Outcome:
    """What setup did on one host."""

    changed: list[str]
    reloaded: bool
    stopped: list[str]


def setup_host(host: Host, say: Say = _quiet) -> Outcome:
    """Make the host's conf files, monitrc and monit agree with the config (see module doc)."""
    r = host.settings.resque
    wrapper = resolve_wrapper(host)
    live = live_services(host)  # also: refuse early, changing nothing, when no daemon answers
    todo = plan(
        host.settings,
        wrapper=wrapper,
        installed_monitrc=read_root_file(host, r.monitrc_path),
        confs=read_confs(host),
        live=live,
    )
    if todo.empty:
        say(
            f"{host.name}: no change: {len(todo.services)} worker(s) configured, conf files, "
            f"{r.monitrc_path} and monit agree"
        )
        return Outcome([], False, [])
    if host.dry:
        for change in ([todo.monitrc] if todo.monitrc is not None else []) + list(todo.confs):
            say(unified_diff(host.name, change))
        if todo.stop:
            host.would(f"stop (through monit) and remove {', '.join(todo.stop)}")
        host.would(
            "write the files above" + (", check the monitrc with monit -t and reload monit" if todo.reload else "")
        )
        return Outcome([], False, [])
    if todo.monitrc is not None:
        if todo.monitrc.new is None:  # plan() only ever writes the monitrc (desired_monitrc), never removes it
            raise ValueError(f"{host.name}: the plan removes the monitrc, which setup never does")
        check_candidate(host, todo.monitrc.new)
    stopped: list[str] = []
    try:
        if todo.stop:
            stop_services(host, todo.stop, say)
            stopped = list(todo.stop)
        if todo.monitrc is not None:
            install_monitrc(host, todo.services)
    except CommandFailed:
        host.run(
            _as_root(host, f"rm -f {shlex.quote(_hidden(r.monitrc_path, 'deployhooks-candidate'))}"),
            warn=True,
            change=True,
        )
        start_services(host, stopped)
        raise
    changed = []
    if todo.monitrc is not None:
        say(unified_diff(host.name, todo.monitrc))
        changed.append(r.monitrc_path)
    # New and changed confs before the reload (monit starts new workers right after it);
    # removed ones only after their workers were stopped above.
    for change in todo.confs:
        _write(host, change)
        say(unified_diff(host.name, change))
        changed.append(change.path)
    if todo.reload:
        reload_and_wait(host, todo.services, say)
    running = [c for c in todo.confs if c.old is not None and c.new is not None]
    if running:
        say(
            f"{host.name}: {', '.join(os.path.basename(c.path) for c in running)} changed: "
            f"running workers read their queues at start; restart them to apply "
            f"(deployhooks resque.restart)"
        )
    return Outcome(changed, todo.reload, stopped)
