"""The process listing's framing: a folder's name cannot add, move or hide a line.

The texts below are what `ps_command` prints: ps rows, the mark line, then NUL-terminated
`path<TAB>link` records and an end record. Paths may hold newlines and tabs; NUL they cannot.
"""

import pytest

from deployhooks.errors import CommandFailed
from deployhooks.facts.processes import parse_links, parse_ps_output, workers_from

APPS = {"shop": "/data/shop"}
MARK, END = "__deployhooks_links__", "__deployhooks_end__"
BUSY = "     20      1  2048 S    resque-2.6.0: Forked 21 at 1700000000\n"
FORGER = "     30      1  1024 S    resque-2.6.0: Waiting for evil\n"


def listing(ps: str, *records: str) -> str:
    return ps + MARK + "\n" + "".join(r + "\0" for r in records) + END + "\0"


def test_a_forged_line_in_a_folder_name_does_not_move_the_busy_worker():
    text = listing(
        BUSY + FORGER, "/proc/20/cwd\t/data/shop/releases/1", "/proc/30/cwd\t/tmp/evil\n/proc/20/cwd\t/elsewhere"
    )
    rows = parse_ps_output(text)
    [busy] = [w for w in workers_from(rows, APPS) if w.pid == 20]
    assert (busy.app, busy.release, busy.busy) == ("shop", "1", True)
    assert {r.pid: r.cwd for r in rows}[30] == "/tmp/evil\n/proc/20/cwd\t/elsewhere"


def test_a_tab_in_a_cwd_stays_in_the_cwd():
    # %p is /proc/<pid>/cwd, which holds no tab: only the first tab separates.
    text = listing(FORGER, "/proc/30/cwd\t/tmp/a\t/proc/20/cwd\t/elsewhere")
    assert parse_links(text) == {"/proc/30/cwd": "/tmp/a\t/proc/20/cwd\t/elsewhere"}


def test_an_unreadable_cwd_stays_none():
    # find prints an empty %l when it cannot read the link (another user's process).
    text = listing(BUSY, "/proc/20/cwd\t")
    [row] = parse_ps_output(text)
    assert row.cwd is None


def test_a_pid_listed_twice_is_an_error_not_last_one_wins():
    with pytest.raises(CommandFailed, match="pid 20"):
        parse_ps_output(listing(BUSY + BUSY, "/proc/20/cwd\t/data/shop/releases/1"))


def test_a_cwd_listed_twice_is_an_error_not_last_one_wins():
    text = listing(BUSY, "/proc/20/cwd\t/data/shop/releases/1", "/proc/20/cwd\t/elsewhere")
    with pytest.raises(CommandFailed, match="/proc/20/cwd"):
        parse_ps_output(text)


@pytest.mark.parametrize(
    "text",
    [
        "",  # ps or awk did not run at all
        BUSY,  # no mark
        BUSY + MARK + "\n/proc/20/cwd\t/data/shop/releases/1\0",  # cut before the end record
    ],
)
def test_a_listing_cut_short_is_an_error_not_an_empty_host(text):
    with pytest.raises(CommandFailed, match="listing"):
        parse_ps_output(text)


def test_the_mark_and_end_inside_a_name_change_nothing():
    text = listing(
        BUSY + FORGER,
        "/proc/20/cwd\t/data/shop/releases/1",
        f"/proc/30/cwd\t/tmp/x\n{MARK}\n/proc/20/cwd\t/elsewhere\n{END}",
    )
    [busy] = [w for w in workers_from(parse_ps_output(text), APPS) if w.pid == 20]
    assert busy.app == "shop"


def test_a_resolved_root_holding_a_forged_line_stays_whole():
    # deploy_to a symlink into a folder whose name carries a line: the root record keeps it.
    from deployhooks.facts.processes import rebase

    real = "/mnt/x\n/proc/20/cwd\t/e/shop"
    text = listing(BUSY, f"/proc/20/cwd\t{real}/releases/1", f"/data/shop\t{real}")
    links = parse_links(text)
    assert links["/data/shop"] == real
    [busy] = workers_from(rebase(parse_ps_output(text), links["/data/shop"], "/data/shop"), APPS)
    assert (busy.app, busy.release, busy.cwd) == ("shop", "1", "/data/shop/releases/1")
