"""Where the app's resque.yml points redis, and a PING to it from the host: a pure parser and
a command (the doctor's redis check reads both)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from urllib.parse import urlparse


@dataclass(frozen=True)
class RedisTarget:
    host: str
    port: int
    tls: bool = False

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


_HOST_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def redis_target(value: object) -> RedisTarget | None:
    """Where a resque.yml entry points: `host:port[:db]`, `redis://[:pw@]host:port/db`, or a
    mapping with host/port (or url). None when it cannot tell (ERB, a unix socket, junk)."""
    if isinstance(value, dict):
        if "url" in value:
            return redis_target(value["url"])
        host = str(value.get("host") or "localhost")
        port = value.get("port", 6379)
        tls = bool(value.get("ssl") or value.get("tls"))
    elif isinstance(value, str) and "://" in value:
        url = urlparse(value.strip())
        if url.scheme not in ("redis", "rediss"):
            return None
        try:
            port = url.port or 6379
        except ValueError:
            return None
        host, tls = url.hostname or "localhost", url.scheme == "rediss"
    elif isinstance(value, str):
        parts = value.strip().split(":")
        host = parts[0] or "localhost"
        port = parts[1] if len(parts) > 1 and parts[1] else 6379
        tls = False
    else:
        return None
    try:
        port = int(port)
    except (TypeError, ValueError):
        return None
    if not _HOST_RE.match(host) or not 0 < port < 65536:
        return None
    return RedisTarget(host, port, tls)


def ping_command(target: RedisTarget, *, redis_cli: bool | None = None) -> str:
    """A command that PINGs redis from the host: redis-cli when present, else bash's /dev/tcp.

    `redis_cli` True/False forces one branch (tests); None picks at run time.
    """
    h, p = shlex.quote(target.host), str(int(target.port))
    cli = f"timeout 5 redis-cli {'--tls ' if target.tls else ''}-h {h} -p {p} ping 2>&1"
    raw = (
        'timeout 5 bash -c \'exec 3<>"/dev/tcp/$0/$1" && printf "PING\\r\\n" >&3 && '
        f'IFS= read -r line <&3 && printf "%s\\n" "$line"\' {h} {p} 2>&1'
    )
    if redis_cli is True:
        return cli
    if redis_cli is False:
        return raw
    return f"if command -v redis-cli >/dev/null 2>&1; then {cli}; else {raw}; fi"
