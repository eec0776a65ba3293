"""A PostgreSQL server on loopback for the tests: Debian's `postgresql` package (installed by
scripts/install as root), a fresh cluster in a temp dir, password authentication, one free
port. PostgreSQL refuses to run as root, so under root the server runs as the `postgres`
user the package creates.

    server = PostgresServer.start(tmp_dir)
    server.jdbc_url                     # jdbc:redshift://127.0.0.1:<port>/shoal
    server.connect()                    # a psycopg connection (autocommit)
    server.stop()

Or the module-scoped `postgres_server` fixture below, which skips (saying what is missing)
when the binaries are not installed.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support import LOOPBACK, free_port

USER = "shoal"
PASSWORD = "shoal-test-password"
DATABASE = "shoal"
_START_DEADLINE_S = 30.0


def _binaries() -> Path | None:
    """The directory holding initdb and postgres (Debian keeps them out of PATH)."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(f"{candidate}/initdb") and os.path.exists(f"{candidate}/postgres"):
            return Path(candidate)
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


@dataclass
class PostgresServer:
    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:redshift://{LOOPBACK}:{self.port}/{DATABASE}"

    def connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        return psycopg.connect(
            host=LOOPBACK,
            port=self.port,
            dbname=DATABASE,
            user=USER,
            password=PASSWORD,
            autocommit=True,
            connect_timeout=5,
        )

    @classmethod
    def start(cls, directory: Path) -> PostgresServer:
        binaries = _binaries()
        if binaries is None:
            pytest.skip("PostgreSQL is not installed (scripts/install apt-installs it as root)")
        run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no postgres user to run PostgreSQL")
            run_as = {"user": account.pw_uid, "group": account.pw_gid}
            os.chown(directory, account.pw_uid, account.pw_gid)
        data = directory / "data"
        password_file = directory / "password"
        password_file.write_text(PASSWORD)
        if run_as:
            os.chown(password_file, run_as["user"], run_as["group"])
        subprocess.run(
            [
                str(binaries / "initdb"),
                "-D",
                str(data),
                "-U",
                USER,
                f"--pwfile={password_file}",
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            **run_as,
        )
        port = free_port()
        process = subprocess.Popen(
            [
                str(binaries / "postgres"),
                "-D",
                str(data),
                "-p",
                str(port),
                "-k",
                str(directory),
                "-c",
                f"listen_addresses={LOOPBACK}",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **run_as,
        )
        server = cls(process=process, port=port, directory=directory)
        deadline = time.monotonic() + _START_DEADLINE_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"postgres exited with {process.returncode}")
            try:
                with psycopg.connect(
                    host=LOOPBACK,
                    port=port,
                    dbname="postgres",
                    user=USER,
                    password=PASSWORD,
                    autocommit=True,
                    connect_timeout=2,
                ) as connection:
                    connection.execute(f"CREATE DATABASE {DATABASE}")
                return server
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    directory = Path(tempfile.mkdtemp(prefix="shoal-pg-"))
    server = PostgresServer.start(directory)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
