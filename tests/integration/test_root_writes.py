"""Files the toolkit writes as root (hooks under sudo) in folders the deploy user controls."""

from __future__ import annotations

import json
import os
import pwd

import pytest
from invoke import Context

from deployhooks.errors import CommandFailed
from deployhooks.guard import onehost as guard
from deployhooks.remote.host import Host
from deployhooks.settings import parse
from deployhooks.testing.applayout import make_app

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="about what root writes")


@pytest.fixture
def app(tmp_path):
    layout = make_app(tmp_path, "shop", workers=["q"])
    settings = parse(f"app: shop\ndeploy_to: {layout.deploy_to}\nresque:\n  user: {layout.user}\n", "t.yml")
    secret = tmp_path / "secret"
    secret.write_text("root only\n")
    secret.chmod(0o600)
    return layout, Host(Context(), settings, "here"), secret


def _plant(layout, path, target):
    user = pwd.getpwnam(layout.user)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chown(path.parent, user.pw_uid, user.pw_gid)
    path.symlink_to(target)
    os.lchown(path, user.pw_uid, user.pw_gid)


def test_guard_record_temp_file_linked_to_a_root_file_is_not_written_through(app):
    layout, host, secret = app
    folder = layout.deploy_to / "shared" / "deployhooks"
    _plant(layout, folder / "guard.json.tmp", secret)
    guard.write_record(host, {"stopped": ["resque_shop_0"]})
    assert secret.read_text() == "root only\n" and secret.stat().st_mode & 0o777 == 0o600
    assert json.loads((folder / "guard.json").read_text()) == {"stopped": ["resque_shop_0"]}
    # written with the folder owner's rights, so the owner gains nothing they did not have
    assert (folder / "guard.json").stat().st_uid == pwd.getpwnam(layout.user).pw_uid


def test_guard_record_folder_linked_to_a_root_folder_gets_nothing(app, tmp_path):
    layout, host, _ = app
    root_dir = tmp_path / "root-only"
    root_dir.mkdir(mode=0o700)
    _plant(layout, layout.deploy_to / "shared" / "deployhooks", root_dir)
    with pytest.raises(CommandFailed, match="cannot write"):
        guard.write_record(host, {"stopped": []})
    assert os.listdir(root_dir) == []


def test_a_root_owned_folder_is_written_as_root_atomically(tmp_path, app):
    _, host, _ = app
    target = tmp_path / "etc" / "x.monitrc"
    host.write_file(str(target), "it's text with 'quotes' and $vars\n")
    assert target.read_text() == "it's text with 'quotes' and $vars\n"
    assert target.stat().st_uid == 0 and target.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["x.monitrc"]
