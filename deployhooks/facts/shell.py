"""How a command is spelled for a host's shell, the same way everywhere: sudo.

`with_sudo` is the one place that puts sudo in front of a command (monit, a kill as the
workers' user, a script that writes system files); `as_root` is the script case.

Pure functions of strings: no host is needed to build a command.
"""

from __future__ import annotations

import shlex
from typing import Sequence


def with_sudo(argv: Sequence[str], user: str | None = None) -> list[str]:
    """`argv` run through `sudo -n`, as `user` when given (else as root)."""
    # -n: a hook has no terminal to type a password into; fail at once instead of hanging.
    return ["sudo", "-n"] + (["-u", user] if user else []) + list(argv)


def as_root(script: str, sudo: bool) -> str:
    """`script` as one shell command: through `sudo -n sh -c` when `sudo`, else unchanged."""
    return shlex.join(with_sudo(["sh", "-c", script])) if sudo else script
