"""What one simulated host sees, set up by its PID 1 (:mod:`deployhooks.testing.hostinit`) before
it starts any daemon: private mounts binding the host's folder over ``/data``, ``/run``,
``/var/log``, ``/etc/monit``, ``/root`` (and the login's home), its own ``/etc/hosts``, and the
configs of its sshd and monit. The layout is drawn in hostinit's module docstring.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import subprocess
import sys
from pathlib import Path

MONIT_CONTROL = "/etc/monit/monitrc"
MONIT_SOCKET = "/run/monit.sock"

# <folder subdirectory> -> where the host sees it, in mount order.
BINDS = (("data", "/data"), ("run", "/run"), ("log", "/var/log"), ("monit", "/etc/monit"), ("root", "/root"))

MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p)


class StartFailed(Exception):
    """The host could not be brought up; the message says why."""


def _mount(source: str | None, target: str, flags: int) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    if _libc.mount(enc(source), enc(target), None, flags, None) != 0:
        err = ctypes.get_errno()
        raise StartFailed(f"mount {source or '-'} on {target}: {os.strerror(err)}")


def host_layout(folder: Path) -> dict[str, Path]:
    """The folder's subdirectories, by name (data, run, log, monit, root, home, ssh)."""
    return {name: folder / name for name in ("data", "run", "log", "monit", "root", "home", "ssh")}


def login_home(login: str) -> str | None:
    """Where the host sees ``login``'s home (the machine's passwd entry), or None for root, whose
    home is always the host's own ``/root``. StartFailed when the machine has no such user."""
    if login == "root":
        return None
    try:
        return pwd.getpwnam(login).pw_dir
    except KeyError:
        raise StartFailed(f"no user {login!r} on this machine (script/setup creates deploy)") from None


def _passthrough(keep: list[str]) -> list[str]:
    """Real paths under /root that must stay visible inside: the interpreter's, plus ``keep``."""
    paths = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, sys.exec_prefix, *keep)}
    paths.add(os.path.dirname(os.path.realpath(sys.executable)))
    inside = sorted(p for p in paths if p.startswith("/root/") and os.path.isdir(p))
    # A folder inside another kept folder comes with it.
    return [p for p in inside if not any(p != q and p.startswith(q + "/") for q in inside)]


def setup_mounts(folder: Path, keep: list[str], home: str | None = None) -> None:
    """Make every mount private, then bind the host's folders over the machine's (see module doc);
    ``home``: the login user's home, covered by ``F/home`` so its keys are this host's."""
    _mount(None, "/", MS_REC | MS_PRIVATE)
    dirs = host_layout(folder)
    for path in _passthrough(keep):
        # Bound into F/root before F/root covers /root; the recursive bind below carries it along.
        inside = dirs["root"] / os.path.relpath(path, "/root")
        inside.mkdir(parents=True, exist_ok=True)
        _mount(path, str(inside), MS_BIND | MS_REC)
    for name, target in BINDS:
        dirs[name].mkdir(parents=True, exist_ok=True)
        # /data does not exist on a stock machine; a bind mount needs a directory to cover.
        os.makedirs(target, exist_ok=True)
        _mount(str(dirs[name]), target, MS_BIND | MS_REC)
    if home is not None:
        # The machine's user, so the folder is there already (useradd --create-home); never made
        # here, which would change the machine.
        if not os.path.isdir(home):
            raise StartFailed(f"the login's home {home} is not a folder on this machine")
        dirs["home"].mkdir(parents=True, exist_ok=True)
        _mount(str(dirs["home"]), home, MS_BIND | MS_REC)


def bind_etc_hosts(folder: Path, name: str, address: str) -> None:
    """Cover /etc/hosts with the machine's copy plus this host's own name and address."""
    try:
        machine = Path("/etc/hosts").read_text()
    except OSError:
        machine = "127.0.0.1\tlocalhost\n"
    hosts = folder / "hosts"
    hosts.write_text(
        machine.rstrip("\n") + f"\n# this simulated host (deployhooks.testing.hostinit)\n{address}\t{name}\n"
    )
    hosts.chmod(0o644)
    _mount(str(hosts), "/etc/hosts", MS_BIND)


def _login_lines(login: str) -> str:
    """Who may log in: root by key (the default), or only ``login``, as on a production host
    where the deploy user is the one way in and root is not reachable over SSH at all."""
    if login == "root":
        return "PermitRootLogin prohibit-password\n"
    return f"PermitRootLogin no\nAllowUsers {login}\n"


def sshd_config(folder: Path, address: str, port: int, login: str = "root") -> str:
    ssh = host_layout(folder)["ssh"]
    return f"""\
# Written by deployhooks.testing.hostinit at boot.
ListenAddress {address}:{port}
HostKey {ssh / "ssh_host_ed25519_key"}
PidFile /run/sshd.pid
# Keys live in a private folder owned by whoever runs the fleet: skip the ownership checks.
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
{_login_lines(login)}UseDNS no
PrintMotd no
PrintLastLog no
# Tests open many sessions at once against one host.
MaxStartups 100:30:200
MaxSessions 50
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""


def monit_control() -> str:
    from ..resque.monitrc import render_monit_control

    text = render_monit_control(
        statedir="/run/monit", socket=MONIT_SOCKET, include="/etc/monit/conf.d/*.monitrc", poll_seconds=1
    )
    # State (pid, id, state files) is runtime data under /run; the log belongs in /var/log.
    return text.replace("set log /run/monit/monit.log", "set log /var/log/monit.log")


def write_configs(folder: Path, address: str, port: int, login: str = "root") -> Path:
    """Write sshd_config (always) and /etc/monit/monitrc (unless present); return sshd_config's path."""
    dirs = host_layout(folder)
    dirs["ssh"].mkdir(parents=True, exist_ok=True)
    key = dirs["ssh"] / "ssh_host_ed25519_key"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    config = dirs["ssh"] / "sshd_config"
    config.write_text(sshd_config(folder, address, port, login))
    control = Path(MONIT_CONTROL)
    if not control.exists():
        control.parent.mkdir(parents=True, exist_ok=True)
        control.write_text(monit_control())
    os.chmod(control, 0o600)  # monit refuses a control file others can read
    Path("/etc/monit/conf.d").mkdir(exist_ok=True)
    for path, mode in (("/run/sshd", 0o755), ("/run/monit", 0o700)):
        os.makedirs(path, mode=mode, exist_ok=True)
        os.chmod(path, mode)  # sshd insists its privilege-separation folder is not writable by others
    return config
