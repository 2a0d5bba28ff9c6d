"""From a path to `Settings`: finding the file (`locate`), reading and decoding it (`load`),
checking it against the schema (`parse`), the checks that span keys, and building `Settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .model import MAX_CONFIG_BYTES, DeploySettings, ResqueSettings, Settings, SshSettings, Worker
from .schema import _RESQUE_SCHEMA, _SCHEMA
from .values import _worker_user
from .yamlcheck import _Bad, _bad_message, _mapping, _yaml_message

DEFAULT_PATH = "config/deployhooks.yml"
ENV_VAR = "DEPLOYHOOKS_CONFIG"


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


def _value_node(mapping: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of `key` in a mapping node, for a message that points at its line (None
    when `mapping` is not a mapping or lacks the key)."""
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
    node = _value_node(root, "user")
    try:
        if node is None:  # raw["user"] was read from this very key: never taken
            raise _Bad(root, "a user name")
        return _worker_user(node, "user")
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
    # Fields and their types were checked against the schema when `raw` was read.
    deploy_fields: dict[str, Any] = (
        {k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in raw["deploy"].items()}
        if raw["deploy"] is not None
        else {}
    )
    deploy = DeploySettings(**deploy_fields)
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
