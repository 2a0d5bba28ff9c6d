"""Checking PyYAML nodes against expectations, and the one-line messages of a refusal.

A check takes a node and the key path it sits at, and returns the Python value or raises `_Bad`
(the node gives the line). The generic checks are here (text, patterns, choices, numbers,
booleans, lists, mappings, sections); those of this file's own kinds of value are in values.py.
`_bad_message` and `yaml_problem` turn a refusal or a YAML error into `file:line: ...`;
`yaml_problem` also serves the reading of resque.yml.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import yaml

_TAG = "tag:yaml.org,2002:"
_NULL, _MAP, _SEQ, _STR = _TAG + "null", _TAG + "map", _TAG + "seq", _TAG + "str"
# The tags PyYAML's resolver gives plain scalars. Any other tag was written by hand (`!!binary`,
# `!!python/object`, `!foo`) and is refused.
_SCALAR_TAGS = frozenset(_TAG + t for t in ("str", "int", "float", "bool", "timestamp", "value"))
_NO_VALUE = "a value (the key is empty: write one after the colon, or remove the key for its default)"
_DECIMAL_RE = re.compile(r"\A(?:0|[1-9][0-9]*)\Z")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class _Spec:
    """One key's expectation: a check that returns the Python value or raises `_Bad`."""

    def __init__(self, check: Callable[[yaml.Node, str], Any], default: Any = None, required: bool = False):
        self.check, self.default, self.required = check, default, required


class _Bad(Exception):
    """A refused value: `node` gives the line, `expected` what would have been accepted."""

    def __init__(self, node: yaml.Node | None, expected: str, key: str | None = None, show_got: bool = True):
        super().__init__(expected)
        self.node, self.expected, self.key, self.show_got = node, expected, key, show_got


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL


def _text(node: yaml.Node, expected: str) -> str:
    """The scalar's text as written (after YAML's quotes and escapes), never YAML 1.1's reading
    of it: `no` stays "no", `1:30` stays "1:30". An empty value and a tagged or non-scalar node
    are refused."""
    if _is_null(node):
        raise _Bad(node, _NO_VALUE, show_got=False)
    if isinstance(node, yaml.ScalarNode) and node.tag not in _SCALAR_TAGS:
        raise _Bad(node, f"{expected}, without the YAML tag {_show_tag(node.tag)}")
    if not isinstance(node, yaml.ScalarNode):
        raise _Bad(node, expected)
    return node.value


def _show_tag(tag: str) -> str:
    """A tag as it was written: `!!binary` rather than `tag:yaml.org,2002:binary`."""
    return _shorten("!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag)


def _string(pattern: re.Pattern[str] | None = None, what: str = "a string") -> Callable:
    """A non-empty string; with `pattern`, one it matches in full; without, one free of control
    characters other than tab and newline (shell commands may span lines)."""

    def check(node: yaml.Node, key: str) -> str:
        value = _text(node, what)
        if not value or (pattern.fullmatch(value) is None if pattern else _CONTROL_RE.search(value)):
            raise _Bad(node, what)
        return value

    return check


def _choice(*choices: str) -> Callable:
    what = "one of " + ", ".join(choices)

    def check(node: yaml.Node, key: str) -> str:
        value = _text(node, what)
        if value not in choices:
            raise _Bad(node, what)
        return value

    return check


def _yaml11_reading(node: yaml.Node) -> str:
    """' (YAML 1.1 reads it as 90)' for a plain `1:30`, and so on; '' when YAML reads no number."""
    if (
        not isinstance(node, yaml.ScalarNode)
        or node.style is not None
        or node.tag not in (_TAG + "int", _TAG + "float")
    ):
        return ""
    try:
        value = yaml.safe_load(node.value)
    except (yaml.YAMLError, ValueError, OverflowError):
        return ""
    return f" (YAML 1.1 reads it as {value!r})" if isinstance(value, (int, float)) else ""


def _int(minimum: int, maximum: int) -> Callable:
    """A whole number in [minimum, maximum] written in plain decimal digits: YAML 1.1 would read
    `1:30` as 90, `0x10` as 16 and `010` as 8, none of which is what the writer most likely meant."""
    what = f"a whole number from {minimum} to {maximum}"

    def check(node: yaml.Node, key: str) -> int:
        text = _text(node, what)
        if not _DECIMAL_RE.fullmatch(text):
            raise _Bad(node, f"{what}, in plain decimal digits{_yaml11_reading(node)}")
        # The length test first: int() of thousands of digits is slow, and refused beyond 4300.
        if len(text) > len(str(maximum)) or not minimum <= int(text) <= maximum:
            raise _Bad(node, what)
        return int(text)

    return check


_TRUE, _FALSE = ("true", "True", "TRUE"), ("false", "False", "FALSE")


def _bool(node: yaml.Node, key: str) -> bool:
    """`true` or `false` only: yes/no/on/off are booleans in YAML 1.1 and strings in YAML 1.2."""
    what = "true or false (yes, no, on and off are not accepted)"
    text = _text(node, what)
    if text not in _TRUE + _FALSE:
        raise _Bad(node, what)
    return text in _TRUE


def _list_of(item: Callable, what: str, maximum: int | None = None, items: str = "items") -> Callable:
    """A YAML list of `item`s (or "a,b" for one), not empty, at most `maximum` `items` long."""

    def check(node: yaml.Node, key: str) -> tuple:
        if isinstance(node, yaml.ScalarNode):
            # "a,b" is accepted where a list is expected: resque_N.conf files say QUEUE=a,b.
            parts = [p.strip() for p in _text(node, what).split(",")]
            values = tuple(item(yaml.ScalarNode(_STR, p, node.start_mark, node.end_mark), key) for p in parts)
        elif isinstance(node, yaml.SequenceNode) and node.tag == _SEQ and node.value:
            values = tuple(item(n, key) for n in node.value)
        else:
            raise _Bad(node, what)
        if maximum is not None and len(values) > maximum:
            raise _Bad(node, f"at most {maximum} {items}", show_got=False)
        return values

    return check


def _show_key(key: str) -> str:
    """A key as it can be printed on one line: as is when it is a plain word, else quoted."""
    return key if re.fullmatch(r"[A-Za-z0-9_.<-]{1,60}", key) else repr(key[:60])


def _mapping(node: yaml.Node, prefix: str, schema: dict[str, _Spec]) -> dict[str, Any]:
    if not isinstance(node, yaml.MappingNode) or node.tag != _MAP:
        raise _Bad(node, "a mapping of " + ", ".join(schema))
    values: dict[str, Any] = {}
    for knode, vnode in node.value:
        if isinstance(knode, yaml.ScalarNode) and knode.tag == _TAG + "merge":
            raise _Bad(knode, "no YAML merge key (<<): write the keys out", key=prefix or None, show_got=False)
        if not isinstance(knode, yaml.ScalarNode) or knode.tag not in _SCALAR_TAGS:
            raise _Bad(knode, f"a plain key, one of {', '.join(schema)}", key=prefix or None, show_got=False)
        key = knode.value
        path = f"{prefix}.{_show_key(key)}" if prefix else _show_key(key)
        if key not in schema:
            raise _Bad(
                knode, f"one of the known keys ({', '.join(schema)})", key=f"{path} (unknown key)", show_got=False
            )
        if key in values:
            raise _Bad(knode, f"'{path}' only once", key=path, show_got=False)
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


def _section(schema: dict[str, "_Spec"]) -> Callable:
    """A section of keys; written empty (`resque:` with nothing under it) it means its defaults."""

    def check(node: yaml.Node, key: str) -> dict[str, Any] | None:
        return None if _is_null(node) else _mapping(node, key, schema)

    return check


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _bad_message(bad: _Bad, source: str) -> str:
    """`file:line: key: expected ...; got '...'`, on one line."""
    line = f":{bad.node.start_mark.line + 1}" if bad.node is not None else ""
    got = ""
    if bad.show_got and isinstance(bad.node, yaml.ScalarNode):
        got = f"; got {_shorten(bad.node.value)!r}"
    where = f" {bad.key}:" if bad.key else ""
    return f"{source}{line}:{where} expected {bad.expected}{got}"


def yaml_problem(exc: Exception, text: str) -> tuple[str, str]:
    """(':line' or '', what is wrong) for a YAML error, on one line whatever PyYAML said."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    position = getattr(exc, "position", None)
    if mark is not None:
        line = f":{mark.line + 1}"
    elif isinstance(position, int):  # a ReaderError: a forbidden character
        line = f":{text.count(chr(10), 0, position) + 1}"
    else:
        line = ""
    if isinstance(exc, RecursionError):
        what = "nested too deeply"
    elif isinstance(exc, yaml.MarkedYAMLError):
        what = ", ".join(p for p in (exc.context, exc.problem) if p) or "syntax error"
    else:
        what = (str(exc).splitlines() or [type(exc).__name__])[0]
    return line, " ".join(what.split())


def _yaml_message(exc: yaml.YAMLError, text: str, source: str) -> str:
    """`file:line: not valid YAML: <what PyYAML said>`, on one line."""
    line, what = yaml_problem(exc, text)
    return f"{source}{line}: not valid YAML: {what}"
