"""The monthly report table: every agency's figures for a period, as CSV or XLSX; and the weekly review's table
(late and overdue dossiers per agency and field, and inter-agency dossiers: :mod:`services.scoring.review`).

One row per agency of the directory (in its order; an agency without data in
the period has empty ratios), then any agency seen only in the data, then the
district roll-up. Ratios are shares between 0 and 1 (formatted as percent in
XLSX); an empty cell means "no value" (no dossier), never 0.

A text cell holds a code that came in an event or a name from the operator's
directory: it is made safe to show (:func:`shared.text.safe_text`) and, if
it begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, gets a
leading single quote, as OWASP recommends against formula injection ("CSV
injection"); in XLSX it is written as a string, never a formula. Numeric
cells are numbers, negative ones included, and are left as they are.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from services.scoring.board import Directory, PeriodTable
from services.scoring.domain import Figures
from services.scoring.review import FieldRow, Review, ReviewFigures
from shared.text import safe_text

#: What makes a spreadsheet read a cell as a formula (OWASP, CSV injection).
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
_TEXT_CELL = 200  # characters of a text cell


@dataclass(frozen=True)
class Column:
    key: str
    header: str  # Vietnamese, for officials
    kind: str  # text | count | ratio | points
    get: Callable[[Figures], object]


def _points(part: str) -> Callable[[Figures], object]:
    def get(f: Figures) -> object:
        return next(p.points for p in f.index if p.part == part)

    return get


COLUMNS: tuple[Column, ...] = (
    Column("ended_early", "Kết thúc trước hạn", "count", lambda f: f.ended_early),
    Column("ended_on_time", "Kết thúc đúng hạn", "count", lambda f: f.ended_on_time),
    Column("ended_late", "Kết thúc trễ hạn", "count", lambda f: f.ended_late),
    Column("ended_unclassified", "Kết thúc chưa có hạn trả", "count", lambda f: f.ended_unclassified),
    Column("open", "Đang giải quyết cuối kỳ", "count", lambda f: f.open),
    Column("overdue", "Quá hạn cuối kỳ", "count", lambda f: f.overdue),
    Column("on_time_ratio", "Tỷ lệ đúng hạn", "ratio", lambda f: f.on_time_ratio),
    Column("received", "Hồ sơ tiếp nhận", "count", lambda f: f.received),
    Column("online_filing_ratio", "Tỷ lệ nộp trực tuyến", "ratio", lambda f: f.online_filing_ratio),
    Column("online_payment_ratio", "Tỷ lệ thanh toán trực tuyến", "ratio", lambda f: f.online_payment_ratio),
    Column("digitized_ratio", "Tỷ lệ số hóa", "ratio", lambda f: f.digitized_ratio),
    Column("national_sync_ratio", "Tỷ lệ đồng bộ Cổng DVC quốc gia", "ratio", lambda f: f.national_sync_ratio),
    Column("rated", "Hồ sơ được đánh giá", "count", lambda f: f.rated),
    Column("satisfaction_ratio", "Tỷ lệ hài lòng", "ratio", lambda f: f.satisfaction_ratio),
    Column("tasks_done", "Nhiệm vụ hoàn thành đúng hạn", "count", lambda f: f.tasks_done),
    Column("tasks_done_late", "Nhiệm vụ hoàn thành trễ", "count", lambda f: f.tasks_done_late),
    Column("tasks_overdue", "Nhiệm vụ quá hạn", "count", lambda f: f.tasks_overdue),
    Column("plan_completion_ratio", "Tỷ lệ hoàn thành nhiệm vụ", "ratio", lambda f: f.plan_completion_ratio),
    Column("points_progress", "Điểm tiến độ giải quyết (20)", "points", _points("progress")),
    Column("points_handling_satisfaction", "Điểm hài lòng giải quyết TTHC (6)", "points",
           _points("handling_satisfaction")),
    Column("points_online_filing", "Điểm hồ sơ trực tuyến", "points", _points("online_filing")),
    Column("points_national_sync", "Điểm đồng bộ Cổng DVC quốc gia", "points", _points("national_sync")),
)

HEAD = (("agency_code", "Mã đơn vị"), ("agency_name", "Đơn vị"))


def report_rows(table: PeriodTable, directory: Directory) -> list[list[object]]:
    """The table's rows (agency code, name, then COLUMNS); None where there is no value."""
    order = [a.code for a in directory.agencies if a.code != directory.district_code]
    extra = sorted(a for a in table.figures if a not in order and a != directory.district_code)
    rows: list[list[object]] = []
    for code in [*order, *extra, directory.district_code]:
        f = table.figures.get(code)
        if f is None and code == directory.district_code:
            continue
        cells: list[object] = [code, directory.name(code)]
        for col in COLUMNS:
            if f is None:
                cells.append(0 if col.kind == "count" else None)
            else:
                cells.append(col.get(f))
        rows.append(cells)
    return rows


def text_cell(value: str) -> str:
    """A text cell a spreadsheet shows as text and never runs: safe to show, and with a leading single quote if
    it begins like a formula."""
    text = safe_text(value, limit=_TEXT_CELL)  # a tab or CR becomes a space; a hidden character goes
    formula_like = value.startswith(FORMULA_TRIGGERS) or text.startswith(FORMULA_TRIGGERS)
    return "'" + text if formula_like else text


def _csv_cell(value: object, kind: str) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return text_cell(value)
    if kind in ("ratio", "points") and isinstance(value, float):
        return f"{value:.4f}" if kind == "ratio" else f"{value:.2f}"
    return str(value)


def _csv(header: Sequence[str], kinds: Sequence[str], rows: Iterable[Sequence[object]]) -> bytes:
    """UTF-8 with a byte-order mark (spreadsheets then read the diacritics right); text cells formula-safe."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(v, k) for v, k in zip(row, kinds, strict=True)])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _xlsx(*, sheet: str, title: str, current: bool, as_of: dt.date, header: Sequence[str], kinds: Sequence[str],
          rows: Iterable[Sequence[object]]) -> bytes:
    """One sheet: a bold title, the as-of line, a bold header, the rows (text never a formula; ratios as %)."""
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append([title])
    ws["A1"].font = Font(bold=True)
    status = "đến hiện tại" if current else "cuối kỳ"
    ws.append([f"Số liệu {status}, tính đến ngày {as_of:%d/%m/%Y}; ô trống: không có hồ sơ để tính."])
    ws.append(list(header))
    for cell in ws[3]:
        cell.font = Font(bold=True)
    for row in rows:
        ws.append([text_cell(v) if isinstance(v, str) else v for v in row])
        for cell, kind in zip(ws[ws.max_row], kinds, strict=True):
            if isinstance(cell.value, str):
                cell.data_type = "s"  # text, never a formula, whatever it begins with
            elif kind == "ratio" and cell.value is not None:
                cell.number_format = "0.0%"
            elif kind == "points" and cell.value is not None:
                cell.number_format = "0.00"
    ws.column_dimensions["B"].width = 40
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


def _report_header() -> tuple[list[str], list[str]]:
    return [h for _, h in HEAD] + [c.header for c in COLUMNS], ["text", "text"] + [c.kind for c in COLUMNS]


def to_csv(table: PeriodTable, directory: Directory) -> bytes:
    header, kinds = _report_header()
    return _csv(header, kinds, report_rows(table, directory))


def to_xlsx(table: PeriodTable, directory: Directory) -> bytes:
    header, kinds = _report_header()
    return _xlsx(sheet=table.period.key, title=f"Kết quả giải quyết thủ tục hành chính {table.period.label_vi}",
                 current=table.current, as_of=table.as_of, header=header, kinds=kinds,
                 rows=report_rows(table, directory))


# -- the weekly review: per agency and field, and inter-agency dossiers ----------------------

REVIEW_HEAD = ("Mã đơn vị", "Đơn vị", "Nhóm", "Mã lĩnh vực")
REVIEW_COLUMNS: tuple[tuple[str, str, str], ...] = (  # (figure, header, kind)
    ("ended", "Kết thúc trong kỳ (có hạn trả)", "count"),
    ("ended_late", "Kết thúc trễ hạn", "count"),
    ("open", "Đang giải quyết cuối kỳ", "count"),
    ("overdue", "Quá hạn cuối kỳ", "count"),
    ("late_ratio", "Tỷ lệ trễ hạn", "ratio"),
)
FIELD_GROUP, INTER_AGENCY_GROUP = "Lĩnh vực", "Liên thông"


def review_rows(review: Review, directory: Directory) -> list[list[object]]:
    """Per agency (the directory's order, then codes seen only in the data, then the district): a row per field
    (capped, :mod:`services.scoring.review`), then one of its inter-agency dossiers if it has any."""
    by_agency: dict[str, list[FieldRow]] = {}
    for row in review.fields:
        by_agency.setdefault(row.agency_code, []).append(row)
    order = [a.code for a in directory.agencies if a.code != directory.district_code]
    extra = sorted(a for a in by_agency if a not in order and a != directory.district_code)
    rows: list[list[object]] = []
    for code in [*order, *extra, directory.district_code]:
        name = directory.name(code)
        for r in by_agency.get(code, ()):
            rows.append([code, name, FIELD_GROUP, r.field_code, *_review_cells(r.figures)])
        if code in review.inter_agency:
            rows.append([code, name, INTER_AGENCY_GROUP, None, *_review_cells(review.inter_agency[code])])
    return rows


def _review_cells(f: ReviewFigures) -> list[object]:
    return [getattr(f, figure) for figure, _, _ in REVIEW_COLUMNS]


def _review_header() -> tuple[list[str], list[str]]:
    header = [*REVIEW_HEAD, *(h for _, h, _ in REVIEW_COLUMNS)]
    return header, ["text"] * len(REVIEW_HEAD) + [k for _, _, k in REVIEW_COLUMNS]


def review_to_csv(review: Review, directory: Directory) -> bytes:
    header, kinds = _review_header()
    return _csv(header, kinds, review_rows(review, directory))


def review_to_xlsx(review: Review, directory: Directory) -> bytes:
    header, kinds = _review_header()
    span = review.span
    title = (f"Hồ sơ trễ hạn, quá hạn theo lĩnh vực và hồ sơ liên thông, kỳ {span.key} "
             f"({span.start:%d/%m/%Y} - {span.end:%d/%m/%Y})")
    return _xlsx(sheet=span.key, title=title, current=review.current, as_of=review.as_of, header=header,
                 kinds=kinds, rows=review_rows(review, directory))


REVIEW_FORMATS = {
    "csv": ("text/csv; charset=utf-8", review_to_csv),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", review_to_xlsx),
}


def render_review(review: Review, directory: Directory, *, fmt: str) -> tuple[str, bytes]:
    """(media type, body) of the weekly review table in ``csv`` or ``xlsx``."""
    media, fn = REVIEW_FORMATS[fmt]
    return media, fn(review, directory)


FORMATS = {
    "csv": ("text/csv; charset=utf-8", to_csv),
    "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", to_xlsx),
}


def render(table: PeriodTable, directory: Directory, *, fmt: str) -> tuple[str, bytes]:
    """(media type, body) of the report in ``csv`` or ``xlsx``."""
    media, fn = FORMATS[fmt]
    return media, fn(table, directory)
