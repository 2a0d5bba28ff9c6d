"""The app's Rakefile and lib/tasks/*.rake in `current`: one command that prints them (a section
per file), its parser, and the `resque:setup` tasks they define (pure, line-based: no Ruby is
run, so an odd layout can be missed, never executed)."""

from __future__ import annotations

import re
import shlex

from ..settings import Settings
from .shell import section, split_sections

_SETUP_TASK = re.compile(
    r"""^(?P<indent>\s*)task\s*\(?\s*(?::?["']resque:setup["']|:"resque:setup")\s*(?::|=>|,|\)|do\b|\{|$)"""
)
_NAMESPACE = re.compile(r"""^(?P<indent>\s*)namespace\s*\(?\s*(?::resque\b|["']resque["'])""")
_NS_SETUP = re.compile(r"""^(?P<indent>\s*)task\s*\(?\s*(?::setup\b|["']setup["']|setup:)""")
_PRELOAD = re.compile(r"\.columns\b|eager_load|preload|load_schema")


def _block_body(lines: list[str], i: int, indent: str) -> str:
    """The text of the block opened on line i: up to the `end`/`}` at the task's indentation."""
    head = lines[i]
    opener = re.search(r"\bdo\b|\{", head)
    if not opener:
        return ""
    rest = head[opener.end() :]
    if re.search(r"\bend\b\s*$|\}\s*$", rest):
        return rest
    body = [rest]
    for line in lines[i + 1 :]:
        stripped = line.strip()
        if stripped in ("end", "}") and len(line) - len(line.lstrip()) <= len(indent):
            break
        body.append(line)
    return "\n".join(body)


def setup_tasks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of each `resque:setup` task defined in a Rakefile or .rake text."""
    lines = text.splitlines()
    found = []
    ns_indent = None
    for i, line in enumerate(lines):
        if ns_indent is not None and line.strip() == "end" and len(line) - len(line.lstrip()) <= len(ns_indent):
            ns_indent = None
        ns = _NAMESPACE.match(line)
        if ns:
            ns_indent = ns["indent"]
            continue
        m = _SETUP_TASK.match(line) or (_NS_SETUP.match(line) if ns_indent is not None else None)
        if m:
            found.append((i + 1, _block_body(lines, i, m["indent"])))
    return found


def preloads(body: str) -> bool:
    """True when a `resque:setup` body touches the models (columns, eager_load, a preload ...)."""
    return bool(_PRELOAD.search(body))


def rake_files_command(settings: Settings) -> str:
    """One command printing current's Rakefile and lib/tasks/*.rake, a section per file."""
    cur = shlex.quote(settings.current_path)
    mark = section('"$f"')
    return (
        f"cd {cur} 2>/dev/null || exit 0; for f in Rakefile lib/tasks/*.rake; do "
        f'[ -f "$f" ] && {{ {mark}; cat "$f"; }}; done; true'
    )


def parse_rake_files(text: str) -> dict[str, str]:
    """`current/<path> -> text` from `rake_files_command`'s output."""
    return {"current/" + name: "\n".join(lines).strip("\n") + "\n" for name, lines in split_sections(text)}
