"""parwatch refuses a nats-server, or a stream, without atomic batches, and says what to upgrade."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from nats.aio.client import ServerVersion

from shared.streams import STREAMS, ServerTooOld, require_atomic_batches, require_server_version


@pytest.mark.parametrize("version", ["2.12.0", "2.12.1", "2.15.1", "3.0.0"])
def test_a_server_with_atomic_batches_is_accepted(version: str) -> None:
    require_server_version(ServerVersion(version))


@pytest.mark.parametrize("version", ["2.10.22", "2.11.9", "1.4.1"])
def test_an_older_server_is_refused_with_what_to_upgrade(version: str) -> None:
    with pytest.raises(ServerTooOld) as refused:
        require_server_version(ServerVersion(version))
    assert f"nats-server {version} is too old" in str(refused.value) and "2.12 or later" in str(refused.value)


class Streams:
    """A JetStream context whose stream_info says whether each stream allows atomic batches."""

    def __init__(self, *, atomic: bool) -> None:
        self.atomic = atomic

    async def stream_info(self, name: str) -> SimpleNamespace:
        return SimpleNamespace(config=SimpleNamespace(allow_atomic=self.atomic or None))


def test_a_stream_without_atomic_batches_is_refused_and_named() -> None:
    asyncio.run(require_atomic_batches(Streams(atomic=True)))  # type: ignore[arg-type]
    with pytest.raises(ServerTooOld) as refused:
        asyncio.run(require_atomic_batches(Streams(atomic=False)))  # type: ignore[arg-type]
    atomic = [s.name for s in STREAMS if s.allow_atomic]
    assert atomic == ["PARWATCH_DOSSIER_STATE"]
    assert "stream PARWATCH_DOSSIER_STATE does not allow atomic batches" in str(refused.value)
