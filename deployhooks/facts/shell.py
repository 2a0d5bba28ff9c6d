"""How a command is spelled for a host's shell, the same way everywhere: sudo, and sections.

- `with_sudo` is the one place that puts sudo in front of a command (monit, a kill as the
  workers' user, a script that writes system files); `as_root` is the script case.
- `section` and `split_sections` are the one framing for a command that prints several facts
  in one round trip (the status command, the app's rake files): each part starts with a mark
  line, so one SSH call carries what would otherwise take several.

Pure functions of strings: no host is needed to build a command or to split its output.
"""

from __future__ import annotations

import shlex
from typing import Sequence

SECTION_MARK = "__deployhooks_section__"


def with_sudo(argv: Sequence[str], user: str | None = None) -> list[str]:
    """`argv` run through `sudo -n`, as `user` when given (else as root)."""
    # -n: a hook has no terminal to type a password into; fail at once instead of hanging.
    return ["sudo", "-n"] + (["-u", user] if user else []) + list(argv)


def as_root(script: str, sudo: bool) -> str:
    """`script` as one shell command: through `sudo -n sh -c` when `sudo`, else unchanged."""
    return shlex.join(with_sudo(["sh", "-c", script])) if sudo else script


def section(name: str) -> str:
    """A shell command printing the mark line that starts section `name`.

    `name` is a shell word, expanded by the shell (`'"$f"'`, `'"rc $?"'`). The line is printed
    after a newline of its own, so the section before it need not end with one.
    """
    return f"printf '\\n%s %s\\n' {SECTION_MARK} {name}"


def split_sections(text: str) -> list[tuple[str, list[str]]]:
    """(name, lines) of each section `section` started in `text`, in the order printed.

    A name is the whole rest of its mark line (it may hold spaces); text before the first mark
    is not part of any section, and the newline a mark prints first is not part of the section
    before it. A name printed twice gives two entries (`dict()` of the result keeps the last).
    """
    found: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(SECTION_MARK + " "):
            if found and found[-1][1] and found[-1][1][-1] == "":
                found[-1][1].pop()
            found.append((line[len(SECTION_MARK) + 1 :], []))
        elif found:
            found[-1][1].append(line)
    return found
