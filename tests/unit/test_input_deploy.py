"""What deploy and the hooks read from hosts: a lock file and release names they did not write.

A lock file of any content, and a releases folder holding any names, must give a plain message
or be ignored, never a traceback or a rollback to a folder that is not a release.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployhooks.commands.deploy import Deploy
from deployhooks.commands.rollback import previous_release
from deployhooks.errors import ConfigError, Refused
from deployhooks.facts.release import link_resque_yml, release_name
from deployhooks.settings import parse

SETTINGS = parse("app: shop\nhosts:\n  util: [h1]\nssh:\n  strict_host_keys: false\n")
LOCK = "/data/shop/shared/deployhooks/deploy.lock"


class LockedHost:
    """A host where `mkdir` of the lock fails (someone holds it) and the lock's info file
    holds `content` (None: no info file)."""

    name = "h1"

    def __init__(self, content: str | None):
        self.content = content

    def run(self, command: str, warn: bool = False, change: bool = False):
        return SimpleNamespace(exited=1, stdout="", stderr="mkdir: File exists")

    def read_file(self, path: str) -> str | None:
        assert path == LOCK + "/info"
        return self.content


def lock_message(content: str | None) -> str:
    deploy = Deploy(SETTINGS, ["h1"], b"", say=lambda line: None, release="20260103000000")
    try:
        with pytest.raises(Refused) as info:
            deploy._lock(LockedHost(content))
    finally:
        deploy.group.close()
    message = str(info.value)
    assert "\n" not in message and message.startswith("h1: "), message
    assert f"remove {LOCK} on h1" in message
    return message


def test_a_good_lock_names_its_holder():
    message = lock_message('{"by": "ann@ws", "since": "2026-01-03 10:00:00 UTC", "release": "20260103095900"}')
    assert "(ann@ws, since 2026-01-03 10:00:00 UTC, release 20260103095900)" in message


@pytest.mark.parametrize(
    "content",
    [
        "[1]",
        '"text"',
        "null",
        "1",
        "{}",
        "not json",
        "",
        '{"by": [1], "since": "x"}',
        '{"by": "a\\nb", "since": "x"}',
        '{"by": "a", "since": 5}',
        "{" * 100000,
        None,
        '{"by": "a", "since": "x", "release": {"x": 1}}',
    ],
)
def test_any_other_lock_content_is_an_unknown_holder(content):
    message = lock_message(content)
    assert "lock held by an unknown holder (file content " in message, message
    assert len(message) < 400


@pytest.mark.parametrize(
    "name",
    [
        "\uff12\uff10\uff12\uff16\uff10\uff11\uff10\uff12\uff10\uff10\uff10\uff10\uff10\uff10",
        "\u0662\u0660\u0662\u0666\u0660\u0661\u0660\u0662\u0660\u0660\u0660\u0660\u0660\u0660",
        "202601020000000",
        "2026010200000",
        "2026010200000a",
    ],
)
def test_rollback_never_picks_a_name_that_is_not_a_release(name):
    listing = f"20260101000000\n{name}\n20260103000000\n"
    assert previous_release(listing, "20260103000000") == "20260101000000"
    assert previous_release(f"{name}\n", None) is None


class ReleaseHost:
    def __init__(self, resque_yml: str | None = "production: localhost:6379\n"):
        self.settings, self.name, self.resque_yml = SETTINGS, "h1", resque_yml

    def read_file(self, path: str) -> str | None:
        return self.resque_yml

    def run(self, command: str, warn: bool = False):
        return SimpleNamespace(exited=0, stdout="", stderr="")


@pytest.mark.parametrize(
    "name",
    [
        "\uff12\uff10\uff12\uff16\uff10\uff11\uff10\uff12\uff10\uff10\uff10\uff10\uff10\uff10",
        "2026010200000",
        "latest",
        "20260102000000\n",
    ],
)
def test_a_hook_refuses_a_release_that_is_not_a_timestamp(name):
    with pytest.raises(ConfigError) as info:
        release_name(ReleaseHost(), f"/data/shop/releases/{name}")
    assert "14-digit" in str(info.value) and "\n" not in str(info.value)


def test_a_hook_takes_a_timestamp_release():
    assert release_name(ReleaseHost(), "/data/shop/releases/20260102000000") == "20260102000000"


@pytest.mark.parametrize("text", ["production: [\n", "production: x\x00\n", "a: " + "[" * 5000 + "]" * 5000 + "\n"])
def test_a_broken_shared_resque_yml_is_one_line(text):
    with pytest.raises(ConfigError) as info:
        link_resque_yml(ReleaseHost(text), "/data/shop/releases/20260102000000")
    message = str(info.value)
    assert "resque.yml" in message and "not valid YAML" in message and "\n" not in message
