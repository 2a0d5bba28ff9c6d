"""A private OpenSSH server on a loopback address, for tests and the sandbox.

Keys, config and known_hosts live in one private folder. The server runs `sshd -D` as a child
of this process and is stopped by pid. Nothing else on the machine is changed, except that
`/run/sshd` (sshd's privilege-separation folder) is created when missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    """An unencrypted key pair at `path` (and `path.pub`)."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(path)], check=True)
    return path


class SshServer:
    """sshd on `address:port` accepting `client_key` for the current user.

    `known_hosts` holds the server's key, so strict host-key checking can be exercised.
    """

    def __init__(self, folder: Path, address: str = "127.0.0.1", port: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.address = address
        self.port = port or free_port(address)
        self.user = os.environ.get("USER") or "root"
        self.proc: subprocess.Popen | None = None
        self.host_key = keygen(self.folder / "host_ed25519")
        self.client_key = keygen(self.folder / "client_ed25519")
        self.known_hosts = self.folder / "known_hosts"
        host_pub = (self.folder / "host_ed25519.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[{address}]:{self.port} {' '.join(host_pub)}\n")
        (self.folder / "authorized_keys").write_text((self.folder / "client_ed25519.pub").read_text())
        self.config = self.folder / "sshd_config"
        self.config.write_text(f"""\
ListenAddress {address}:{self.port}
HostKey {self.host_key}
PidFile {self.folder}/sshd.pid
AuthorizedKeysFile {self.folder}/authorized_keys
UsePAM no
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
PrintMotd no
MaxStartups 200:30:400
MaxSessions 50
LogLevel VERBOSE
Subsystem sftp internal-sftp
""")
        self.log = self.folder / "sshd.log"

    @property
    def host(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def start(self, timeout: float = 10.0) -> "SshServer":
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        check = subprocess.run([SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"sshd rejects its config: {check.stderr.strip()}")
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited at start: {self.log.read_text()[-500:]}")
            try:
                with socket.create_connection((self.address, self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd did not listen on {self.address}:{self.port} in {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ssh_settings_yaml(self) -> str:
        """The `ssh:` section of a deployhooks.yml that reaches this server."""
        return f"ssh:\n  known_hosts: {self.known_hosts}\n  identity_file: {self.client_key}\n  connect_timeout: 5\n"

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
