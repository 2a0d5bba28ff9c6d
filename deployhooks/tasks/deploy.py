"""`deploy` and `rollback`: the workstation side, over SSH to every configured host."""

from __future__ import annotations

import json as jsonlib
import os
import re
import sys
import time
from pathlib import Path

from invoke import Exit

from ..errors import EXIT_CONFIG, EXIT_REFUSED, DeployhooksError
from .common import (
    MAX_SECONDS,
    LazyModule,
    dry_run,
    fabric_config,
    finish,
    load_settings,
    say,
    seconds,
    select_hosts,
    target_hosts,
    task,
    usage_error,
)

# Imported when a task first uses them (see LazyModule): every `fab` call imports this file.
deploy_mod = LazyModule("deployhooks.commands.deploy")
rollback_mod = LazyModule("deployhooks.commands.rollback")
release_mod = LazyModule("deployhooks.facts.release")

_CONFIG = "path of deployhooks.yml (default config/deployhooks.yml or DEPLOYHOOKS_CONFIG)"
_ROLES = "comma-separated roles to deploy to (default: every role under hosts)"


_LOCK_WAIT = "seconds to wait for another deploy's lock before refusing (default 0)"


def _lock_deadline(lock_wait) -> float:
    """--lock-wait as the monotonic time until which a held lock is waited for."""
    if lock_wait is None:
        return 0.0
    return time.monotonic() + seconds("--lock-wait", lock_wait, MAX_SECONDS)


def _to_stderr(line: str) -> None:
    """Progress under --json: stdout carries only the JSON document."""
    print(line, file=sys.stderr, flush=True)


def _fleet_hosts(c, settings, roles) -> list[str]:
    if getattr(c, "host", None):
        # Fabric runs a task once per -H host, one after another: that would be N separate
        # deploys, each switching one host, which is exactly the half-switched fleet this tool
        # exists to prevent.
        raise Exit(
            "deploy and rollback run their steps as barriers across all hosts at once, "
            "so they do not take -H: list the hosts under 'hosts' in the config and pick "
            "them with --roles",
            code=2,
        )
    return target_hosts(c, settings, roles, list(settings.hosts))


# What git could take for the ref: no leading '-' (git would read an option, e.g. --output=),
# no whitespace or control character; git itself judges the rest (HEAD~2, v1.0, origin/main).
_REF_RE = re.compile(r"\A[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]*\Z")


def _ref(ref: str) -> str:
    """`--ref` checked for what git must never see as an option or as several words."""
    if not _REF_RE.fullmatch(str(ref)):
        raise usage_error("--ref", "a git ref (a branch, tag or commit; not starting with -, no spaces)", ref)
    return ref


def _repo_for(settings, repo: str | None) -> str:
    """The app's git repository: --repo, deploy.repo, else the folder holding config/."""
    if repo or settings.deploy.repo:
        return repo or settings.deploy.repo
    source = Path(settings.source).resolve()
    if source.parent.name == "config":
        return str(source.parent.parent)
    return os.getcwd()


@task(
    help={
        "ref": "git ref to deploy (default HEAD)",
        "repo": "the app's git repository",
        "roles": _ROLES,
        "config": _CONFIG,
        "json": "print the report (steps, switches, queue downtime) as JSON for scripts",
        "lock_wait": _LOCK_WAIT,
    }
)
def deploy(c, ref="HEAD", repo=None, roles=None, config=None, json=False, lock_wait=None):
    """Ship REF to every host, run the hooks, switch current atomically, restart workers."""
    ref = _ref(ref)
    settings = load_settings(config)
    hosts = _fleet_hosts(c, settings, roles)
    try:
        sha, archive = deploy_mod.build_release(_repo_for(settings, repo), ref)
    except DeployhooksError as exc:
        raise Exit(str(exc), code=exc.exit_code) from None
    progress = _to_stderr if json else say
    progress(
        f"deploying {settings.app} {ref} ({sha[:12]}, {len(archive) / 1024:.1f} KiB) to "
        f"{len(hosts)} host(s): {', '.join(hosts)}"
    )
    run = deploy_mod.Deploy(
        settings, hosts, archive, say=progress, dry=dry_run(c), ref=ref, sha=sha, config=fabric_config(c)
    )
    run.lock_deadline = _lock_deadline(lock_wait)
    report = run.run()
    if json:
        print(jsonlib.dumps(report.as_json(), indent=2))
    else:
        print("\n".join(deploy_mod.summary_lines(report)))
    if report.code:
        print(report.message, file=sys.stderr, flush=True)
        raise Exit(code=report.code)
    progress(report.message)


@task(
    help={
        "roles": _ROLES,
        "config": _CONFIG,
        "lock_wait": _LOCK_WAIT,
        "release": "the kept release to go to (default: the one before current)",
    }
)
def rollback(c, roles=None, release=None, config=None, lock_wait=None):
    """Switch current back to a kept release everywhere, through the guard, and restart the
    workers on it: a deploy in reverse (lock, guard, atomic switch, wait for the workers)."""
    if release is not None and not release_mod.RELEASE_NAME_RE.fullmatch(str(release)):
        raise usage_error("--release", "a release name (14 digits, YYYYMMDDHHMMSS)", release)
    settings = load_settings(config)
    hosts = _fleet_hosts(c, settings, roles)
    say(f"rolling back {settings.app} on {len(hosts)} host(s): {', '.join(hosts)}")
    run = rollback_mod.Rollback(settings, hosts, say=say, release=release, dry=dry_run(c), config=fabric_config(c))
    run.lock_deadline = _lock_deadline(lock_wait)
    report = run.run()
    print("\n".join(deploy_mod.summary_lines(report)))
    if report.code:
        print(report.message, file=sys.stderr, flush=True)
        raise Exit(code=report.code)
    say(report.message)


@task(help={"roles": _ROLES, "config": _CONFIG})
def lock_status(c, roles=None, config=None):
    """Who holds the deploy lock on each host, and since when."""
    settings = load_settings(config)
    with select_hosts(c, settings, roles, list(settings.hosts)) as hosts:
        results = hosts.each(deploy_mod.lock_status)
    for r in results:
        if not r.code:
            say(f"{r.host}: deploy lock held by {r.value}" if r.value else f"{r.host}: no deploy lock")
    finish(results)


@task(help={"roles": _ROLES, "config": _CONFIG, "yes": "do not ask: remove the lock whoever holds it (for scripts)"})
def unlock(c, roles=None, yes=False, config=None):
    """Release a deploy lock left by a dead deploy, after saying who holds it."""
    settings = load_settings(config)
    with select_hosts(c, settings, roles, list(settings.hosts)) as hosts:
        results = hosts.each(deploy_mod.lock_status)
        held = {r.host: r.value for r in results if not r.code and r.value}
        if not held:
            say("no deploy lock is held")
            finish(results)
            return
        for host, holder in held.items():
            say(f"{host}: deploy lock held by {holder}")
        if not yes:
            if not sys.stdin.isatty():
                raise Exit(
                    "not removing the lock without a confirmation: run it in a terminal, or pass --yes",
                    code=EXIT_CONFIG,
                )
            answer = input(f"Remove the deploy lock on {len(held)} host(s)? Only if that deploy is dead. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise Exit("left as it was", code=EXIT_REFUSED)
        finish([r for r in results if r.code] + hosts.each(deploy_mod.unlock, list(held)))
        say(f"deploy lock removed on {', '.join(held)}")
