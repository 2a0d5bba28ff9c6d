"""Small helpers shared by the integration and fleet tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployhooks.testing.examplerepo import make_repo  # noqa: F401  (shared with the sandbox)

REPO = Path(__file__).resolve().parents[1]


def wait_for(check, timeout=15.0, what="condition", interval=0.05):
    """Poll `check` until it returns something truthy and return that; fail the test, saying
    what did not happen, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def fab(*args, timeout=180, **popen):
    """Run `fab ARGS` from the repository (its fabfile) and return the CompletedProcess."""
    result = subprocess.run(
        [sys.executable, "-m", "fabric", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **popen,
    )
    print(f"--- fab {' '.join(args)} exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def monit_settled(fleet, app: str = "shop", timeout: float = 30) -> None:
    """Wait until monit on every host of `fleet` reports each of `app`'s services OK with a pid
    (monit learns a new worker's pid a poll cycle after the process table shows it)."""
    from deployhooks.facts.monit import parse_status

    def ok() -> bool:
        for h in fleet.hosts:
            services = parse_status(fleet.monit(h, "-B", "status", "-g", f"{app}_resque").stdout)
            if not services or not all(s.running and not s.pending for s in services.values()):
                return False
        return True

    wait_for(ok, timeout, f"monit on every host to report {app}'s workers running")
