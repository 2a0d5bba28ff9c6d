"""The two entry points list the same tasks, and usage errors exit 2 before any host is touched."""

from __future__ import annotations

import json
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


# Start-up cost (issue 9 item 7): every `fab` call, `fab --list` included, imports every task
# module to build the namespace, so they import the library's modules only when a task runs
# (deployhooks.tasks.common.LazyModule). These are what `resque.status` never needs.
NOT_FOR_STATUS = ("deployhooks.commands", "deployhooks.guard", "psutil", "statistics", "tarfile")


def imported_by(code: str, *args: str) -> set[str]:
    """The modules a fresh interpreter imports running `code` (fabric.main's own excluded),
    from the repository, as `fab` runs; the list is printed on exit, even after sys.exit."""
    prelude = (
        "import atexit, json, sys, fabric.main\n"
        "_before = set(sys.modules)\n"
        "atexit.register(lambda: print('MODULES=' + json.dumps(sorted(set(sys.modules) - _before))))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", prelude + code, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    [line] = [x for x in r.stdout.splitlines() if x.startswith("MODULES=")] or [f"MODULES=null {r.stderr}"]
    return set(json.loads(line[len("MODULES=") :]))


def under(modules: set[str], prefixes) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_building_the_task_namespace_imports_no_library_module():
    modules = imported_by("import deployhooks.tasks")
    ours = {m for m in modules if m.split(".")[0] == "deployhooks"}
    allowed = {"deployhooks", "deployhooks.errors"}
    extra = sorted(m for m in ours - allowed if m != "deployhooks.tasks" and not m.startswith("deployhooks.tasks."))
    assert "deployhooks.tasks.resque" in ours, ours
    assert not extra, f"import deployhooks.tasks now imports {extra}: use LazyModule in deployhooks/tasks/"
    assert not under(modules, NOT_FOR_STATUS), under(modules, NOT_FOR_STATUS)


def test_resque_status_imports_only_what_it_needs(tmp_path):
    cfg = tmp_path / "deployhooks.yml"  # a host that listens nowhere: status runs to its end, exit 3
    cfg.write_text(
        "app: shop\nhosts:\n  util: ['127.0.0.1:1']\nssh:\n  strict_host_keys: false\n  connect_timeout: 1\n"
    )
    code = "sys.argv[0] = 'fab'\nfabric.main.program.run()"
    modules = imported_by(code, "resque.status", "--config", str(cfg))
    # What it does need, so the list is the one of a status that ran:
    assert {"deployhooks.facts.status", "deployhooks.remote.fleet", "deployhooks.settings"} <= modules, modules
    assert not under(modules, NOT_FOR_STATUS), f"fab resque.status imports {under(modules, NOT_FOR_STATUS)}"


def test_every_lazy_module_of_the_tasks_exists():
    """A LazyModule's name is imported only when a task uses it: a typo would show only then."""
    import importlib

    from deployhooks.tasks import admin, common, deploy, hooks, resque

    lazies = [
        value.__dict__["_name"]
        for module in (admin, common, deploy, hooks, resque)
        for value in vars(module).values()
        if isinstance(value, common.LazyModule)
    ]
    assert len(lazies) >= 10, lazies
    for name in lazies:
        importlib.import_module(name)
