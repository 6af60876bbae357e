"""Private, throwaway PostgreSQL and Redis servers for outage tests.

A test that stops its database must not stop anybody else's, so outage tests run
their own real server on a free loopback port, started and stopped at will.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

from gatehouse_kit.readiness import wait_for_port

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL 15 cluster of its own (user `gatehouse`, password `gatehouse`).

    As root, the server runs as the `postgres` user, which PostgreSQL requires.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="gatehouse-pg-"))
        self._data = self._dir / "data"
        self._as_root = os.geteuid() == 0
        if self._as_root:
            shutil.chown(self._dir, "postgres", "postgres")
        pwfile = self._dir / "pw"
        pwfile.write_text("gatehouse\n")
        if self._as_root:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self._data),
            "-U",
            "gatehouse",
            "--pwfile",
            str(pwfile),
            "-A",
            "md5",
            "--no-sync",
        )
        with (self._data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self._dir}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\n"
            )

    def _run(self, *argv: str) -> None:
        command = list(argv)
        if self._as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    @property
    def url(self) -> str:
        """Superuser URL to the `postgres` database."""
        return f"postgresql://gatehouse:gatehouse@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        log = self._dir / "server.log"
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self._data), "-l", str(log), "-w", "start")
        wait_for_port(self.port)

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self._data), "-m", "immediate", "-w", "stop")
        wait_for_port(self.port, listening=False)

    def destroy(self) -> None:
        if (self._data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class PrivateRedis:
    """A Redis server of its own, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        wait_for_port(self.port, listening=False)

    def destroy(self) -> None:
        if self._process is not None:
            self.stop()
