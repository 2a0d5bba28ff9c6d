"""connect() hands each connection only its own server's known_hosts keys, parsed once per
invocation: plain and hashed entries, port 22 and other ports, nothing for a server no file
lists. The files are OpenSSH's (the user's and the system's, or those the host's ssh_config
entry names) plus ssh.known_hosts; a ProxyJump gateway is checked like the host itself; and
`ssh.strict_host_keys: false` still knows every listed key, warning once per unknown server."""

import paramiko
import pytest
from fabric import Config

from deployhooks import settings
from deployhooks.remote import fleet, hostkeys
from deployhooks.remote.fleet import Session, connect
from deployhooks.remote.hostkeys import known_host_keys

KEYS = [paramiko.RSAKey.generate(1024) for _ in range(6)]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    """A private HOME, and no system-wide known_hosts of the machine's."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(hostkeys, "GLOBAL_KNOWN_HOSTS", ())
    return home


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))
    return path


def _line(name, key):
    return f"{name} ssh-rsa {key.get_base64()}\n"


def _setup(tmp_path, lines, strict=True):
    kh = _write(tmp_path / "known_hosts", lines)
    cfg = settings.parse(f"app: shop\nssh:\n  known_hosts: {kh}\n  strict_host_keys: {'true' if strict else 'false'}\n")
    return cfg, known_host_keys(cfg)


def _known(conn, name):
    return dict(conn.client.get_host_keys().lookup(name) or {})


def _ssh_config(text):
    return Config(overrides={"run": {"in_stream": False}}, ssh_config=paramiko.SSHConfig.from_text(text))


def test_each_connection_gets_its_own_hosts_keys(tmp_path):
    hashed = paramiko.HostKeys.hash_host("10.0.0.3")
    cfg, known = _setup(
        tmp_path,
        [
            _line("10.0.0.1", KEYS[0]),
            _line("[10.0.0.2]:2222", KEYS[1]),
            _line(hashed, KEYS[2]),
        ],
    )
    one = connect("root@10.0.0.1", cfg, known=known).client.get_host_keys()
    two = connect("root@10.0.0.2:2222", cfg, known=known).client.get_host_keys()
    three = connect("root@10.0.0.3", cfg, known=known).client.get_host_keys()
    stranger = connect("root@10.0.0.9", cfg, known=known).client.get_host_keys()
    assert one.lookup("10.0.0.1")["ssh-rsa"] == KEYS[0] and one.lookup("10.0.0.3") is None
    assert two.lookup("[10.0.0.2]:2222")["ssh-rsa"] == KEYS[1] and two.lookup("10.0.0.2") is None
    assert three.lookup("10.0.0.3")["ssh-rsa"] == KEYS[2]
    assert len(stranger) == 0


def test_strict_keys_refuse_unknown_servers(tmp_path):
    cfg, known = _setup(tmp_path, [])
    client = connect("root@10.0.0.1", cfg, known=known).client
    with pytest.raises(hostkeys.UnknownHostKey, match="not found in known_hosts"):
        client._policy.missing_host_key(client, "10.0.0.1", KEYS[0])


def test_relaxed_keys_still_know_every_listed_key_and_warn_once_per_unknown_server(tmp_path, capsys):
    cfg, known = _setup(tmp_path, [_line("10.0.0.1", KEYS[0])], strict=False)
    listed = connect("root@10.0.0.1", cfg, known=known)
    # paramiko raises BadHostKeyException for a listed server whatever the policy: the key is there.
    assert _known(listed, "10.0.0.1") == {"ssh-rsa": KEYS[0]}
    for user in ("root", "deploy"):  # two connections to one unknown server: one warning
        client = connect(f"{user}@10.0.0.9", cfg, known=known).client
        client._policy.missing_host_key(client, "10.0.0.9", KEYS[1])
    err = capsys.readouterr().err
    assert err == (
        f"deployhooks: warning: root@10.0.0.9: unknown host key (ssh-rsa {KEYS[1].fingerprint}) "
        f"accepted because ssh.strict_host_keys is false; add it to {tmp_path / 'known_hosts'}\n"
    )


def test_the_users_second_file_and_the_system_files_are_read(tmp_path, home, monkeypatch):
    system = [
        _write(tmp_path / "etc" / name, [_line(f"10.0.0.{i}", KEYS[i])])
        for i, name in ((3, "ssh_known_hosts"), (4, "ssh_known_hosts2"))
    ]
    monkeypatch.setattr(hostkeys, "GLOBAL_KNOWN_HOSTS", tuple(str(p) for p in system))
    _write(home / ".ssh" / "known_hosts", [_line("10.0.0.1", KEYS[1])])
    _write(home / ".ssh" / "known_hosts2", [_line("10.0.0.2", KEYS[2])])
    cfg = settings.parse("app: shop\n")
    known = known_host_keys(cfg)
    for i in (1, 2, 3, 4):
        assert _known(connect(f"root@10.0.0.{i}", cfg, known=known), f"10.0.0.{i}") == {"ssh-rsa": KEYS[i]}


def test_the_project_file_comes_first_and_names_where_a_key_came_from(tmp_path, home):
    _write(home / ".ssh" / "known_hosts", [_line("10.0.0.1", KEYS[1])])
    cfg, known = _setup(tmp_path, [_line("10.0.0.1", KEYS[0])])
    conn = connect("root@10.0.0.1", cfg, known=known)
    assert _known(conn, "10.0.0.1") == {"ssh-rsa": KEYS[0]}
    assert conn.client.check.sources == (("ssh-rsa", str(tmp_path / "known_hosts")),)


def test_an_ssh_config_entry_chooses_its_own_files(tmp_path, home):
    _write(home / ".ssh" / "known_hosts", [_line("10.0.0.1", KEYS[0]), _line("10.0.0.2", KEYS[0])])
    _write(home / "alt", [_line("10.0.0.1", KEYS[1])])
    _write(tmp_path / "global", [_line("10.0.0.1", KEYS[2])])
    config = _ssh_config(
        f"Host special\n  HostName 10.0.0.1\n  UserKnownHostsFile %d/alt /nonexistent\n"
        f"  GlobalKnownHostsFile {tmp_path / 'global'}\n"
        "Host blind\n  HostName 10.0.0.2\n  UserKnownHostsFile none\n"
    )
    cfg = settings.parse("app: shop\n")
    known = known_host_keys(cfg)
    special = connect("root@special", cfg, config=config, known=known)
    assert _known(special, "10.0.0.1") == {"ssh-rsa": KEYS[1]}  # not ~/.ssh/known_hosts's
    assert dict(special.client.check.sources) == {"ssh-rsa": str(home / "alt")}
    assert _known(connect("root@blind", cfg, config=config, known=known), "10.0.0.2") == {}
    plain = connect("root@10.0.0.1", cfg, config=config, known=known)  # no entry: the defaults
    assert _known(plain, "10.0.0.1") == {"ssh-rsa": KEYS[0]}


def test_a_proxyjump_gateway_gets_its_own_keys_and_the_same_policy(tmp_path):
    cfg, known = _setup(tmp_path, [_line("[10.0.0.1]:2200", KEYS[0]), _line("10.0.0.2", KEYS[1])])
    config = _ssh_config(
        "Host bastion\n  HostName 10.0.0.1\n  Port 2200\nHost app\n  HostName 10.0.0.2\n  ProxyJump bastion\n"
    )
    conn = connect("root@app", cfg, config=config, known=known)
    gateway = conn.gateway
    assert _known(conn, "10.0.0.2") == {"ssh-rsa": KEYS[1]} and _known(conn, "[10.0.0.1]:2200") == {}
    assert _known(gateway, "[10.0.0.1]:2200") == {"ssh-rsa": KEYS[0]}
    assert _known(gateway, "10.0.0.2") == {}
    assert gateway.client.check.who == "gateway bastion"
    with pytest.raises(hostkeys.UnknownHostKey) as caught:
        gateway.client._policy.missing_host_key(gateway.client, "[10.0.0.1]:2200", KEYS[2])
    assert caught.value.check is gateway.client.check


def test_each_file_is_parsed_once_per_session(tmp_path, home, monkeypatch):
    parsed = []

    class Counting(hostkeys._KnownFile):
        def __init__(self, path):
            parsed.append(path)
            super().__init__(path)

    monkeypatch.setattr(hostkeys, "_KnownFile", Counting)
    _write(home / "shared", [])
    config = _ssh_config("Host a b\n  UserKnownHostsFile ~/shared\nHost c\n  ProxyJump a\n")
    cfg, _ = _setup(tmp_path, [])
    parsed.clear()
    Session(["root@a", "root@b", "root@c", "root@10.0.0.1"], cfg, config=config).close()
    assert sorted(parsed) == sorted(set(parsed))
    assert str(home / "shared") in parsed and str(tmp_path / "known_hosts") in parsed


def test_messages_on_port_22_name_the_host_plainly(tmp_path):
    check = hostkeys.HostKeyCheck(
        who="root@10.0.0.1",
        gateway=False,
        name="10.0.0.1",
        host="10.0.0.1",
        port=22,
        sources=(("ssh-rsa", "/etc/ssh/ssh_known_hosts"),),
        add_to="/srv/kh",
    )
    cfg = settings.parse("app: shop\n")
    unknown = str(fleet.explain_connect_error("root@10.0.0.1", hostkeys.UnknownHostKey(check, KEYS[0]), cfg))
    assert unknown.startswith(f"root@10.0.0.1: unknown host key (ssh-rsa {KEYS[0].fingerprint}): ")
    assert "(ssh-keyscan 10.0.0.1 >> /srv/kh)" in unknown
    changed = hostkeys.ChangedHostKey(check, paramiko.BadHostKeyException("10.0.0.1", KEYS[1], KEYS[0]))
    message = str(fleet.explain_connect_error("root@10.0.0.1", changed, cfg))
    assert message.startswith("root@10.0.0.1: HOST KEY CHANGED: ")
    assert "(ssh-keygen -R 10.0.0.1 -f /etc/ssh/ssh_known_hosts)" in message


def test_one_hosts_identity_file_is_not_offered_to_the_others():
    """Found: fabric's resolve_connect_kwargs wrote the first host's IdentityFile into the
    Config every connection shares, so the next hosts offered it too."""
    import paramiko
    from fabric import Config

    from deployhooks.remote.fleet import connect
    from deployhooks.settings import parse

    ssh_config = paramiko.SSHConfig.from_text(
        "Host web1\n  IdentityFile /keys/web1\nHost web2\n  IdentityFile /keys/web2\n"
    )
    config = Config(ssh_config=ssh_config)
    settings = parse("app: shop\nssh:\n  strict_host_keys: false\n", "t.yml")
    one, two = (connect(h, settings, config) for h in ("web1", "web2"))
    assert one.connect_kwargs["key_filename"] == ["/keys/web1"]
    assert two.connect_kwargs["key_filename"] == ["/keys/web2"]
    assert not config.connect_kwargs.get("key_filename")
