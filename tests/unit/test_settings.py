"""The config file: defaults, and every refusal names file, line, key and expectation."""

import pytest

from deployhooks.errors import EXIT_CONFIG, ConfigError
from deployhooks.settings import load, parse

FULL = """\
app: shop
framework_env: staging
deploy_to: /srv/shop
user: deploy
keep_releases: 5
hosts:
  app_master: [web1]
  util: [deploy@util1:2222, util2]
resque:
  roles: [util]
  stop: term
  grace_time: 300
  workers:
    - queues: [critical, high]
    - queues: "*"
  on_busy: wait
  wait_timeout: 120
  guard_at: before_symlink
  sudo: true
"""


def test_full_file():
    s = parse(FULL, "deployhooks.yml")
    assert (s.app, s.framework_env, s.deploy_to, s.user, s.keep_releases) == (
        "shop",
        "staging",
        "/srv/shop",
        "deploy",
        5,
    )
    assert s.hosts_for(["util", "app_master"]) == ["deploy@util1:2222", "util2", "web1"]
    assert s.roles_of("util1") == ("util",)
    r = s.resque
    assert (r.stop, r.grace_time, r.monit_group, r.on_busy, r.guard_at, r.sudo) == (
        "term",
        300,
        "shop_resque",
        "wait",
        "before_symlink",
        True,
    )
    assert [w.queues for w in r.workers] == [("critical", "high"), ("*",)]
    assert r.workers[1].conf_name == "resque_1.conf"


def test_defaults_follow_engine_yard():
    s = parse("app: shop\n")
    assert s.deploy_to == "/data/shop" and s.framework_env == "production"
    assert s.keep_releases == 3 and s.resque.stop == "quit" and s.resque.grace_time == 60
    assert s.resque.monit_group == "shop_resque" and s.resque.on_busy == "abort"
    assert s.ssh.strict_host_keys is True


@pytest.mark.parametrize(
    "text,line,needle",
    [
        ("app: shop\nresque:\n  stop: kill\n", 3, "resque.stop: expected one of quit, term; got 'kill'"),
        ("app: shop\nresque:\n  grace_time: soon\n", 3, "resque.grace_time: expected a whole number"),
        ("app: shop\nresque:\n  sudo: maybe\n", 3, "resque.sudo: expected true or false"),
        ("app: shop\nresque:\n  colour: blue\n", 3, "resque.colour (unknown key)"),
        ("app: shop\nkeep_releases: 0\n", 2, "keep_releases: expected a whole number from 1 to 100"),
        ("app: 'shop; rm -rf /'\n", 1, "app: expected an app name"),
        ("app: shop\ndeploy_to: /data/$(reboot)\n", 2, "deploy_to: expected an absolute, normalized path"),
        ("app: shop\nhosts:\n  util: ['-oProxyCommand=x']\n", 3, "hosts.util: expected a host"),
        ("app: shop\nresque:\n  workers:\n    - queues: ['a b']\n", 4, "expected a queue name"),
        ("app: shop\napp: other\n", 2, "'app' only once"),
        ("app: [\n", 2, "not valid YAML"),
        ("framework_env: production\n", 1, "'app' key (it is required)"),
    ],
)
def test_refusals_name_the_line_and_key(text, line, needle):
    with pytest.raises(ConfigError) as info:
        parse(text, "config/deployhooks.yml")
    message = str(info.value)
    assert message.startswith(f"config/deployhooks.yml:{line}:"), message
    assert needle in message
    assert info.value.exit_code == EXIT_CONFIG


def test_missing_file_says_how_to_point_at_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DEPLOYHOOKS_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="--config PATH or set DEPLOYHOOKS_CONFIG"):
        load(root=tmp_path)


def test_env_var_locates_the_file(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yml"
    path.write_text("app: blog\n")
    monkeypatch.setenv("DEPLOYHOOKS_CONFIG", str(path))
    assert load(root="/nonexistent").app == "blog"


# --- resque.user and resque.worker_command ------------------------------------------------------


def test_worker_user_defaults_to_the_top_level_user_else_none():
    assert parse("app: shop\n").resque.user is None
    assert parse("app: shop\nuser: deploy\n").resque.user == "deploy"
    assert parse("app: shop\nuser: deploy\nresque:\n  user: jobs\n").resque.user == "jobs"
    assert parse("app: shop\nresque:\n  user: _jobs-1\n").resque.user == "_jobs-1"


@pytest.mark.parametrize(
    "text,line,needle",
    [
        (
            "app: shop\nresque:\n  user: root\n",
            3,
            "resque.user: expected a user other than root: workers never run as root",
        ),
        ("app: shop\nresque:\n  user: 0\n", 3, "workers never run as root"),
        ("app: shop\nuser: root\n", 2, "user (also resque.user's default; set resque.user"),
        ("app: shop\nresque:\n  user: Deploy\n", 3, "resque.user: expected a user name"),
        ("app: shop\nresque:\n  user: 1000\n", 3, "resque.user: expected a user name"),
        ("app: shop\nresque:\n  user: " + "a" * 33 + "\n", 3, "resque.user: expected a user name"),
        ("app: shop\nresque:\n  user: [a]\n", 3, "resque.user: expected a user name"),
    ],
)
def test_worker_user_refusals(text, line, needle):
    with pytest.raises(ConfigError) as info:
        parse(text, "config/deployhooks.yml")
    assert str(info.value).startswith(f"config/deployhooks.yml:{line}:"), str(info.value)
    assert needle in str(info.value)
    assert info.value.exit_code == EXIT_CONFIG


def test_root_ssh_user_is_fine_when_workers_have_their_own_user():
    s = parse("app: shop\nuser: root\nresque:\n  user: deploy\n")
    assert (s.user, s.resque.user) == ("root", "deploy")


def test_worker_command_default_list_and_string():
    default = parse("app: shop\n").resque
    assert default.worker_command == ("bundle", "exec", "rake", "-f", "{current}/Rakefile", "resque:work")
    assert default.worker_argv("/data/shop/current")[4] == "/data/shop/current/Rakefile"
    listed = parse("app: shop\nresque:\n  worker_command: [bin/rake, -j, 4, on, 'resque:work']\n")
    assert listed.resque.worker_command == ("bin/rake", "-j", "4", "on", "resque:work")
    split = parse("app: shop\nresque:\n  worker_command: 'bundle exec rake resque:work QUEUE=a,b'\n")
    assert split.resque.worker_command == ("bundle", "exec", "rake", "resque:work", "QUEUE=a,b")


@pytest.mark.parametrize(
    "value",
    [
        "''",
        "[]",
        "'rake \"a b\"'",
        "'rake a#b'",
        "'rake $HOME'",
        "'rake a;b'",
        "[rake, 'a b']",
        "[rake, '']",
        "[rake, [x]]",
        "'rake \"unclosed'",
        "'rake {release}/x'",
        "'rake {current'",
    ],
)
def test_worker_command_refusals(value):
    with pytest.raises(ConfigError) as info:
        parse(f"app: shop\nresque:\n  worker_command: {value}\n", "config/deployhooks.yml")
    assert str(info.value).startswith("config/deployhooks.yml:3: resque.worker_command: expected")
    assert info.value.exit_code == EXIT_CONFIG


def test_rolling_batches_need_the_guard_at_before_symlink():
    rolling = parse("app: shop\nresque:\n  guard_at: before_symlink\ndeploy:\n  batch_size: 2\n")
    assert rolling.deploy.batch_size == 2
    assert parse("app: shop\n").deploy.batch_size is None
    with pytest.raises(ConfigError) as info:
        parse("app: shop\ndeploy:\n  batch_size: 2\n", "cfg.yml")
    assert str(info.value).startswith("cfg.yml:3: deploy.batch_size: expected resque.guard_at: before_symlink")
    assert "old and new code side by side" in str(info.value)
    with pytest.raises(ConfigError, match="batch_size: expected a whole number from 1"):
        parse("app: shop\nresque:\n  guard_at: before_symlink\ndeploy:\n  batch_size: 0\n")
