"""Raw process rows -> worker records: children folded in, apps and releases told apart."""

from deployhooks.facts.processes import RawProcess, parse_ps_output, workers_from

APPS = {"shop": "/data/shop"}


def row(pid, ppid, title, cwd="/data/shop/releases/20261127", rss=1000):
    return RawProcess(pid, ppid, rss, cwd, title)


def test_busy_parent_takes_its_childs_job():
    rows = [
        row(10, 1, "resque-3.0.0: Forked 11 at 1795770517"),
        row(11, 10, "resque-3.0.0: Processing mail since 1795770517 [Mailer]", rss=500),
    ]
    [w] = workers_from(rows, APPS)
    assert (w.pid, w.state, w.queue, w.job_class, w.job_pid, w.busy_since, w.rss_kb) == (
        10,
        "busy",
        "mail",
        "Mailer",
        11,
        1795770517,
        1500,
    )
    assert (w.app, w.release) == ("shop", "20261127")


def test_parent_titled_processing_just_before_fork_is_still_one_busy_worker():
    rows = [
        row(10, 1, "resque-1.27.4: Processing mail since 5 [Mailer]"),
        row(11, 10, "resque-1.27.4: Processing mail since 5 [Mailer]"),
    ]
    [w] = workers_from(rows, APPS)
    assert w.pid == 10 and w.busy and w.job_pid == 11


def test_orphaned_job_child_counts_as_a_running_job():
    [w] = workers_from([row(11, 1, "resque-3.0.0: Processing mail since 5 [Mailer]")], APPS)
    assert w.busy and w.pid == 11


def test_two_apps_on_one_host_are_kept_apart():
    rows = [
        row(10, 1, "resque-3.0.0: Waiting for a", cwd="/data/shop/releases/1"),
        row(20, 1, "resque-3.0.0: Forked 21 at 5", cwd="/data/blog/releases/9"),
        row(21, 20, "resque-3.0.0: Processing q since 5 [X]", cwd="/data/blog/releases/9"),
    ]
    by_pid = {w.pid: w for w in workers_from(rows, {"shop": "/data/shop", "blog": "/data/blog"})}
    assert by_pid[10].app == "shop" and not by_pid[10].busy
    assert by_pid[20].app == "blog" and by_pid[20].busy and by_pid[20].release == "9"
    # /data/shopping is not /data/shop
    [w] = workers_from([row(30, 1, "resque-3.0.0: Paused", cwd="/data/shopping/releases/1")], APPS)
    assert w.app is None


def test_deleted_release_is_marked():
    [w] = workers_from([row(10, 1, "resque-3.0.0: Paused", cwd="/data/shop/releases/old (deleted)")], APPS)
    assert w.release == "old" and w.release_deleted and w.state == "paused"


def test_ps_output_rows():
    text = (
        "     10       1  2048 Sl   resque-3.0.0: Waiting for a,b\n"
        "     11       1     0 S    tail -f  resque.log\n"
        "garbage line\n"
        "__deployhooks_links__\n"
        "/proc/10/cwd\t/data/shop/releases/1\0"
        "/proc/99/cwd\t/somewhere/else\0__deployhooks_end__\0"
    )
    rows = parse_ps_output(text)
    assert [r.pid for r in rows] == [10, 11]
    assert (rows[0].ppid, rows[0].rss_kb, rows[0].cwd) == (1, 2048, "/data/shop/releases/1")
    assert rows[1].cwd is None and rows[1].title == "tail -f resque.log"
    [w] = workers_from(rows, APPS)
    assert w.queues == ("a", "b")


def test_ps_output_keeps_a_deleted_release_mark_and_spaces_in_the_path():
    text = (
        "  7 1 100 S resque-3.0.0: Paused\n__deployhooks_links__\n"
        "/proc/7/cwd\t/data/shop/releases/old (deleted)\0__deployhooks_end__\0"
    )
    [row] = parse_ps_output(text)
    assert row.cwd == "/data/shop/releases/old (deleted)"


def test_rebase_tells_resolved_cwds_under_the_configured_root():
    from deployhooks.facts.processes import rebase

    rows = [
        row(1, 0, "resque-3.0.0: Paused", cwd="/mnt/data/shop/releases/1"),
        row(2, 0, "resque-3.0.0: Paused", cwd="/mnt/data/shop/releases/old (deleted)"),
        row(3, 0, "resque-3.0.0: Paused", cwd="/mnt/data/shopping/releases/1"),
        row(4, 0, "resque-3.0.0: Paused", cwd=None),
    ]
    out = rebase(rows, "/mnt/data/shop", "/data/shop/")
    assert [r.cwd for r in out] == [
        "/data/shop/releases/1",
        "/data/shop/releases/old (deleted)",
        "/mnt/data/shopping/releases/1",
        None,
    ]
    w1, w2 = [w for w in workers_from(out, APPS) if w.app == "shop"]
    assert (w1.app, w1.release) == ("shop", "1")
    assert (w2.release, w2.release_deleted) == ("old", True)
    # Nothing to do when the root is no symlink, or could not be resolved.
    assert rebase(rows, "/data/shop", "/data/shop") == rows
    assert rebase(rows, None, "/data/shop") == rows


def test_the_root_line_comes_back_in_the_links():
    from deployhooks.facts.processes import parse_links

    text = (
        "  7 1 100 S resque-3.0.0: Paused\n__deployhooks_links__\n"
        "/proc/7/cwd\t/mnt/data/shop/releases/1\0/data/shop\t/mnt/data/shop\0"
        "__deployhooks_end__\0"
    )
    assert parse_links(text) == {"/proc/7/cwd": "/mnt/data/shop/releases/1", "/data/shop": "/mnt/data/shop"}


def test_the_mark_inside_a_row_does_not_cut_the_listing():
    # The shell running the status command is a row (its command line names the monit group
    # shop_resque) and carries the mark's text; a worker with a higher pid must still be seen.
    text = (
        '    50     1  3000 S    bash -c ps axww ... print "__deployhooks_links__"; ... -g shop_resque\n'
        "    90     1  2048 S    resque-3.0.0: Waiting for a\n"
        "__deployhooks_links__\n"
        "/proc/90/cwd\t/data/shop/releases/1\0__deployhooks_end__\0"
    )
    rows = parse_ps_output(text)
    assert [r.pid for r in rows] == [50, 90]
    [w] = workers_from(rows, APPS)
    assert (w.pid, w.app, w.release) == (90, "shop", "1")
