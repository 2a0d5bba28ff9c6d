"""The two entry points list the same tasks, and usage errors exit 2 before any host is touched."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, fab

TASKS = [
    "deploy.deploy",
    "deploy.lock-status",
    "deploy.unlock",
    "init",
    "rollback",
    "hooks.after-symlink",
    "hooks.before-migrate",
    "hooks.before-symlink",
    "hooks.deploy-failed",
    "resque.doctor",
    "resque.drain",
    "resque.logs",
    "resque.pause",
    "resque.restart",
    "resque.resume",
    "resque.setup",
    "resque.start",
    "resque.status",
    "resque.stop",
]


def names(listing: str) -> list[str]:
    return sorted(
        line.split()[0]
        for line in listing.splitlines()
        if line.startswith("  ") and line.split() and not line.startswith("   ")
    )


def test_fab_and_the_console_script_list_the_same_tasks_with_descriptions():
    r = fab("--list")
    assert r.returncode == 0
    assert names(r.stdout) == sorted(TASKS)
    for line in r.stdout.splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.strip():
            assert len(line.split()) > 1, f"task without a description: {line!r}"
    console = Path(sys.executable).parent / "deployhooks"
    r2 = subprocess.run([str(console), "--list"], capture_output=True, text=True, cwd="/")
    assert r2.returncode == 0 and names(r2.stdout) == sorted(TASKS)


def test_deploy_refuses_dash_h(tmp_path):
    cfg = tmp_path / "deployhooks.yml"
    cfg.write_text("app: shop\nhosts:\n  util: [u1]\n")
    r = fab("-H", "127.0.0.1", "deploy", "--config", str(cfg))
    assert r.returncode == 2 and "do not take -H" in r.stderr


def test_unknown_role_and_bad_config_exit_2(tmp_path):
    cfg = tmp_path / "deployhooks.yml"
    cfg.write_text("app: shop\nhosts:\n  util: [u1]\n")
    r = fab("resque.status", "--roles", "nosuch", "--config", str(cfg))
    assert r.returncode == 2 and "role(s) nosuch not under hosts" in r.stderr
    cfg.write_text("app: shop\nresque:\n  stop: sometimes\n")
    r = fab("resque.status", "--config", str(cfg))
    assert r.returncode == 2 and f"{cfg}:3: resque.stop" in r.stderr
    r = fab("resque.status", "--config", str(tmp_path / "missing.yml"))
    assert r.returncode == 2 and "cannot read the config file" in r.stderr


def test_hook_without_a_release_path_is_a_usage_error(tmp_path):
    cfg = tmp_path / "deployhooks.yml"
    cfg.write_text("app: shop\n")
    r = subprocess.run(
        [str(REPO / "hooks" / "after_symlink"), "--config", str(cfg)],
        capture_output=True,
        text=True,
        env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"},
    )
    assert r.returncode == 2 and "no release path" in r.stderr


def test_options_are_long_only_so_no_letter_means_two_things():
    """Found: invoke's automatic short flags made -c --config in one task and --check in
    another, -r --ref or --roles, -o --roles or --config."""
    from deployhooks.tasks import ns

    for name in TASKS:
        task = ns[name]
        args = task.get_arguments()
        assert all(len(a.names) == 1 for a in args), (name, [a.names for a in args])


def test_the_console_script_refuses_dash_h_instead_of_reporting_this_machine(tmp_path):
    cfg = tmp_path / "deployhooks.yml"
    cfg.write_text("app: shop\nresque:\n  user: deploy\n")
    console = Path(sys.executable).parent / "deployhooks"
    r = subprocess.run(
        [str(console), "-H", "web1", "resque.status", "--config", str(cfg)], capture_output=True, text=True, cwd="/"
    )
    assert r.returncode == 2 and "acts on this machine only" in r.stderr and "fab -H web1" in r.stderr


def test_init_scaffolds_an_app_and_never_overwrites_without_force(tmp_path):
    from deployhooks.commands.scaffold import SHIMS, shim_text
    from deployhooks.settings import load

    app = tmp_path / "myshop"
    app.mkdir()
    console = Path(sys.executable).parent / "deployhooks"
    r = subprocess.run([str(console), "init", "--path", str(app)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    settings = load(str(app / "config" / "deployhooks.yml"))
    assert (settings.app, settings.deploy_to, settings.resque.user) == ("myshop", "/data/myshop", "deploy")
    assert "from deployhooks.tasks import ns" in (app / "fabfile.py").read_text()
    for name in SHIMS:
        shim = app / "deploy" / name
        assert shim.read_text() == shim_text(name) == (REPO / "hooks" / name).read_text()
        assert shim.stat().st_mode & 0o111
        assert f"wrote {shim}" in r.stdout
    (app / "fabfile.py").write_text("# mine\n")
    again = subprocess.run([str(console), "init", "--path", str(app)], capture_output=True, text=True)
    assert again.returncode == 2 and "not overwriting" in again.stderr and "--force" in again.stderr
    assert (app / "fabfile.py").read_text() == "# mine\n"
    forced = subprocess.run([str(console), "init", "--path", str(app), "--force"], capture_output=True, text=True)
    assert forced.returncode == 0 and "from deployhooks" in (app / "fabfile.py").read_text()
