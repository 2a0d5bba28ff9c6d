"""`deploy` and `rollback`: the workstation side, over SSH to every configured host."""

from __future__ import annotations

import json as jsonlib
import os
import re
import sys
from pathlib import Path

from invoke import Exit

from .. import deploy as deploy_mod
from ..errors import DeployhooksError
from .. import release as release_mod
from .common import dry_run, load_settings, say, target_hosts, task, usage_error

_CONFIG = "path of deployhooks.yml (default config/deployhooks.yml or DEPLOYHOOKS_CONFIG)"
_ROLES = "comma-separated roles to deploy to (default: every role under hosts)"


def _to_stderr(line: str) -> None:
    """Progress under --json: stdout carries only the JSON document."""
    print(line, file=sys.stderr, flush=True)


def _fleet_hosts(c, settings, roles) -> list[str]:
    if getattr(c, "host", None):
        # Fabric runs a task once per -H host, one after another: that would be N separate
        # deploys, each switching one host, which is exactly the half-switched fleet this tool
        # exists to prevent.
        raise Exit("deploy and rollback run their steps as barriers across all hosts at once, "
                   "so they do not take -H: list the hosts under 'hosts' in the config and pick "
                   "them with --roles", code=2)
    return target_hosts(c, settings, roles, list(settings.hosts))


# What git could take for the ref: no leading '-' (git would read an option, e.g. --output=),
# no whitespace or control character; git itself judges the rest (HEAD~2, v1.0, origin/main).
_REF_RE = re.compile(r"\A[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]*\Z")


def _ref(ref: str) -> str:
    """`--ref` checked for what git must never see as an option or as several words."""
    if not _REF_RE.fullmatch(str(ref)):
        raise usage_error("--ref", "a git ref (a branch, tag or commit; not starting with -, "
                                   "no spaces)", ref)
    return ref


def _repo_for(settings, repo: str | None) -> str:
    """The app's git repository: --repo, deploy.repo, else the folder holding config/."""
    if repo or settings.deploy.repo:
        return repo or settings.deploy.repo
    source = Path(settings.source).resolve()
    if source.parent.name == "config":
        return str(source.parent.parent)
    return os.getcwd()


@task(help={"ref": "git ref to deploy (default HEAD)", "repo": "the app's git repository",
            "roles": _ROLES, "config": _CONFIG,
            "json": "print the report (steps, switches, queue downtime) as JSON for scripts"})
def deploy(c, ref="HEAD", repo=None, roles=None, config=None, json=False):
    """Ship REF to every host, run the hooks, switch current atomically, restart workers."""
    ref = _ref(ref)
    settings = load_settings(config)
    hosts = _fleet_hosts(c, settings, roles)
    try:
        sha, archive = deploy_mod.build_release(_repo_for(settings, repo), ref)
    except DeployhooksError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None
    progress = _to_stderr if json else say
    progress(f"deploying {settings.app} {ref} ({sha[:12]}, {len(archive) / 1024:.1f} KiB) to "
             f"{len(hosts)} host(s): {', '.join(hosts)}")
    report = deploy_mod.Deploy(settings, hosts, archive, say=progress, dry=dry_run(c), ref=ref,
                               sha=sha).run()
    if json:
        print(jsonlib.dumps(report.as_json(), indent=2))
    else:
        print("\n".join(deploy_mod.summary_lines(report)))
    if report.code:
        print(report.message, file=sys.stderr, flush=True)
        raise Exit(code=report.code)
    progress(report.message)


@task(help={"roles": _ROLES, "config": _CONFIG,
            "release": "the kept release to go to (default: the one before current)"})
def rollback(c, roles=None, release=None, config=None):
    """Switch current back to a kept release everywhere, through the guard, and restart the
    workers on it: a deploy in reverse (lock, guard, atomic switch, wait for the workers)."""
    if release is not None and not release_mod.RELEASE_NAME_RE.fullmatch(str(release)):
        raise usage_error("--release", "a release name (14 digits, YYYYMMDDHHMMSS)", release)
    settings = load_settings(config)
    hosts = _fleet_hosts(c, settings, roles)
    say(f"rolling back {settings.app} on {len(hosts)} host(s): {', '.join(hosts)}")
    report = deploy_mod.Rollback(settings, hosts, say=say, release=release, dry=dry_run(c)).run()
    print("\n".join(deploy_mod.summary_lines(report)))
    if report.code:
        print(report.message, file=sys.stderr, flush=True)
        raise Exit(code=report.code)
    say(report.message)
