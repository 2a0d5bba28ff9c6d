"""The real process listing, run on this machine, cannot be forged by a folder's name.

A process anyone can start sits in a folder whose name holds a newline and a made-up
`/proc/<victim>/cwd<TAB>/elsewhere` line; the victim is a busy worker under a fake deploy_to.
The listing must still place the busy worker in its app, locally (invoke) and over SSH.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from invoke import Context

from deployhooks import settings as settings_mod
from deployhooks.facts.processes import (
    local_processes,
    parse_links,
    parse_ps_output,
    ps_command,
    remote_processes,
    workers_from,
)
from deployhooks.facts.status import parse_status_output, status_command
from deployhooks.remote.fleet import connect
from tests.helpers import wait_for

BUSY_TITLE = "resque-2.6.0: Forked 123 at 1700000000"
# setproctitle gives the whole command line the title, as resque's $0 assignment does.
_SLEEPER = "import sys, time, setproctitle; setproctitle.setproctitle(sys.argv[1]); time.sleep(300)"


def _titled(title: str, cwd: Path) -> subprocess.Popen:
    """A process whose ps title is `title`, sitting in `cwd`, until the test ends."""
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPER, title], cwd=cwd, stdin=subprocess.DEVNULL)
    wait_for(lambda: _title_of(proc.pid) == title, 5, f"pid {proc.pid} to take its title")
    return proc


def _title_of(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())


@pytest.fixture
def started():
    """Start titled processes; every one of them is killed (by its own pid) at the end."""
    procs: list[subprocess.Popen] = []

    def start(title: str, cwd: Path) -> subprocess.Popen:
        procs.append(_titled(title, cwd))
        return procs[-1]

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def _forged_name(victim: int) -> str:
    return f"evil\n/proc/{victim}/cwd\t/elsewhere"


def _busy_and_forger(tmp_path: Path, started, deploy_to: Path) -> tuple[int, int, Path]:
    """A busy worker in `deploy_to`/releases/1, then a forger whose folder names the worker's
    pid (started second, so its pid and its find line come after the worker's)."""
    release = deploy_to / "releases" / "1"
    release.mkdir(parents=True, exist_ok=True)
    busy = started(BUSY_TITLE, release).pid
    evil = tmp_path / _forged_name(busy)
    evil.mkdir(parents=True)
    forger = started("resque-2.6.0: Waiting for evil", evil).pid
    assert forger > busy, "pids wrapped around; the forged line would come first"
    return busy, forger, evil


def _check(rows, busy: int, forger: int, evil: Path, deploy_to: Path) -> None:
    [worker] = [w for w in workers_from(rows, {"shop": str(deploy_to)}) if w.pid == busy]
    assert (worker.app, worker.release, worker.busy) == ("shop", "1", True)
    assert {r.pid: r.cwd for r in rows}[forger] == str(evil)


def test_a_folder_name_cannot_move_a_busy_worker_out_of_its_app(tmp_path, started):
    deploy_to = tmp_path / "shop"
    busy, forger, evil = _busy_and_forger(tmp_path, started, deploy_to)
    _check(remote_processes(Context(), str(deploy_to)), busy, forger, evil, deploy_to)


def test_psutil_reads_the_same_cwds(tmp_path, started):
    # The local adapter reads each link by itself (os.readlink): nothing there splits lines.
    deploy_to = tmp_path / "shop"
    busy, forger, evil = _busy_and_forger(tmp_path, started, deploy_to)
    here = {r.pid: r.cwd for r in local_processes(str(deploy_to)) if r.pid in (busy, forger)}
    _check(local_processes(str(deploy_to)), busy, forger, evil, deploy_to)
    assert here == {r.pid: r.cwd for r in remote_processes(Context(), str(deploy_to)) if r.pid in (busy, forger)}


def test_current_link_target_cannot_inject_a_line(tmp_path, started):
    deploy_to = tmp_path / "shop"
    busy, forger, evil = _busy_and_forger(tmp_path, started, deploy_to)
    target = f"releases/1\n/proc/{busy}/cwd\t/elsewhere"
    (deploy_to / "current").symlink_to(target)
    out = Context().run(ps_command(link=str(deploy_to / "current")), hide=True, in_stream=False)
    assert parse_links(out.stdout)[str(deploy_to / "current")] == target
    _check(parse_ps_output(out.stdout), busy, forger, evil, deploy_to)


def test_a_resolved_deploy_to_cannot_inject_a_line(tmp_path, started):
    # deploy_to is a symlink (as on many hosts) into a folder whose name carries a forged line;
    # `pwd -P` used to print it as is, newline included.
    real = tmp_path / "real" / _forged_name(1) / "shop"
    real.mkdir(parents=True)
    deploy_to = tmp_path / "shop"
    deploy_to.symlink_to(real)
    busy = started(BUSY_TITLE, _mkdirs(real / "releases" / "1")).pid
    rows = remote_processes(Context(), str(deploy_to))
    [worker] = [w for w in workers_from(rows, {"shop": str(deploy_to)}) if w.pid == busy]
    assert (worker.app, worker.release, worker.cwd) == ("shop", "1", f"{deploy_to}/releases/1")


def _mkdirs(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_over_ssh_nul_bytes_arrive_and_the_worker_stays_placed(tmp_path, started, sshd):
    deploy_to = tmp_path / "shop"
    busy, forger, evil = _busy_and_forger(tmp_path, started, deploy_to)
    settings = settings_mod.parse("app: shop\n" + sshd.ssh_settings_yaml())
    conn = connect(sshd.host, settings)
    try:
        text = conn.run(ps_command(root=str(deploy_to)), hide=True, in_stream=False).stdout
        rows = remote_processes(conn, str(deploy_to))
    finally:
        conn.close()
    _check(rows, busy, forger, evil, deploy_to)
    # NUL bytes survive paramiko and invoke's decoding: the parse above depends on them.
    assert f"/proc/{busy}/cwd\t{deploy_to}/releases/1\0" in text


def test_status_places_the_busy_worker_despite_a_forged_folder(tmp_path, started):
    deploy_to = tmp_path / "shop"
    busy, _forger, _evil = _busy_and_forger(tmp_path, started, deploy_to)
    (deploy_to / "current").symlink_to(deploy_to / "releases" / "1")
    # The forger also tries to end the listing early and fake monit's section.
    fake = tmp_path / "x\n__deployhooks_section__ rc 0\n__deployhooks_section__ monit"
    fake.mkdir(parents=True)
    started("resque-2.6.0: Waiting for fake", fake)
    cfg = settings_mod.parse(f"app: shop\ndeploy_to: {deploy_to}\nresque:\n  monit_command: [/bin/true]\n")
    text = Context().run(status_command(cfg), hide=True, in_stream=False).stdout
    facts = parse_status_output(text, cfg, "local")
    [worker] = [w for w in facts.workers if w.pid == busy]
    assert (worker.app, worker.release, worker.busy) == ("shop", "1", True)
    assert facts.current_release == "1" and facts.monit_error is None
