"""Installable and scaffolded: the built wheel, in a fresh virtualenv outside this repository,
scaffolds an app with `deployhooks init` and deploys it to a fleet with that venv's `fab`.

Found before: the wheel did not ship what a user needs (the hooks had to be copied from this
repository), outside the repository `fab` found no fabfile, and nothing scaffolded an app.
The fresh venv installs the wheel's dependencies from the package index, as a user would.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

from deployhooks.testing.examplerepo import EXAMPLE_APP
from deployhooks.testing.fleet import AppSpec
from tests.helpers import REPO, monit_settled


def run(*argv, cwd=None, timeout=300):
    r = subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    print(f"--- {' '.join(map(str, argv))} exit {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def test_wheel_in_a_fresh_venv_scaffolds_and_deploys_an_app(fleet, tmp_path):
    dist = tmp_path / "dist"
    assert run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, REPO).returncode == 0
    [wheel] = dist.glob("deployhooks-*.whl")
    venv = tmp_path / "venv"
    assert run("/usr/bin/python3", "-m", "venv", venv).returncode == 0
    r = run(venv / "bin" / "pip", "install", "-q", wheel, timeout=600)
    assert r.returncode == 0, r.stderr

    app = tmp_path / "myshop"
    shutil.copytree(EXAMPLE_APP, app)
    shutil.rmtree(app / "config")
    r = run(venv / "bin" / "deployhooks", "init", "--app", "shop", "--path", app)
    assert r.returncode == 0, r.stderr
    assert (app / "deploy" / "before_migrate").exists() and (app / "fabfile.py").exists()
    git = ["git", "-C", app, "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    assert run("git", "init", "-q", app).returncode == 0
    assert run(*git, "add", "-A").returncode == 0 and run(*git, "commit", "-qm", "init").returncode == 0

    f = fleet(2, [AppSpec("shop", workers=("deploytest",))])
    monit_settled(f)
    # The fleet's hosts and keys; the app's own scaffolded files are what the release carries.
    r = run(venv / "bin" / "fab", "deploy", "--repo", app, "--config", f.config_path("shop"), cwd=app)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "deployed" in r.stdout
    for h in f.hosts:
        assert f.run(h, "test -x /data/shop/current/deploy/before_migrate").returncode == 0
        assert f.run(h, "cat /data/shop/current/VERSION").stdout.strip()
        workers = f.workers(h, "shop")
        assert workers and all(w.release != "20260102000000" for w in workers)
    # fab found the app's fabfile (outside this repository) and lists the tasks from the wheel
    listing = run(venv / "bin" / "fab", "--list", cwd=app)
    assert listing.returncode == 0 and "resque.status" in listing.stdout
    where = run(venv / "bin" / "python", "-c", "import deployhooks; print(deployhooks.__file__)", cwd=app).stdout
    assert where.startswith(str(venv)) and str(REPO) not in where
