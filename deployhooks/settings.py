"""The one config file, `config/deployhooks.yml`: schema, defaults and validation.

`load(path)` returns frozen `Settings` or raises `ConfigError` naming the file, the line, the key
and what was expected. Validation happens before anything touches a host, so a bad file changes
nothing anywhere. The schema is data (`_SCHEMA`) walked over PyYAML's node tree, because only the
node tree still knows which line each value came from.
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

NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
# user@host:port, host names and IPv4 only: nothing a shell or ssh option parser could misread.
HOST_RE = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]*@)?[A-Za-z0-9][A-Za-z0-9.-]*(?::[0-9]{1,5})?$")
QUEUE_RE = re.compile(r"^(?:\*|[A-Za-z0-9_.:-]+)$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")
COMMAND_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
# The user the workers run as: a portable POSIX login name (useradd's default NAME_REGEX, 32 max).
WORKER_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# One word of resque.worker_command. The words go unquoted on a monit `start program = "..."`
# line, so nothing a shell or monit's parser would read: no space, quote, #, $ or ;.
WORKER_TOKEN_RE = re.compile(r"[A-Za-z0-9_./:=@%+,{}-]+")
CURRENT_PLACEHOLDER = "{current}"
DEFAULT_WORKER_COMMAND = ("bundle", "exec", "rake", "-f", "{current}/Rakefile", "resque:work")


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

    def worker_argv(self, current_path: str) -> tuple[str, ...]:
        """`worker_command` with each `{current}` replaced by `current_path`."""
        return tuple(word.replace(CURRENT_PLACEHOLDER, current_path)
                     for word in self.worker_command)

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
    shared_files: tuple[str, ...] = ("database.yml",)
    shared_dirs: tuple[str, ...] = ("log", "tmp/pids")
    migrate_command: str | None = None
    migrate_role: str = "app_master"
    restart_command: str | None = None
    restart_roles: tuple[str, ...] = ("app_master", "app", "solo")


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
        return tuple(role for role, hs in self.hosts.items()
                     if any(h == host or bare(h) == bare(host) for h in hs))


# --- validation ---------------------------------------------------------------------------------

class _Spec:
    """One key's expectation: a check that returns the Python value or raises `_Bad`."""

    def __init__(self, check: Callable[[yaml.Node, str], Any], default: Any = None,
                 required: bool = False):
        self.check, self.default, self.required = check, default, required


class _Bad(Exception):
    def __init__(self, node: yaml.Node | None, expected: str, key: str | None = None):
        super().__init__(expected)
        self.node, self.expected, self.key = node, expected, key


def _scalar(node: yaml.Node, expected: str) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise _Bad(node, expected)
    return yaml.safe_load(yaml.serialize(node))


def _string(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Callable:
    def check(node: yaml.Node, key: str) -> str:
        value = _scalar(node, what)
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            raise _Bad(node, what)
        return value
    return check


def _choice(*choices: str) -> Callable:
    what = "one of " + ", ".join(choices)
    def check(node: yaml.Node, key: str) -> str:
        value = _scalar(node, what)
        if value not in choices:
            raise _Bad(node, what)
        return value
    return check


def _int(minimum: int) -> Callable:
    what = f"a whole number >= {minimum}"
    def check(node: yaml.Node, key: str) -> int:
        value = _scalar(node, what)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise _Bad(node, what)
        return value
    return check


def _bool(node: yaml.Node, key: str) -> bool:
    value = _scalar(node, "true or false")
    if not isinstance(value, bool):
        raise _Bad(node, "true or false")
    return value


def _abs_path(node: yaml.Node, key: str) -> str:
    what = "an absolute path without spaces or quotes"
    value = _string(what=what)(node, key)
    if not value.startswith("/") or re.search(r"[\s'\"\\$`;&|<>]", value) or ".." in value.split("/"):
        raise _Bad(node, what)
    return value.rstrip("/") or "/"


def _list_of(item: Callable, what: str) -> Callable:
    def check(node: yaml.Node, key: str) -> tuple:
        if isinstance(node, yaml.ScalarNode) and isinstance(_scalar(node, what), str):
            # "a,b" is accepted where a list is expected: resque_N.conf files say QUEUE=a,b.
            parts = [p.strip() for p in node.value.split(",")]
            return tuple(item(yaml.ScalarNode("tag:yaml.org,2002:str", p,
                                              node.start_mark, node.end_mark), key) for p in parts)
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise _Bad(node, what)
        return tuple(item(n, key) for n in node.value)
    return check


def _hosts(node: yaml.Node, key: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(node, yaml.MappingNode):
        raise _Bad(node, "a mapping of role name to a list of hosts")
    hosts: dict[str, tuple[str, ...]] = {}
    for knode, vnode in node.value:
        role = _string(NAME_RE, "a role name (letters, digits, _ and -)")(knode, key)
        try:
            hosts[role] = _list_of(_string(HOST_RE, "a host ([user@]name[:port])"),
                                   "a list of hosts ([user@]name[:port])")(vnode, key)
        except _Bad as bad:
            bad.key = f"{key}.{role}"
            raise
    return hosts


def _worker_entry(node: yaml.Node, key: str) -> tuple[str, ...]:
    spec = {"queues": _Spec(_list_of(_string(QUEUE_RE, "a queue name or *"),
                                     "a list of queue names"), required=True)}
    return _mapping(node, key, spec)["queues"]


def _wrapper(node: yaml.Node, key: str) -> str:
    what = "an absolute path or a command name on PATH, e.g. /usr/local/bin/deployhooks-resque"
    value = _string(what=what)(node, key)
    if value.startswith("/"):
        return _abs_path(node, key)
    if not COMMAND_NAME_RE.match(value):
        raise _Bad(node, what)
    return value


def _monit_command(node: yaml.Node, key: str) -> tuple[str, ...]:
    what = "a command (a string or a list of words), e.g. monit or [monit, -c, /etc/monitrc]"
    if isinstance(node, yaml.SequenceNode):
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
    if isinstance(node, yaml.ScalarNode) and node.value in ("root", "0"):
        raise _Bad(node, "a user other than root: workers never run as root")
    value = _string(what=what)(node, key)
    if not WORKER_USER_RE.fullmatch(value):
        raise _Bad(node, what)
    return value


def _worker_command(node: yaml.Node, key: str) -> tuple[str, ...]:
    """The worker's argv: a list of words, or a string split as a shell would (shlex).

    Each word full-matches WORKER_TOKEN_RE; braces only as the `{current}` placeholder.
    """
    what = ("a command (a list of words or a string) whose words use only letters, digits and "
            "_ . / : = @ % + , - (and {current})")
    if isinstance(node, yaml.SequenceNode):
        # The words as written: YAML must not turn `on` into True or `010` into 8.
        words = [n.value if isinstance(n, yaml.ScalarNode) else None for n in node.value]
    elif isinstance(node, yaml.ScalarNode):
        try:
            words = shlex.split(node.value)
        except ValueError:
            raise _Bad(node, what) from None
    else:
        raise _Bad(node, what)
    if not words:
        raise _Bad(node, what)
    for word in words:
        if word is None or not WORKER_TOKEN_RE.fullmatch(word):
            raise _Bad(node, what)
        if "{" in word.replace(CURRENT_PLACEHOLDER, "") or "}" in word.replace(CURRENT_PLACEHOLDER, ""):
            raise _Bad(node, "no placeholder but {current} in the worker command")
    return tuple(words)


_RESQUE_SCHEMA = {
    "roles": _Spec(_list_of(_string(NAME_RE, "a role name"), "a list of role names"),
                   default=("util", "solo")),
    "stop": _Spec(_choice("quit", "term"), default="quit"),
    "grace_time": _Spec(_int(1), default=60),
    "monit_group": _Spec(_string(NAME_RE, "a monit group name (letters, digits, _ and -)")),
    "workers": _Spec(_list_of(_worker_entry, "a list of workers, each {queues: [...]}"),
                     default=(("*",),)),
    "on_busy": _Spec(_choice("abort", "wait"), default="abort"),
    "wait_timeout": _Spec(_int(1), default=600),
    "guard_at": _Spec(_choice("before_migrate", "before_symlink"), default="before_migrate"),
    "sudo": _Spec(_bool, default=False),
    "monit_command": _Spec(_monit_command, default=("monit",)),
    "pause_timeout": _Spec(_int(1), default=15),
    "start_timeout": _Spec(_int(1), default=60),
    # resque.setup / resque.doctor: where the monitrc goes and what it runs. None = per app.
    "monitrc_path": _Spec(_abs_path),      # default /etc/monit.d/resque_<app>.monitrc
    "pid_dir": _Spec(_abs_path),           # default /var/run/deployhooks/resque/<app>
    "wrapper": _Spec(_wrapper, default="deployhooks-resque"),  # resolved on the host if not absolute
    "totalmem_mb": _Spec(_int(1)),         # default none: no memory rule in the monitrc
    # The user the monit wrapper (root) drops to before it execs the worker. Default: `user`.
    "user": _Spec(_worker_user),
    # What the wrapper execs as the worker; {current} is the app's current release path.
    "worker_command": _Spec(_worker_command, default=DEFAULT_WORKER_COMMAND),
}

_SSH_SCHEMA = {
    "known_hosts": _Spec(_abs_path),
    "strict_host_keys": _Spec(_bool, default=True),
    "identity_file": _Spec(_abs_path),
    "connect_timeout": _Spec(_int(1), default=10),
}

_REL_RE = re.compile(r"^(?!/)(?!.*\.\.)[A-Za-z0-9_.][A-Za-z0-9_./-]*$")

_DEPLOY_SCHEMA = {
    "repo": _Spec(_abs_path),
    "shared_files": _Spec(_list_of(_string(_REL_RE, "a file name under shared/config"),
                                   "a list of file names"), default=DeploySettings.shared_files),
    "shared_dirs": _Spec(_list_of(_string(_REL_RE, "a relative folder, e.g. log or tmp/pids"),
                                  "a list of relative folders"), default=DeploySettings.shared_dirs),
    # A shell command run in the release (e.g. "bundle exec rake db:migrate"); written by the
    # operator of this file, so it is passed to the shell as written.
    "migrate_command": _Spec(_string(what="a shell command")),
    "migrate_role": _Spec(_string(NAME_RE, "a role name"), default="app_master"),
    "restart_command": _Spec(_string(what="a shell command")),
    "restart_roles": _Spec(_list_of(_string(NAME_RE, "a role name"), "a list of role names"),
                           default=DeploySettings.restart_roles),
}

_SCHEMA = {
    "app": _Spec(_string(NAME_RE, "an app name (letters, digits, _ and -)"), required=True),
    "framework_env": _Spec(_string(NAME_RE, "an environment name (letters, digits, _ and -)"),
                           default="production"),
    "deploy_to": _Spec(_abs_path),
    "user": _Spec(_string(USER_RE, "a user name")),
    "keep_releases": _Spec(_int(1), default=3),
    "hosts": _Spec(_hosts, default={}),
    "resque": _Spec(lambda n, k: _mapping(n, k, _RESQUE_SCHEMA), default=None),
    "ssh": _Spec(lambda n, k: _mapping(n, k, _SSH_SCHEMA), default=None),
    "deploy": _Spec(lambda n, k: _mapping(n, k, _DEPLOY_SCHEMA), default=None),
}


def _mapping(node: yaml.Node, prefix: str, schema: dict[str, _Spec]) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode):
        raise _Bad(node, "a mapping of " + ", ".join(schema))
    values: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = knode.value if isinstance(knode, yaml.ScalarNode) else "?"
        path = f"{prefix}.{key}" if prefix else key
        if key not in schema:
            raise _Bad(knode, f"one of the known keys ({', '.join(schema)})", key=f"{path} (unknown key)")
        if key in values:
            raise _Bad(knode, f"'{path}' only once")
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


def parse(text: str, source: str = "<string>") -> Settings:
    """Validate config text and return `Settings`; `ConfigError` says where and what is wrong."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{line}: not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if root is None:
        raise ConfigError(f"{source}: the file is empty; it needs at least 'app: <name>'")
    try:
        raw = _mapping(root, "", _SCHEMA)
        worker_user = _default_worker_user(root, raw)
    except _Bad as bad:
        line = f":{bad.node.start_mark.line + 1}" if bad.node is not None else ""
        key = bad.key
        got = ""
        if isinstance(bad.node, yaml.ScalarNode) and not (key or "").endswith("(unknown key)"):
            got = f"; got {bad.node.value!r}"
        where = f" {key}:" if key else ""
        raise ConfigError(f"{source}{line}:{where} expected {bad.expected}{got}") from None
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


def _build(raw: dict[str, Any], source: str, worker_user: str | None = None) -> Settings:
    app = raw["app"]
    r = raw["resque"] if raw["resque"] is not None else _mapping(
        yaml.MappingNode("tag:yaml.org,2002:map", []), "resque", _RESQUE_SCHEMA)
    workers = tuple(Worker(i, tuple(q)) for i, q in enumerate(r["workers"]))
    resque = ResqueSettings(
        roles=tuple(r["roles"]), stop=r["stop"], grace_time=r["grace_time"],
        monit_group=r["monit_group"] or f"{app}_resque", workers=workers,
        on_busy=r["on_busy"], wait_timeout=r["wait_timeout"], guard_at=r["guard_at"],
        sudo=r["sudo"], monit_command=tuple(r["monit_command"]),
        pause_timeout=r["pause_timeout"], start_timeout=r["start_timeout"],
        monitrc_path=r["monitrc_path"] or f"/etc/monit.d/resque_{app}.monitrc",
        pid_dir=r["pid_dir"] or f"/var/run/deployhooks/resque/{app}",
        wrapper=r["wrapper"], totalmem_mb=r["totalmem_mb"], user=worker_user,
        worker_command=tuple(r["worker_command"]))
    ssh = SshSettings(**raw["ssh"]) if raw["ssh"] is not None else SshSettings()
    deploy = DeploySettings(**{k: tuple(v) if isinstance(v, (list, tuple)) else v
                               for k, v in raw["deploy"].items()}) \
        if raw["deploy"] is not None else DeploySettings()
    return Settings(app=app, framework_env=raw["framework_env"], ssh=ssh, deploy=deploy,
                    deploy_to=raw["deploy_to"] or f"/data/{app}", user=raw["user"],
                    keep_releases=raw["keep_releases"], hosts=dict(raw["hosts"]),
                    resque=resque, source=source)


def locate(explicit: str | None = None, root: str | os.PathLike = ".") -> Path:
    """The config path to use: `--config`, else $DEPLOYHOOKS_CONFIG, else config/deployhooks.yml."""
    path = Path(explicit or os.environ.get(ENV_VAR) or Path(root) / DEFAULT_PATH)
    return path


def load(explicit: str | None = None, root: str | os.PathLike = ".") -> Settings:
    """Read and validate the config file; a missing or unreadable file is a `ConfigError`."""
    path = locate(explicit, root)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the config file ({exc.strerror}); pass --config PATH or set "
            f"{ENV_VAR}") from None
    return parse(text, str(path))
