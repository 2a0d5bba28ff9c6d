"""The deploy's step commands, built without I/O and run here by a real shell on a temp tree:
unpack, link, switch, prune and move aside do what the deploy relies on."""

from __future__ import annotations

import io
import subprocess
import tarfile

from deployhooks.commands import steps
from deployhooks.settings import parse


def settings_for(root, keep=3, extra=""):
    return parse(f"app: shop\ndeploy_to: {root}/shop\nkeep_releases: {keep}\n{extra}")


def sh(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True)


def archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = b"puts 'hi'\n"
        info = tarfile.TarInfo("app.rb")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_unpack_prepare_and_switch_move_current_atomically(tmp_path):
    s = settings_for(tmp_path)
    (tmp_path / "shop/releases").mkdir(parents=True)
    for release in ("20260101000000", "20260102000000"):
        (tmp_path / f"shop/releases/.{release}.tar.gz").write_bytes(archive())
        assert sh(steps.unpack_command(s, release)).returncode == 0
        assert sh(steps.prepare_switch_command(s, release)).returncode == 0
        assert sh(steps.switch_command(s, release)).returncode == 0
        assert (tmp_path / "shop/current").resolve() == (tmp_path / f"shop/releases/{release}").resolve()
        assert (tmp_path / "shop/current/app.rb").read_text() == "puts 'hi'\n"
        assert not (tmp_path / f"shop/releases/.{release}.tar.gz").exists()
    # a release that exists already is not unpacked over
    (tmp_path / "shop/releases/.20260102000000.tar.gz").write_bytes(archive())
    assert sh(steps.unpack_command(s, "20260102000000")).returncode != 0


def test_prepare_switch_fails_for_a_release_that_is_not_there(tmp_path):
    s = settings_for(tmp_path)
    (tmp_path / "shop/releases").mkdir(parents=True)
    assert sh(steps.prepare_switch_command(s, "20260101000000")).returncode != 0
    assert not (tmp_path / "shop/.current.20260101000000").exists()


def test_prune_keeps_the_newest_and_never_the_current_release(tmp_path):
    s = settings_for(tmp_path, keep=2)
    names = [f"2026010{d}000000" for d in range(1, 6)]
    for name in names:
        (tmp_path / "shop/releases" / name).mkdir(parents=True)
    (tmp_path / "shop/releases/not-a-release").mkdir()
    # current is the oldest (after a rollback): it stays, the others beyond keep go
    removed = sh(steps.prune_command(s, names[0])).stdout.split()
    assert removed == names[1:3]
    assert sorted(p.name for p in (tmp_path / "shop/releases").iterdir()) == [
        names[0],
        names[3],
        names[4],
        "not-a-release",
    ]
    assert steps.prune_plan(names, names[0], 2) == names[1:3]
    assert steps.prune_plan(names[:1], "20260109000000", 2) == []


def test_move_aside_keeps_the_failed_release_for_inspection(tmp_path):
    s = settings_for(tmp_path)
    release = "20260101000000"
    (tmp_path / f"shop/releases/{release}").mkdir(parents=True)
    (tmp_path / f"shop/releases/.{release}.tar.gz").write_bytes(b"x")
    assert sh(steps.prepare_switch_command(s, release)).returncode == 0
    assert sh(steps.move_aside_command(s, release)).returncode == 0
    assert (tmp_path / f"shop/releases_failed/{release}").is_dir()
    assert not (tmp_path / f"shop/releases/{release}").exists()
    assert not (tmp_path / f"shop/.current.{release}").is_symlink()
    assert not (tmp_path / f"shop/releases/.{release}.tar.gz").exists()


def test_link_shared_links_dirs_and_only_the_linked_files_that_exist(tmp_path):
    s = settings_for(tmp_path, extra="deploy:\n  shared_dirs: [log, tmp/pids]\n  shared_files: [database.yml]\n")
    release = tmp_path / "shop/releases/20260101000000"
    (release / "log").mkdir(parents=True)
    (tmp_path / "shop/shared/config").mkdir(parents=True)
    command = steps.link_shared_command(s, str(release))
    assert command is not None
    (tmp_path / "shop/shared/config/database.yml").write_text("x")
    assert sh(command).returncode == 0
    assert (release / "log").resolve() == (tmp_path / "shop/shared/log").resolve()
    assert (release / "tmp/pids").resolve() == (tmp_path / "shop/shared/tmp/pids").resolve()
    assert (release / "config/database.yml").read_text() == "x"


def test_in_release_exports_the_framework_env_to_every_command(tmp_path):
    release = tmp_path / "r"
    release.mkdir()
    r = sh(steps.in_release_command(str(release), "staging", 'pwd; sh -c "echo $RAILS_ENV $RACK_ENV"'))
    assert r.stdout.split() == [str(release), "staging", "staging"]
