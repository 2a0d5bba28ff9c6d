"""`fab rollback`: a deploy in reverse, to a release every host keeps (see `Rollback`).

The target is decided once for the fleet (`rollback_target`, pure): a rollback never leaves
hosts on different releases. The rest is `deploy.Deploy`'s machinery: the lock, the fleet-wide
guard, an atomic switch, the workers restarted and waited for on the target.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable

from ..errors import ConfigError
from ..facts import release as release_mod
from ..remote.host import Host
from ..settings import Settings
from .switch import ReleaseSwitch, Say, _StepFailed

q = shlex.quote


def previous_release(listing: str, current: str | None) -> str | None:
    """The release before `current` in a `ls releases` listing (names sort by time); only names
    of 14 ASCII digits (a UTC YYYYMMDDHHMMSS) count, as `_cleanup` counts them."""
    # isascii() first: isdigit() alone takes full-width or Arabic-Indic digits ('２０２６...').
    names = sorted(n for n in listing.split() if n.isascii() and n.isdigit() and len(n) == 14)
    if current not in names:
        return names[-1] if names else None
    i = names.index(current)
    return names[i - 1] if i > 0 else None


@dataclass(frozen=True)
class HostReleases:
    """What rollback reads on one host: where `current` points and the releases kept."""

    current: str | None
    listing: str


def rollback_target(seen: dict[str, HostReleases], wanted: str | None) -> str:
    """The one release every host goes to (pure). `wanted` (--release) must exist on every
    host; without it the hosts must agree on `current` and all keep the release before it.
    Raises ConfigError (exit 2) naming the hosts otherwise: a rollback never leaves the fleet
    on different releases."""
    if wanted is not None:
        missing = [h for h, r in seen.items() if wanted not in r.listing.split()]
        if missing:
            raise ConfigError(
                f"release {wanted} is not kept on {', '.join(missing)}: pick one "
                f"that every host has (ls {{deploy_to}}/releases)"
            )
        return wanted
    currents = {r.current for r in seen.values()}
    if len(currents) != 1:
        by = ", ".join(f"{h} on {r.current or 'no release'}" for h, r in sorted(seen.items()))
        raise ConfigError(f"the hosts are on different releases ({by}): say where to go with --release NAME")
    current = currents.pop()
    targets = {h: previous_release(r.listing, current) for h, r in seen.items()}
    if len(set(targets.values())) != 1 or None in targets.values():
        by = ", ".join(f"{h}: {t or 'none'}" for h, t in sorted(targets.items()))
        raise ConfigError(
            f"no release before {current or 'current'} that every host keeps ({by}): pick one with --release NAME"
        )
    target = next(iter(targets.values()))
    assert target is not None  # refused just above when any host has none
    return target


class Rollback(ReleaseSwitch):
    """`fab rollback`: a deploy in reverse, to a release every host keeps.

    lock -> read current and releases -> the guard (every host at once) -> prepare switch ->
    switch current -> after_symlink (restart, wait until every worker runs the target) ->
    restart app servers -> move the rolled-back release to releases_failed/ -> unlock.
    A refusal or failure before the switch leaves everything as it was.
    """

    kind = "rollback"

    def __init__(
        self,
        settings: Settings,
        hosts: list[str],
        *,
        say: Say = print,
        release: str | None = None,
        roles_of: Callable[[str], tuple[str, ...]] | None = None,
        dry: bool = False,
        config=None,
    ):
        super().__init__(
            settings,
            hosts,
            say=say,
            release=release or "(to be chosen)",
            roles_of=roles_of,
            dry=dry,
            config=config,
        )
        self.wanted = release
        self.release_pending = release is None
        self.seen: dict[str, HostReleases] = {}

    def _read(self, host: Host) -> None:
        listing = host.run(f"ls -1 {q(self.s.releases_path)}", warn=True).stdout
        self.seen[host.name] = HostReleases(release_mod.current_release(host), listing)

    def _before_switch(self) -> None:
        self.step("read releases", self._read)
        try:
            target = rollback_target(self.seen, self.wanted)
        except ConfigError as exc:
            self.say(str(exc))
            raise _StepFailed("choose release", exc.exit_code, {"fleet": str(exc)}) from None
        self.release = self.report.release = target
        self.release_pending = False
        self.release_path = f"{self.s.releases_path}/{target}"
        sha = (
            self.host(self.hosts[0]).run(f"head -c 100 {q(self.release_path + '/REVISION')}", warn=True).stdout.strip()
        )
        self.sha = sha if release_mod.REVISION_RE.fullmatch(sha) else None
        self.say(f"rolling back to {target}")
        self._guard_fleet("guard")
        self.step("link shared", self._link_shared)
        self.step("prepare switch", self._prepare_switch)

    def _after_switch(self) -> None:
        self.step("switch current", self._switch)
        self.step("after_symlink", self._after_symlink)
        self.step("restart app servers", self._restart_app)
        self.step("move rolled-back release aside", self._move_rolled_back)

    def _move_rolled_back(self, host: Host) -> None:
        old = self.seen[host.name].current
        if not old or old == self.release or old < self.release:
            return  # nothing left behind, or a roll forward: keep it
        failed = f"{self.s.deploy_to}/releases_failed"
        host.run(
            f"mkdir -p {q(failed)} && mv {q(self.s.releases_path + '/' + old)} {q(failed + '/' + old)}", change=True
        )
        self.report.pruned[host.name] = [old]
        if not self.dry:
            self.say(f"{host.name}: moved {old} to releases_failed/")

    def _done_message(self, seconds: float) -> str:
        return f"rolled back to {self.release} on {len(self.hosts)} host(s) in {seconds:.1f}s: " + ", ".join(
            f"{h} -> {self.release}" for h in self.hosts
        )

    def _kept(self, left: dict[str, str]) -> str:
        return f"current was not switched on any host, and {self._workers_back(left)}."
