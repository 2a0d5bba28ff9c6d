"""The procline parser against every form resque has used (docs/resque.md, "Process titles")."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deployhooks.facts import proclines
from deployhooks.facts.proclines import FORKED, IDLE, PAUSED, PROCESSING, STARTING, Procline

versions = st.sampled_from(["1.5.0", "1.20.0", "1.23.1", "1.27.4", "2.1.0", "2.7.0", "3.0.0"])
prefixes = st.one_of(st.just(""), st.from_regex(r"[a-z][a-z0-9_]{0,8}-", fullmatch=True))
queue = st.from_regex(r"[a-z][a-z0-9_:.-]{0,15}", fullmatch=True)
epoch = st.integers(min_value=1_000_000_000, max_value=4_000_000_000)
pid = st.integers(min_value=2, max_value=4_194_304)
job_class = st.from_regex(r"[A-Z][A-Za-z0-9]{0,12}(::[A-Z][A-Za-z0-9]{0,8}){0,2}", fullmatch=True)


@given(prefixes, versions, st.lists(queue, max_size=4))
def test_waiting_lists_the_queues(prefix, version, queues):
    line = proclines.parse(f"{prefix}resque-{version}: Waiting for {','.join(queues)}")
    assert line == Procline(IDLE, version, prefix, queues=tuple(queues))


@given(prefixes, versions, pid, epoch)
def test_forked_parent_names_its_child(prefix, version, child, since):
    line = proclines.parse(f"{prefix}resque-{version}: Forked {child} at {since}")
    assert line == Procline(FORKED, version, prefix, since=since, child_pid=child)


@given(prefixes, versions, queue, epoch, st.one_of(st.none(), job_class))
def test_processing_with_and_without_class(prefix, version, q, since, cls):
    suffix = f" [{cls}]" if cls else ""  # the class arrived in 1.23.1
    line = proclines.parse(f"{prefix}resque-{version}: Processing {q} since {since}{suffix}")
    assert line == Procline(PROCESSING, version, prefix, queue=q, since=since, job_class=cls)


@given(prefixes, versions)
def test_paused(prefix, version):
    assert proclines.parse(f"{prefix}resque-{version}: Paused").kind == PAUSED


@given(st.integers(min_value=0, max_value=200))
def test_nul_padding_of_a_renamed_process_is_ignored(pad):
    assert proclines.parse("resque-3.0.0: Paused" + "\x00" * pad).kind == PAUSED


@pytest.mark.parametrize(
    "title,kind",
    [
        ("resque: Starting", STARTING),  # every version, no prefix, no version
        ("resque: Forked 123 at 1795770517", FORKED),  # before 1.5.0
        ("resque: Waiting for *", IDLE),
        ("resque-1.20.0: Waiting for *", IDLE),  # <= 1.25 showed the raw list
        ("resque-3.0.0: Waiting for ", IDLE),  # QUEUE=* and no queues yet
        ("/usr/bin/ruby3.1 /usr/bin/rake -f /data/a/current/Rakefile resque:work", STARTING),
        ("bundle exec rake resque:work", STARTING),
    ],
)
def test_fixed_forms(title, kind):
    assert proclines.parse(title).kind == kind


@pytest.mark.parametrize(
    "title",
    [
        "grep resque",
        "grep -c Forked",
        "grep resque-3.0.0: Forked 1 at 2",
        "tail -f /data/app/shared/log/resque_0.log",
        "vim config/resque.yml",
        "rake resque:workers COUNT=3",  # the launcher of several workers is not a worker
        "less resque:work",
        "resque-web",
        "sh -c monit stop all -g app_resque",
        "resque-3.0.0: Shutting down",  # no such procline exists in any version
    ],
)
def test_things_that_merely_mention_resque_are_not_workers(title):
    assert proclines.parse(title) is None


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_parser_never_crashes_and_words_before_it_reject(text):
    proclines.parse(text)
    assert proclines.parse("grep " + text + " resque-3.0.0: Paused") is None
