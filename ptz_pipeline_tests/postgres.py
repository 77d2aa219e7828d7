"""A real PostgreSQL server (Debian package ``postgresql``) on a free loopback port, for tests.

``initdb`` into a temporary folder, ``postgres`` listening on 127.0.0.1 only, stopped and deleted afterwards.
PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user the Debian package
creates. A test module uses the fixtures with
``pytest_plugins = ["ptz_pipeline_tests.postgres"]``.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

STARTUP_TIMEOUT_S = 30.0
USER, PASSWORD = "dagster", "pg-test-password"


@dataclass(frozen=True)
class PostgresServer:
    """A running server at ``host:port`` with a superuser ``user``/``password``."""

    host: str
    port: int
    user: str = USER
    password: str = PASSWORD

    def dagster_env(self, db: str) -> dict[str, str]:
        """The DAGSTER_PG_* variables the postgres and kubernetes profiles read, for the database ``db``."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db,
        }

    def create_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password, dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _binary(name: str) -> str:
    """``name`` on PATH or in the newest /usr/lib/postgresql/<version>/bin; fails the test when absent."""
    found = shutil.which(name)
    for bindir in sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name, reverse=True
    ):
        found = found or shutil.which(name, path=str(bindir))
    if found is None:
        pytest.fail(f"{name} not found: the Postgres tests need the Debian package 'postgresql'")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """initdb + postgres on a free loopback port until the block ends; fails the test when it cannot."""
    root = Path(tempfile.mkdtemp(prefix="ptz-postgres-"))  # /tmp: reachable by the postgres user
    (root / "pw").write_text(PASSWORD)
    as_user: dict[str, object] = {}
    if os.geteuid() == 0:  # postgres refuses root: run it as the package's postgres user
        owner = pwd.getpwnam("postgres")
        for path in (root, root / "pw"):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        as_user = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    data, log_path = root / "data", root / "postgres.log"
    try:
        subprocess.run(
            [_binary("initdb"), "-D", str(data), "-U", USER, f"--pwfile={root / 'pw'}", "-A", "scram-sha-256",
             "--no-sync", "-E", "UTF8", "--locale=C"],
            check=True, capture_output=True, **as_user,
        )  # fmt: skip
        port = _free_port()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [_binary("postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
                 "-k", str(root), "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, **as_user,
            )  # fmt: skip
        try:
            server = PostgresServer("127.0.0.1", port)
            _wait_until_ready(server, process, log_path)
            yield server
        finally:
            process.terminate()  # SIGTERM: smart shutdown; the clients are gone by now
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _wait_until_ready(server: PostgresServer, process: subprocess.Popen, log_path: Path) -> None:
    import psycopg2

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        try:
            psycopg2.connect(
                host=server.host, port=server.port, user=server.user, password=server.password,
                dbname="postgres", connect_timeout=2,
            ).close()  # fmt: skip
            return
        except psycopg2.OperationalError:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"postgres did not accept connections on {server.host}:{server.port} (exit code "
                    f"{process.poll()}): {log_path.read_text(errors='replace')[-1000:]}"
                )
            time.sleep(0.1)


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server shared by a module's tests."""
    with start_postgres() as server:
        yield server


_databases = itertools.count()


@pytest.fixture
def postgres_env(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> PostgresServer:
    """A fresh database on the module's server, with the DAGSTER_PG_* variables pointing at it."""
    name = f"dagster_{os.getpid()}_{next(_databases)}"
    postgres_server.create_database(name)
    for key, value in postgres_server.dagster_env(name).items():
        monkeypatch.setenv(key, value)
    return postgres_server
