"""The checks of this config's own kinds of value: paths and folders, hosts, users, the worker
and monit commands, the workers' queues. Each takes a node and its key path and returns the
value or raises `_Bad`; the rules they enforce are listed in model.py's docstring.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import Callable, Sequence

import yaml

from .model import (
    COMMAND_NAME_RE,
    CURRENT_PLACEHOLDER,
    HOST_RE,
    MAX_PORT,
    NAME_RE,
    PATH_CHARS_RE,
    QUEUE_RE,
    SYSTEM_FOLDERS,
    VIRTUAL_FOLDERS,
    WORKER_TOKEN_RE,
    WORKER_USER_RE,
)
from .yamlcheck import _MAP, _SCALAR_TAGS, _SEQ, _Bad, _is_null, _list_of, _mapping, _Spec, _string, _text

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


_REL_RE = re.compile(r"\A(?!/)(?!.*\.\.)[A-Za-z0-9_.][A-Za-z0-9_./-]*\Z")


def _relative(what: str) -> Callable:
    """A normalized relative path under a folder of the app (no `..`, no leading `/`)."""

    def check(node: yaml.Node, key: str) -> str:
        value = _string(_REL_RE, what)(node, key)
        if os.path.normpath(value) != value or value == ".":
            raise _Bad(node, what)
        return value

    return check


def _host(node: yaml.Node, key: str) -> str:
    """[user@]name[:port], the port from 1 to MAX_PORT."""
    what = f"a host ([user@]name[:port], port 1 to {MAX_PORT})"
    value = _string(HOST_RE, what)(node, key)
    match = HOST_RE.fullmatch(value)
    if match is None:  # _string has full-matched HOST_RE already: never taken
        raise _Bad(node, what)
    port = match["port"]
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
    words: Sequence[str | None]
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
    checked: list[str] = []
    for word in words:
        if word is None or not WORKER_TOKEN_RE.fullmatch(word):
            raise _Bad(node, what)
        if "{" in word.replace(CURRENT_PLACEHOLDER, "") or "}" in word.replace(CURRENT_PLACEHOLDER, ""):
            raise _Bad(node, "no placeholder but {current} in the worker command")
        checked.append(word)
    return tuple(checked)
