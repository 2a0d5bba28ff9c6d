"""The release layout `<deploy_to>/{releases/<r>,shared,current}` and links into a release."""

from __future__ import annotations

import os
import shlex

import yaml

from .errors import CommandFailed, ConfigError
from .host import Host


def release_name(host: Host, release_path: str) -> str:
    """The release's folder name; the path must be `<deploy_to>/releases/<name>`.

    Workers are matched to releases by that name (their working directory), so a release
    elsewhere could never be recognised as the one workers should run from.
    """
    releases = host.settings.releases_path
    path = os.path.normpath(release_path)
    parent, name = os.path.split(path)
    if not os.path.isabs(release_path) or parent != releases or not name or name.startswith("."):
        raise ConfigError(f"release path {release_path!r} is not {releases}/<name> "
                          f"(deploy_to is {host.settings.deploy_to}, from {host.settings.source})")
    return name


def link_resque_yml(host: Host, release_path: str) -> str:
    """Link `<shared>/config/resque.yml` into `<release>/config/`, atomically and idempotently.

    Refuses (ConfigError) before touching anything when the shared file is missing, is not
    valid YAML, or has no entry for the framework env. Returns what it did, for the log.
    """
    s = host.settings
    shared = f"{s.shared_path}/config/resque.yml"
    text = host.read_file(shared)
    if text is None:
        raise ConfigError(f"{host.name}: {shared} is missing: create it with a "
                          f"'{s.framework_env}:' entry pointing at your redis (host:port)")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{host.name}: {shared}{line} is not valid YAML: "
                          f"{getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or data.get(s.framework_env) in (None, ""):
        raise ConfigError(f"{host.name}: {shared} has no entry for the framework env "
                          f"'{s.framework_env}': add '{s.framework_env}: <redis host:port>'")
    name = release_name(host, release_path)
    config_dir = f"{s.releases_path}/{name}/config"
    target = f"{config_dir}/resque.yml"
    tmp = f"{config_dir}/.resque.yml.deployhooks-tmp"
    q = shlex.quote
    release = f"{s.releases_path}/{name}"
    # A new link renamed over the old one: at no instant is config/resque.yml missing.
    r = host.run(f"test -d {q(release)} || exit 5; mkdir -p {q(config_dir)} && "
                 f"ln -sfn {q(shared)} {q(tmp)} && mv -Tf {q(tmp)} {q(target)}", warn=True)
    if r.exited == 5:
        raise ConfigError(f"{host.name}: the release folder {release} does not exist: upload the "
                          f"release there before running the hooks, or pass its real path")
    if r.exited != 0:
        raise CommandFailed(f"{host.name}: could not link {target} -> {shared} "
                            f"(exit {r.exited}): {(r.stderr or r.stdout).strip()}")
    return f"{host.name}: linked {target} -> {shared}"
