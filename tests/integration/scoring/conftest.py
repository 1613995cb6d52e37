"""Fixtures of scoring's storage tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.scoring.store import ScoringStore, create_schema
from shared.db import make_engine


@pytest.fixture
def store(database_url: str) -> Iterator[ScoringStore]:
    """A scoring store on a fresh schema of the test's database (SQLite, and PostgreSQL when available)."""
    engine = make_engine(database_url)
    create_schema(engine)
    yield ScoringStore(engine)
    engine.dispose()
