"""Host keys checked against real sshd's on loopback: a target reached through a `ProxyJump`
gateway named in ~/.ssh/config, with a private HOME for each test.

The gateway's key is checked like the target's (same files, same policy, messages naming the
gateway); `ssh.strict_host_keys: false` still refuses a changed key and accepts an unknown one
only with one warning line per server.
"""

from __future__ import annotations

import paramiko
import pytest

from deployhooks import settings as settings_mod
from deployhooks.remote import hostkeys
from deployhooks.remote.fleet import Session, connect, explain_connect_error
from deployhooks.testing.sshserver import SshServer, keygen


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """Two sshd's on 127.0.0.1: a gateway and a target only reached through it in these tests."""
    gateway = SshServer(tmp_path_factory.mktemp("gateway"))
    target = SshServer(tmp_path_factory.mktemp("target"))
    with gateway, target:
        yield gateway, target


@pytest.fixture
def home(tmp_path, monkeypatch, servers):
    """A private HOME whose ~/.ssh/config reaches `target` through `ProxyJump gw`; no agent, and
    no system-wide known_hosts of this machine's."""
    gateway, target = servers
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    # Aliases, not 127.0.0.1 itself: fabric skips a ProxyJump hop whose host is the target's.
    (home / ".ssh" / "config").write_text(
        f"Host gw\n  HostName 127.0.0.1\n  Port {gateway.port}\n  User {gateway.user}\n"
        f"  IdentityFile {gateway.client_key}\n"
        f"Host target\n  HostName 127.0.0.1\n  Port {target.port}\n  ProxyJump gw\n"
    )
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setattr(hostkeys, "GLOBAL_KNOWN_HOSTS", ())
    return home


def _settings(target: SshServer, known_hosts, strict: bool):
    return settings_mod.parse(
        f"app: shop\nssh:\n  known_hosts: {known_hosts}\n"
        f"  identity_file: {target.client_key}\n  connect_timeout: 5\n"
        f"  strict_host_keys: {'true' if strict else 'false'}\n"
    )


def _line(server: SshServer, hashed: bool = False) -> str:
    """The known_hosts line of `server`'s real key, plain or hashed as HashKnownHosts writes it."""
    name = f"[{server.address}]:{server.port}"
    if hashed:
        name = paramiko.HostKeys.hash_host(name)
    return f"{name} {' '.join((server.folder / 'host_ed25519.pub').read_text().split()[:2])}\n"


def _stale_line(server: SshServer, tmp_path) -> str:
    """A known_hosts line giving `server` another ed25519 key: what a rebuilt host looks like."""
    other = keygen(tmp_path / "stale_ed25519")
    key = " ".join(other.with_suffix(".pub").read_text().split()[:2])
    return f"[{server.address}]:{server.port} {key}\n"


def _echo(conn) -> str:
    try:
        return conn.run("echo ok", hide=True).stdout.strip()
    finally:
        conn.close()


def test_unknown_gateway_key_is_refused_naming_the_gateway_and_the_fix(home, servers):
    gateway, target = servers
    cfg = _settings(target, target.known_hosts, strict=True)  # the target's key is known
    conn = connect(f"{target.user}@target", cfg)
    with pytest.raises(paramiko.SSHException) as caught:
        conn.open()
    message = str(explain_connect_error(f"{target.user}@target", caught.value, cfg))
    assert message.startswith(f"{target.user}@target: gateway gw: unknown host key (ssh-ed25519 SHA256:")
    assert f"ssh-keyscan -p {gateway.port} 127.0.0.1 >> {target.known_hosts}" in message
    conn.close()


def test_known_gateway_key_from_the_users_hashed_known_hosts_is_accepted(home, servers):
    gateway, target = servers
    (home / ".ssh" / "known_hosts").write_text(_line(gateway, hashed=True))
    cfg = _settings(target, target.known_hosts, strict=True)
    conn = connect(f"{target.user}@target", cfg)
    assert _echo(conn) == "ok"
    # Closing the connection closes the gateway it opened (fabric's Connection.close does not).
    assert not conn.gateway.is_connected


def test_changed_gateway_key_is_refused_naming_the_file_that_holds_it(home, servers, tmp_path):
    gateway, target = servers
    user_kh = home / ".ssh" / "known_hosts"
    user_kh.write_text(_stale_line(gateway, tmp_path))
    cfg = _settings(target, target.known_hosts, strict=False)
    conn = connect(f"{target.user}@target", cfg)
    with pytest.raises(paramiko.BadHostKeyException) as caught:
        conn.open()
    message = str(explain_connect_error(f"{target.user}@target", caught.value, cfg))
    assert message.startswith(f"{target.user}@target: gateway gw: HOST KEY CHANGED:")
    assert f"ssh-keygen -R '[127.0.0.1]:{gateway.port}' -f ~/.ssh/known_hosts" in message
    conn.close()


def test_changed_target_key_is_refused_even_when_not_strict(home, servers, tmp_path, capsys):
    gateway, target = servers
    (home / ".ssh" / "known_hosts").write_text(_line(gateway))
    stale = tmp_path / "stale_known_hosts"
    stale.write_text(_stale_line(target, tmp_path))
    cfg = _settings(target, stale, strict=False)
    conn = connect(f"{target.user}@target", cfg)
    with pytest.raises(paramiko.BadHostKeyException) as caught:
        conn.open()
    message = str(explain_connect_error(f"{target.user}@target", caught.value, cfg))
    assert message.startswith(f"{target.user}@target: HOST KEY CHANGED:")
    assert f"ssh-keygen -R '[127.0.0.1]:{target.port}' -f {stale}" in message
    assert "warning" not in capsys.readouterr().err
    conn.close()


def test_unknown_keys_are_accepted_with_one_warning_per_server_when_not_strict(home, servers, tmp_path, capsys):
    gateway, target = servers
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    cfg = _settings(target, empty, strict=False)
    # The same target twice, once through the gateway and once directly: one warning for it.
    hosts = [f"{target.user}@target", f"{target.user}@127.0.0.1:{target.port}"]
    with Session(hosts, cfg) as session:
        results = session.each(lambda host, conn: conn.run("echo ok", hide=True).stdout.strip())
    assert [(r.error, r.value) for r in results] == [("", "ok"), ("", "ok")]
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 2, warnings
    fix = f"accepted because ssh.strict_host_keys is false; add it to {empty}"
    gateway_line = next(w for w in warnings if "gateway gw" in w)
    target_line = next(w for w in warnings if "gateway" not in w)
    assert gateway_line.startswith("deployhooks: warning: gateway gw: unknown host key (ssh-ed25519 SHA256:")
    # Either name of the target, whichever connected first.
    assert target_line.startswith(
        tuple(f"deployhooks: warning: {h}: unknown host key (ssh-ed25519 SHA256:" for h in hosts)
    )
    assert gateway_line.endswith(fix) and target_line.endswith(fix)
