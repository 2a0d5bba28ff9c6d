"""Bad task options: exit 2 with one line naming the option and the value, before any host.

The numeric options are parsed by the tasks themselves (invoke would turn `--lines abc` into a
ValueError traceback); the hosts in these configs listen nowhere, so a value that got through
would show up as a connection failure (exit 3), not as exit 2.
"""

from __future__ import annotations

import pytest
from invoke import Context, Exit

from deployhooks.tasks import deploy as deploy_tasks
from deployhooks.tasks import resque as resque_tasks
from tests.helpers import fab

CONFIG = "app: shop\nhosts:\n  util: ['127.0.0.1:1']\nssh:\n  strict_host_keys: false\n  connect_timeout: 1\n"


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "deployhooks.yml"
    path.write_text(CONFIG)
    return str(path)


def usage_error(task, **kwargs) -> str:
    """The message `task` exits 2 with; fails the test on any other outcome."""
    with pytest.raises(Exit) as info:
        task(Context(), **kwargs)
    assert info.value.code == 2, info.value
    message = str(info.value.message)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("value", ["abc", "", "-5", "0", "nan", "inf", "1e3", "86401", "0x10", " 5", "5\n", "\u0665"])
def test_drain_deadline_must_be_seconds(config, value):
    message = usage_error(resque_tasks.drain, deadline=value, config=config)
    assert message.startswith("--deadline: expected "), message
    assert f"got {value!r}" in message


@pytest.mark.parametrize("value", ["abc", "", "-1", "1.5", "100001", "\u0665", "2 ", "9" * 5000])
def test_logs_lines_must_be_a_count(config, value):
    message = usage_error(resque_tasks.logs, lines=value, config=config)
    assert message.startswith("--lines: expected "), message
    assert repr(value)[:40] in message and len(message) < 300


@pytest.mark.parametrize("roles", ["util\n", "a b", "-x", ","])
def test_roles_must_be_names(config, roles):
    message = usage_error(resque_tasks.status, roles=roles, config=config)
    assert "--roles" in message or "no hosts for role" in message, message


@pytest.mark.parametrize("ref", ["-oops", "--output=x", "main branch", "", "a\nb"])
def test_deploy_ref_is_a_git_ref(config, ref):
    message = usage_error(deploy_tasks.deploy, ref=ref, config=config)
    assert message.startswith("--ref: expected "), message


def test_fab_reports_a_bad_number_without_a_traceback(config):
    for args in (["resque.logs", "--lines", "abc"], ["resque.drain", "--deadline", "abc"]):
        r = fab(*args, "--config", config, timeout=60)
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and f"{args[1]}: expected " in r.stderr


def test_the_tasks_bound_on_seconds_is_the_configs():
    """The help texts use common.MAX_SECONDS so that `fab --list` need not import settings."""
    from deployhooks import settings
    from deployhooks.tasks import common

    assert common.MAX_SECONDS == settings.MAX_SECONDS
