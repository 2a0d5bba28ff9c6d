"""The one config file, `config/deployhooks.yml`: schema, defaults and validation.

`load(path)` returns frozen `Settings` or raises `ConfigError` naming the file, the line, the key
and what was expected, in one line (exit code 2). Validation happens before anything touches a
host, so a bad file changes nothing anywhere. The schema is data (`_SCHEMA`) walked over PyYAML's
node tree, because only the node tree still knows which line each value came from.

This module is the reference for the schema. The rules every value is held to:

- The file is UTF-8 (a BOM is fine), at most 1 MiB, one YAML document. A YAML syntax error, a
  byte that is not UTF-8 or a character YAML forbids is reported with its line.
- A key written with no value (`grace_time:`, `~`, `null`) is refused: remove the key to get its
  default. A section (`resque:`, `ssh:`, `deploy:`, `hosts:`) with nothing under it means all
  its defaults.
- YAML tags (`!!python/object`, `!!binary`, `!foo`, ...) are refused everywhere.
- Names, users, hosts, queues, words and paths are taken as the text written, never as YAML 1.1
  read it (`framework_env: no` is the name "no", not false), and must match their pattern in
  full: a trailing newline is not part of a name.
- Names (app, framework_env, roles, monit_group) are letters, digits, `_` and `-`, and do not
  start with `-` (they become arguments of the worker wrapper).
- Numbers are whole numbers written in plain decimal digits (quotes allowed): `1:30`
  (sexagesimal, 90 in YAML 1.1), `0x10`, `010` (octal), `0o10`, `1_000`, `+5`, `5.0` and `1e3`
  are refused with the text as written. Each has a range:

      keep_releases              1 .. 100
      deploy.batch_size          1 .. 10000 hosts (needs resque.guard_at: before_symlink)
      resque.grace_time          1 .. 86400 seconds (one day)
      resque.wait_timeout        1 .. 86400 seconds
      resque.pause_timeout       1 .. 86400 seconds
      resque.start_timeout       1 .. 86400 seconds
      resque.totalmem_mb         1 .. 1048576 (1 TiB)
      resque.workers             1 .. 64 entries
      ssh.connect_timeout        1 .. 600 seconds
      a host's :port             1 .. 65535

- Booleans (resque.sudo, ssh.strict_host_keys) are `true` or `false` (also True/TRUE,
  False/FALSE). `yes`, `no`, `on` and `off` are refused: YAML 1.1 (Ruby's Psych) reads them as
  booleans and YAML 1.2 as strings, and a flag that silently means the opposite is worse than
  a refusal.
- Paths are absolute, normalized (no `//`, `/./`, `/../`, trailing `/`), not `/`, and use only
  letters, digits and `_ . / @ + -`: they reach monit lines and shell commands, where `#`, a
  space, a quote or NUL would be misread. deploy_to and resque.pid_dir are folders this tool
  fills and cleans, so they may not be a system folder (SYSTEM_FOLDERS: /tmp, /etc, /usr, /var,
  /home, /var/run, ...) nor lie under /proc, /sys or /dev. resque.monitrc_path is a file written
  as root: its folder may not be `/` or a system folder (so never /etc/passwd or monit's own
  /etc/monitrc), and its name may not start with `.` (monit's include globs skip dot files).
- resque.user is never root (or 0): the wrapper runs as root only to drop to it.
- resque.worker_command words use only letters, digits and `_ . / : = @ % + , -` and the
  placeholder `{current}`: they go unquoted on a monit `start program` line.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError

DEFAULT_PATH = "config/deployhooks.yml"
ENV_VAR = "DEPLOYHOOKS_CONFIG"

# Every pattern is anchored with \A and \Z (not ^ and $: `$` also matches before a final
# newline), so `.match` and `.fullmatch` both mean the whole text.
NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_-]*\Z")
# user@host:port, host names and IPv4 only: nothing a shell or ssh option parser could misread.
HOST_RE = re.compile(r"\A(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(?::(?P<port>[0-9]{1,5}))?\Z")
QUEUE_RE = re.compile(r"\A(?:\*|[A-Za-z0-9_.:-]+)\Z")
USER_RE = re.compile(r"\A[a-z_][a-z0-9_-]*\$?\Z")
COMMAND_NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
# The user the workers run as: a portable POSIX login name (useradd's default NAME_REGEX, 32 max).
WORKER_USER_RE = re.compile(r"\A[a-z_][a-z0-9_-]{0,31}\Z")
# One word of resque.worker_command. The words go unquoted on a monit `start program = "..."`
# line, so nothing a shell or monit's parser would read: no space, quote, #, $ or ;.
WORKER_TOKEN_RE = re.compile(r"\A[A-Za-z0-9_./:=@%+,{}-]+\Z")
CURRENT_PLACEHOLDER = "{current}"
DEFAULT_WORKER_COMMAND = ("bundle", "exec", "rake", "-f", "{current}/Rakefile", "resque:work")
# A path's characters: monit splits its lines on whitespace and reads `#` as a comment, and
# paths are pasted into shell commands; this set needs no quoting in either.
PATH_CHARS_RE = re.compile(r"\A[A-Za-z0-9_./@+-]+\Z")
# Folders the system owns: never a deploy_to or pid_dir (this tool creates and removes what is
# inside those: releases, links, pidfiles), never the folder of the monitrc (written as root).
SYSTEM_FOLDERS = frozenset(
    {
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/home",
        "/lib",
        "/lib32",
        "/lib64",
        "/libx32",
        "/lost+found",
        "/media",
        "/mnt",
        "/opt",
        "/proc",
        "/root",
        "/run",
        "/sbin",
        "/snap",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/lib",
        "/usr/local/sbin",
        "/usr/sbin",
        "/usr/share",
        "/var/cache",
        "/var/lib",
        "/var/log",
        "/var/run",
        "/var/spool",
        "/var/tmp",
    }
)
# Kernel file systems: nothing of an app's lives there.
VIRTUAL_FOLDERS = ("/proc", "/sys", "/dev")

# The maxima of the numbers (see the module docstring); a larger value is a typo or a unit
# mistake (milliseconds for seconds), and would only hang a deploy for that long.
MAX_SECONDS = 86400
MAX_KEEP_RELEASES = 100
MAX_BATCH_SIZE = 10000
MAX_WORKERS = 64
MAX_CONNECT_TIMEOUT = 600
MAX_TOTALMEM_MB = 1 << 20
MAX_PORT = 65535
MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class Worker:
    """One `resque_N.conf`: the queues worker N serves, in priority order."""

    index: int
    queues: tuple[str, ...]

    @property
    def conf_name(self) -> str:
        return f"resque_{self.index}.conf"


@dataclass(frozen=True)
class ResqueSettings:
    """How the app's workers are stopped, guarded and restarted."""

    roles: tuple[str, ...]
    stop: str
    grace_time: int
    monit_group: str
    workers: tuple[Worker, ...]
    on_busy: str
    wait_timeout: int
    guard_at: str
    sudo: bool
    monit_command: tuple[str, ...]
    pause_timeout: int
    start_timeout: int
    monitrc_path: str
    pid_dir: str
    wrapper: str
    totalmem_mb: int | None
    user: str | None = None
    worker_command: tuple[str, ...] = DEFAULT_WORKER_COMMAND
    # Engine Yard's `on_utilities("resque")`: utility instances run workers only when their
    # name (EY_DEPLOY_CURRENT_NAME) is listed here; empty: every instance of `roles` does.
    utility_names: tuple[str, ...] = ()

    def worker_argv(self, current_path: str) -> tuple[str, ...]:
        """`worker_command` with each `{current}` replaced by `current_path`."""
        return tuple(word.replace(CURRENT_PLACEHOLDER, current_path) for word in self.worker_command)

    @property
    def settle_timeout(self) -> int:
        """How long a monit stop/restart of the group may take before we call it failed.

        monit handles a group's services one after another, and each stop may wait up to
        `grace_time`, so the bound grows with the number of workers.
        """
        return len(self.workers) * (self.grace_time + 10) + self.start_timeout


@dataclass(frozen=True)
class SshSettings:
    """How the workstation reaches hosts. Host keys are checked unless told otherwise."""

    known_hosts: str | None = None
    strict_host_keys: bool = True
    identity_file: str | None = None
    connect_timeout: int = 10


@dataclass(frozen=True)
class DeploySettings:
    """What `fab deploy` does besides the hooks: shared links, migration, app restart."""

    repo: str | None = None
    # Linked when present; listed in the config, each must exist (else the deploy stops before
    # anything moves, as Capistrano's deploy:check:linked_files). Engine Yard's database.yml is
    # linked by default, not required.
    shared_files: tuple[str, ...] | None = None
    shared_dirs: tuple[str, ...] = ("log", "tmp/pids")
    # Run in the release before the migration, each off unless set: bundle on every host
    # (e.g. "bundle install --deployment --path ../../shared/bundle"), assets on assets_roles.
    bundle_command: str | None = None
    assets_command: str | None = None
    assets_roles: tuple[str, ...] = ("app_master", "app", "solo")
    migrate_command: str | None = None
    migrate_role: str = "app_master"
    restart_command: str | None = None
    restart_roles: tuple[str, ...] = ("app_master", "app", "solo")
    # Rolling deploys: hosts switched and restarted per batch while the others keep serving
    # every queue on the old release; None switches every host at once.
    batch_size: int | None = None

    @property
    def linked_files(self) -> tuple[str, ...]:
        """The files of shared/config linked into each release."""
        return ("database.yml",) if self.shared_files is None else self.shared_files

    @property
    def required_files(self) -> tuple[str, ...]:
        """The linked files that must exist: those the config lists."""
        return self.shared_files or ()


@dataclass(frozen=True)
class Settings:
    """A validated config file. `source` is the file it came from, for messages."""

    app: str
    framework_env: str
    deploy_to: str
    user: str | None
    keep_releases: int
    hosts: dict[str, tuple[str, ...]]
    resque: ResqueSettings
    ssh: SshSettings = SshSettings()
    deploy: DeploySettings = DeploySettings()
    source: str = field(default="<defaults>", compare=False)

    @property
    def shared_path(self) -> str:
        return os.path.join(self.deploy_to, "shared")

    @property
    def current_path(self) -> str:
        return os.path.join(self.deploy_to, "current")

    @property
    def releases_path(self) -> str:
        return os.path.join(self.deploy_to, "releases")

    def hosts_for(self, roles: tuple[str, ...] | list[str]) -> list[str]:
        """Every host of the given roles, each once, in config order."""
        seen: list[str] = []
        for role in roles:
            for host in self.hosts.get(role, ()):
                if host not in seen:
                    seen.append(host)
        return seen

    def roles_of(self, host: str) -> tuple[str, ...]:
        """The roles that list `host` (matched with or without user@ and :port)."""

        def bare(h: str) -> str:
            return h.split("@")[-1].split(":")[0]

        return tuple(role for role, hs in self.hosts.items() if any(h == host or bare(h) == bare(host) for h in hs))


# --- validation ---------------------------------------------------------------------------------

_TAG = "tag:yaml.org,2002:"
_NULL, _MAP, _SEQ, _STR = _TAG + "null", _TAG + "map", _TAG + "seq", _TAG + "str"
# The tags PyYAML's resolver gives plain scalars. Any other tag was written by hand (`!!binary`,
# `!!python/object`, `!foo`) and is refused.
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "timestamp", "value"))
_NO_VALUE = "a value (the key is empty: write one after the colon, or remove the key for its default)"
_DECIMAL_RE = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class _Spec:
    """One key's expectation: a check that returns the Python value or raises `_Bad`."""

    def __init__(self, check: Callable[[yaml.Node, str], Any], default: Any = None, required: bool = False):
        self.check, self.default, self.required = check, default, required


class _Bad(Exception):
    """A refused value: `node` gives the line, `expected` what would have been accepted."""

    def __init__(self, node: yaml.Node | None, expected: str, key: str | None = None, show_got: bool = True):
        super().__init__(expected)
        self.node, self.expected, self.key, self.show_got = node, expected, key, show_got


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _text(node: yaml.Node, expected: str) -> str:
    """The scalar's text as written (after YAML's quotes and escapes), never YAML 1.1's reading
    of it: `no` stays "no", `1:30` stays "1:30". An empty value and a tagged or non-scalar node
    are refused."""
    if _is_null(node):
        raise _Bad(node, _NO_VALUE, show_got=False)
    if isinstance(node, yaml.ScalarNode) and node.tag not in _SCALAR_TAGS:
        raise _Bad(node, f"{expected}, without the YAML tag {_show_tag(node.tag)}")
    if not isinstance(node, yaml.ScalarNode):
        raise _Bad(node, expected)
    return node.value


def _show_tag(tag: str) -> str:
    """A tag as it was written: `!!binary` rather than `tag:yaml.org,2002:binary`."""
    return _shorten("!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag)


def _string(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Callable:
    """A non-empty string; with `pattern`, one it matches in full; without, one free of control
    characters other than tab and newline (shell commands may span lines)."""

    def check(node: yaml.Node, key: str) -> str:
        value = _text(node, what)
        if not value or (pattern.fullmatch(value) is None if pattern else _CONTROL_RE.search(value)):
            raise _Bad(node, what)
        return value

    return check


def _choice(*choices: str) -> Callable:
    what = "one of " + ", ".join(choices)

    def check(node: yaml.Node, key: str) -> str:
        value = _text(node, what)
        if value not in choices:
            raise _Bad(node, what)
        return value

    return check


def _yaml11_reading(node: yaml.Node) -> str:
    """' (YAML 1.1 reads it as 90)' for a plain `1:30`, and so on; '' when YAML reads no number."""
    if node.style is not None or node.tag not in (_TAG + "int", _TAG + "float"):
        return ""
    try:
        value = yaml.safe_load(node.value)
    except (yaml.YAMLError, ValueError, OverflowError):
        return ""
    return f" (YAML 1.1 reads it as {value!r})" if isinstance(value, (int, float)) else ""


def _int(minimum: int, maximum: int) -> Callable:
    """A whole number in [minimum, maximum] written in plain decimal digits: YAML 1.1 would read
    `1:30` as 90, `0x10` as 16 and `010` as 8, none of which is what the writer most likely meant."""
    what = f"a whole number from {minimum} to {maximum}"

    def check(node: yaml.Node, key: str) -> int:
        text = _text(node, what)
        if not _DECIMAL_RE.fullmatch(text):
            raise _Bad(node, f"{what}, in plain decimal digits{_yaml11_reading(node)}")
        # The length test first: int() of thousands of digits is slow, and refused beyond 4300.
        if len(text) > len(str(maximum)) or not minimum <= int(text) <= maximum:
            raise _Bad(node, what)
        return int(text)

    return check


_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")


def _bool(node: yaml.Node, key: str) -> bool:
    """`true` or `false` only: yes/no/on/off are booleans in YAML 1.1 and strings in YAML 1.2."""
    what = "true or false (yes, no, on and off are not accepted)"
    text = _text(node, what)
    if text not in _TRUE + _FALSE:
        raise _Bad(node, what)
    return text in _TRUE


_PATH_WHAT = (
    "an absolute, normalized path (no //, /./, /../ or trailing /) other than /, of letters, digits and _ . / @ + -"
)


def _abs_path(node: yaml.Node, key: str) -> str:
    """An absolute, normalized path other than `/`, made of PATH_CHARS_RE characters only."""
    value = _text(node, _PATH_WHAT)
    if (
        not value.startswith("/")
        or value.startswith("//")
        or value == "/"
        or not PATH_CHARS_RE.fullmatch(value)
        or os.path.normpath(value) != value
    ):
        raise _Bad(node, _PATH_WHAT)
    return value


def _is_system(path: str) -> bool:
    return path in SYSTEM_FOLDERS or any(path.startswith(v + "/") for v in VIRTUAL_FOLDERS)


def _own_folder(node: yaml.Node, key: str) -> str:
    """A folder this tool fills and prunes (deploy_to, pid_dir): `_abs_path`, and not a system
    folder (SYSTEM_FOLDERS) nor anything under /proc, /sys or /dev."""
    value = _abs_path(node, key)
    if _is_system(value):
        raise _Bad(node, "a folder of the app's own, not a system folder such as /tmp, /etc, /var or /var/run")
    return value


def _monitrc_file(node: yaml.Node, key: str) -> str:
    """The monitrc, written as root: `_abs_path`, in a folder that is not `/` or a system
    folder (never /etc/passwd, nor monit's own /etc/monitrc), with a name not starting with `.`
    (monit's include globs, glob(3) without GLOB_PERIOD, skip dot files)."""
    value = _abs_path(node, key)
    folder, name = os.path.split(value)
    if folder == "/" or _is_system(folder) or _is_system(value) or name.startswith("."):
        raise _Bad(
            node,
            "a file in a folder monit includes, e.g. "
            "/etc/monit.d/resque_<app>.monitrc (not in / or a system folder such as "
            "/etc, and not a dot name)",
        )
    return value


def _relative(what: str) -> Callable:
    """A normalized relative path under a folder of the app (no `..`, no leading `/`)."""

    def check(node: yaml.Node, key: str) -> str:
        value = _string(_REL_RE, what)(node, key)
        if os.path.normpath(value) != value or value == ".":
            raise _Bad(node, what)
        return value

    return check


def _list_of(item: Callable, what: str, maximum: int | None = None, items: str = "items") -> Callable:
    """A YAML list of `item`s (or "a,b" for one), not empty, at most `maximum` `items` long."""

    def check(node: yaml.Node, key: str) -> tuple:
        if isinstance(node, yaml.ScalarNode):
            # "a,b" is accepted where a list is expected: resque_N.conf files say QUEUE=a,b.
            parts = [p.strip() for p in _text(node, what).split(",")]
            values = tuple(item(yaml.ScalarNode(_STR, p, node.start_mark, node.end_mark), key) for p in parts)
        elif isinstance(node, yaml.SequenceNode) and node.tag == _SEQ and node.value:
            values = tuple(item(n, key) for n in node.value)
        else:
            raise _Bad(node, what)
        if maximum is not None and len(values) > maximum:
            raise _Bad(node, f"at most {maximum} {items}", show_got=False)
        return values

    return check


def _host(node: yaml.Node, key: str) -> str:
    """[user@]name[:port], the port from 1 to MAX_PORT."""
    what = f"a host ([user@]name[:port], port 1 to {MAX_PORT})"
    value = _string(HOST_RE, what)(node, key)
    port = HOST_RE.fullmatch(value)["port"]
    if port is not None and not 1 <= int(port) <= MAX_PORT:
        raise _Bad(node, what)
    return value


def _hosts(node: yaml.Node, key: str) -> dict[str, tuple[str, ...]]:
    if _is_null(node):
        return {}
    if not isinstance(node, yaml.MappingNode) or node.tag != _MAP:
        raise _Bad(node, "a mapping of role name to a list of hosts")
    hosts: dict[str, tuple[str, ...]] = {}
    for knode, vnode in node.value:
        role = _string(NAME_RE, "a role name (letters, digits, _ and -)")(knode, key)
        try:
            hosts[role] = _list_of(_host, "a list of hosts ([user@]name[:port])")(vnode, key)
        except _Bad as bad:
            bad.key = f"{key}.{role}"
            raise
    return hosts


def _worker_entry(node: yaml.Node, key: str) -> tuple[str, ...]:
    spec = {"queues": _Spec(_list_of(_string(QUEUE_RE, "a queue name or *"), "a list of queue names"), required=True)}
    return _mapping(node, key, spec)["queues"]


def _wrapper(node: yaml.Node, key: str) -> str:
    what = "an absolute path or a command name on PATH, e.g. /usr/local/bin/deployhooks-resque"
    value = _string(what=what)(node, key)
    if value.startswith("/"):
        return _abs_path(node, key)
    if not COMMAND_NAME_RE.fullmatch(value):
        raise _Bad(node, what)
    return value


def _monit_command(node: yaml.Node, key: str) -> tuple[str, ...]:
    what = "a command (a string or a list of words), e.g. monit or [monit, -c, /etc/monitrc]"
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
        words = tuple(_string(what=what)(n, key) for n in node.value)
    else:
        words = tuple(_string(what=what)(node, key).split())
    if not words:
        raise _Bad(node, what)
    return words


def _worker_user(node: yaml.Node, key: str) -> str:
    """A worker user name; `root` and `0` are refused: the wrapper runs as root to drop to
    this user, and a worker left as root would run every job with root's rights."""
    what = "a user name matching [a-z_][a-z0-9_-]{0,31}"
    value = _text(node, what)
    if value in ("root", "0"):
        raise _Bad(node, "a user other than root: workers never run as root")
    if not WORKER_USER_RE.fullmatch(value):
        raise _Bad(node, what)
    return value


def _worker_command(node: yaml.Node, key: str) -> tuple[str, ...]:
    """The worker's argv: a list of words, or a string split as a shell would (shlex).

    Each word full-matches WORKER_TOKEN_RE; braces only as the `{current}` placeholder.
    """
    what = (
        "a command (a list of words or a string) whose words use only letters, digits and "
        "_ . / : = @ % + , - (and {current})"
    )
    if isinstance(node, yaml.SequenceNode) and node.tag == _SEQ:
        # The words as written: YAML must not turn `on` into True or `010` into 8.
        words = [n.value if isinstance(n, yaml.ScalarNode) and n.tag in _SCALAR_TAGS else None for n in node.value]
    else:
        try:
            words = shlex.split(_text(node, what))
        except ValueError:
            raise _Bad(node, what) from None
    if not words:
        raise _Bad(node, what)
    for word in words:
        if word is None or not WORKER_TOKEN_RE.fullmatch(word):
            raise _Bad(node, what)
        if "{" in word.replace(CURRENT_PLACEHOLDER, "") or "}" in word.replace(CURRENT_PLACEHOLDER, ""):
            raise _Bad(node, "no placeholder but {current} in the worker command")
    return tuple(words)


def _seconds(maximum: int = MAX_SECONDS) -> Callable:
    return _int(1, maximum)


_RESQUE_SCHEMA = {
    "roles": _Spec(_list_of(_string(NAME_RE, "a role name"), "a list of role names"), default=("util", "solo")),
    "stop": _Spec(_choice("quit", "term"), default="quit"),
    "grace_time": _Spec(_seconds(), default=60),
    "monit_group": _Spec(_string(NAME_RE, "a monit group name (letters, digits, _ and -)")),
    "workers": _Spec(
        _list_of(_worker_entry, "a list of workers, each {queues: [...]}", maximum=MAX_WORKERS, items="workers"),
        default=(("*",),),
    ),
    "on_busy": _Spec(_choice("abort", "wait"), default="abort"),
    "wait_timeout": _Spec(_seconds(), default=600),
    "guard_at": _Spec(_choice("before_migrate", "before_symlink"), default="before_migrate"),
    "utility_names": _Spec(_list_of(_string(NAME_RE, "an instance name"), "a list of instance names"), default=()),
    "sudo": _Spec(_bool, default=False),
    "monit_command": _Spec(_monit_command, default=("monit",)),
    "pause_timeout": _Spec(_seconds(), default=15),
    "start_timeout": _Spec(_seconds(), default=60),
    # resque.setup / resque.doctor: where the monitrc goes and what it runs. None = per app.
    "monitrc_path": _Spec(_monitrc_file),  # default /etc/monit.d/resque_<app>.monitrc
    "pid_dir": _Spec(_own_folder),  # default /var/run/deployhooks/resque/<app>
    "wrapper": _Spec(_wrapper, default="deployhooks-resque"),  # resolved on the host if not absolute
    "totalmem_mb": _Spec(_int(1, MAX_TOTALMEM_MB)),  # default none: no memory rule in the monitrc
    # The user the monit wrapper (root) drops to before it execs the worker. Default: `user`.
    "user": _Spec(_worker_user),
    # What the wrapper execs as the worker; {current} is the app's current release path.
    "worker_command": _Spec(_worker_command, default=DEFAULT_WORKER_COMMAND),
}

_SSH_SCHEMA = {
    "known_hosts": _Spec(_abs_path),
    "strict_host_keys": _Spec(_bool, default=True),
    "identity_file": _Spec(_abs_path),
    "connect_timeout": _Spec(_seconds(MAX_CONNECT_TIMEOUT), default=10),
}

_REL_RE = re.compile(r"\A(?!/)(?!.*\.\.)[A-Za-z0-9_.][A-Za-z0-9_./-]*\Z")

_DEPLOY_SCHEMA = {
    "repo": _Spec(_abs_path),
    "shared_files": _Spec(_list_of(_relative("a file name under shared/config"), "a list of file names"), default=None),
    "shared_dirs": _Spec(
        _list_of(_relative("a relative folder, e.g. log or tmp/pids"), "a list of relative folders"),
        default=DeploySettings.shared_dirs,
    ),
    # A shell command run in the release (e.g. "bundle exec rake db:migrate"); written by the
    # operator of this file, so it is passed to the shell as written.
    "bundle_command": _Spec(_string(what="a shell command")),
    "assets_command": _Spec(_string(what="a shell command")),
    "assets_roles": _Spec(
        _list_of(_string(NAME_RE, "a role name"), "a list of role names"), default=("app_master", "app", "solo")
    ),
    "migrate_command": _Spec(_string(what="a shell command")),
    "migrate_role": _Spec(_string(NAME_RE, "a role name"), default="app_master"),
    "restart_command": _Spec(_string(what="a shell command")),
    "restart_roles": _Spec(
        _list_of(_string(NAME_RE, "a role name"), "a list of role names"), default=DeploySettings.restart_roles
    ),
    "batch_size": _Spec(_int(1, MAX_BATCH_SIZE)),
}


def _section(schema: dict[str, "_Spec"]) -> Callable:
    """A section of keys; written empty (`resque:` with nothing under it) it means its defaults."""

    def check(node: yaml.Node, key: str) -> dict[str, Any] | None:
        return None if _is_null(node) else _mapping(node, key, schema)

    return check


_NAME_WHAT = "(letters, digits, _ and -, not starting with -)"

_SCHEMA = {
    "app": _Spec(_string(NAME_RE, f"an app name {_NAME_WHAT}"), required=True),
    "framework_env": _Spec(_string(NAME_RE, f"an environment name {_NAME_WHAT}"), default="production"),
    "deploy_to": _Spec(_own_folder),
    "user": _Spec(_string(USER_RE, "a user name")),
    "keep_releases": _Spec(_int(1, MAX_KEEP_RELEASES), default=3),
    "hosts": _Spec(_hosts, default={}),
    "resque": _Spec(_section(_RESQUE_SCHEMA), default=None),
    "ssh": _Spec(_section(_SSH_SCHEMA), default=None),
    "deploy": _Spec(_section(_DEPLOY_SCHEMA), default=None),
}


def _show_key(key: str) -> str:
    """A key as it can be printed on one line: as is when it is a plain word, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_.<-]{1,60}", key) else repr(key[:60])


def _mapping(node: yaml.Node, prefix: str, schema: dict[str, _Spec]) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode) or node.tag != _MAP:
        raise _Bad(node, "a mapping of " + ", ".join(schema))
    values: dict[str, Any] = {}
    for knode, vnode in node.value:
        if isinstance(knode, yaml.ScalarNode) and knode.tag == _TAG + "merge":
            raise _Bad(knode, "no YAML merge key (<<): write the keys out", key=prefix or None, show_got=False)
        if not isinstance(knode, yaml.ScalarNode) or knode.tag not in _SCALAR_TAGS:
            raise _Bad(knode, f"a plain key, one of {', '.join(schema)}", key=prefix or None, show_got=False)
        key = knode.value
        path = f"{prefix}.{_show_key(key)}" if prefix else _show_key(key)
        if key not in schema:
            raise _Bad(
                knode, f"one of the known keys ({', '.join(schema)})", key=f"{path} (unknown key)", show_got=False
            )
        if key in values:
            raise _Bad(knode, f"'{path}' only once", key=path, show_got=False)
        try:
            values[key] = schema[key].check(vnode, path)
        except _Bad as bad:
            bad.key = bad.key or path
            raise
    for key, spec in schema.items():
        if key not in values:
            if spec.required:
                raise _Bad(node, f"a '{(prefix + '.' if prefix else '') + key}' key (it is required)")
            values[key] = spec.default
    return values


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _bad_message(bad: _Bad, source: str) -> str:
    """`file:line: key: expected ...; got '...'`, on one line."""
    line = f":{bad.node.start_mark.line + 1}" if bad.node is not None else ""
    got = ""
    if bad.show_got and isinstance(bad.node, yaml.ScalarNode):
        got = f"; got {_shorten(bad.node.value)!r}"
    where = f" {bad.key}:" if bad.key else ""
    return f"{source}{line}:{where} expected {bad.expected}{got}"


def yaml_problem(exc: Exception, text: str) -> tuple[str, str]:
    """(':line' or '', what is wrong) for a YAML error, on one line whatever PyYAML said."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        line = f":{mark.line + 1}"
    elif isinstance(getattr(exc, "position", None), int):  # a ReaderError: a forbidden character
        line = f":{text.count(chr(10), 0, exc.position) + 1}"
    else:
        line = ""
    if isinstance(exc, RecursionError):
        what = "nested too deeply"
    elif isinstance(exc, yaml.MarkedYAMLError):
        what = ", ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
    else:
        what = (str(exc).splitlines() or [type(exc).__name__])[0]
    return line, " ".join(what.split())


def _yaml_message(exc: yaml.YAMLError, text: str, source: str) -> str:
    """`file:line: not valid YAML: <what PyYAML said>`, on one line."""
    line, what = yaml_problem(exc, text)
    return f"{source}{line}: not valid YAML: {what}"


def parse(text: str, source: str = "<string>") -> Settings:
    """Validate config text and return `Settings`; `ConfigError` says where and what is wrong."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_message(exc, text, source)) from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML for deployhooks: nested too deeply") from None
    if root is None:
        raise ConfigError(f"{source}: the file is empty; it needs at least 'app: <name>'")
    try:
        raw = _mapping(root, "", _SCHEMA)
        worker_user = _default_worker_user(root, raw)
        _check_rolling(root, raw)
    except _Bad as bad:
        raise ConfigError(_bad_message(bad, source)) from None
    return _build(raw, source, worker_user)


def _value_node(mapping: yaml.Node, key: str) -> yaml.Node | None:
    """The value node of `key` in a mapping node, for a message that points at its line."""
    if isinstance(mapping, yaml.MappingNode):
        for knode, vnode in mapping.value:
            if isinstance(knode, yaml.ScalarNode) and knode.value == key:
                return vnode
    return None


def _default_worker_user(root: yaml.Node, raw: dict[str, Any]) -> str | None:
    """resque.user, else the top-level `user` (held to resque.user's rules, so `user: root`
    with no resque.user is refused rather than starting workers as root), else None."""
    if raw["resque"] is not None and raw["resque"]["user"] is not None:
        return raw["resque"]["user"]
    if raw["user"] is None:
        return None
    try:
        return _worker_user(_value_node(root, "user"), "user")
    except _Bad as bad:
        bad.key = "user (also resque.user's default; set resque.user to another user)"
        raise


def _check_rolling(root: yaml.Node, raw: dict[str, Any]) -> None:
    """deploy.batch_size only with resque.guard_at: before_symlink. Rolling batches mean old and
    new code run side by side; with the guard at before_migrate the workers are stopped so
    that no old code runs against the migrated schema, which batches would contradict."""
    deploy, resque = raw["deploy"] or {}, raw["resque"] or {}
    if deploy.get("batch_size") is None or resque.get("guard_at") == "before_symlink":
        return
    node = _value_node(_value_node(root, "deploy"), "batch_size")
    raise _Bad(
        node,
        "resque.guard_at: before_symlink beside it (rolling batches run old and new code side by side "
        "against the migrated schema, which guard_at: before_migrate exists to prevent): set that, "
        "or remove batch_size",
        key="deploy.batch_size",
        show_got=False,
    )


def _build(raw: dict[str, Any], source: str, worker_user: str | None = None) -> Settings:
    app = raw["app"]
    r = (
        raw["resque"]
        if raw["resque"] is not None
        else _mapping(yaml.MappingNode("tag:yaml.org,2002:map", []), "resque", _RESQUE_SCHEMA)
    )
    workers = tuple(Worker(i, tuple(q)) for i, q in enumerate(r["workers"]))
    resque = ResqueSettings(
        roles=tuple(r["roles"]),
        stop=r["stop"],
        grace_time=r["grace_time"],
        monit_group=r["monit_group"] or f"{app}_resque",
        workers=workers,
        on_busy=r["on_busy"],
        wait_timeout=r["wait_timeout"],
        guard_at=r["guard_at"],
        sudo=r["sudo"],
        monit_command=tuple(r["monit_command"]),
        pause_timeout=r["pause_timeout"],
        start_timeout=r["start_timeout"],
        monitrc_path=r["monitrc_path"] or f"/etc/monit.d/resque_{app}.monitrc",
        pid_dir=r["pid_dir"] or f"/var/run/deployhooks/resque/{app}",
        wrapper=r["wrapper"],
        totalmem_mb=r["totalmem_mb"],
        user=worker_user,
        worker_command=tuple(r["worker_command"]),
        utility_names=tuple(r["utility_names"]),
    )
    ssh = SshSettings(**raw["ssh"]) if raw["ssh"] is not None else SshSettings()
    deploy = (
        DeploySettings(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in raw["deploy"].items()})
        if raw["deploy"] is not None
        else DeploySettings()
    )
    return Settings(
        app=app,
        framework_env=raw["framework_env"],
        ssh=ssh,
        deploy=deploy,
        deploy_to=raw["deploy_to"] or f"/data/{app}",
        user=raw["user"],
        keep_releases=raw["keep_releases"],
        hosts=dict(raw["hosts"]),
        resque=resque,
        source=source,
    )


def locate(explicit: str | None = None, root: str | os.PathLike = ".") -> Path:
    """The config path to use: `--config`, else $DEPLOYHOOKS_CONFIG, else config/deployhooks.yml."""
    path = Path(explicit or os.environ.get(ENV_VAR) or Path(root) / DEFAULT_PATH)
    return path


def load(explicit: str | None = None, root: str | os.PathLike = ".") -> Settings:
    """Read and validate the config file; a missing, unreadable, oversized or non-UTF-8 file is
    a `ConfigError` (exit 2) like any bad value in it."""
    path = locate(explicit, root)
    return parse(_decode(_read(path), path), str(path))


def _read(path: Path) -> bytes:
    """The file's bytes, reading at most MAX_CONFIG_BYTES + 1 (so /dev/zero cannot fill memory)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the config file ({exc.strerror}); pass --config PATH or set {ENV_VAR}"
        ) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: the config file is larger than {MAX_CONFIG_BYTES} bytes; is --config pointing at the right file?"
        )
    return data


def _decode(data: bytes, path: Path) -> str:
    """The text of a UTF-8 file (YAML itself skips a BOM); else the line and byte at fault."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}; save the file as UTF-8"
        ) from None
