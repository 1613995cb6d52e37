"""parwatch import's pure parts: the mapping, dates, rows as events, the sample export, the summary."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from parwatch.importer import (
    Converter,
    Mapping,
    MappingError,
    Row,
    RowRejected,
    convert_file,
    import_rows,
    load_mapping,
    write_rejected,
)
from parwatch.cli import main
from shared.calendar import VN_TZ
from shared.embedded import free_port

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "docs" / "import" / "sample-export-motcua.csv"
MAPPING = REPO / "docs" / "import" / "mapping-motcua.yaml"
#: The sample's deliberate faults (docs/import.md): row number -> words of the reason.
FAULTS = {
    22: "Ngày tiếp nhận (received_at): not a date",
    43: "Trạng thái (status): not in the mapping's statuses",
    64: "Mã hồ sơ (dossier_code): empty",
    85: "Ngày có kết quả (finished_at): needed when the status ends the dossier",
    106: "Mã hồ sơ (dossier_code): the same dossier as row 105",
}


@pytest.fixture(scope="module")
def mapping() -> Mapping:
    return load_mapping(MAPPING)


def row(mapping: Mapping, number: int = 2, **cells: Any) -> Row:
    values = {
        "Mã hồ sơ": "H12.261105.0001",
        "Thủ tục": "1.004227",
        "Lĩnh vực": "Hộ tịch",
        "Đơn vị": "Phòng Tư pháp",
        "Hình thức nộp": "Trực tuyến",
        "Ngày tiếp nhận": "05/11/2026 08:15",
        "Ngày hẹn trả": "10/11/2026",
        "Ngày có kết quả": "",
        "Ngày cập nhật": "",
        "Trạng thái": "Đã tiếp nhận",
    }
    values.update(cells)
    return Row(number, values)


def test_dates_are_read_day_first_in_vietnam_with_or_without_time(mapping: Mapping) -> None:
    conv = Converter(mapping, "motcua.test")

    def at(text: object) -> dt.datetime | None:
        return conv.time(row(mapping, **{"Ngày tiếp nhận": text}), "received_at")

    assert at("05/11/2026") == dt.datetime(2026, 11, 5, tzinfo=VN_TZ)  # 5 November, never 11 May
    assert at("05/11/2026 08:15") == dt.datetime(2026, 11, 5, 8, 15, tzinfo=VN_TZ)
    assert at("05/11/2026 08:15:30") == dt.datetime(2026, 11, 5, 8, 15, 30, tzinfo=VN_TZ)
    assert at("08:15 05/11/2026") == dt.datetime(2026, 11, 5, 8, 15, tzinfo=VN_TZ)
    assert at(dt.datetime(2026, 11, 5, 8, 15)) == dt.datetime(2026, 11, 5, 8, 15, tzinfo=VN_TZ)  # an Excel cell
    for text in ("2026-11-05", "11/5/2026 8:15 PM", "31/02/2026", "5.11.2026"):
        with pytest.raises(RowRejected, match="not a date"):
            at(text)


def test_a_date_format_with_an_offset_keeps_the_offset_written(mapping: Mapping) -> None:
    conv = Converter(mapping.model_copy(update={"date_formats": ["%d/%m/%Y %H:%M%z", "%d/%m/%Y"]}), "motcua.test")
    written = conv.time(row(mapping, **{"Ngày tiếp nhận": "05/11/2026 08:15+0000"}), "received_at")
    assert written == dt.datetime(2026, 11, 5, 8, 15, tzinfo=dt.UTC)  # 15:15 in Vietnam, not 08:15
    assert conv.time(row(mapping, **{"Ngày tiếp nhận": "05/11/2026"}), "received_at") == dt.datetime(
        2026, 11, 5, tzinfo=VN_TZ)


def test_a_row_becomes_its_stages_with_ids_of_its_own(mapping: Mapping) -> None:
    conv = Converter(mapping, "motcua.test")
    ended = conv.events(row(mapping, **{"Trạng thái": "Đã trả kết quả", "Ngày có kết quả": "09/11/2026 10:00:00"}))
    assert [(e.id, e.data.sequence, e.data.status) for e in ended] == [
        ("H12.261105.0001:received", 1, 2), ("H12.261105.0001:end:10", 3, 10)]
    receipt = ended[0].data
    assert (receipt.agency_code, receipt.field_code, receipt.channel) == ("PTP", "HOTICH", 2)
    assert receipt.received_at == dt.datetime(2026, 11, 5, 8, 15, tzinfo=VN_TZ)
    assert receipt.due_at == dt.datetime(2026, 11, 10, tzinfo=VN_TZ) == ended[1].data.due_at
    paused = conv.events(row(mapping, **{"Trạng thái": "Chờ bổ sung hồ sơ", "Ngày cập nhật": "06/11/2026 09:00"}))
    assert [(e.id, e.data.status, e.data.occurred_at.day) for e in paused] == [
        ("H12.261105.0001:received", 2, 5), ("H12.261105.0001:status:5", 5, 6)]
    refused = conv.events(row(mapping, **{"Trạng thái": "Không tiếp nhận"}))
    assert [(e.data.status, e.data.received_at) for e in refused] == [(3, None)]
    # The same row again: the same events, ids and all.
    assert conv.events(row(mapping, **{"Trạng thái": "Đã trả kết quả", "Ngày có kết quả": "09/11/2026 10:00:00"})) \
        == ended


def test_words_are_matched_whatever_their_unicode_form_and_case(mapping: Mapping) -> None:
    import unicodedata

    conv = Converter(mapping, "motcua.test")
    decomposed = unicodedata.normalize("NFD", "PHÒNG TƯ PHÁP")
    assert conv.events(row(mapping, **{"Đơn vị": decomposed}))[0].data.agency_code == "PTP"
    assert conv.events(row(mapping, **{"Đơn vị": "PYT"}))[0].data.agency_code == "PYT"  # already a code


def test_refusals_name_the_column_and_the_field_never_the_value(mapping: Mapping) -> None:
    conv = Converter(mapping, "motcua.test")
    cases = {
        "Đơn vị": ("Ủy ban xã <b>", "Đơn vị (agency_code): not in the mapping's agencies and not a code"),
        "Hình thức nộp": ("Fax 0912345678", "Hình thức nộp (channel): not in the mapping's channels"),
        "Mã hồ sơ": ("H 12 có dấu cách", "data.dossier_code (column Mã hồ sơ)"),
    }
    for column, (value, words) in cases.items():
        with pytest.raises(RowRejected) as err:
            conv.events(row(mapping, **{column: value}))
        assert words in err.value.reason
        assert value not in err.value.reason
    with pytest.raises(RowRejected, match="Ngày cập nhật"):
        conv.events(row(mapping, **{"Trạng thái": "Chờ bổ sung hồ sơ"}))  # a pause needs its day


def test_a_mapping_names_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("columns: {dossier_code: Mã, status: TT, citizen: Họ tên}\nstatuses: {Xong: 11}\n")
    with pytest.raises(MappingError) as err:
        load_mapping(bad)
    assert "no contract field citizen" in str(err.value) and "statuses" in str(err.value)


def test_the_sample_export_reads_with_its_faults_found(mapping: Mapping) -> None:
    good, bad = convert_file(SAMPLE, mapping, source="motcua.test")
    assert {n for n, _ in bad} == set(FAULTS)
    for number, reason in bad:
        assert FAULTS[number] in reason
    with SAMPLE.open(encoding="utf-8") as f:
        assert len(good) + len(bad) == sum(1 for _ in csv.DictReader(f))
    codes = [events[0].data.dossier_code for _, events in good]
    assert len(codes) == len(set(codes))


def test_xlsx_and_csv_exports_give_the_same_events(mapping: Mapping, tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    with SAMPLE.open(encoding="utf-8") as f:
        for i, cells in enumerate(csv.reader(f)):
            if i == 3:  # a real date cell, as Excel keeps a typed date
                day, month, rest = cells[6].split("/", 2)
                year, hm = rest.split(" ")
                cells[6] = dt.datetime(int(year), int(month), int(day), *map(int, hm.split(":")))
            sheet.append(cells)
    path = tmp_path / "export.xlsx"
    book.save(path)
    assert convert_file(path, mapping, source="motcua.test") == convert_file(SAMPLE, mapping, source="motcua.test")


def test_a_second_import_finds_everything_present(mapping: Mapping, tmp_path: Path) -> None:
    good, bad = convert_file(SAMPLE, mapping, source="motcua.test")
    stored: set[tuple[str, str]] = set()

    async def publish(chunk: list[Any]) -> list[bool]:
        held = [(e.source, e.id) in stored for e in chunk]
        stored.update((e.source, e.id) for e in chunk)
        return held

    def known() -> set[tuple[str, str]]:
        return {(e.source, e.id) for _, events in good for e in events} & stored

    first = asyncio.run(import_rows(good, known=known(), publish=publish))
    second = asyncio.run(import_rows(good, known=known(), publish=publish))
    assert (first.imported, first.present) == (len(good), 0)
    assert (second.imported, second.present) == (0, len(good))
    assert len(stored) == sum(len(events) for _, events in good)
    dry = asyncio.run(import_rows(good, known=set(), publish=None))
    assert dry.imported == len(good)
    out = write_rejected(tmp_path / "x.csv", bad)
    with out.open(encoding="utf-8") as f:
        assert [int(r["row"]) for r in csv.DictReader(f)] == sorted(FAULTS)


def test_a_column_name_with_a_backslash_is_named_as_it_is_in_a_reason(mapping: Mapping) -> None:
    columns = dict(mapping.columns) | {"dossier_code": "Mã\\số hồ sơ"}
    odd = mapping.model_copy(update={"columns": columns})
    bad = row(mapping, **{"Mã\\số hồ sơ": "H12 bad code!"})
    with pytest.raises(RowRejected) as refused:
        Converter(odd, "motcua.test").events(bad)
    assert "data.dossier_code (column Mã\\số hồ sơ)" in refused.value.reason


@pytest.fixture
def export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the sample export, and settings with an empty tracker database and no NATS answering."""
    monkeypatch.setenv("PARWATCH_NATS_URL", f"nats://127.0.0.1:{free_port()}")
    monkeypatch.setenv("PARWATCH_DATABASE_URL", f"sqlite:///{tmp_path / 'tracker.db'}")
    copy = tmp_path / SAMPLE.name
    shutil.copy(SAMPLE, copy)
    return copy


def rejected_rows(export: Path) -> list[int]:
    with (export.parent / f"{export.name}.rejected.csv").open(encoding="utf-8") as f:
        return [int(r["row"]) for r in csv.DictReader(f)]


def test_without_nats_the_rejected_rows_are_written_and_the_refusal_is_one_line(
    export: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["import", str(export), "--mapping", str(MAPPING), "--source", "motcua.test"]) == 1
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith("parwatch import: cannot reach NATS at nats://127.0.0.1:"), err
    assert rejected_rows(export) == sorted(FAULTS)  # found before anything was to be published
    assert out == f"rejected rows and reasons: {export}.rejected.csv\n"


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "import"])
@pytest.mark.parametrize("database", ["postgresql", "sqlite"])
def test_a_tracker_database_that_does_not_answer_is_one_line_saying_what_to_check(
    export: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database: str, dry_run: bool
) -> None:
    url = {"postgresql": f"postgresql://parwatch:s3cret@127.0.0.1:{free_port()}/tracker",
           "sqlite": f"sqlite:///{export.parent / 'no such folder' / 'tracker.db'}"}[database]
    monkeypatch.setenv("PARWATCH_DATABASE_URL", url)
    argv = ["import", str(export), "--mapping", str(MAPPING), "--source", "motcua.test"]
    assert main(argv + ["--dry-run"] * dry_run) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("parwatch import: cannot read the tracker's database at ") and "PARWATCH_DATABASE_URL" in err
    assert "s3cret" not in err
    assert rejected_rows(export) == sorted(FAULTS)


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, as tqdm asks before drawing."""

    def isatty(self) -> bool:
        return True


def test_the_progress_bar_is_drawn_on_a_terminal_and_a_pipe_gets_the_summary_alone(
    export: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["import", str(export), "--mapping", str(MAPPING), "--source", "motcua.test", "--dry-run"]
    assert main(argv) == 0
    piped = capsys.readouterr()
    assert piped.err == ""
    assert piped.out.startswith("would import ")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(argv) == 0
    drawn = terminal.getvalue()
    with SAMPLE.open(encoding="utf-8") as f:
        rows = sum(1 for _ in csv.DictReader(f))
    assert re.search(rf"reading: +\d+%\|[^|]*\| \d+/{rows} \[", drawn), drawn
    assert drawn.endswith("\r")  # cleared at the end (leave=False): the summary is on a line of its own
    assert capsys.readouterr().out == piped.out


def test_the_publishing_bar_is_cleared_when_publishing_fails(mapping: Mapping, monkeypatch: pytest.MonkeyPatch) -> None:
    good, _ = convert_file(SAMPLE, mapping, source="motcua.test")
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    sent: list[int] = []

    async def publish(chunk: list[Any]) -> list[bool]:
        if sent:
            raise TimeoutError  # JetStream stops answering after the first window
        sent.append(len(chunk))
        return [False] * len(chunk)

    with pytest.raises(TimeoutError):
        asyncio.run(import_rows(good, known=set(), publish=publish, progress=True))
    drawn = terminal.getvalue()
    assert sent and "publishing:" in drawn
    assert drawn.endswith("\r"), drawn[-120:]  # the refusal that follows starts a clean line
