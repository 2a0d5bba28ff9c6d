"""The shell text of each deploy step, built without I/O (like pyinfra's operations).

Each builder takes the settings and names it needs and returns the command a `Host` runs; the
orchestration (`deploy.Deploy`) decides where and when. Every path is quoted here, once.
"""

from __future__ import annotations

import shlex
from typing import Iterable

from ..facts.release import RELEASE_NAME_RE
from ..settings import Settings

q = shlex.quote


def tarball_path(settings: Settings, release: str) -> str:
    """Where the archive lands before it is unpacked (hidden, beside the releases)."""
    return f"{settings.releases_path}/.{release}.tar.gz"


def unpack_command(settings: Settings, release: str) -> str:
    """Unpack the uploaded archive into a new release folder (fails if the release exists)."""
    tarball, path = tarball_path(settings, release), f"{settings.releases_path}/{release}"
    return f"mkdir {q(path)} && tar -xzf {q(tarball)} -C {q(path)} && rm -f {q(tarball)}"


def revision_command(release_path: str, sha: str) -> str:
    """The REVISION file error trackers (Sentry, AppSignal) and Capistrano read: the commit."""
    return f"printf '%s\\n' {q(sha)} > {q(release_path + '/REVISION')}"


def link_shared_command(settings: Settings, release_path: str) -> str | None:
    """Link shared_dirs (made if missing) and the linked files that exist into the release."""
    d = settings.deploy
    cmds = []
    for name in d.shared_dirs:
        target, link = f"{settings.shared_path}/{name}", f"{release_path}/{name}"
        cmds.append(
            f"mkdir -p {q(target)} {q(link.rsplit('/', 1)[0])} && rm -rf {q(link)} && ln -s {q(target)} {q(link)}"
        )
    for name in d.linked_files:
        target, link = f"{settings.shared_path}/config/{name}", f"{release_path}/config/{name}"
        cmds.append(
            f"if [ -e {q(target)} ]; then mkdir -p {q(release_path + '/config')} && ln -sfn {q(target)} {q(link)}; fi"
        )
    return " && ".join(cmds) or None


def missing_files_command(settings: Settings) -> str:
    """Prints each deploy.shared_files entry missing from shared/config, one per line."""
    paths = [f"{settings.shared_path}/config/{name}" for name in settings.deploy.required_files]
    return "for f in " + " ".join(q(p) for p in paths) + '; do [ -e "$f" ] || echo "$f"; done'


def in_release_command(release_path: str, framework_env: str, command: str) -> str:
    """`command` (the config author's shell text) run in the release with the framework env,
    exported: `VAR=x cmd` would not reach a second command or a $VAR in the text itself."""
    env = q(framework_env)
    return f"cd {q(release_path)} && export RAILS_ENV={env} RACK_ENV={env} && {command}"


def next_link(settings: Settings, release: str) -> str:
    """The link made before the switch, renamed over `current` by the switch."""
    return f"{settings.deploy_to}/.current.{release}"


def prepare_switch_command(settings: Settings, release: str) -> str:
    """Make the new link beside `current` (so a host lost now aborts before any switch)."""
    path = f"{settings.releases_path}/{release}"
    return f"test -d {q(path)} && ln -sfn {q(path)} {q(next_link(settings, release))}"


def switch_command(settings: Settings, release: str) -> str:
    """rename(2) of the prepared link over `current`: atomic, so `current` always resolves."""
    return f"mv -Tf {q(next_link(settings, release))} {q(settings.current_path)}"


def restart_app_command(settings: Settings) -> str:
    """The app servers' restart (deploy.restart_command), run in `current`."""
    return f"cd {q(settings.current_path)} && {settings.deploy.restart_command}"


def prune_command(settings: Settings, release: str) -> str:
    """Remove the oldest releases beyond keep_releases, printing each name removed; never
    `release` (what `current` points at). Release names are UTC timestamps: they sort."""
    keep = settings.keep_releases
    return (
        f"cd {q(settings.releases_path)} && ls -1 | grep -E '^[0-9]{{14}}$' | sort | head -n -{keep} | "
        f'grep -vx {q(release)} | while read -r r; do rm -rf -- "$r" && echo "$r"; done; true'
    )


def prune_plan(listing: Iterable[str], release: str, keep: int) -> list[str]:
    """The releases `prune_command` would remove from `listing`, once `release` is there too."""
    names = sorted({n for n in listing if RELEASE_NAME_RE.fullmatch(n)} | {release})
    return [n for n in names[: max(0, len(names) - keep)] if n != release]


def move_aside_command(settings: Settings, release: str) -> str:
    """After an abort: the new release to releases_failed/, its archive and link removed."""
    failed = f"{settings.deploy_to}/releases_failed"
    path = f"{settings.releases_path}/{release}"
    return (
        f"mkdir -p {q(failed)} && if [ -d {q(path)} ]; then mv {q(path)} {q(failed + '/' + release)}; fi; "
        f"rm -f {q(tarball_path(settings, release))} {q(next_link(settings, release))}"
    )


def revisions_log_command(settings: Settings, line: str) -> str:
    """Append `line` to `<deploy_to>/revisions.log` (Capistrano keeps one of the same kind)."""
    return f"printf '%s\\n' {q(line)} >> {q(settings.deploy_to + '/revisions.log')}"
