"""The pure parts of fab deploy / rollback: which release rollback picks, what the summary says."""

import pytest

from deployhooks.commands.deploy import DeployReport, StepReport, summary_lines
from deployhooks.commands.rollback import previous_release


def test_previous_release_is_the_one_before_current():
    listing = "20260101000000\n20260102000000\n20260103000000\n.20260104000000.tar.gz\n"
    assert previous_release(listing, "20260103000000") == "20260102000000"
    assert previous_release(listing, "20260101000000") is None
    # current pointing somewhere unknown: the newest release is the safe target
    assert previous_release(listing, None) == "20260103000000"
    assert previous_release("", None) is None


def test_summary_has_timings_and_what_changed_grouped():
    report = DeployReport(
        "20260103000000",
        steps=[StepReport("upload", 0.5, {"a": "ok", "b": "ok", "c": "ok"}), StepReport("migrate", 1.0, {"a": "ok"})],
        switched=["a", "b", "c"],
        previous={"a": "20260102000000", "b": "20260102000000", "c": "(none)"},
        pruned={"a": ["20260101000000"], "b": ["20260101000000"], "c": []},
    )
    lines = summary_lines(report)
    assert lines[1].split() == ["upload", "0.50", "3/3", "ok"]
    assert "current: 20260102000000 -> 20260103000000 on a, b" in lines
    assert "current: (none) -> 20260103000000 on c" in lines
    assert "pruned: 20260101000000 on a, b" in lines and "pruned: nothing on c" in lines


def test_no_change_lines_when_nothing_switched():
    report = DeployReport("x", steps=[StepReport("lock", 0.1, {"a": "refused"})])
    assert summary_lines(report)[1].split()[-2:] == ["0/1", "ok"]
    assert not any(line.startswith("current:") for line in summary_lines(report))


def test_rollback_target_is_one_release_for_the_whole_fleet():
    from deployhooks.commands.rollback import HostReleases, rollback_target
    from deployhooks.errors import ConfigError

    a, b, c = "20260101000000", "20260102000000", "20260103000000"
    same = {"h1": HostReleases(c, f"{a} {b} {c}"), "h2": HostReleases(c, f"{b} {c}")}
    assert rollback_target(same, None) == b
    assert rollback_target(same, b) == b
    with pytest.raises(ConfigError, match="not kept on h2"):
        rollback_target(same, a)
    # after an interrupted rollback: hosts on different releases, no guessing
    split = {"h1": HostReleases(b, f"{a} {b} {c}"), "h2": HostReleases(c, f"{a} {b} {c}")}
    with pytest.raises(ConfigError, match="different releases .*h1 on .*--release"):
        rollback_target(split, None)
    assert rollback_target(split, b) == b
    # the release before current differs between hosts (one pruned it): name one
    uneven = {"h1": HostReleases(c, f"{a} {b} {c}"), "h2": HostReleases(c, f"{a} {c}")}
    with pytest.raises(ConfigError, match="no release before"):
        rollback_target(uneven, None)
