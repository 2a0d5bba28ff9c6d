"""The worker's environment files: ``resque_N.conf``, ``env.custom`` and ``env.cloud``.

They live under ``<deploy_to>/shared/config``, which the deploy user writes, so the wrapper reads
them only after it has dropped to the worker's user, and only as data: they set variables for
the worker (QUEUE, INTERVAL, REDIS_URL, ...), never what runs or where it is looked up. Engine
Yard's wrapper *sourced* them with bash as root (ey-cookbooks-stable-v6, ``/engineyard/bin/resque``),
so any line in them ran as root (docs/engineyard.md, "The wrapper").
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

__all__ = ["EnvFileError", "read_env_file", "FORBIDDEN", "IGNORED", "is_ignored"]

_ASSIGN_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", re.DOTALL)
_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")

# Refused outright: the command comes from the monitrc line that root owns (resque.worker_command).
FORBIDDEN = frozenset({"RESQUE_WORKER_COMMAND"})
# Ignored with a warning: where programs are looked up and what the dynamic loader injects. The
# worker's PATH is the wrapper's own (monit's, which root controls).
IGNORED = frozenset({"PATH"})


class EnvFileError(Exception):
    """An env file could not be used; the message names the file and line."""


def is_ignored(key: str) -> bool:
    """True for a variable an env file may not set: PATH and the dynamic loader's LD_*."""
    return key in IGNORED or key.startswith("LD_")


def read_env_file(path: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """Parse ``[export] KEY=VALUE ...`` lines of ``path`` into a dict (in file order).

    Shell quoting and ``#`` comments are honoured (shlex). ``$NAME``/``${NAME}`` in a value expand
    from ``base`` updated with the assignments read so far, unless the line holds a single quote
    (single quotes mean "literal" in the shell). Raises FileNotFoundError if the file is missing
    and EnvFileError, naming file and line, for anything that is not an assignment or that sets
    a variable in :data:`FORBIDDEN`. Variables for which :func:`is_ignored` holds are returned
    too; the caller drops them and says so.
    """
    scope = dict(base or {})
    result: dict[str, str] = {}
    text = path.read_text(encoding="utf-8", errors="replace")
    for lineno, raw in enumerate(text.splitlines(), start=1):
        try:
            tokens = shlex.split(raw, comments=True)
        except ValueError as exc:
            raise EnvFileError(f"{path}:{lineno}: cannot parse {raw.strip()!r}: {exc}") from None
        if tokens and tokens[0] == "export":
            tokens = tokens[1:]
        for token in tokens:
            match = _ASSIGN_RE.fullmatch(token)
            if not match:
                raise EnvFileError(
                    f"{path}:{lineno}: {raw.strip()!r} is not a KEY=VALUE assignment "
                    "(env files are parsed, not run by a shell)"
                )
            key, value = match.groups()
            if key in FORBIDDEN:
                raise EnvFileError(
                    f"{path}:{lineno}: {key} is not read from env files: the worker's command "
                    "comes from the monitrc line (set resque.worker_command in deployhooks.yml "
                    "and run resque.setup)"
                )
            if "'" not in raw:
                value = _VAR_RE.sub(lambda m: scope.get(m.group(1) or m.group(2), ""), value)
            result[key] = value
            scope[key] = value
    return result
