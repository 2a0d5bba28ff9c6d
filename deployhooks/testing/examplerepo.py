"""The example app (examples/shop) as a git repository: what `fab deploy` ships in the sandbox,
the tests and the benchmarks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

EXAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "shop"


def make_repo(path: Path, marker: str = "v1") -> Path:
    """A git repository at `path` holding the example app with VERSION = `marker`, committed.

    Called again on the same path, it commits the new marker (a new revision to deploy), or
    nothing when the marker is the same.
    """
    path = Path(path)
    if not path.exists():
        shutil.copytree(EXAMPLE_APP, path)
    (path / "VERSION").write_text(marker + "\n")
    git = ["git", "-c", "user.email=deployhooks@example.invalid", "-c", "user.name=deployhooks"]
    if not (path / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=path, check=True)
    # Nothing staged (the same marker again, e.g. a second sandbox): the repository is already
    # what was asked for, and `git commit` would fail with "nothing to commit".
    if (
        subprocess.run(["git", "diff", "--cached", "--quiet"], cwd=path).returncode != 0
        or subprocess.run(["git", "rev-parse", "-q", "--verify", "HEAD"], cwd=path, capture_output=True).returncode != 0
    ):
        subprocess.run(git + ["commit", "-qm", marker], cwd=path, check=True)
    return path
