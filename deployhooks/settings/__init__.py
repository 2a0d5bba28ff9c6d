"""The one config file, `config/deployhooks.yml`: schema, defaults and validation.

`load()` and `parse()` return frozen `Settings` or raise `ConfigError` (exit 2) naming the file,
the line, the key and what was expected. Import every name from here; the modules are:

- model.py      what a validated config is (`Settings`, `ResqueSettings`, `SshSettings`,
                `DeploySettings`, `Worker`) and, in its docstring, the rules every value is held
                to, with the patterns, system folders and maxima that state them
- yamlcheck.py  checking PyYAML nodes: a refusal (`_Bad`), the generic checks (text, numbers,
                booleans, lists, mappings) and the one-line `file:line: key: expected ...`
                messages; `yaml_problem` also serves the reading of resque.yml
- values.py     the checks of this file's own kinds of value: paths, folders, hosts, users, commands
- schema.py     every key of every section with its check, default and bounds
- loading.py    finding, reading and decoding the file, `parse`, the checks that span keys
                (batch_size needs guard_at, the workers' default user), building `Settings`
"""

from .loading import DEFAULT_PATH, ENV_VAR, load, locate, parse
from .model import (
    COMMAND_NAME_RE,
    CURRENT_PLACEHOLDER,
    DEFAULT_WORKER_COMMAND,
    HOST_RE,
    MAX_BATCH_SIZE,
    MAX_CONFIG_BYTES,
    MAX_CONNECT_TIMEOUT,
    MAX_KEEP_RELEASES,
    MAX_PORT,
    MAX_SECONDS,
    MAX_TOTALMEM_MB,
    MAX_WORKERS,
    NAME_RE,
    PATH_CHARS_RE,
    QUEUE_RE,
    SYSTEM_FOLDERS,
    USER_RE,
    VIRTUAL_FOLDERS,
    WORKER_TOKEN_RE,
    WORKER_USER_RE,
    DeploySettings,
    ResqueSettings,
    Settings,
    SshSettings,
    Worker,
)
from .yamlcheck import yaml_problem

__all__ = [
    "COMMAND_NAME_RE",
    "CURRENT_PLACEHOLDER",
    "DEFAULT_PATH",
    "DEFAULT_WORKER_COMMAND",
    "ENV_VAR",
    "HOST_RE",
    "MAX_BATCH_SIZE",
    "MAX_CONFIG_BYTES",
    "MAX_CONNECT_TIMEOUT",
    "MAX_KEEP_RELEASES",
    "MAX_PORT",
    "MAX_SECONDS",
    "MAX_TOTALMEM_MB",
    "MAX_WORKERS",
    "NAME_RE",
    "PATH_CHARS_RE",
    "QUEUE_RE",
    "SYSTEM_FOLDERS",
    "USER_RE",
    "VIRTUAL_FOLDERS",
    "WORKER_TOKEN_RE",
    "WORKER_USER_RE",
    "DeploySettings",
    "ResqueSettings",
    "Settings",
    "SshSettings",
    "Worker",
    "load",
    "locate",
    "parse",
    "yaml_problem",
]
