import os
import re
import shutil
import tempfile
from pathlib import Path

pytest_plugins = ["tests.fixtures.redis", "tests.fixtures.monit", "tests.fixtures.sshd", "tests.fixtures.fleet"]

_BASETEMP_RE = re.compile(r"deployhooks-pytest-(\d+)-")
_TIERS = ("unit", "integration", "fleet")


def pytest_collection_modifyitems(config, items):
    """Mark each test with its tier, from its folder: `pytest -m unit` is the fast tier (pure
    code, seconds), `integration` one real host (sshd, monit, redis), `fleet` many hosts."""
    import pytest

    for item in items:
        parts = Path(str(item.fspath)).parts
        for tier in _TIERS:
            if tier in parts:
                item.add_marker(getattr(pytest.mark, tier))
                break


def pytest_configure(config):
    """Give each run its own temp folder outside pytest-of-<user>.

    Test workers run as an unprivileged user (as in production), so the app trees must be
    reachable by it; pytest makes pytest-of-<user> 0700 again at the start of every session,
    which would cut off the workers of a run already in progress.
    """
    if config.option.basetemp or hasattr(config, "workerinput"):
        return
    temp = Path(tempfile.gettempdir())
    for old in temp.glob("deployhooks-pytest-*"):
        match = _BASETEMP_RE.match(old.name)
        if match and not _alive(int(match.group(1))):
            shutil.rmtree(old, ignore_errors=True)
    config.option.basetemp = tempfile.mkdtemp(prefix=f"deployhooks-pytest-{os.getpid()}-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
