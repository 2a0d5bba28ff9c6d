"""The app's own deploy hooks, Engine Yard's contract: `<release>/deploy/<name>` at each point.

Engine Yard (engineyard-serverside, "Deploy Hooks") runs an executable `deploy/<name>` from the
release folder, with `EY_DEPLOY_*` describing the deploy, at twelve points in this order; a
non-zero exit fails the deploy; a file that is not executable is skipped with a warning (its
Ruby `deploy/<name>.rb` hooks are not supported here). `fab deploy` does the same on every
host of the deploy, so an app that already has Engine Yard hooks deploys unchanged.

Which hooks exist is read from the release archive itself (one tarball for every host), so a
deploy without hooks pays nothing. deployhooks' own shims (`hooks/before_migrate` copied into
`deploy/`) are recognised and skipped: `fab deploy` already runs the guard they would run.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile

from ..errors import CommandFailed

POINTS = (
    "before_deploy",
    "before_bundle",
    "after_bundle",
    "before_compile_assets",
    "after_compile_assets",
    "before_migrate",
    "after_migrate",
    "before_symlink",
    "after_symlink",
    "before_restart",
    "after_restart",
    "after_deploy",
)


def in_archive(archive: bytes) -> dict[str, bool]:
    """`name -> executable?` for each `deploy/<name>` of POINTS in a gzipped tar; shims left out."""
    found: dict[str, bool] = {}
    if not archive:
        return found
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            path = member.name[2:] if member.name.startswith("./") else member.name
            folder, _, name = path.rpartition("/")
            if folder != "deploy" or name not in POINTS or not member.isfile():
                continue
            data = tar.extractfile(member)
            if data is None:  # tarfile gives None only for what is not a regular file: ruled out above
                continue
            head = data.read(4096)
            if b"deployhooks" in head and b" hooks." in head:
                continue
            found[name] = bool(member.mode & 0o111)
    return found


def environment(
    app: str, framework_env: str, release_path: str, roles: tuple[str, ...], host: str, verbose: bool = False
) -> dict[str, str]:
    """The `EY_DEPLOY_*` variables Engine Yard sets for a hook."""
    return {
        "EY_DEPLOY_APP": app,
        "EY_DEPLOY_RELEASE_PATH": release_path,
        "EY_DEPLOY_FRAMEWORK_ENV": framework_env,
        "EY_DEPLOY_CURRENT_ROLES": " ".join(roles),
        "EY_DEPLOY_CURRENT_NAME": host,
        "EY_DEPLOY_ENVIRONMENT_NAME": framework_env,
        "EY_DEPLOY_CONFIG": json.dumps({"app": app, "framework_env": framework_env, "release_path": release_path}),
        "EY_DEPLOY_VERBOSE": "1" if verbose else "0",
    }


def command(release_path: str, name: str, env: dict[str, str]) -> str:
    """The shell command that runs `deploy/<name>` from the release folder with `env`."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    return f"cd {shlex.quote(release_path)} && env {assigns} ./deploy/{name} 2>&1"


def failed(host: str, name: str, exited: int, output: str) -> CommandFailed:
    tail = "\n".join(output.strip().splitlines()[-5:])
    return CommandFailed(f"{host}: the app's deploy/{name} hook failed (exit {exited})" + (f": {tail}" if tail else ""))
