"""Hosts and roles -> connections with checked host keys, and one function run on each in parallel.

Fabric accepts unknown host keys silently: its Connection.__init__ gives every SSHClient
paramiko's AutoAddPolicy and loads no known_hosts (fabric/connection.py), and builds the
Connections of a `ProxyJump` gateway from ssh_config the same way (Connection.get_gateway). Our
connections, gateways included, check the server's key against the known_hosts files OpenSSH
reads; a changed key is always refused, an unknown one unless `ssh.strict_host_keys: false`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import shlex
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable

import paramiko
from fabric import Config, Connection

from . import cancel
from .errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, CommandFailed, DeployhooksError
from .settings import Settings

# OpenSSH's defaults for UserKnownHostsFile and GlobalKnownHostsFile (ssh_config(5)).
USER_KNOWN_HOSTS = ("~/.ssh/known_hosts", "~/.ssh/known_hosts2")
GLOBAL_KNOWN_HOSTS = ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2")


class _Connection(Connection):
    """A fabric Connection whose socket sends each small packet at once.

    Every command is a few small writes; with Nagle's algorithm on, each waits for the peer's
    delayed ACK (about 40 ms here: bench/ measured 48 ms per command, 12.6 ms without it), and
    the guard and a deploy send dozens of commands per host.
    """

    def open(self):
        result = super().open()
        sock = getattr(self.transport, "sock", None)
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return result

    def close(self):
        """Close the connection and the ProxyJump gateways fabric made for it alone
        (Connection.get_gateway), which fabric's Connection.close leaves open. A gateway given
        in the config may serve other connections; it is left to whoever made it."""
        super().close()
        if "proxyjump" in self.ssh_config:
            for hop in _gateways(self):
                hop.close()


# --- Host keys -------------------------------------------------------------------------------


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
                lines += [(number, key_type, blob) for salt, digest, number, key_type, blob in self._hashed
                          if mac(salt, data, hashlib.sha1) == digest]
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
        self.known.warn_once(self.check.name, (
            f"deployhooks: warning: {self.check.who}: unknown host key ({_described(key)}) accepted "
            f"because ssh.strict_host_keys is false; add it to {_shown(self.check.add_to)}"))


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


def _check_host_keys(conn: Connection, who: str, settings: Settings, known: KnownHosts, *,
                     gateway: bool) -> None:
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
    check = HostKeyCheck(who=who, gateway=gateway, name=name, host=conn.host, port=conn.port,
                         sources=tuple(sources.items()),
                         add_to=_file_to_add_to(settings, conn.ssh_config))
    client = _CheckedClient(check)
    for key in keys:
        client.get_host_keys().add(name, key.get_name(), key)
    client.set_missing_host_key_policy(
        _RefuseUnknown(check) if settings.ssh.strict_host_keys else _WarnUnknown(check, known))
    # Fabric's Connection made an SSHClient with AutoAddPolicy and no keys; it is not opened yet.
    conn.client = client


def connect(host: str, settings: Settings, config: Config | None = None,
            known: KnownHosts | None = None) -> Connection:
    """A lazy Connection to `host` (`[user@]name[:port]`) honouring the config's ssh section.

    The connection and each gateway fabric made to reach it check their server's key alike,
    each knowing only that server's own entries of `known` (parsed here when not given):
    paramiko's own loading parses every line of every file for every connection, which at 100
    hosts cost more than the status query itself. A gateway already open is left as it is.
    """
    s = settings.ssh
    config = config or Config(overrides={"run": {"in_stream": False}})
    # Fabric's own settings (its -i and -t flags, fabric.yaml, FABRIC_* variables, per-host
    # ~/.ssh/config) come first; the config file's ssh section fills only what they leave open.
    # A dict of its own, never empty: given none, fabric's resolve_connect_kwargs writes this
    # host's IdentityFile into the shared Config's connect_kwargs, and every later host is then
    # offered it too. (Fabric's key_filename is merged in by fabric itself.)
    kwargs = {k: v for k, v in config.connect_kwargs.items() if k != "key_filename"}
    kwargs.setdefault("look_for_keys", True)  # paramiko's default: only makes the dict non-empty
    if s.identity_file and not config.connect_kwargs.get("key_filename"):
        kwargs["key_filename"] = s.identity_file
    timeout = config.timeouts.connect if config.timeouts.connect is not None else s.connect_timeout
    user = None if "@" in host else settings.user
    conn = _Connection(host, user=user, config=config, connect_timeout=timeout,
                      connect_kwargs=kwargs)
    known = known_host_keys(settings) if known is None else known
    _check_host_keys(conn, host, settings, known, gateway=False)
    for gateway in _gateways(conn):
        if not gateway.is_connected:
            _check_host_keys(gateway, f"gateway {gateway.original_host}", settings, known, gateway=True)
    return conn


def _described(key: paramiko.PKey) -> str:
    """A key as OpenSSH shows it to be checked: its type and SHA256 fingerprint."""
    return f"{key.get_name()} {key.fingerprint}"


def _shown(path: str) -> str:
    """`path` for a message and a shell command line: the home folder as `~`, quoted if needed."""
    home = os.path.expanduser("~").rstrip("/")
    if home and path.startswith(home + "/"):
        return "~/" + shlex.quote(path[len(home) + 1:])
    return shlex.quote(path)


def _unknown_key_message(host: str, exc: UnknownHostKey) -> str:
    check, add_to = exc.check, _shown(exc.check.add_to)
    return (f"{check.prefix(host)}unknown host key ({_described(exc.key)}): once that fingerprint "
            f"is checked on the server, add the key to {add_to} ({check.keyscan()} >> {add_to}), "
            f"or set ssh.strict_host_keys: false for throwaway hosts")


def _changed_key_message(host: str, exc: ChangedHostKey) -> str:
    check = exc.check
    where = _shown(dict(check.sources).get(exc.expected_key.get_name(), check.add_to))
    return (f"{check.prefix(host)}HOST KEY CHANGED: the server's key ({_described(exc.key)}) is not "
            f"the one {where} lists for {check.name}. If the host was rebuilt, remove the old line "
            f"(ssh-keygen -R {shlex.quote(check.name)} -f {where}) and accept the new key; "
            f"otherwise someone may be in the middle")


def explain_connect_error(host: str, exc: BaseException, settings: Settings) -> CommandFailed:
    """A connection failure as a message that says what to do about it; a refused host key
    names the server (the host, or the gateway on the way to it), the file and the fix."""
    if isinstance(exc, UnknownHostKey):
        return CommandFailed(_unknown_key_message(host, exc))
    if isinstance(exc, ChangedHostKey):
        return CommandFailed(_changed_key_message(host, exc))
    kh = settings.ssh.known_hosts or "~/.ssh/known_hosts"
    if isinstance(exc, paramiko.BadHostKeyException):
        return CommandFailed(
            f"{host}: HOST KEY CHANGED: the server's key does not match {kh}. If the host was "
            f"rebuilt, remove the old line (ssh-keygen -R {host.split('@')[-1]} -f {kh}) and "
            f"accept the new key; otherwise someone may be in the middle")
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return CommandFailed(
            f"{host}: unknown host key: add it to {kh} (ssh-keyscan {host.split('@')[-1]} >> {kh} "
            f"after checking its fingerprint), or set ssh.strict_host_keys: false for throwaway hosts")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return CommandFailed(f"{host}: no answer within {settings.ssh.connect_timeout}s "
                             f"(ssh.connect_timeout): is the host up?")
    if isinstance(exc, paramiko.AuthenticationException):
        return CommandFailed(f"{host}: ssh authentication failed ({exc}): check user and "
                             f"ssh.identity_file")
    if isinstance(exc, (OSError, paramiko.SSHException)):
        return CommandFailed(f"{host}: cannot connect: {exc}")
    return CommandFailed(f"{host}: {type(exc).__name__}: {exc}")


@dataclass
class HostResult:
    """What happened on one host: an exit code and, unless it succeeded, why."""

    host: str
    code: int = EXIT_OK
    error: str = ""
    value: object = None


class Session:
    """One connection per host, opened lazily and kept for every step of one invocation.

    `each(fn)` runs `fn(host, connection)` on every host in parallel and turns exceptions into
    per-host results, so one host down leaves the others' work done.
    """

    def __init__(self, hosts: Iterable[str], settings: Settings, config: Config | None = None,
                 max_workers: int = 32):
        self.hosts = list(hosts)
        self.settings = settings
        # One Config and one known_hosts parse for all hosts, as Fabric's Group shares its
        # Config: building either per host was half of the set-up time at 20 hosts. Parsed
        # whatever ssh.strict_host_keys says: a changed key is refused either way.
        config = config or Config(overrides={"run": {"in_stream": False}})
        known = known_host_keys(settings)
        self.conns = {h: connect(h, settings, config, known) for h in self.hosts}
        self.max_workers = max_workers

    def each(self, fn: Callable[[str, Connection], object],
             hosts: Iterable[str] | None = None) -> list[HostResult]:
        hosts = self.hosts if hosts is None else list(hosts)
        running = _Running()

        def one(host: str) -> HostResult:
            if not running.enter():
                return HostResult(host, EXIT_FAILED, f"{host}: not started: interrupted (Ctrl-C)")
            try:
                return HostResult(host, value=fn(host, self.conns[host]))
            except DeployhooksError as exc:
                return HostResult(host, exc.exit_code, str(exc))
            except Exception as exc:  # ssh errors, a dropped connection; never half a fleet
                return HostResult(host, EXIT_FAILED, str(explain_connect_error(host, exc, self.settings)))
            finally:
                running.leave()

        if not hosts:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self.max_workers, len(hosts)))
        try:
            # Submitting is inside the try: a Ctrl-C between two submits must still wait for
            # the hosts already started, or the caller's cleanup races their work.
            futures = [pool.submit(one, h) for h in hosts]
            return [f.result() for f in futures]
        except KeyboardInterrupt:
            # Let every started host stop at its next poll, through its own cleanup; hosts not
            # started yet never start. Only then go on up to the caller's cleanup.
            cancel.CANCELLED.set()
            running.close_and_wait()
            raise
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Running:
    """Counts the per-host tasks in progress, so an interrupt can wait for exactly those.

    The pool's own bookkeeping is not enough: a Ctrl-C can land inside `submit` after a thread
    started but before the pool recorded it, and `shutdown(wait=True)` would not wait for it.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._closed = False

    def enter(self) -> bool:
        """Count one task in; False once closed (the task must not start)."""
        with self._cond:
            if self._closed:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify_all()

    def close_and_wait(self) -> None:
        """Let no new task start and wait until none runs, through further Ctrl-Cs: a second
        Ctrl-C must not cut a host off in the middle of putting its workers back."""
        with self._cond:
            self._closed = True
        while True:
            try:
                with self._cond:
                    self._cond.wait_for(lambda: self._count == 0)
                return
            except KeyboardInterrupt:
                continue


def run_each(hosts: Iterable[str], settings: Settings, fn: Callable[[str, Connection], object],
             config: Config | None = None, max_workers: int = 32) -> list[HostResult]:
    """Run `fn(host, connection)` once on every host in parallel (see `Session.each`)."""
    with Session(hosts, settings, config, max_workers) as session:
        return session.each(fn)


def overall_code(results: Iterable[HostResult]) -> int:
    """One exit code for many hosts: a failure outranks bad config, which outranks a refusal."""
    codes = {r.code for r in results}
    for code in (EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED):
        if code in codes:
            return code
    return EXIT_OK
