"""The procedure catalog: which administrative procedures each agency handles, which of them are eligible to be
offered as full online public services (dịch vụ công trực tuyến toàn trình), and which are offered so.

Plan 146's target "100% of eligible procedures provided as full online public services" is a share of
*procedures*, not of dossiers: :func:`online_service_counts` gives, per agency, the eligible procedures and those
offered fully online; the board turns them into ``online_service_ratio``. The share of dossiers filed online stays
a figure of its own (``online_filing_ratio``).

The file is CSV, UTF-8, one procedure per line after a header (docs/scoring.md, "The procedure catalog")::

    code,name,field,agency,level,eligible_full_online,offered_full_online
    1.001234,Đăng ký khai sinh,HT,XA_VINH_TAN,commune,yes,yes

Every error is reported, one per line, as ``FILE:LINE: column: message``, and the service refuses to start on any.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: The shipped sample: synthetic, a few procedures per unit of Tuy Phong (not the province's catalog).
SAMPLE_CATALOG = Path(__file__).resolve().parent / "data" / "procedure_catalog_tuy_phong_sample.csv"

COLUMNS = ("code", "name", "field", "agency", "level", "eligible_full_online", "offered_full_online")
LEVELS = ("district", "commune")
_YES = {"yes": True, "no": False, "có": True, "không": False}
_CODE = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")


@dataclass(frozen=True)
class Procedure:
    code: str  # MaTTHC
    name: str
    field_code: str  # MaLinhVuc
    agency_code: str  # the unit that handles it (a code of the agency directory)
    level: str  # district | commune
    eligible_full_online: bool  # meets the conditions to be a full online public service
    offered_full_online: bool  # offered as one (dịch vụ công trực tuyến toàn trình)


class CatalogError(ValueError):
    """An invalid catalog file; ``errors`` lists every problem as ``FILE:LINE: column: message``."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("invalid procedure catalog:\n" + "\n".join(self.errors))


def load_procedure_catalog(path: Path, *, agencies: Collection[str] | None = None) -> tuple[Procedure, ...]:
    """The procedures of the CSV file at ``path``; ``agencies``: the codes an ``agency`` may take (None: any)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError([f"{path}: cannot read the catalog: {exc}"]) from exc
    return parse_procedure_catalog(text.splitlines(), source=str(path), agencies=agencies)


def parse_procedure_catalog(
    lines: Iterable[str], *, source: str, agencies: Collection[str] | None = None
) -> tuple[Procedure, ...]:
    errors: list[str] = []
    out: list[Procedure] = []
    seen: dict[tuple[str, str], int] = {}
    reader = csv.reader(lines)
    header = next(reader, None)
    if header is None:
        raise CatalogError([f"{source}:1: the file is empty: a header line ({','.join(COLUMNS)}) comes first"])
    names = [h.strip() for h in header]
    if tuple(names) != COLUMNS:
        raise CatalogError([f"{source}:1: header: the columns are {','.join(COLUMNS)} in this order,"
                            f" found {','.join(names)[:200]}"])
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(COLUMNS):
            errors.append(f"{source}:{line}: row: {len(COLUMNS)} columns expected, found {len(row)}")
            continue
        cells = dict(zip(COLUMNS, (c.strip() for c in row), strict=True))
        problems: list[str] = []
        for column in ("code", "field", "agency"):
            if not _CODE.match(cells[column]):
                problems.append(f"{column}: 1 to 64 of A-Z a-z 0-9 . _ / -")
        if not cells["name"] or len(cells["name"]) > 500 or any(ord(ch) < 32 for ch in cells["name"]):
            problems.append("name: one line of 1 to 500 characters")
        if cells["level"] not in LEVELS:
            problems.append(f"level: one of {', '.join(LEVELS)}")
        flags = {}
        for column in ("eligible_full_online", "offered_full_online"):
            value = _YES.get(cells[column].lower())
            if value is None:
                problems.append(f"{column}: yes or no")
            flags[column] = value
        if flags["offered_full_online"] and flags["eligible_full_online"] is False:
            problems.append("offered_full_online: yes for a procedure not eligible_full_online")
        if agencies is not None and _CODE.match(cells["agency"]) and cells["agency"] not in agencies:
            problems.append("agency: not a unit of the agency directory")
        key = (cells["code"], cells["agency"])
        if key in seen and not problems:
            problems.append(f"code: procedure {cells['code']} of {cells['agency']} is also on line {seen[key]}")
        errors += [f"{source}:{line}: {p}" for p in problems]
        if problems:
            continue
        seen[key] = line
        out.append(Procedure(code=cells["code"], name=cells["name"], field_code=cells["field"],
                             agency_code=cells["agency"], level=cells["level"],
                             eligible_full_online=bool(flags["eligible_full_online"]),
                             offered_full_online=bool(flags["offered_full_online"])))
    if errors:
        raise CatalogError(errors)
    return tuple(out)


def online_service_counts(procedures: Iterable[Procedure]) -> dict[str, Counter[str]]:
    """agency -> ``procedures_eligible`` and ``procedures_online`` (eligible and offered as full online services).
    An agency with no eligible procedure has no count (its share has no value)."""
    out: dict[str, Counter[str]] = {}
    for p in procedures:
        if not p.eligible_full_online:
            continue
        counts = out.setdefault(p.agency_code, Counter())
        counts["procedures_eligible"] += 1
        if p.offered_full_online:
            counts["procedures_online"] += 1
    return out
