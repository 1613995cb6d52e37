"""Stream budgets against a real nats-server: an operator's limits survive restarts, an older parwatch's stream gets
its budget, and a flood of one input stream leaves alerts and dead letters room to be stored."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError

from shared.embedded import free_port, nats_server_binary, stop_process, wait_for_port
from shared.streams import (
    ALERTS,
    DAY,
    DEADLETTER,
    DOSSIER_EVENTS,
    STREAM_BY_NAME,
    MiB,
    StreamSetupError,
    ensure_streams,
    stream_specs,
)

PAYLOAD = b"x" * (60 * 1024)  # a large message; the streams do not read what they store


@pytest.fixture
def small_nats_server(tmp_path: Path) -> Iterator[str]:
    """A nats-server whose JetStream file store is 32 MiB in all, as a server that a flood can fill."""
    port = free_port()
    store = tmp_path / "js"
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f'host: 127.0.0.1\nport: {port}\njetstream {{\n  store_dir: "{store}"\n  max_file_store: 33554432\n'
        "  max_memory_store: 8388608\n}\n",
        encoding="utf-8",
    )
    log = open(tmp_path / "nats.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen([nats_server_binary(), "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port)
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        log.close()


async def test_a_flooded_input_stream_refuses_the_flood_and_alerts_and_dead_letters_are_still_stored(
    small_nats_server: str,
) -> None:
    # Every stream 2 MiB, 16 MiB reserved of the server's 32: as the defaults (6.1 GiB) fit the deploy's 20 GB.
    specs = stream_specs(max_bytes={name: 2 * MiB for name in STREAM_BY_NAME}, history_days=400)
    nc = await nats.connect(small_nats_server)
    try:
        js = nc.jetstream(timeout=5)
        await ensure_streams(js, specs=specs)
        stored = 0
        with pytest.raises(APIError, match="maximum bytes"):
            for _ in range(2000):  # far more than the whole server holds
                await js.publish(DOSSIER_EVENTS, PAYLOAD)
                stored += 1
        assert 20 <= stored <= 2 * MiB // len(PAYLOAD)  # the flood filled its own budget, and only that
        # The publisher was told: nothing it sent was dropped silently, the first message is still there.
        assert (await js.stream_info("TTHC_DOSSIER")).state.first_seq == 1
        ack = await js.publish(ALERTS, b'{"alert": "still stored"}')
        assert ack.stream == "TTHC_ALERTS"
        # Dead letters keep flowing even past their own budget: the oldest go, the consumers never stall.
        for _ in range(60):
            await js.publish(DEADLETTER, PAYLOAD)
        letters = (await js.stream_info("TTHC_DEADLETTER")).state
        assert letters.first_seq > 1 and letters.bytes <= 2 * MiB
    finally:
        await nc.close()


async def test_limits_an_operator_set_survive_restarts_and_parwatchs_needs_come_back(own_nats_server, caplog) -> None:
    caplog.set_level(logging.INFO, logger="shared.streams")
    nc = await nats.connect(own_nats_server.url)
    try:
        js = nc.jetstream(timeout=5)
        await ensure_streams(js)
        info = await js.stream_info("TTHC_RATING")
        assert info.config.max_bytes == STREAM_BY_NAME["TTHC_RATING"].max_bytes
        # The operator's edit, as `nats stream edit` sends it: the whole configuration, some limits changed.
        edited = dataclasses.replace(info.config, max_bytes=300 * MiB, max_age=float(500 * DAY), duplicate_window=60.0)
        await js.update_stream(edited)
    finally:
        await nc.close()

    own_nats_server.stop()
    own_nats_server.start()
    nc = await nats.connect(own_nats_server.url)
    try:
        js = nc.jetstream(timeout=5)
        await ensure_streams(js)  # the next service start
        await ensure_streams(js)  # and the one after
        config = (await js.stream_info("TTHC_RATING")).config
        assert config.max_bytes == 300 * MiB and config.max_age == 500 * DAY
        assert config.duplicate_window == STREAM_BY_NAME["TTHC_RATING"].duplicate_window_s  # parwatch's need
        assert any("stream limits kept name=TTHC_RATING" in r.getMessage() and "max_bytes=314572800" in r.getMessage()
                   for r in caplog.records)
        untouched = (await js.stream_info("TTHC_DOSSIER")).config
        assert untouched.max_bytes == STREAM_BY_NAME["TTHC_DOSSIER"].max_bytes
    finally:
        await nc.close()


async def test_a_stream_an_older_parwatch_made_gets_its_budget_at_the_next_start(own_nats_server) -> None:
    spec = STREAM_BY_NAME["TTHC_PLAN"]
    legacy = dataclasses.replace(spec.config(), max_bytes=-1, discard=DiscardPolicy.OLD, metadata=None)
    nc = await nats.connect(own_nats_server.url)
    try:
        js = nc.jetstream(timeout=5)
        await js.add_stream(legacy)
        await js.publish("tthc.plan.events", b"an event from before the upgrade")
        await ensure_streams(js)
        info = await js.stream_info("TTHC_PLAN")
        assert info.config.max_bytes == spec.max_bytes and info.config.discard == DiscardPolicy.NEW
        assert info.state.messages == 1  # nothing it held was dropped
    finally:
        await nc.close()


async def test_budgets_a_server_cannot_hold_stop_a_first_start_and_never_an_upgrade(small_nats_server, caplog) -> None:
    """A new stream that cannot be reserved is an error that names the setting; an existing stream keeps running
    with what parwatch needs, and the operator is told."""
    rating = STREAM_BY_NAME["TTHC_RATING"]  # 256 MiB: more than the whole 32 MiB server
    nc = await nats.connect(small_nats_server)
    try:
        js = nc.jetstream(timeout=5)
        with pytest.raises(StreamSetupError, match="PARWATCH_STREAM_MAX_BYTES"):
            await ensure_streams(js, specs=[rating])
        legacy = dataclasses.replace(rating.config(), max_bytes=-1, duplicate_window=60.0, metadata=None)
        await js.add_stream(legacy)
        await ensure_streams(js, specs=[rating])
        config = (await js.stream_info("TTHC_RATING")).config
        assert config.max_bytes == -1 and config.duplicate_window == rating.duplicate_window_s
        assert any(r.levelno == logging.ERROR and "stream limits not applied name=TTHC_RATING" in r.getMessage()
                   for r in caplog.records)
    finally:
        await nc.close()
