"""PID 1 of one simulated host: ``python -m deployhooks.testing.hostinit --folder F --name N --address A``.

Run it as the first process of fresh PID, mount and UTS namespaces::

    unshare --pid --mount --uts --fork --mount-proc --kill-child=SIGTERM \\
        python -m deployhooks.testing.hostinit --folder F --name host1 --address 127.0.10.1 [--login deploy]

There is no network namespace: the host shares the machine's loopback, so its sshd listens on
``<address>:<port>`` (a 127.x address, refused otherwise) and its workers reach the machine's redis on
127.0.0.1. :mod:`deployhooks.testing.fleet` starts many of these; this module is one host.

What the host looks like from inside (left: the folder on the machine)::

    F/data   -> /data        apps: /data/<app>/{releases,current,shared}
    F/run    -> /run         (and so /var/run): sshd.pid, sshd/, monit.sock, monit/, pidfiles
    F/log    -> /var/log     sshd.log, monit.log, monit.out
    F/monit  -> /etc/monit   monitrc (written at boot when missing), conf.d/*.monitrc
    F/root   -> /root        root's home: .bashrc, .profile, .ssh/authorized_keys
    F/home   -> ~LOGIN       with ``--login USER`` (not root): that user's home as the machine's
                             passwd names it (``/home/deploy``), with the same files
    F/hosts  -> /etc/hosts   the machine's, plus ``<address> <name>``: the host resolves its own
                             name, as a real one does (sudo complains on every call otherwise)
    F/ssh                    sshd_config (written at boot), ssh_host_ed25519_key[.pub]; used
                             under its machine path, which the host sees too

Everything else (the repository, /tmp, /usr, the interpreter) is the machine's, shared. The
machine's ``/root`` is replaced by ``F/root`` so that an SSH login reads a plain Debian .bashrc,
not the machine's; the interpreter's own folders under /root (a pyenv Python, say) are bound
through so the Python that runs this module keeps working inside the host (``--keep`` adds more).

Promises:

- Mounts are made private before anything is bound, so nothing done here is seen outside the
  namespace; they all disappear with it. The only change to the machine itself: an empty ``/data``
  directory is created when missing, because a bind mount needs a directory to cover.
- The hostname is ``--name``.
- sshd (``UsePAM no``, ``StrictModes no``, keys only; root allowed by key, or with ``--login
  USER`` only USER and never root) and ``monit -I -c
  /etc/monit/monitrc`` (control file mode 0600, httpd on ``/run/monit.sock`` with an ``allow``
  line, polling every second, including ``/etc/monit/conf.d/*.monitrc``) are started with default
  signal dispositions, even when this process inherited ignored INT/QUIT from a shell's background
  job: a worker that monit starts must die of QUIT as Resque's does.
- Once sshd accepts connections and monit answers on its socket, ``/run/hostinit.ready`` appears
  (JSON: name, address, the namespace pids of sshd and monit). A start that fails exits 1 with the
  reason in stderr.
- Every process that ends in the namespace is reaped (PID 1 of a namespace is everybody's
  orphan-parent, and this machine's own PID 1 reaps nothing).
- On SIGTERM, SIGINT or SIGHUP: monit is frozen (SIGSTOP, so it restarts nothing), every other
  process in the namespace gets TERM and, once they are gone or 3 s later, everything left gets
  KILL (monit included); then it exits 0. The kernel
  delivers to a namespace's PID 1 only the signals it handles, so other signals are ignored here.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .hostsetup import MONIT_CONTROL, MONIT_SOCKET, StartFailed, bind_etc_hosts, login_home, setup_mounts, write_configs

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
MONIT = shutil.which("monit") or "/usr/bin/monit"

READY_FILE = "/run/hostinit.ready"
TERM_WAIT_SECONDS = 3.0


def log(message: str) -> None:
    print(f"hostinit[{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)


class Init:
    """The init loop: start the daemons, reap everything, tear the namespace down on request."""

    def __init__(self, name: str, address: str, port: int):
        self.name, self.address, self.port = name, address, port
        self.daemons: dict[str, subprocess.Popen] = {}
        self.stop_requested = False
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_stop)
        # A handler (not SIG_DFL) so that SIGCHLD wakes the loop through the wakeup fd.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        # A shell's background job starts us with INT/QUIT ignored, and ignored dispositions survive
        # exec: reset them so monit, sshd and every worker under them start with the defaults.
        for signum in (signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(signum, signal.SIG_DFL)

    def _on_stop(self, signum, _frame) -> None:
        self.stop_requested = True

    def spawn(self, label: str, argv: list[str], log_path: str) -> None:
        with open(log_path, "ab") as out:
            # restore_signals resets SIGPIPE/SIGXFSZ, which Python itself ignores; the handlers set
            # above revert to SIG_DFL on exec by themselves.
            self.daemons[label] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                restore_signals=True,
                start_new_session=True,
                cwd="/",
            )

    def reap(self) -> None:
        """Reap every child that has ended (ours or adopted); note a daemon's end."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            for label, proc in self.daemons.items():
                if proc.pid == pid and proc.returncode is None:
                    # Popen must not wait for a pid we have reaped.
                    proc.returncode = os.waitstatus_to_exitcode(status)
                    if not self.stop_requested:
                        log(f"{label} (pid {pid}) exited with status {proc.returncode}")

    def pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early for a signal; reap on the way out."""
        try:
            select.select([self._wake_r], [], [], seconds)
        except InterruptedError:
            pass
        try:
            while os.read(self._wake_r, 512):
                pass
        except BlockingIOError:
            pass
        self.reap()

    def wait_ready(self, timeout: float) -> None:
        """Return once sshd accepts TCP and monit accepts on its socket; StartFailed otherwise."""
        deadline = time.monotonic() + timeout
        pending = {"sshd", "monit"}
        while pending:
            if self.stop_requested:
                raise StartFailed("asked to stop while starting")
            for label in list(pending):
                proc = self.daemons[label]
                if proc.returncode is not None:
                    raise StartFailed(
                        f"{label} exited at start with status {proc.returncode} "
                        f"(see /var/log/{label}.log, /var/log/monit.log)"
                    )
                if _answers(label, self.address, self.port):
                    pending.discard(label)
            if not pending:
                break
            if time.monotonic() > deadline:
                raise StartFailed(f"{', '.join(sorted(pending))} not answering after {timeout:g}s")
            self.pause(0.02)

    def serve(self) -> None:
        while not self.stop_requested:
            self.pause(5.0)

    def shutdown(self) -> None:
        """Freeze monit, TERM everything else in the namespace, KILL what is left (monit too)."""
        monit = self.daemons.get("monit")
        frozen = set()
        if monit is not None and monit.returncode is None:
            # Frozen, monit cannot restart the workers about to go. Its own TERM handling waits
            # out a poll cycle (a second); the host has nothing left to save, so it is KILLed below.
            _kill(monit.pid, signal.SIGSTOP)
            frozen.add(monit.pid)
        # TERM first: a worker then unregisters from redis, as on a host shutting down.
        for pid in set(_namespace_pids()) - frozen:
            _kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_WAIT_SECONDS
        while time.monotonic() < deadline and set(_namespace_pids(include_zombies=False)) - frozen:
            self.pause(0.01)
        # Re-listed: something may have forked after the TERM round.
        while _namespace_pids(include_zombies=False):
            for pid in _namespace_pids():
                _kill(pid, signal.SIGKILL)
            self.pause(0.01)
        self.reap()


def _answers(label: str, address: str, port: int) -> bool:
    family, where = (socket.AF_INET, (address, port)) if label == "sshd" else (socket.AF_UNIX, MONIT_SOCKET)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(where)
        return True
    except OSError:
        return False


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _namespace_pids(include_zombies: bool = True) -> list[int]:
    """Every pid in this namespace's /proc except ours (1)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or entry == "1":
            continue
        if not include_zombies:
            try:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                        continue
            except (OSError, IndexError):
                continue
        pids.append(int(entry))
    return pids


def _loopback(text: str) -> str:
    try:
        if ipaddress.ip_address(text).is_loopback:
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r} is not a loopback address (127.x.y.z); hosts stay on loopback")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployhooks.testing.hostinit",
        description="PID 1 of one simulated host (see the module docstring).",
    )
    parser.add_argument("--folder", required=True, type=Path, help="the host's folder on the machine")
    parser.add_argument("--name", required=True, help="hostname")
    parser.add_argument("--address", required=True, type=_loopback, help="loopback address for sshd")
    parser.add_argument("--port", type=int, default=22, help="sshd port (default 22)")
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="PATH",
        help="a folder under /root to keep visible inside (repeatable)",
    )
    parser.add_argument(
        "--login",
        default="root",
        metavar="USER",
        help="the one user sshd lets in (default root); another user's home is "
        "the folder's home/, and root may not log in",
    )
    parser.add_argument("--ready-timeout", type=float, default=30.0, metavar="SECONDS")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    folder = args.folder.resolve()
    if os.getpid() != 1:
        log(f"warning: pid {os.getpid()}, not 1: run me under unshare --pid --fork --mount-proc")
    init = Init(args.name, args.address, args.port)
    try:
        setup_mounts(folder, args.keep, login_home(args.login))
        socket.sethostname(args.name)
        bind_etc_hosts(folder, args.name, args.address)
        config = write_configs(folder, args.address, args.port, args.login)
        init.spawn("sshd", [SSHD, "-D", "-e", "-f", str(config)], "/var/log/sshd.log")
        init.spawn("monit", [MONIT, "-I", "-c", MONIT_CONTROL], "/var/log/monit.out")
        init.wait_ready(args.ready_timeout)
        ready = {
            "name": args.name,
            "address": args.address,
            "port": args.port,
            "sshd": init.daemons["sshd"].pid,
            "monit": init.daemons["monit"].pid,
        }
        tmp = Path(READY_FILE + ".tmp")
        tmp.write_text(json.dumps(ready) + "\n")
        tmp.replace(READY_FILE)
    except (StartFailed, OSError, subprocess.SubprocessError) as exc:
        log(f"{args.name}: start failed: {exc}")
        init.stop_requested = True
        init.shutdown()
        return 1
    init.serve()
    init.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
