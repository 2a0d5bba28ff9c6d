"""The one way to run a function on many hosts: `HostGroup.each(fn)` runs `fn(Host)` on each in
parallel and returns a `GroupResult` (which hosts succeeded, which failed and why), with one
policy for exceptions and Ctrl-C whether the hosts are reached over SSH (connections with
checked host keys, see `hostkeys`) or the group is this machine alone (the console script on a
server, a one-host group of a local invoke Context)."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import paramiko
from fabric import Config, Connection

from ..errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_REFUSED, CommandFailed, DeployhooksError
from ..settings import Settings
from . import cancel
from .host import Host
from .hostkeys import (
    ChangedHostKey,
    KnownHosts,
    UnknownHostKey,
    _changed_key_message,
    _check_host_keys,
    _gateways,
    _unknown_key_message,
    known_host_keys,
)


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


def connect(host: str, settings: Settings, config: Config | None = None, known: KnownHosts | None = None) -> Connection:
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
    conn = _Connection(host, user=user, config=config, connect_timeout=timeout, connect_kwargs=kwargs)
    known = known_host_keys(settings) if known is None else known
    _check_host_keys(conn, host, settings, known, gateway=False)
    for gateway in _gateways(conn):
        if not gateway.is_connected:
            _check_host_keys(gateway, f"gateway {gateway.original_host}", settings, known, gateway=True)
    return conn


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
            f"accept the new key; otherwise someone may be in the middle"
        )
    if isinstance(exc, paramiko.SSHException) and "not found in known_hosts" in str(exc):
        return CommandFailed(
            f"{host}: unknown host key: add it to {kh} (ssh-keyscan {host.split('@')[-1]} >> {kh} "
            f"after checking its fingerprint), or set ssh.strict_host_keys: false for throwaway hosts"
        )
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return CommandFailed(
            f"{host}: no answer within {settings.ssh.connect_timeout}s (ssh.connect_timeout): is the host up?"
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return CommandFailed(f"{host}: ssh authentication failed ({exc}): check user and ssh.identity_file")
    if isinstance(exc, (OSError, paramiko.SSHException)):
        return CommandFailed(f"{host}: cannot connect: {exc}")
    return CommandFailed(f"{host}: {type(exc).__name__}: {exc}")


@dataclass
class HostResult:
    """What happened on one host: an exit code and, unless it succeeded, why; `value` is what the
    function run there returned (None when it failed), of whatever type that function returns."""

    host: str
    code: int = EXIT_OK
    error: str = ""
    value: Any = None


class GroupResult(list):
    """The `HostResult` of every host, in the order asked (a list), like fabric's GroupResult:
    `succeeded` maps each host that succeeded to what `fn` returned there, `failed` each host
    that did not to its result (code and why), `code` is the one exit code for all."""

    @property
    def succeeded(self) -> dict[str, Any]:
        return {r.host: r.value for r in self if not r.code}

    @property
    def failed(self) -> dict[str, HostResult]:
        return {r.host: r for r in self if r.code}

    @property
    def code(self) -> int:
        return overall_code(self)


class Session:
    """One connection per host, opened lazily and kept for every step of one invocation.

    `each(fn)` runs `fn(host, connection)` on every host in parallel and turns exceptions into
    per-host results, so one host down leaves the others' work done.
    """

    def __init__(
        self,
        hosts: Iterable[str],
        settings: Settings,
        config: Config | None = None,
        max_workers: int = 32,
        *,
        local=None,
    ):
        self.hosts = list(hosts)
        self.settings = settings
        self.max_workers = max_workers
        self.local = local is not None
        if local is not None:
            # This machine (an invoke Context): every name is served by it, with no SSH at all.
            self.conns = {h: local for h in self.hosts}
            return
        # One Config and one known_hosts parse for all hosts, as Fabric's Group shares its
        # Config: building either per host was half of the set-up time at 20 hosts. Parsed
        # whatever ssh.strict_host_keys says: a changed key is refused either way.
        config = config or Config(overrides={"run": {"in_stream": False}})
        known = known_host_keys(settings)
        self.conns = {h: connect(h, settings, config, known) for h in self.hosts}

    def each(self, fn: Callable[[str, Connection], object], hosts: Iterable[str] | None = None) -> list[HostResult]:
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
                if self.local:
                    return HostResult(host, EXIT_FAILED, f"{host}: {type(exc).__name__}: {exc}")
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
        if self.local:
            return
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


def overall_code(results: Iterable[HostResult]) -> int:
    """One exit code for many hosts: a failure outranks bad config, which outranks a refusal."""
    codes = {r.code for r in results}
    for code in (EXIT_FAILED, EXIT_CONFIG, EXIT_REFUSED):
        if code in codes:
            return code
    return EXIT_OK


class HostGroup:
    """The hosts one invocation acts on, each reached once for all its phases, as `Host`s.

    `each(fn, names)` runs `fn(host)` on every host (or `names`) in parallel; an exception
    becomes that host's failed result (a `DeployhooksError` keeps its exit code, anything else
    is a failure, exit 3), so one host down never leaves the others' work half done; Ctrl-C
    lets started hosts finish their own cleanup and starts no new one (see `Session.each`).
    """

    def __init__(self, session: Session, settings: Settings, *, dry: bool = False, say: Callable[[str], None] = print):
        self.session, self.settings, self.dry, self.say = session, settings, dry, say
        self.names = list(session.hosts)

    @property
    def local(self) -> bool:
        """This machine alone (the console script), not hosts over SSH."""
        return self.session.local

    @classmethod
    def over_ssh(cls, names: Sequence[str], settings: Settings, config: Config | None = None, **kwargs) -> "HostGroup":
        return cls(Session(names, settings, config), settings, **kwargs)

    @classmethod
    def here(cls, context, name: str, settings: Settings, **kwargs) -> "HostGroup":
        """This machine alone, through `context` (an invoke Context), named `name`."""
        return cls(Session([name], settings, local=context), settings, **kwargs)

    def host(self, name: str) -> Host:
        return Host(self.session.conns[name], self.settings, name, dry=self.dry, say=self.say)

    def each(self, fn: Callable[[Host], Any], names: Sequence[str] | None = None) -> GroupResult:
        wanted = self.names if names is None else list(names)
        if self.session.local:
            # One machine: a name of the fleet's that is not this one has nothing to run here.
            wanted = [n for n in wanted if n in self.session.conns]
        return GroupResult(self.session.each(lambda name, _conn: fn(self.host(name)), wanted))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "HostGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
