"""A short run of the randomized soak (bench/soak.py): four seeded rounds on three hosts reached
as the deploy user, each an operation through real `fab` with background jobs and maybe a fault,
then every invariant of the promise checked (no job lost or failed, `current` always a release,
every worker running and monitored on current, no guard record or lock left, one release
everywhere, exit codes as documented).

Seed 7 plans: a drain that Ctrl-C hits just after it paused the workers (then rerun); a deploy
(on_busy: abort, guard before_symlink) that Ctrl-C hits at "prepare switch", if it gets there
past its job; a restart with a job running; a rollback under on_busy: wait with three jobs.
The faults are those the toolkit survives today (none, Ctrl-C, a frozen sshd): a killed sshd
and a deploy racing resque.restart still leave things behind (bench/README.md, "soak"), and a
killed host cannot be brought back by the harness.
"""

from __future__ import annotations

import subprocess
import sys
import time

from tests.helpers import REPO

ARGS = ["--rounds", "4", "--seed", "7", "--hosts", "3", "--host-kill", "never", "--faults", "none,ctrl-c,sshd-stall"]


def test_four_seeded_rounds_keep_every_promise():
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "soak.py"), *ARGS],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        # SIGTERM: the soak tears its fleet and redis down on the way out.
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    print(out)
    assert proc.returncode == 0, out
    assert "violations: 0" in out
    assert out.count("| ok |") == 4, out
    print(f"soak: {time.monotonic() - started:.0f}s")
