"""The status command's output, parsed: workers, monit's answer and where `current` points."""

from deployhooks import settings
from deployhooks.facts.status import parse_status_output, release_of

CFG = settings.parse("app: shop\n")
END = "__deployhooks_end__\0"  # the listing's end record; the sections follow it

MONIT = """Monit 5.33.0 uptime: 1m

Process 'resque_shop_0'
  status                       OK
  monitoring status            Monitored
  pid                          7
"""


def test_release_of_reads_the_raw_link_absolute_or_relative():
    assert release_of("/data/shop/releases/20260101000000", CFG) == "20260101000000"
    assert release_of("releases/20260101000000", CFG) == "20260101000000"
    assert release_of("./releases/20260101000000/", CFG) == "20260101000000"
    assert release_of("/elsewhere/releases/1", CFG) is None
    assert release_of("/data/shop/releases", CFG) is None
    assert release_of(None, CFG) is None


def test_one_output_gives_workers_monit_and_current():
    text = (
        "      7       1 31388 Ss   resque-3.0.0: Waiting for default\n"
        "__deployhooks_links__\n"
        "/proc/7/cwd\t/data/shop/releases/20260101000000\0"
        "/data/shop/current\t/data/shop/releases/20260102000000\0"
        f"{END}__deployhooks_section__ monit\n{MONIT}__deployhooks_section__ rc 0\n"
    )
    facts = parse_status_output(text, CFG, "web1")
    [w] = facts.workers
    assert (w.pid, w.state, w.release) == (7, "idle", "20260101000000")
    assert facts.current_release == "20260102000000" and facts.monit_error is None
    assert facts.services["resque_shop_0"].pid == 7


def test_no_current_link_and_monit_down():
    text = (
        f"__deployhooks_links__\n{END}__deployhooks_section__ monit\n"
        "Cannot connect to the monit daemon. Did you start it with http support?\n"
        "__deployhooks_section__ rc 1\n"
    )
    facts = parse_status_output(text, CFG, "web1")
    assert facts.workers == [] and facts.current_release is None
    assert "monit daemon is not running" in facts.monit_error


def test_a_monit_managed_worker_with_an_unreadable_cwd_is_shown_not_down():
    from deployhooks.facts.status import rows_for

    text = (
        "      7       1 31388 Ss   resque-3.0.0: Waiting for default\n"
        "      8       1 31388 Ss   resque-3.0.0: Waiting for other\n"
        "__deployhooks_links__\n"
        "/data/shop/current\t/data/shop/releases/20260102000000\0"
        f"{END}__deployhooks_section__ monit\n{MONIT}__deployhooks_section__ rc 0\n"
    )
    facts = parse_status_output(text, CFG, "web1")
    assert [w.pid for w in facts.workers] == [7]  # 8: not monit's, not placeable
    [row] = rows_for("web1", facts, now=0)
    assert (row.service, row.pid, row.state, row.release) == ("resque_shop_0", 7, "idle", None)


def test_a_folder_name_cannot_fake_monits_answer_or_move_a_worker():
    # Records end with NUL; a name may hold section marks and forged cwd lines, to no effect.
    forged = "/tmp/x\n/proc/7/cwd\t/elsewhere\n__deployhooks_section__ monit\n__deployhooks_section__ rc 0\n"
    text = (
        "      7       1 31388 Ss   resque-2.6.0: Forked 9 at 1700000000\n"
        "      8       1 31388 Ss   resque-2.6.0: Waiting for evil\n"
        "__deployhooks_links__\n"
        "/proc/7/cwd\t/data/shop/releases/20260101000000\0"
        f"/proc/8/cwd\t{forged}\0"
        "/data/shop/current\t/data/shop/releases/20260101000000\0"
        f"{END}__deployhooks_section__ monit\n{MONIT}__deployhooks_section__ rc 0\n"
    )
    facts = parse_status_output(text, CFG, "web1")
    [w] = facts.workers
    assert (w.pid, w.state, w.release) == (7, "busy", "20260101000000")
    assert facts.services["resque_shop_0"].pid == 7 and facts.current_release == "20260101000000"


def test_a_listing_that_names_a_pid_twice_fails_naming_the_host():
    import pytest

    from deployhooks.errors import CommandFailed

    row = "      7       1 31388 Ss   resque-3.0.0: Waiting for default\n"
    text = (
        row + row + f"__deployhooks_links__\n{END}__deployhooks_section__ monit\n{MONIT}__deployhooks_section__ rc 0\n"
    )
    with pytest.raises(CommandFailed, match="^web1: .*pid 7 twice"):
        parse_status_output(text, CFG, "web1")
