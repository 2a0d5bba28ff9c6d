"""The one command layer: every monit command spelled by `Monit`, sudo by `with_sudo`, and the
one framing of multi-section output (`section`, `split_sections`)."""

from __future__ import annotations

import shlex
import subprocess
from types import SimpleNamespace

import pytest

from deployhooks.errors import CommandFailed, ConfigError
from deployhooks.facts.monit import Monit
from deployhooks.facts.shell import as_root, section, split_sections, with_sudo
from deployhooks.facts.status import status_command
from deployhooks.settings import parse

FD = "ulimit -Sn 1024 2>/dev/null; "
CONFIG = """\
app: shop
resque:
  user: deploy
  sudo: true
  monit_command: [monit, -c, /etc/monit/monitrc]
  workers:
    - queues: [a]
"""


def test_with_sudo_is_sudo_n_and_as_user_only_when_asked():
    assert with_sudo(["monit", "reload"]) == ["sudo", "-n", "monit", "reload"]
    assert with_sudo(["kill", "-QUIT", "7"], user="deploy") == ["sudo", "-n", "-u", "deploy", "kill", "-QUIT", "7"]
    assert as_root("rm -f '/a b'", False) == "rm -f '/a b'"
    assert as_root("rm -f '/a b'", True) == "sudo -n sh -c " + shlex.quote("rm -f '/a b'")


def test_every_verb_through_sudo_and_the_configured_control_file():
    m = Monit.of(parse(CONFIG, "t.yml"))
    base = ["sudo", "-n", "monit", "-c", "/etc/monit/monitrc"]
    assert m.status_argv("shop_resque") == base + ["-B", "status", "-g", "shop_resque"]
    assert m.action_argv("stop", "g") == base + ["stop", "all", "-g", "g"]
    assert m.service_argv("start", "resque_shop_0") == base + ["start", "resque_shop_0"]
    assert m.reload_argv() == base + ["reload"]
    assert m.test_argv(verbose=True) == base + ["-v", "-t"]
    assert m.status_command("g") == FD + shlex.join(base + ["-B", "status", "-g", "g"])
    assert m.test_command(verbose=True) == FD + shlex.join(base + ["-v", "-t"]) + " 2>&1"
    with pytest.raises(ConfigError):
        m.action_argv("explode", "g")


def test_another_control_file_replaces_the_configured_one_and_sudo_can_be_left_off():
    m = Monit(None, ["/usr/bin/monit", "-c", "/etc/monitrc"], sudo=True)
    assert m.test_argv(control="/tmp/x/monitrc", sudo=False) == ["/usr/bin/monit", "-c", "/tmp/x/monitrc", "-t"]
    assert Monit(None, ["monit"]).reload_argv() == ["monit", "reload"]


def test_the_status_command_carries_monits_own_status_command():
    settings = parse(CONFIG, "t.yml")
    assert Monit.of(settings).status_command("shop_resque") in status_command(settings)


class Recorder:
    """A context that answers every command with `answer` and records it."""

    def __init__(self, answer=(0, "", "")):
        self.commands: list[str] = []
        self.answer = answer

    def run(self, command, **_):
        self.commands.append(command)
        rc, out, err = self.answer
        return SimpleNamespace(exited=rc, stdout=out, stderr=err)


STATUS = "Process 'resque_shop_0'\n  status                       OK\n  pid                          12\n"


def test_under_a_dry_run_changes_are_printed_and_facts_still_run():
    c, said = Recorder((0, STATUS, "")), []
    m = Monit(c, ["monit"], host="util1", group="g", would=said.append)
    m.action("stop", "g")
    m.service("stop", "resque_shop_0")
    m.reload()
    assert c.commands == [FD + "monit -B status -g g"]
    assert said == ["run: monit stop all -g g", "run: monit stop resque_shop_0", "run: monit reload"]


def test_a_missing_group_is_no_services_and_a_refused_change_names_the_group():
    c = Recorder((1, "", "Warning: group 'g' not found"))
    m = Monit(c, ["monit"], host="util1", group="g")
    assert m.services("g") == {}
    with pytest.raises(CommandFailed, match="monit has no group 'g'"):
        m.reload()
    m.service("start", "resque_shop_0", check=False)  # best effort: no exception
    assert c.commands[-1] == FD + "monit start resque_shop_0"


def test_sections_come_back_whole_whether_or_not_a_part_ends_with_a_newline():
    script = (
        "echo before; "
        + section("one")
        + "; printf 'a\\nb'; "
        + section('"two words"')
        + "; printf 'c\\n'; "
        + section("empty")
        + "; "
        + section('"rc $?"')
    )
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout
    assert split_sections(out) == [("one", ["a", "b"]), ("two words", ["c"]), ("empty", []), ("rc 0", [])]


def test_a_name_printed_twice_gives_two_entries_and_text_before_the_first_mark_is_dropped():
    text = "junk\n__deployhooks_section__ x\n1\n__deployhooks_section__ x\n2\n"
    assert split_sections(text) == [("x", ["1"]), ("x", ["2"])]
    assert dict(split_sections(text)) == {"x": ["2"]}
