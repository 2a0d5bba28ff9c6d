"""The one runner: `HostGroup.each` on this machine keeps the same policy as over SSH."""

from invoke import Context

from deployhooks.errors import EXIT_FAILED, EXIT_REFUSED, Refused
from deployhooks.remote.fleet import GroupResult, HostGroup, HostResult
from deployhooks.settings import parse

SETTINGS = parse("app: shop\n")


def test_any_exception_on_this_machine_is_a_failed_result_not_an_escape():
    def boom(host):
        raise ValueError("a bug in a step")

    with HostGroup.here(Context(), "me", SETTINGS) as group:
        [result] = group.each(boom)
    assert result.code == EXIT_FAILED and result.error == "me: ValueError: a bug in a step"


def test_a_refusal_keeps_its_exit_code_and_values_come_back():
    def refuse(host):
        raise Refused(f"{host.name}: jobs running")

    with HostGroup.here(Context(), "me", SETTINGS) as group:
        assert group.each(refuse).code == EXIT_REFUSED
        ok = group.each(lambda host: host.run("echo hi").stdout.strip())
        assert ok.succeeded == {"me": "hi"} and ok.failed == {} and ok.code == 0
        # a name that is not this machine's has nothing to run here
        assert group.each(lambda host: 1, ["elsewhere"]) == []


def test_group_result_says_who_succeeded_and_who_failed():
    results = GroupResult([HostResult("a", value=1), HostResult("b", EXIT_REFUSED, "b: busy")])
    assert results.succeeded == {"a": 1}
    assert list(results.failed) == ["b"] and results.code == EXIT_REFUSED
