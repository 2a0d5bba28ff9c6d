"""Small helpers shared by the integration and fleet tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_APP = REPO / "examples" / "shop"


def wait_for(check, timeout, what):
    """Poll `check` until true, or fail the test saying what did not happen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def fab(*args, timeout=180, **popen):
    """Run `fab ARGS` from the repository (its fabfile) and return the CompletedProcess."""
    result = subprocess.run([sys.executable, "-m", "fabric", *args], cwd=REPO, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL, **popen)
    print(f"--- fab {' '.join(args)} exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def make_repo(path: Path, marker: str = "v1") -> Path:
    """A git repository holding the example app, with VERSION = marker, committed."""
    if not path.exists():
        shutil.copytree(EXAMPLE_APP, path)
    (path / "VERSION").write_text(marker + "\n")
    git = ["git", "-c", "user.email=test@example.invalid", "-c", "user.name=test"]
    if not (path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    subprocess.run(git + ["commit", "-qm", marker], cwd=path, check=True)
    return path


def monit_settled(fleet, app: str = "shop", timeout: float = 30) -> None:
    """Wait until monit on every host of `fleet` reports each of `app`'s services OK with a pid
    (monit learns a new worker's pid a poll cycle after the process table shows it)."""
    from deployhooks.monit import parse_status

    def ok() -> bool:
        for h in fleet.hosts:
            services = parse_status(fleet.monit(h, "-B", "status", "-g", f"{app}_resque").stdout)
            if not services or not all(s.running and not s.pending for s in services.values()):
                return False
        return True

    wait_for(ok, timeout, f"monit on every host to report {app}'s workers running")
