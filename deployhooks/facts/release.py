"""The release layout `<deploy_to>/{releases/<r>,shared,current}` and links into a release."""

from __future__ import annotations

import os
import posixpath
import re
import shlex

import yaml

from ..errors import CommandFailed, ConfigError
from ..remote.host import Host
from ..settings import yaml_problem

# A release's folder name: its UTC deploy time, YYYYMMDDHHMMSS, in ASCII digits, as Engine Yard,
# Capistrano and `fab deploy` name them; deploy's cleanup and rollback only count such names.
RELEASE_NAME_RE = re.compile(r"\A[0-9]{14}\Z")
# A git object name as `REVISION` holds it (Capistrano's file, read by Sentry and AppSignal).
REVISION_RE = re.compile(r"\A[0-9a-f]{7,64}\Z")


def release_name(host: Host, release_path: str) -> str:
    """The release's folder name; the path must be `<deploy_to>/releases/<name>`, the name 14
    ASCII digits (RELEASE_NAME_RE).

    Workers are matched to releases by that name (their working directory), so a release
    elsewhere could never be recognised as the one workers should run from; and a release not
    named by its time would never be pruned or rolled back to.
    """
    releases = host.settings.releases_path
    path = os.path.normpath(release_path)
    parent, name = os.path.split(path)
    if not os.path.isabs(release_path) or parent != releases or not RELEASE_NAME_RE.fullmatch(name):
        raise ConfigError(
            f"release path {_shorten(release_path)!r} is not {releases}/<name> with a "
            f"14-digit UTC timestamp name (YYYYMMDDHHMMSS) (deploy_to is "
            f"{host.settings.deploy_to}, from {host.settings.source})"
        )
    return name


def release_of(link: str | None, settings) -> str | None:
    """The release name `current`'s raw link target names, if it is one of the app's releases.

    The raw target, not `readlink -f`: `current` is written as `<deploy_to>/releases/<r>`
    (or relative to deploy_to), and resolving a symlinked deploy_to would hide that."""
    if not link:
        return None
    target = posixpath.normpath(posixpath.join(posixpath.dirname(settings.current_path), link))
    if target.startswith(settings.releases_path + "/"):
        return target[len(settings.releases_path) + 1 :].split("/")[0]
    return None


def current_release(host: Host) -> str | None:
    """The release `current` points at on the host (as `resque.status` reads it), or None."""
    link = host.run(f"readlink {shlex.quote(host.settings.current_path)}", warn=True).stdout
    name = release_of(link.rstrip("\n") or None, host.settings)
    return name if name and RELEASE_NAME_RE.fullmatch(name) else None


def _shorten(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def link_resque_yml(host: Host, release_path: str) -> str:
    """Link `<shared>/config/resque.yml` into `<release>/config/`, atomically and idempotently.

    Refuses (ConfigError) before touching anything when the shared file is missing, is not
    valid YAML, or has no entry for the framework env. Returns what it did, for the log.
    """
    s = host.settings
    shared = f"{s.shared_path}/config/resque.yml"
    text = host.read_file(shared)
    if text is None:
        raise ConfigError(
            f"{host.name}: {shared} is missing: create it with a "
            f"'{s.framework_env}:' entry pointing at your redis (host:port)"
        )
    try:
        data = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        line, what = yaml_problem(exc, text)
        raise ConfigError(f"{host.name}: {shared}{line} is not valid YAML: {what}") from None
    if not isinstance(data, dict) or data.get(s.framework_env) in (None, ""):
        raise ConfigError(
            f"{host.name}: {shared} has no entry for the framework env "
            f"'{s.framework_env}': add '{s.framework_env}: <redis host:port>'"
        )
    name = release_name(host, release_path)
    config_dir = f"{s.releases_path}/{name}/config"
    target = f"{config_dir}/resque.yml"
    tmp = f"{config_dir}/.resque.yml.deployhooks-tmp"
    q = shlex.quote
    release = f"{s.releases_path}/{name}"
    # A new link renamed over the old one: at no instant is config/resque.yml missing.
    r = host.run(
        f"test -d {q(release)} || exit 5; mkdir -p {q(config_dir)} && "
        f"ln -sfn {q(shared)} {q(tmp)} && mv -Tf {q(tmp)} {q(target)}",
        warn=True,
        change=True,
    )
    if r.exited == 5:
        raise ConfigError(
            f"{host.name}: the release folder {release} does not exist: upload the "
            f"release there before running the hooks, or pass its real path"
        )
    if r.exited != 0:
        raise CommandFailed(
            f"{host.name}: could not link {target} -> {shared} (exit {r.exited}): {(r.stderr or r.stdout).strip()}"
        )
    return f"{host.name}: linked {target} -> {shared}"
