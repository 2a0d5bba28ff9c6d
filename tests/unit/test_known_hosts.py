"""connect() hands each connection only its own host's known_hosts keys, parsed once: plain
and hashed entries, port 22 and other ports, and nothing for a host the file does not know."""

import paramiko

from deployhooks import settings
from deployhooks.fleet import connect, known_host_keys


def _setup(tmp_path, lines):
    kh = tmp_path / "known_hosts"
    kh.write_text("".join(lines))
    cfg = settings.parse(f"app: shop\nssh:\n  known_hosts: {kh}\n")
    return cfg, known_host_keys(cfg)


def test_each_connection_gets_its_own_hosts_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.ssh/known_hosts of the machine's
    keys = [paramiko.RSAKey.generate(1024) for _ in range(3)]
    hashed = paramiko.HostKeys.hash_host("10.0.0.3")
    cfg, known = _setup(tmp_path, [
        f"10.0.0.1 ssh-rsa {keys[0].get_base64()}\n",
        f"[10.0.0.2]:2222 ssh-rsa {keys[1].get_base64()}\n",
        f"{hashed} ssh-rsa {keys[2].get_base64()}\n",
    ])
    one = connect("root@10.0.0.1", cfg, known=known).client.get_host_keys()
    two = connect("root@10.0.0.2:2222", cfg, known=known).client.get_host_keys()
    three = connect("root@10.0.0.3", cfg, known=known).client.get_host_keys()
    stranger = connect("root@10.0.0.9", cfg, known=known).client.get_host_keys()
    assert one.lookup("10.0.0.1")["ssh-rsa"] == keys[0] and one.lookup("10.0.0.3") is None
    assert two.lookup("[10.0.0.2]:2222")["ssh-rsa"] == keys[1] and two.lookup("10.0.0.2") is None
    assert three.lookup("10.0.0.3")["ssh-rsa"] == keys[2]
    assert len(stranger) == 0


def test_strict_keys_reject_unknown_hosts_and_relaxed_keys_accept(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg, known = _setup(tmp_path, [])
    strict = connect("root@10.0.0.1", cfg, known=known).client
    assert isinstance(strict._policy, paramiko.RejectPolicy)
    relaxed_cfg = settings.parse("app: shop\nssh:\n  strict_host_keys: false\n")
    relaxed = connect("root@10.0.0.1", relaxed_cfg).client
    assert isinstance(relaxed._policy, paramiko.AutoAddPolicy)
