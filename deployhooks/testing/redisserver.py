"""A private, throwaway redis-server for tests and the demo sandbox.

    with RedisServer() as server:
        client = redis.Redis.from_url(server.url)

The server listens on 127.0.0.1 on a free port, keeps its files in a temporary
directory, never persists (``save ""``, ``appendonly no``) and is stopped by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """Return a TCP port that was free on ``host`` a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a redis server at host:port answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServerError(RuntimeError):
    """redis-server could not be started."""


class RedisServer:
    """One redis-server process owned by this object.

    ``start()`` returns once the server answers PING; ``stop()`` terminates it
    by pid (TERM, then KILL) and removes its directory. Both are idempotent.
    """

    def __init__(self, executable: str = "redis-server", startup_timeout: float = 10.0, attempts: int = 5) -> None:
        self.executable = executable
        self.startup_timeout = startup_timeout
        self.attempts = attempts
        self.host = HOST
        self.port: int | None = None
        self.dir: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        if self.port is None:
            raise RedisServerError("redis server is not started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> "RedisServer":
        """Start the server and wait until it answers PING; raise RedisServerError if it cannot."""
        if self._process is not None:
            return self
        self.dir = Path(tempfile.mkdtemp(prefix="deployhooks-redis-"))
        last_log = ""
        try:
            # Another process may take the port between free_port() and redis binding it; try again.
            for _ in range(self.attempts):
                if self._launch(free_port(self.host)):
                    return self
                last_log = self._read_log()
        except BaseException:
            self.stop()
            raise
        self.stop()
        raise RedisServerError(f"redis-server did not start after {self.attempts} attempts:\n{last_log}")

    def _launch(self, port: int) -> bool:
        assert self.dir is not None
        conf = self.dir / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    f"bind {self.host}",
                    f"port {port}",
                    f'dir "{self.dir}"',
                    'save ""',
                    "appendonly no",
                    "daemonize no",
                    f'logfile "{self.dir / "redis.log"}"',
                    "",
                ]
            ),
            encoding="utf-8",
        )
        process = subprocess.Popen(
            [self.executable, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for the test runner must not kill it mid-teardown.
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            if ping(self.host, port):
                self._process, self.port = process, port
                return True
            time.sleep(0.02)
        process.kill()
        process.wait()
        return False

    def _read_log(self) -> str:
        if self.dir is None:  # stopped: the log went with its directory
            return ""
        try:
            return (self.dir / "redis.log").read_text(encoding="utf-8", errors="replace")[-2000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server by pid (SIGTERM, then SIGKILL after ``timeout``) and remove its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
            except ProcessLookupError:
                process.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
        self.port = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
