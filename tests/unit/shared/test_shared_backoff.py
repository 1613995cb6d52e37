"""The one backoff policy and the one classification of failures worth retrying."""

from __future__ import annotations

import asyncio
import datetime as dt

import nats.errors
import nats.js.errors
import pytest
from sqlalchemy import exc as sa_exc

from shared.backoff import Backoff, is_retryable


def test_the_delay_doubles_from_the_first_and_stops_at_the_cap() -> None:
    backoff = Backoff(first=1.0, factor=2.0, cap=10.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff.delay(0) == 1.0  # no failure yet counts as the first
    assert backoff.delay(10_000) == 10.0  # no overflow however long the outage


def test_after_is_now_plus_the_delay() -> None:
    now = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.timezone.utc)
    assert Backoff(first=5, cap=60).after(3, now) == now + dt.timedelta(seconds=20)


@pytest.mark.parametrize("first, factor, cap", [(0, 2, 10), (1, 0.5, 10), (5, 2, 1)])
def test_a_policy_that_makes_no_sense_is_refused(first: float, factor: float, cap: float) -> None:
    with pytest.raises(ValueError):
        Backoff(first=first, factor=factor, cap=cap)


@pytest.mark.parametrize(
    "exc",
    [
        sa_exc.OperationalError("SELECT 1", {}, Exception("could not connect to server")),
        sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key")),  # a lost race: doing it again is safe
        nats.errors.TimeoutError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.ServiceUnavailableError(),
        nats.js.errors.APIError(code=503, description="insufficient resources"),
        asyncio.TimeoutError(),
        ConnectionResetError(),
    ],
)
def test_what_passes_by_itself_is_retried(exc: BaseException) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("a bug"),
        KeyError("missing"),
        sa_exc.DataError("INSERT", {}, Exception("invalid byte sequence")),
        nats.js.errors.BadRequestError(code=400, description="bad request"),
        nats.js.errors.APIError(code=400, description="invalid subject"),
        nats.errors.MaxPayloadError(),
    ],
)
def test_what_would_only_fail_again_is_not(exc: BaseException) -> None:
    assert not is_retryable(exc)
