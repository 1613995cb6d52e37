"""Fixtures with real parts: a nats-server from the wheel, SQLite, PostgreSQL.

PostgreSQL: ``TEST_DATABASE_URL`` when set; else a testcontainers server when a
Docker engine answers; else the PostgreSQL variants skip and say why. Each
test gets a database of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.embedded import free_port, start_nats_server, stop_process
from shared.testing import create_database, drop_database

REPO = Path(__file__).resolve().parents[1]
HANDBOOK = REPO.parent / "shared"


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A nats-server with JetStream on a free port, for the whole session."""
    store = tmp_path_factory.mktemp("nats")
    port = free_port()
    proc = start_nats_server(store_dir=store, port=port, log_file=store / "nats.log")
    yield f"nats://127.0.0.1:{port}"
    stop_process(proc)


class NatsServerControl:
    """A nats-server a test may stop and start again (same port, same store)."""

    def __init__(self, store: Path) -> None:
        self.store = store
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_nats_server(store_dir=self.store, port=self.port, log_file=self.store / "nats.log")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@pytest.fixture
def own_nats_server(tmp_path: Path) -> Iterator[NatsServerControl]:
    """A nats-server of this test's own (for restarts and isolation)."""
    ctl = NatsServerControl(tmp_path / "nats")
    ctl.start()
    yield ctl
    ctl.stop()


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    if not _docker_answers():
        pytest.skip("PostgreSQL tests skipped: TEST_DATABASE_URL is not set and no Docker engine answers")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver="psycopg") as pg:
        yield pg.get_connection_url()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, and PostgreSQL when one is available."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    admin = request.getfixturevalue("postgres_admin_url")
    url = create_database(admin)
    try:
        yield url
    finally:
        drop_database(admin, url)


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database only (for what SQLite cannot do: several writers, replicas)."""
    url = create_database(postgres_admin_url)
    try:
        yield url
    finally:
        drop_database(postgres_admin_url, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(scope="session")
def handbook() -> Path:
    if not HANDBOOK.is_dir():
        pytest.skip(f"the team handbook folder {HANDBOOK} is not beside the repo")
    return HANDBOOK
