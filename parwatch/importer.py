"""``parwatch import``: a one-stop-shop system's dossier export (XLSX or CSV) as contract events.

    parwatch import FILE.xlsx|FILE.csv --mapping MAPPING.yaml --source SOURCE [--dry-run]

A row of an export is a dossier as it stood on the export day. The mapping
(YAML, docs/import.md) says which column holds which contract field and how
the export's words (status, channel, unit, field, procedure) read as codes.
Each row becomes one to three ``vn.tthc.dossier.status_changed`` events, each
with a ``sequence`` by its stage, so that the tracker orders them whatever
the dates say:

* 1, the receipt: status 2 at "Ngày tiếp nhận" (``received_at``), with the due
  date, channel and codes; or, for a dossier never received (status 1 or 3),
  that status at the same date and nothing else;
* 2, the current status when it is 4, 5 or 6, at "Ngày cập nhật" (``updated_at``,
  required for 5 and 6: a pause needs its day; 4 defaults to the receipt);
* 3, the end (status 7, 8, 9 or 10) at "Ngày có kết quả" (``finished_at``; for 7
  and 8 ``updated_at`` serves when it is empty).

Event ids are made of the dossier code, the stage and the status
(``<code>:received``, ``<code>:status:5``, ``<code>:end:10``), never of the
time of the import, so importing the same file again, or a later export of
the same dossiers, publishes only what is new: the tracker keeps one event
per (``source``, ``id``). A snapshot cannot show a second supplement request
(the id of a stage is the same), nor a due date moved after an earlier
import (the receipt event already holds one; ``due_at`` also rides on the
later stages, where the latest one sent wins).

Dates are read with the mapping's ``date_formats`` only (default: dd/mm/yyyy
with or without hh:mm[:ss], in Asia/Ho_Chi_Minh), or as Excel date cells;
nothing is guessed. Every event passes :func:`shared.events.parse_event`
before anything is published; a row that does not is written with its row
number and reason (naming the column and the contract field, never the
value) to ``FILE.rejected.csv`` beside the input. Events are published on
``tthc.dossier.events`` with JetStream acks and ``Nats-Msg-Id`` =
:func:`shared.publishing.source_scoped_id`, as the HTTP ingest does.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import datetime as dt
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.events import CODE_PATTERN, DOSSIER_TYPE, END_STATUSES, CloudEvent, EventRejected, parse_event
from shared.text import safe_text

DEFAULT_DATE_FORMATS = (
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y",
    "%H:%M:%S %d/%m/%Y",
    "%H:%M %d/%m/%Y",
)
#: Contract fields a mapping may name a column for, and whether a column must be named.
COLUMN_FIELDS: dict[str, bool] = {
    "dossier_code": True,
    "status": True,
    "received_at": True,
    "agency_code": True,
    "procedure_code": True,
    "field_code": True,
    "due_at": False,
    "finished_at": False,
    "updated_at": False,
    "channel": False,
}
OPEN_STATUSES = frozenset({4, 5, 6})
NEVER_RECEIVED = frozenset({1, 3})
PUBLISH_WINDOW = 200


def normalize(text: object) -> str:
    """How export words are compared: NFC (some systems write decomposed Vietnamese), case and spaces folded."""
    return " ".join(unicodedata.normalize("NFC", str(text)).casefold().split())


class Mapping(BaseModel):
    """A mapping file (docs/import.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    columns: dict[str, str]
    statuses: dict[str, int] = Field(default_factory=dict)
    channels: dict[str, int] = Field(default_factory=dict)
    agencies: dict[str, str] = Field(default_factory=dict)
    procedures: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)
    date_formats: list[str] = Field(default_factory=lambda: list(DEFAULT_DATE_FORMATS), min_length=1)
    timezone: str = "Asia/Ho_Chi_Minh"
    sheet: str | None = None
    header_row: int = Field(default=1, ge=1)
    csv_delimiter: str = Field(default=",", min_length=1, max_length=1)
    csv_encoding: str = "utf-8-sig"

    @field_validator("columns")
    @classmethod
    def _known_columns(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(COLUMN_FIELDS))
        if unknown:
            raise ValueError(f"no contract field {', '.join(unknown)}; fields: {', '.join(COLUMN_FIELDS)}")
        missing = [f for f, required in COLUMN_FIELDS.items() if required and f not in value]
        if missing:
            raise ValueError(f"a column is needed for {', '.join(missing)}")
        return value

    @field_validator("statuses")
    @classmethod
    def _status_codes(cls, value: dict[str, int]) -> dict[str, int]:
        if any(not 1 <= v <= 10 for v in value.values()):
            raise ValueError("status codes are 1 to 10 (TrangThaiHoSo)")
        return value

    @field_validator("channels")
    @classmethod
    def _channel_codes(cls, value: dict[str, int]) -> dict[str, int]:
        if any(not 1 <= v <= 3 for v in value.values()):
            raise ValueError("channel codes are 1 to 3 (KenhThucHien)")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
            raise ValueError("not a time zone of the IANA database, e.g. Asia/Ho_Chi_Minh") from None
        return value

    def lookup(self, table: Literal["statuses", "channels", "agencies", "procedures", "fields"]) -> dict[str, Any]:
        return {normalize(k): v for k, v in getattr(self, table).items()}


class MappingError(ValueError):
    """A mapping file that cannot be used; the message names the file and the field."""


def load_mapping(path: Path) -> Mapping:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise MappingError(f"{path}: cannot be read as YAML ({type(exc).__name__})") from None
    try:
        return Mapping.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        parts = [f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors(include_input=False)]
        raise MappingError(f"{path}: {'; '.join(parts)}") from None


# -- reading rows -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    number: int  # as the spreadsheet shows it (the header is row ``header_row``)
    values: dict[str, Any]  # column name -> cell


def read_rows(path: Path, mapping: Mapping) -> tuple[list[str], Iterator[Row], int | None]:
    """(the header's columns, the rows, how many rows there are if known) of an XLSX or CSV export."""
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        return _xlsx_rows(path, mapping)
    if suffix in (".csv", ".txt"):
        return _csv_rows(path, mapping)
    raise MappingError(f"{path}: not an .xlsx or .csv file")


def _xlsx_rows(path: Path, mapping: Mapping) -> tuple[list[str], Iterator[Row], int | None]:
    import openpyxl

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    if mapping.sheet is not None and mapping.sheet not in book.sheetnames:
        raise MappingError(f"{path}: no sheet named in the mapping's 'sheet'")
    sheet = book[mapping.sheet] if mapping.sheet is not None else book.worksheets[0]
    rows = sheet.iter_rows(min_row=mapping.header_row, values_only=True)
    header = [str(c).strip() if c is not None else "" for c in next(rows, ())]
    total = sheet.max_row - mapping.header_row if sheet.max_row else None

    def generate() -> Iterator[Row]:
        try:
            for number, cells in enumerate(rows, start=mapping.header_row + 1):
                if all(c is None or str(c).strip() == "" for c in cells):
                    continue
                yield Row(number, dict(zip(header, cells, strict=False)))
        finally:
            book.close()

    return header, generate(), total


def _csv_rows(path: Path, mapping: Mapping) -> tuple[list[str], Iterator[Row], int | None]:
    with path.open(encoding=mapping.csv_encoding, newline="") as f:
        total = max(sum(1 for _ in csv.reader(f, delimiter=mapping.csv_delimiter)) - mapping.header_row, 0)
    handle = path.open(encoding=mapping.csv_encoding, newline="")
    reader = csv.reader(handle, delimiter=mapping.csv_delimiter)
    header: list[str] = []
    for _ in range(mapping.header_row):
        header = [c.strip() for c in next(reader, [])]

    def generate() -> Iterator[Row]:
        try:
            for number, cells in enumerate(reader, start=mapping.header_row + 1):
                if all(not c.strip() for c in cells):
                    continue
                yield Row(number, dict(zip(header, cells, strict=False)))
        finally:
            handle.close()

    return header, generate(), total


# -- a row as events ----------------------------------------------------------------------------------------------


class RowRejected(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Converter:
    """Rows as contract events (pure: no I/O)."""

    mapping: Mapping
    source: str
    _tables: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for table in ("statuses", "channels", "agencies", "procedures", "fields"):
            self._tables[table] = self.mapping.lookup(table)  # type: ignore[arg-type]
        self.zone = ZoneInfo(self.mapping.timezone)

    def column(self, name: str) -> str:
        return self.mapping.columns[name]

    def where(self, name: str) -> str:
        """How a reason names a field: the export's column and the contract field."""
        return f"{self.column(name)} ({name})" if name in self.mapping.columns else name

    def cell(self, row: Row, name: str) -> Any:
        if name not in self.mapping.columns:
            return None
        value = row.values.get(self.column(name))
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value

    def missing_columns(self, header: Sequence[str]) -> list[str]:
        present = set(header)
        return [c for c in self.mapping.columns.values() if c not in present]

    # -- cells ---------------------------------------------------------------------
    def time(self, row: Row, name: str) -> dt.datetime | None:
        value = self.cell(row, name)
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            return value if value.tzinfo is not None else value.replace(tzinfo=self.zone)
        if isinstance(value, dt.date):
            return dt.datetime.combine(value, dt.time(), tzinfo=self.zone)
        text = str(value).strip()
        for fmt in self.mapping.date_formats:
            try:
                parsed = dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
            return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=self.zone)  # a %z offset stands
        raise RowRejected(f"{self.where(name)}: not a date in the mapping's date_formats (e.g. dd/mm/yyyy hh:mm)")

    def code(self, row: Row, name: str, table: str) -> str:
        value = self.cell(row, name)
        if value is None:
            raise RowRejected(f"{self.where(name)}: empty")
        text = _cell_text(value)
        found = self._tables[table].get(normalize(text))
        if found is not None:
            return str(found)
        if re.match(CODE_PATTERN, text):
            return text
        raise RowRejected(f"{self.where(name)}: not in the mapping's {table} and not a code")

    def number(self, row: Row, name: str, table: str, *, low: int, high: int) -> int | None:
        value = self.cell(row, name)
        if value is None:
            return None
        text = _cell_text(value)
        found = self._tables[table].get(normalize(text))
        if found is not None:
            return int(found)
        if text.isdigit() and low <= int(text) <= high:
            return int(text)
        raise RowRejected(f"{self.where(name)}: not in the mapping's {table}")

    # -- the row ---------------------------------------------------------------------
    def events(self, row: Row) -> list[CloudEvent[Any]]:
        """The row's events, each checked against the contract; :class:`RowRejected` with the reason otherwise."""
        raw_code = self.cell(row, "dossier_code")
        if raw_code is None:
            raise RowRejected(f"{self.where('dossier_code')}: empty")
        code = _cell_text(raw_code)
        status = self.number(row, "status", "statuses", low=1, high=10)
        if status is None:
            raise RowRejected(f"{self.where('status')}: empty")
        received = self.time(row, "received_at")
        if received is None:
            raise RowRejected(f"{self.where('received_at')}: empty")
        due = self.time(row, "due_at")
        finished = self.time(row, "finished_at")
        updated = self.time(row, "updated_at")
        base: dict[str, Any] = {
            "dossier_code": code,
            "agency_code": self.code(row, "agency_code", "agencies"),
            "procedure_code": self.code(row, "procedure_code", "procedures"),
            "field_code": self.code(row, "field_code", "fields"),
        }
        channel = self.number(row, "channel", "channels", low=1, high=3)
        if status in NEVER_RECEIVED:
            return [self._event(base, stage="received", sequence=1, status=status, at=received)]
        receipt: dict[str, Any] = {"received_at": received.isoformat()}
        if channel is not None:
            receipt["channel"] = channel
        later: dict[str, Any] = {}
        if due is not None:
            receipt["due_at"] = later["due_at"] = due.isoformat()
        events = [self._event(base | receipt, stage="received", sequence=1, status=2, at=received)]
        if status in OPEN_STATUSES:
            if status != 4 and updated is None:
                raise RowRejected(f"{self.where('updated_at')}: needed when the status is 5 or 6 (the pause's day)")
            events.append(self._event(base | later, stage=f"status:{status}", sequence=2, status=status,
                                      at=updated or received))
        elif status in END_STATUSES:
            ended = finished or (updated if status in (7, 8) else None)
            if ended is None:
                raise RowRejected(f"{self.where('finished_at')}: needed when the status ends the dossier")
            events.append(self._event(base | later, stage=f"end:{status}", sequence=3, status=status, at=ended))
        return events

    def _event(self, data: dict[str, Any], *, stage: str, sequence: int, status: int,
               at: dt.datetime) -> CloudEvent[Any]:
        body = {
            "specversion": "1.0",
            "id": f"{data['dossier_code']}:{stage}",
            "source": self.source,
            "type": DOSSIER_TYPE,
            "time": at.isoformat(),
            "subject": data["dossier_code"],
            "datacontenttype": "application/json",
            "data": data | {"sequence": sequence, "status": status, "occurred_at": at.isoformat()},
        }
        try:
            return parse_event(json.dumps(body), accept={DOSSIER_TYPE})
        except EventRejected as exc:
            raise RowRejected(self._in_columns(exc.reason)) from None

    def _in_columns(self, reason: str) -> str:
        """A contract reason with each ``data.<field>`` it names followed by the export's column."""
        for name, column in self.mapping.columns.items():
            named = f"data.{name} (column {column})"
            reason = re.sub(rf"\bdata\.{name}\b", lambda _, named=named: named, reason)  # a column's name as is
        return reason


def _cell_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# -- the import ----------------------------------------------------------------------------------------------------


@dataclass
class Summary:
    imported: int = 0  # rows with at least one event stored now
    present: int = 0  # rows whose every event was already there
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row number, reason)

    def text(self, *, dry_run: bool) -> str:
        verb = "would import" if dry_run else "imported"
        return (f"{verb} {self.imported} row(s), {self.present} already present, {len(self.rejected)} rejected")


Publish = Callable[[Sequence[CloudEvent[Any]]], Any]  # async: per event, whether the broker already held it


def rejected_file(path: Path) -> Path:
    return path.with_name(path.name + ".rejected.csv")


def convert_file(path: Path, mapping: Mapping, *, source: str, progress: bool = False
                 ) -> tuple[list[tuple[int, list[CloudEvent[Any]]]], list[tuple[int, str]]]:
    """(each good row's number and events, each rejected row's number and reason)."""
    converter = Converter(mapping, source)
    header, rows, total = read_rows(path, mapping)
    missing = converter.missing_columns(header)
    if missing:
        raise MappingError(f"{path}: the header (row {mapping.header_row}) lacks the mapping's column(s) "
                           f"{', '.join(missing)}")
    good: list[tuple[int, list[CloudEvent[Any]]]] = []
    bad: list[tuple[int, str]] = []
    seen: dict[str, int] = {}
    for row in _progress(rows, total=total, unit="row", desc="reading", enabled=progress):
        try:
            events = converter.events(row)
        except RowRejected as exc:
            bad.append((row.number, exc.reason))
            continue
        code = events[0].data.dossier_code
        if code in seen:
            bad.append((row.number, f"{converter.where('dossier_code')}: the same dossier as row {seen[code]}"))
            continue
        seen[code] = row.number
        good.append((row.number, events))
    return good, bad


async def import_rows(
    rows: Sequence[tuple[int, list[CloudEvent[Any]]]],
    *,
    known: set[tuple[str, str]],
    publish: Publish | None,
    progress: bool = False,
) -> Summary:
    """Publish the events not ``known`` to be stored already (``publish`` None: a dry run) and count rows by
    outcome."""
    summary = Summary()
    fresh = [e for _, events in rows for e in events if (e.source, e.id) not in known]
    duplicates: set[tuple[str, str]] = set()
    if publish is not None:
        bar = _progress(None, total=len(fresh), unit="event", desc="publishing", enabled=progress)
        try:
            for start in range(0, len(fresh), PUBLISH_WINDOW):
                chunk = fresh[start : start + PUBLISH_WINDOW]
                held = await publish(chunk)
                duplicates |= {(e.source, e.id) for e, dup in zip(chunk, held, strict=True) if dup}
                bar.update(len(chunk))
        finally:
            bar.close()  # cleared also when publishing stops: the refusal then starts a line of its own
    for _, events in rows:
        new = [e for e in events if (e.source, e.id) not in known and (e.source, e.id) not in duplicates]
        if new:
            summary.imported += 1
        else:
            summary.present += 1
    return summary


def write_rejected(path: Path, rejected: Sequence[tuple[int, str]]) -> Path:
    out = rejected_file(path)
    with out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "reason"])
        for number, reason in sorted(rejected):
            writer.writerow([number, safe_text(reason, limit=1000)])
    return out


def _progress(items: Any, *, total: int | None, unit: str, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    # disable=None: drawn only on a terminal; a pipe or a log file gets the summary alone.
    return tqdm(items, total=total, unit=unit, desc=desc, file=sys.stderr, disable=None if enabled else True,
                leave=False)


# -- the command ----------------------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    cmd = sub.add_parser("import", help="import a one-stop-shop system's dossier export (XLSX or CSV) as events")
    cmd.add_argument("file", type=Path, help="the export, .xlsx or .csv")
    cmd.add_argument("--mapping", type=Path, required=True, help="YAML mapping of columns and values (docs/import.md)")
    cmd.add_argument("--source", required=True, help="the CloudEvents source of the events (the system exported)")
    cmd.add_argument("--dry-run", action="store_true", help="check and count, publish nothing")
    cmd.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from services.dossier_tracker.api_keys import check_source

    try:
        check_source(args.source)
        mapping = load_mapping(args.mapping)
        good, bad = convert_file(args.file, mapping, source=args.source, progress=True)
        out = write_rejected(args.file, bad)  # found before anything is published: written whatever comes next
    except (MappingError, ValueError, OSError) as exc:
        print(f"parwatch import: {exc}", file=sys.stderr)
        return 2
    try:
        summary = asyncio.run(_import(good, dry_run=args.dry_run))
    except (NatsUnreachable, TrackerUnreadable) as exc:
        print(f"parwatch import: {exc}", file=sys.stderr)
        if bad:
            print(f"rejected rows and reasons: {out}")
        return 1
    summary.rejected = bad
    print(summary.text(dry_run=args.dry_run))
    if bad:
        print(f"rejected rows and reasons: {out}")
    return 0


async def _import(rows: Sequence[tuple[int, list[CloudEvent[Any]]]], *, dry_run: bool) -> Summary:
    from shared.settings import CommonSettings

    common = CommonSettings()
    keys = [(e.source, e.id) for _, events in rows for e in events]
    known = _stored_already(common.database_url_for("dossier_tracker"), keys)  # before NATS: said first
    if dry_run:
        return await import_rows(rows, known=known, publish=None, progress=True)
    import nats
    from nats.errors import Error as NatsError

    async def quiet(exc: Exception) -> None:  # one refusal below says it, not a traceback a try
        return None

    try:
        nc = await nats.connect(common.nats_servers(), connect_timeout=5, max_reconnect_attempts=1,
                                reconnect_time_wait=1, error_cb=quiet, **common.nats_auth().connect_options())
    except (NatsError, OSError, TimeoutError) as exc:
        raise NatsUnreachable(f"cannot reach NATS at {common.nats_url} ({type(exc).__name__}); run it again once "
                              "NATS answers (what was published is not sent twice)") from None
    try:
        js = nc.jetstream()
        return await import_rows(rows, known=known, publish=lambda chunk: _publish(js, chunk), progress=True)
    except (NatsError, TimeoutError) as exc:  # JetStream refused or stopped answering part way
        raise NatsUnreachable(f"JetStream did not store every event ({type(exc).__name__}); run it again once "
                              "NATS answers (what was published is not sent twice)") from None
    finally:
        await nc.close()


class NatsUnreachable(ConnectionError):
    """NATS does not answer: nothing more is published."""


class TrackerUnreadable(ConnectionError):
    """The tracker's database does not answer: what is new cannot be told, nothing is published."""


def _stored_already(database_url: str, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """(source, id) of the events the tracker already stored, among ``keys`` (none if it never ran)."""
    from sqlalchemy import inspect, select, tuple_
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from services.dossier_tracker.store import EVENTS
    from shared.db import make_engine

    try:
        shown = make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        shown = "PARWATCH_DATABASE_URL (not a database URL)"

    try:
        engine = make_engine(database_url)
        try:
            if not inspect(engine).has_table(EVENTS.name):
                return set()
            found: set[tuple[str, str]] = set()
            with engine.connect() as conn:
                for start in range(0, len(keys), 400):
                    chunk = keys[start : start + 400]
                    rows = conn.execute(select(EVENTS.c.source, EVENTS.c.event_id).where(
                        tuple_(EVENTS.c.source, EVENTS.c.event_id).in_(chunk)))
                    found |= {(r[0], r[1]) for r in rows}
            return found
        finally:
            engine.dispose()
    except SQLAlchemyError as exc:
        raise TrackerUnreadable(
            f"cannot read the tracker's database at {shown} ({type(exc).__name__}); check PARWATCH_DATABASE_URL "
            "(or PARWATCH_DATA_DIR) and that the database answers") from None


async def _publish(js: Any, events: Sequence[CloudEvent[Any]]) -> list[bool]:
    """Publish on the input subject, every ack awaited; per event, whether the broker already held it."""
    from shared.events import CONTENT_TYPE, encode
    from shared.publishing import source_scoped_id
    from shared.streams import DOSSIER_EVENTS, stream_for

    stream = stream_for(DOSSIER_EVENTS).name
    acks = await asyncio.gather(*(
        js.publish(DOSSIER_EVENTS, encode(e), stream=stream,
                   headers={"Content-Type": CONTENT_TYPE, "Nats-Msg-Id": source_scoped_id(e)})
        for e in events
    ))
    return [bool(a.duplicate) for a in acks]
