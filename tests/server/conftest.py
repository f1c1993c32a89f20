"""PostgreSQL for the server tests: one private server per test session (tests/pg.py), a new
database per test. Where no server can be started (no binaries, no psycopg), the tests that ask
for one skip and say what is missing."""
from __future__ import annotations

import re
import time

import pytest

from tests.pg import PostgresServer, PostgresUnavailable


@pytest.fixture(scope="session")
def postgres_server():
    pytest.importorskip("psycopg", reason="psycopg (the PostgreSQL driver) is not installed: pip install -e '.[test]'")
    started = time.perf_counter()
    try:
        server = PostgresServer.start()
    except PostgresUnavailable as e:
        pytest.skip(f"no PostgreSQL server for these tests: {e}")
    print(f"\nPostgreSQL started in {time.perf_counter() - started:.1f}s on 127.0.0.1:{server.port} ({server.root})")
    yield server
    server.remove()


@pytest.fixture
def pg_url(postgres_server, request):
    """The URL of a new, empty database on the session's server, named after the test; dropped
    after it, with whatever connections the test left open."""
    name = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:40] + "_" + str(time.monotonic_ns())[-6:]
    yield postgres_server.create_database(name)
    postgres_server.drop_database(name)
