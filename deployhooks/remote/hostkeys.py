"""Host keys: every connection, gateways included, checks its server's key the way OpenSSH would.

Fabric accepts unknown host keys silently: its Connection.__init__ gives every SSHClient
paramiko's AutoAddPolicy and loads no known_hosts (fabric/connection.py), and builds the
Connections of a `ProxyJump` gateway from ssh_config the same way (Connection.get_gateway). Here
the server's key is checked against the known_hosts files OpenSSH reads (ssh_config(5):
UserKnownHostsFile, GlobalKnownHostsFile); a changed key is always refused, an unknown one unless
`ssh.strict_host_keys: false`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import shlex
import sys
import threading
from dataclasses import dataclass
from typing import Iterable

import paramiko
from fabric import Connection

from ..settings import Settings

# OpenSSH's defaults for UserKnownHostsFile and GlobalKnownHostsFile (ssh_config(5)).
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")


GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


def _decode_hashed(name: str) -> tuple[bytes, bytes] | None:
    """Salt and HMAC-SHA1 digest of a hashed known_hosts name (`|1|salt|digest`, base64 each,
    as OpenSSH's HashKnownHosts writes it); None when the name is malformed."""
    parts = name.split("|")
    if len(parts) != 4 or parts[1] != "1":
        return None
    try:
        return base64.b64decode(parts[2]), base64.b64decode(parts[3])
    except (binascii.Error, ValueError):
        return None


def _decode_key(key_type: str, blob: str) -> paramiko.PKey | None:
    """The key of one known_hosts line, or None when paramiko cannot read it (an unknown key
    type, bad base64): paramiko.HostKeys.load skips such lines too."""
    try:
        return paramiko.PKey.from_type_string(key_type, base64.b64decode(blob))
    except (paramiko.SSHException, paramiko.pkey.UnknownKeyType, binascii.Error, ValueError):
        return None


class _KnownFile:
    """One known_hosts file, indexed for lookups by the name a server is known under.

    Lines are split once; keys are decoded only for the names looked up, and each name is
    looked up once (a gateway is asked for by every host behind it). Plain names go into a
    dict. A hashed name (Debian's /etc/ssh/ssh_config turns HashKnownHosts on) can only be
    matched by an HMAC with its own salt, so hashed names stay a list with salt and digest
    decoded up front. Against 1000 hashed lines, 100 lookups took 0.28 s of CPU here where
    paramiko.HostKeys.lookup (hash_host re-encodes every entry) took 2.3-3.1 s, and the parse
    5 ms where paramiko.HostKeys.load (each line checked against all before it) took 270 ms.
    Marker lines (@cert-authority, @revoked) are skipped, as paramiko.HostKeys.load skips them:
    paramiko checks neither host certificates nor revocations. A missing or unreadable file
    lists no host.
    """

    def __init__(self, path: str):
        self.path = path
        self._plain: dict[str, list[tuple[int, str, str]]] = {}
        self._hashed: list[tuple[bytes, bytes, int, str, str]] = []
        self._found: dict[str, list[paramiko.PKey]] = {}
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f):
                    self._add(number, line)
        except OSError:
            pass

    def _add(self, number: int, line: str) -> None:
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith(("#", "@")):
            return
        names, key_type, blob = fields[:3]
        for name in names.split(","):
            if name.startswith("|"):
                hashed = _decode_hashed(name)
                if hashed:
                    self._hashed.append((*hashed, number, key_type, blob))
            else:
                self._plain.setdefault(name, []).append((number, key_type, blob))

    def keys(self, name: str) -> list[paramiko.PKey]:
        """The keys this file lists for `name` (plain or hashed), in the file's order."""
        if name not in self._found:
            lines = list(self._plain.get(name, ()))
            if self._hashed:
                data, mac = name.encode(), hmac.digest
                lines += [
                    (number, key_type, blob)
                    for salt, digest, number, key_type, blob in self._hashed
                    if mac(salt, data, hashlib.sha1) == digest
                ]
            keys = (_decode_key(key_type, blob) for _, key_type, blob in sorted(lines))
            self._found[name] = [key for key in keys if key is not None]
        return list(self._found[name])


class KnownHosts:
    """The known_hosts files of one invocation, each parsed at most once and shared by all its
    connections (every host of a Session and their gateways), and the servers already warned
    about, so an unknown key accepted under `ssh.strict_host_keys: false` is said once."""

    def __init__(self) -> None:
        self._files: dict[str, _KnownFile] = {}
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def file(self, path: str) -> _KnownFile:
        """`path` parsed, the first time it is asked for only."""
        with self._lock:
            if path not in self._files:
                self._files[path] = _KnownFile(path)
            return self._files[path]

    def lookup(self, name: str, paths: Iterable[str]) -> list[tuple[str, paramiko.PKey]]:
        """Every key that `paths` list for the server known as `name`, with the file it is in,
        in the order of `paths`."""
        return [(path, key) for path in paths for key in self.file(path).keys(name)]

    def warn_once(self, name: str, line: str) -> None:
        """Write `line` to stderr unless a line about the server known as `name` was written."""
        with self._lock:
            if name in self._warned:
                return
            self._warned.add(name)
            # One write of a whole line: connections warn from parallel threads.
            sys.stderr.write(line + "\n")
            sys.stderr.flush()


def _config_paths(value: str | None, default: Iterable[str]) -> list[str]:
    """The files of an ssh_config UserKnownHostsFile/GlobalKnownHostsFile value, `default` when
    the entry has none. The value may name several files, or `none`; `~` and `%d` (the home
    folder) are expanded (ssh_config(5)), other % tokens are not: such a file is not found, and
    its servers stay unknown. paramiko's SSHConfig has already dropped quotes around the whole
    value, so one quoted file name with a space in it reads as two files."""
    if value is None:
        return [os.path.expanduser(p) for p in default]
    try:
        words = shlex.split(value)
    except ValueError:
        words = value.split()
    if [w.lower() for w in words] == ["none"]:
        return []
    home = os.path.expanduser("~")
    return [os.path.expanduser(w.replace("%d", home).replace("%%", "%")) for w in words]


def _known_hosts_files(settings: Settings, ssh_config) -> list[str]:
    """The files a server's key is looked up in, in order: ssh.known_hosts when set; then the
    user's (UserKnownHostsFile of the server's ssh_config entry, else ~/.ssh/known_hosts and
    ~/.ssh/known_hosts2); then the system's (GlobalKnownHostsFile, else /etc/ssh/ssh_known_hosts
    and /etc/ssh/ssh_known_hosts2): the files OpenSSH's ssh reads (ssh_config(5))."""
    paths = [settings.ssh.known_hosts] if settings.ssh.known_hosts else []
    paths += _config_paths(ssh_config.get("userknownhostsfile"), USER_KNOWN_HOSTS)
    paths += _config_paths(ssh_config.get("globalknownhostsfile"), GLOBAL_KNOWN_HOSTS)
    return list(dict.fromkeys(paths))


def _file_to_add_to(settings: Settings, ssh_config) -> str:
    """Where the fix for an unknown key should append it: ssh.known_hosts when set, else the
    user's first known_hosts file (not /dev/null, which some configs name to keep nothing)."""
    if settings.ssh.known_hosts:
        return settings.ssh.known_hosts
    user = _config_paths(ssh_config.get("userknownhostsfile"), USER_KNOWN_HOSTS)
    return next((p for p in user if p != os.devnull), os.path.expanduser(USER_KNOWN_HOSTS[0]))


def known_host_keys(settings: Settings) -> KnownHosts:
    """The known_hosts of one invocation, with the files every server is looked up in by default
    (see `_known_hosts_files`) already parsed: a Session parses them once for all its hosts. A
    file that only some host's ssh_config entry names is parsed when a connection first needs it."""
    known = KnownHosts()
    for path in _known_hosts_files(settings, {}):
        known.file(path)
    return known


@dataclass(frozen=True)
class HostKeyCheck:
    """What one connection checks its server's key against, and the words to say it with.

    `who` is the host as given, or `gateway NAME` for a ProxyJump gateway on the way to it;
    `name` is what known_hosts lists the server under (`host`, or `[host]:port` off port 22, as
    paramiko's SSHClient.connect looks it up); `sources` maps each known key type to the file
    its key came from; `add_to` is where the fix for an unknown key appends it.
    """

    who: str
    gateway: bool
    name: str
    host: str
    port: int
    sources: tuple[tuple[str, str], ...]
    add_to: str

    def prefix(self, host: str) -> str:
        """How a message about this server starts, for a failure reported under `host`."""
        return f"{host}: {self.who}: " if self.gateway else f"{host}: "

    def keyscan(self) -> str:
        """The ssh-keyscan command that fetches this server's key as known_hosts lists it."""
        port = f" -p {self.port}" if self.port != 22 else ""
        return f"ssh-keyscan{port} {shlex.quote(self.host)}"


class UnknownHostKey(paramiko.SSHException):
    """A server key that no known_hosts file lists, refused under ssh.strict_host_keys: true."""

    def __init__(self, check: HostKeyCheck, key: paramiko.PKey):
        # Worded as paramiko's RejectPolicy words it, for anything that matches on the text.
        super().__init__(f"Server {check.name!r} not found in known_hosts")
        self.check = check
        self.key = key


class ChangedHostKey(paramiko.BadHostKeyException):
    """A server key other than the one known_hosts lists for the server: always refused."""

    def __init__(self, check: HostKeyCheck, exc: paramiko.BadHostKeyException):
        super().__init__(exc.hostname, exc.key, exc.expected_key)
        self.check = check


class _RefuseUnknown(paramiko.MissingHostKeyPolicy):
    """ssh.strict_host_keys: true: an unknown key is refused, saying which server and the fix."""

    def __init__(self, check: HostKeyCheck):
        self.check = check

    def missing_host_key(self, client, hostname, key):
        raise UnknownHostKey(self.check, key)


class _WarnUnknown(paramiko.MissingHostKeyPolicy):
    """ssh.strict_host_keys: false: an unknown key is accepted, with one line on stderr per server
    and invocation. paramiko asks the policy only when no file lists the server at all
    (SSHClient.connect); a listed server showing another key still raises BadHostKeyException."""

    def __init__(self, check: HostKeyCheck, known: KnownHosts):
        self.check = check
        self.known = known

    def missing_host_key(self, client, hostname, key):
        self.known.warn_once(
            self.check.name,
            (
                f"deployhooks: warning: {self.check.who}: unknown host key ({_described(key)}) accepted "
                f"because ssh.strict_host_keys is false; add it to {_shown(self.check.add_to)}"
            ),
        )


class _CheckedClient(paramiko.SSHClient):
    """An SSHClient that says which server a refused key belongs to.

    Through a gateway, the gateway's own connect fails inside the host's `open()`; the
    exception must name the gateway, and only the client that made it knows it. On a refusal
    the half-open transport is closed at once rather than left to the garbage collector.
    """

    def __init__(self, check: HostKeyCheck):
        super().__init__()
        self.check = check

    def connect(self, *args, **kwargs):
        try:
            return super().connect(*args, **kwargs)
        except UnknownHostKey:
            self.close()
            raise
        except paramiko.BadHostKeyException as exc:
            self.close()
            raise ChangedHostKey(self.check, exc) from exc


def _gateways(conn: Connection) -> list[Connection]:
    """The Connections fabric made to reach `conn` (ProxyJump in ssh_config, or the config's
    `gateway`), nearest first. A ProxyCommand gateway is a string, an ssh process of its own
    that checks its server's key by its own rules; the walk stops there."""
    hops, hop = [], conn.gateway
    while isinstance(hop, Connection):
        hops.append(hop)
        hop = hop.gateway
    return hops


def _check_host_keys(conn: Connection, who: str, settings: Settings, known: KnownHosts, *, gateway: bool) -> None:
    """Give `conn` a client that knows only its own server's keys from `known` and refuses a
    changed key, and an unknown one unless ssh.strict_host_keys is false."""
    name = conn.host if conn.port == 22 else f"[{conn.host}]:{conn.port}"
    paths = _known_hosts_files(settings, conn.ssh_config)
    sources: dict[str, str] = {}
    keys = []
    for path, key in known.lookup(name, paths):
        # paramiko compares the server's key with one known key of its type (SSHClient.connect),
        # so the first file listing that type decides; OpenSSH would accept a match in any.
        if key.get_name() not in sources:
            sources[key.get_name()] = path
            keys.append(key)
    check = HostKeyCheck(
        who=who,
        gateway=gateway,
        name=name,
        host=conn.host,
        port=conn.port,
        sources=tuple(sources.items()),
        add_to=_file_to_add_to(settings, conn.ssh_config),
    )
    client = _CheckedClient(check)
    for key in keys:
        client.get_host_keys().add(name, key.get_name(), key)
    client.set_missing_host_key_policy(
        _RefuseUnknown(check) if settings.ssh.strict_host_keys else _WarnUnknown(check, known)
    )
    # Fabric's Connection made an SSHClient with AutoAddPolicy and no keys; it is not opened yet.
    conn.client = client


def _described(key: paramiko.PKey) -> str:
    """A key as OpenSSH shows it to be checked: its type and SHA256 fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"


def _shown(path: str) -> str:
    """`path` for a message and a shell command line: the home folder as `~`, quoted if needed."""
    home = os.path.expanduser("~").rstrip("/")
    if home and path.startswith(home + "/"):
        return "~/" + shlex.quote(path[len(home) + 1 :])
    return shlex.quote(path)


def _unknown_key_message(host: str, exc: UnknownHostKey) -> str:
    check, add_to = exc.check, _shown(exc.check.add_to)
    return (
        f"{check.prefix(host)}unknown host key ({_described(exc.key)}): once that fingerprint "
        f"is checked on the server, add the key to {add_to} ({check.keyscan()} >> {add_to}), "
        f"or set ssh.strict_host_keys: false for throwaway hosts"
    )


def _changed_key_message(host: str, exc: ChangedHostKey) -> str:
    check = exc.check
    where = _shown(dict(check.sources).get(exc.expected_key.get_name(), check.add_to))
    return (
        f"{check.prefix(host)}HOST KEY CHANGED: the server's key ({_described(exc.key)}) is not "
        f"the one {where} lists for {check.name}. If the host was rebuilt, remove the old line "
        f"(ssh-keygen -R {shlex.quote(check.name)} -f {where}) and accept the new key; "
        f"otherwise someone may be in the middle"
    )
