"""Bad config input: each is exit 2 with one line naming the file, the line and the key.

Nothing may escape as another exception (a traceback), and nothing a later stage would misread
(a monitrc line, a shell word) may be accepted.
"""

from __future__ import annotations

import pytest

from deployhooks.errors import EXIT_CONFIG, ConfigError
from deployhooks.settings import load, parse

SRC = "config/deployhooks.yml"


def refused(text: str) -> str:
    """The message `parse` refuses `text` with; it must be a one-line ConfigError (exit 2)."""
    with pytest.raises(ConfigError) as info:
        parse(text, SRC)
    message = str(info.value)
    assert info.value.exit_code == EXIT_CONFIG
    assert "\n" not in message, message
    assert message.startswith(SRC + ":"), message
    return message


def resque(body: str) -> str:
    return "app: shop\nresque:\n" + "".join(f"  {line}\n" for line in body.splitlines())


# --- 1. YAML syntax and empty values ----------------------------------------------------------


@pytest.mark.parametrize("key", ["grace_time", "stop", "sudo", "pid_dir", "roles", "workers", "user", "worker_command"])
def test_an_empty_value_names_its_key(key):
    message = refused(resque(f"{key}:"))
    assert message.startswith(f"{SRC}:3: resque.{key}: expected a value"), message


@pytest.mark.parametrize("text", ["app:\n", "app: shop\nframework_env: ~\n", "app: shop\nkeep_releases: null\n"])
def test_null_is_an_empty_value_too(text):
    assert "expected a value" in refused(text)


def test_an_empty_section_means_its_defaults():
    s = parse("app: shop\nresque:\n  # grace_time: 60\nssh:\ndeploy:\nhosts:\n")
    assert s.resque.grace_time == 60 and s.ssh.connect_timeout == 10 and s.hosts == {}


@pytest.mark.parametrize(
    "text,line",
    [
        ("app: [\n", 2),
        ("app: shop\n  x: 1\n", 2),
        ("app: shop\n\tx: 1\n", 2),
        ("app: shop\n---\napp: x\n", 2),
        ("app: shop\x00\n", 1),
        ("app: shop\nresque: {stop: quit\n", 3),
        ("app: 'shop\n", 2),
        ("app: shop\nhosts:\n  util: [a, b\n", 4),
    ],
)
def test_yaml_syntax_errors_are_one_line_with_the_line(text, line):
    message = refused(text)
    assert message.startswith(f"{SRC}:{line}: not valid YAML: "), message


def test_deep_nesting_is_refused_not_a_recursion_error():
    assert "not valid YAML" in refused("app: shop\nhosts: " + "[" * 5000 + "]" * 5000 + "\n")


@pytest.mark.parametrize(
    "value", ["!!python/object:os.system x", "!foo x", "!!binary aGk=", "!!set {a, b}", "!!omap [a: 1]"]
)
def test_yaml_tags_are_refused(value):
    message = refused(f"app: shop\nframework_env: {value}\n")
    assert message.startswith(f"{SRC}:2: framework_env: expected "), message


def test_a_repeated_key_is_named_with_its_section():
    message = refused(resque("stop: quit\nstop: term"))
    assert message.startswith(f"{SRC}:4: resque.stop: expected 'resque.stop' only once"), message


def test_aliases_resolve_to_the_anchored_value():
    assert parse("app: &a shop\nframework_env: *a\n").framework_env == "shop"


# --- 2. encoding ------------------------------------------------------------------------------


def test_a_latin1_file_names_the_line_and_byte(tmp_path):
    path = tmp_path / "deployhooks.yml"
    path.write_bytes("app: shop\nframework_env: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as info:
        load(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: "), message
    assert "UTF-8" in message and "byte 0xe9" in message and "offset 28" in message
    assert info.value.exit_code == EXIT_CONFIG


def test_a_utf8_bom_is_fine(tmp_path):
    path = tmp_path / "deployhooks.yml"
    path.write_bytes(b"\xef\xbb\xbfapp: shop\n")
    assert load(str(path)).app == "shop"


def test_an_oversized_file_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "deployhooks.yml"
    path.write_bytes(b"app: shop\n" + b"#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than"):
        load(str(path))


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(str(tmp_path))


# --- 3. full matches: a trailing newline is not part of a name -------------------------------


@pytest.mark.parametrize(
    "text,key",
    [
        ('app: "shop\\n"\n', "app"),
        ('app: shop\nframework_env: "production\\n"\n', "framework_env"),
        ('app: shop\nuser: "deploy\\n"\n', "user"),
        ('app: shop\nhosts:\n  util: ["web1\\n"]\n', "hosts.util"),
        ('app: shop\nhosts:\n  "util\\n": [web1]\n', "hosts"),
        ('app: shop\nresque:\n  monit_group: "g\\n"\n', "resque.monit_group"),
        ('app: shop\nresque:\n  roles: ["util\\n"]\n', "resque.roles"),
        ('app: shop\nresque:\n  user: "jobs\\n"\n', "resque.user"),
        ('app: shop\nresque:\n  wrapper: "deployhooks-resque\\n"\n', "resque.wrapper"),
        ('app: shop\nresque:\n  workers:\n    - queues: ["a\\n"]\n', "resque.workers.queues"),
        ('app: shop\ndeploy:\n  shared_dirs: ["log\\n"]\n', "deploy.shared_dirs"),
        ('app: shop\ndeploy:\n  migrate_role: "app\\n"\n', "deploy.migrate_role"),
    ],
)
def test_a_trailing_newline_is_refused(text, key):
    assert f" {key}: expected " in refused(text)


# --- 5. paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key,value",
    [
        ("deploy_to", "/"),
        ("deploy_to", "/tmp"),
        ("deploy_to", "/etc"),
        ("deploy_to", "/home"),
        ("deploy_to", "/var"),
        ("deploy_to", "/usr/"),
        ("deploy_to", "/var/run"),
        ("deploy_to", "/data/a#b"),
        ("deploy_to", '"/data/a\\0b"'),
        ("deploy_to", "/data//shop"),
        ("deploy_to", "/data/./shop"),
        ("deploy_to", "/data/x/../shop"),
        ("deploy_to", "data/shop"),
        ("deploy_to", "/data/sh op"),
        ("deploy_to", "/data/shop~"),
        ("deploy_to", "//data/shop"),
        ("deploy_to", "/proc/1"),
        ("deploy.repo", "/"),
        ("resque.pid_dir", "/run"),
        ("resque.pid_dir", "/var/run"),
        ("resque.pid_dir", "/tmp"),
        ("resque.monitrc_path", "/etc/passwd"),
        ("resque.monitrc_path", "/etc/monitrc"),
        ("resque.monitrc_path", "/resque.monitrc"),
        ("resque.monitrc_path", "/etc/monit.d"),
        ("resque.monitrc_path", "/etc/monit.d/"),
        ("resque.monitrc_path", "/etc/monit.d/.r.monitrc"),
        ("resque.monitrc_path", "/etc/monit.d/r#1"),
        ("resque.wrapper", "/usr/local/bin/x#y"),
        ("resque.wrapper", "/"),
        ("ssh.known_hosts", "/home/me/.ssh/known hosts"),
        ("ssh.identity_file", "/"),
    ],
)
def test_bad_paths_are_refused_at_load(key, value):
    section, _, leaf = key.rpartition(".")
    text = f"app: shop\n{section}:\n  {leaf}: {value}\n" if section else f"app: shop\n{leaf}: {value}\n"
    message = refused(text)
    assert f" {key}: expected " in message, message


@pytest.mark.parametrize(
    "key,value",
    [
        ("deploy_to", "/home/deploy/shop"),
        ("deploy_to", "/srv/www/shop"),
        ("deploy_to", "/data/shop-2"),
        ("resque.pid_dir", "/var/run/deployhooks/resque/shop"),
        ("resque.pid_dir", "/run/shop"),
        ("resque.monitrc_path", "/etc/monit/conf.d/resque_shop"),
        ("resque.wrapper", "/usr/local/bin/deployhooks-resque"),
        ("ssh.known_hosts", "/dev/null"),
        ("deploy.repo", "/home/me/src/shop@v2"),
    ],
)
def test_good_paths_pass(key, value):
    section, _, leaf = key.rpartition(".")
    text = f"app: shop\n{section}:\n  {leaf}: {value}\n" if section else f"app: shop\n{leaf}: {value}\n"
    s = parse(text)
    holder = getattr(s, section) if section else s
    assert getattr(holder, leaf) == value


# --- 6. every number has a maximum ------------------------------------------------------------

MAXIMA = [
    ("keep_releases", 100),
    ("resque.grace_time", 86400),
    ("resque.wait_timeout", 86400),
    ("resque.pause_timeout", 86400),
    ("resque.start_timeout", 86400),
    ("resque.totalmem_mb", 1048576),
    ("ssh.connect_timeout", 600),
]


@pytest.mark.parametrize("key,maximum", MAXIMA)
def test_numbers_have_a_maximum(key, maximum):
    section, _, leaf = key.rpartition(".")

    def text(n):
        return f"app: shop\n{section}:\n  {leaf}: {n}\n" if section else f"app: shop\n{leaf}: {n}\n"

    s = parse(text(maximum))
    assert getattr(getattr(s, section) if section else s, leaf) == maximum
    message = refused(text(maximum + 1))
    assert f" {key}: expected a whole number from 1 to {maximum}" in message, message
    assert f"got '{maximum + 1}'" in message
    assert "to " + str(maximum) in refused(text("9" * 5000))


def test_at_most_64_workers():
    assert len(parse(resque("workers:\n" + "  - queues: a\n" * 64)).resque.workers) == 64
    message = refused(resque("workers:\n" + "  - queues: a\n" * 65))
    assert "resque.workers: expected at most 64 workers" in message, message


def test_a_port_is_at_most_65535():
    assert parse("app: shop\nhosts:\n  util: [web1:65535]\n").hosts["util"] == ("web1:65535",)
    assert "hosts.util: expected" in refused("app: shop\nhosts:\n  util: [web1:65536]\n")
    assert "hosts.util: expected" in refused("app: shop\nhosts:\n  util: [web1:0]\n")


# --- 7. YAML 1.1 number and boolean quirks ----------------------------------------------------


@pytest.mark.parametrize(
    "written", ["1:30", "0x10", "010", "0o10", "1_000", "+5", "5.0", "1e3", ".inf", ".nan", "-5", "0b11"]
)
def test_a_number_must_be_plain_decimal(written):
    message = refused(resque(f"grace_time: {written}"))
    assert message.startswith(f"{SRC}:3: resque.grace_time: expected a whole number"), message
    assert f"got '{written}'" in message


def test_sexagesimal_says_what_yaml_would_have_read():
    assert "90" in refused(resque("grace_time: 1:30"))


def test_a_quoted_decimal_is_the_number():
    assert parse(resque('grace_time: "90"')).resque.grace_time == 90


@pytest.mark.parametrize("written", ["yes", "no", "on", "off", "y", "n", "1", "0", "maybe"])
def test_booleans_are_only_true_and_false(written):
    message = refused(resque(f"sudo: {written}"))
    assert "resque.sudo: expected true or false" in message and f"got '{written}'" in message


@pytest.mark.parametrize("written,value", [("true", True), ("false", False), ("True", True), ("FALSE", False)])
def test_true_and_false_in_any_yaml_case(written, value):
    assert parse(resque(f"sudo: {written}")).resque.sudo is value


@pytest.mark.parametrize(
    "text,attr,value",
    [
        ("app: 2024\n", "app", "2024"),
        ("app: shop\nframework_env: no\n", "framework_env", "no"),
        ("app: shop\nframework_env: 0x10\n", "framework_env", "0x10"),
    ],
)
def test_names_are_the_text_as_written(text, attr, value):
    assert getattr(parse(text), attr) == value


def test_long_values_are_cut_in_the_message():
    message = refused("app: shop\nframework_env: '" + "x;" * 500 + "'\n")
    assert len(message) < 400, message


# --- end to end: the command line shows the one line and exits 2 -----------------------------


@pytest.mark.parametrize(
    "data,needle",
    [
        (b"app: shop\nresque:\n  grace_time:\n", ":3: resque.grace_time: expected a value"),
        (b"app: shop\nframework_env: caf\xe9\n", ":2: not UTF-8: byte 0xe9 at offset 28"),
        (b"app: shop\nframework_env: !!python/object:os.system x\n", ":2: framework_env: expected"),
        (b"app: shop\nresque:\n  grace_time: 1:30\n", ":3: resque.grace_time: expected a whole number"),
    ],
)
def test_fab_prints_one_line_and_exits_2(tmp_path, data, needle):
    from tests.helpers import fab

    path = tmp_path / "deployhooks.yml"
    path.write_bytes(data)
    r = fab("resque.status", "--config", str(path), timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and str(path) + needle in r.stderr
