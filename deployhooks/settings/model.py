"""What a validated `config/deployhooks.yml` is: the frozen `Settings` and its parts, and the
rules every value of the file is held to, with the patterns, folders and maxima that state them.

`load(path)` returns frozen `Settings` or raises `ConfigError` naming the file, the line, the key
and what was expected, in one line (exit code 2). Validation happens before anything touches a
host, so a bad file changes nothing anywhere. The schema is data (`_SCHEMA`, in schema.py) walked
over PyYAML's node tree (yamlcheck.py), because only the node tree still knows which line each
value came from.

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
from dataclasses import dataclass, field

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
