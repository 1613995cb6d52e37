"""`parwatch import` of the shipped sample export, twice, into a running tracker (real nats-server, database).

The figures are checked against a reference computed here from the same rows, by other means: each cell read
with a regular expression, timeliness by comparing the result date with the due date as text dates
(contract rules 3 and 5 when the source sends the due date, as the sample does).
"""

from __future__ import annotations

import asyncio
import collections
import csv
import datetime as dt
import re
import shutil
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from parwatch.cli import main
from services.dossier_tracker.store import DOSSIERS
from shared.db import make_engine
from shared.testing import jetstream, metric_samples, metric_value, wait_until
from tests.integration.dossier_tracker.tracker import running_tracker

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "docs" / "import" / "sample-export-motcua.csv"
MAPPING = REPO / "docs" / "import" / "mapping-motcua.yaml"
DATE = re.compile(r"(\d{2})/(\d{2})/(\d{4})(?: \d{2}:\d{2}(?::\d{2})?)?")


def reference() -> tuple[dict[tuple[str, str], int], dict[str, int], dict[str, int], set[int], int]:
    """(ended dossiers by (agency, timeliness), open by agency, awaiting supplement by agency, rows skipped, events:
    one for the receipt, one more for a status after it)."""
    mapping = yaml.safe_load(MAPPING.read_text(encoding="utf-8"))
    statuses, agencies = mapping["statuses"], mapping["agencies"]
    ended: collections.Counter[tuple[str, str]] = collections.Counter()
    open_: collections.Counter[str] = collections.Counter()
    paused: collections.Counter[str] = collections.Counter()
    skipped: set[int] = set()
    seen: set[str] = set()
    events = 0

    def day(text: str) -> dt.date | None:
        m = DATE.fullmatch(text.strip())
        return dt.date(int(m[3]), int(m[2]), int(m[1])) if m else None

    with SAMPLE.open(encoding="utf-8") as f:
        for number, r in enumerate(csv.DictReader(f), start=2):
            status = statuses.get(r["Trạng thái"])
            finished = day(r["Ngày có kết quả"])
            if (not r["Mã hồ sơ"] or r["Mã hồ sơ"] in seen or status is None or day(r["Ngày tiếp nhận"]) is None
                    or (status in (9, 10) and finished is None)):
                skipped.add(number)
                continue
            seen.add(r["Mã hồ sơ"])
            agency = agencies[r["Đơn vị"]]
            events += 1 if status in (1, 2, 3) else 2
            if status in (1, 3):
                continue  # never received: not counted anywhere
            if status in (7, 8, 9, 10):
                due = day(r["Ngày hẹn trả"])
                assert due is not None and finished is not None
                ended[(agency, "early" if finished < due else "on_time" if finished == due else "late")] += 1
            else:
                open_[agency] += 1
                # Rule 7: a pause begun after the due day does not stop the clock (the sample's days are past).
                updated, due = day(r["Ngày cập nhật"]), day(r["Ngày hẹn trả"])
                paused[agency] += status in (5, 6) and updated is not None and due is not None and updated <= due
    return dict(ended), dict(open_), dict(paused), skipped, events


async def parwatch(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_the_sample_imported_twice_counts_every_dossier_once_with_the_reference_figures(
    own_nats_server, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARWATCH_NATS_URL", own_nats_server.url)
    monkeypatch.setenv("PARWATCH_DATABASE_URL", database_url)
    export = tmp_path / SAMPLE.name
    shutil.copy(SAMPLE, export)
    ended, open_, paused, skipped, events = reference()
    rows = sum(1 for _ in csv.DictReader(SAMPLE.open(encoding="utf-8")))
    good = rows - len(skipped)

    async with running_tracker(own_nats_server.url, database_url, port=0) as svc:
        def value(name: str, **labels: str) -> float:
            return metric_value(svc.registry, name, **labels) or 0.0

        assert await parwatch("import", str(export), "--mapping", str(MAPPING), "--source", "motcua.test",
                              "--dry-run") == 0
        assert f"would import {good} row(s), 0 already present, {len(skipped)} rejected" in capsys.readouterr().out
        assert value("parwatch_events_total", stream="TTHC_DOSSIER", result="accepted") == 0

        assert await parwatch("import", str(export), "--mapping", str(MAPPING), "--source", "motcua.test") == 0
        assert f"imported {good} row(s), 0 already present, {len(skipped)} rejected" in capsys.readouterr().out
        with (tmp_path / f"{SAMPLE.name}.rejected.csv").open(encoding="utf-8") as f:
            assert {int(r["row"]) for r in csv.DictReader(f)} == skipped

        def accepted() -> float:
            return value("parwatch_events_total", stream="TTHC_DOSSIER", result="accepted")

        await wait_until(lambda: accepted() == events, timeout=60)
        async with jetstream(own_nats_server.url) as js:
            stored = (await js.stream_info("TTHC_DOSSIER")).state.messages
        assert stored == events

        assert await parwatch("import", str(export), "--mapping", str(MAPPING), "--source", "motcua.test") == 0
        assert f"imported 0 row(s), {good} already present, {len(skipped)} rejected" in capsys.readouterr().out
        async with jetstream(own_nats_server.url) as js:  # the import returns once JetStream acked what it sent
            assert (await js.stream_info("TTHC_DOSSIER")).state.messages == stored
        assert accepted() == events
        engine = make_engine(database_url)
        with engine.connect() as conn:  # every dossier of the file once, none of the rejected rows
            codes = conn.execute(select(DOSSIERS.c.dossier_code)).scalars().all()
        engine.dispose()
        with SAMPLE.open(encoding="utf-8") as f:
            expected = {r["Mã hồ sơ"] for n, r in enumerate(csv.DictReader(f), start=2) if n not in skipped}
        assert sorted(codes) == sorted(expected)

        samples = metric_samples(svc.registry)
        got_ended = {(dict(k[1])["agency"], dict(k[1])["timeliness"]): int(v) for k, v in samples.items()
                     if k[0] == "parwatch_dossiers_ended_total" and v}
        got_open: collections.Counter[str] = collections.Counter()
        got_paused: collections.Counter[str] = collections.Counter()
        for (name, labels), v in samples.items():
            if name == "parwatch_dossiers_open":
                got_open[dict(labels)["agency"]] += int(v)
                if dict(labels)["state"] == "awaiting_supplement":
                    got_paused[dict(labels)["agency"]] += int(v)
        assert got_ended == ended
        assert {a: n for a, n in got_open.items() if n} == open_
        assert {a: n for a, n in got_paused.items() if n} == {a: n for a, n in paused.items() if n}
        assert value("parwatch_events_total", stream="TTHC_DOSSIER", result="rejected") == 0
