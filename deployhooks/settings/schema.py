"""The schema: every key of the config file, section by section, with its check, its default
and its bounds. `_SCHEMA` is the top level; `loading.parse` walks it over the file's node tree.
"""

from __future__ import annotations

from typing import Callable

from .model import (
    DEFAULT_WORKER_COMMAND,
    MAX_BATCH_SIZE,
    MAX_CONNECT_TIMEOUT,
    MAX_KEEP_RELEASES,
    MAX_SECONDS,
    MAX_TOTALMEM_MB,
    MAX_WORKERS,
    NAME_RE,
    USER_RE,
    DeploySettings,
)
from .values import (
    _abs_path,
    _hosts,
    _monit_command,
    _monitrc_file,
    _own_folder,
    _relative,
    _worker_command,
    _worker_entry,
    _worker_user,
    _wrapper,
)
from .yamlcheck import _bool, _choice, _int, _list_of, _section, _Spec, _string


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
