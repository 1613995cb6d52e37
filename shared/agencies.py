"""The agency directory: the one list of units every service knows, and the ``unknown`` label.

Events name their unit by ``agency_code``, a string the sender chooses. Only
the codes of the operator's directory may become a metric label, a route or
a name in a message: any other code is stored and counted as sent, but shown
everywhere as the one value :data:`UNKNOWN` (:meth:`AgencyDirectory.label`),
so a sender inventing thousands of codes cannot multiply series, reach an
official, or put its text into an e-mail.

The directory is ``shared/data/agencies.yaml`` (Tuy Phong's units), which an
operator may replace (``PARWATCH_AGENCIES_FILE``) and extend with a file of
their own (``PARWATCH_AGENCIES_EXTRA``, holding only an ``agencies:`` list)::

    district: {code: TUY_PHONG, name: Ủy ban nhân dân huyện Tuy Phong}
    agencies:
      - {code: PTP, kind: department, name: Phòng Tư pháp}

Codes are upper-case ASCII identifiers (``^[A-Z][A-Z0-9_]*$``, at most 64
characters), so no directory code can ever read ``unknown``. Every service
loads it the same way (:class:`AgencySettings`, read once in ``create_app``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_FILE = Path(__file__).parent / "data" / "agencies.yaml"

#: The label value of every agency code outside the directory.
UNKNOWN = "unknown"
#: How messages and reports name :data:`UNKNOWN` (Vietnamese, for officials).
UNKNOWN_NAME = "Đơn vị không có trong danh mục"

Kind = Literal["department", "commune"]
_GROUP_KIND = {"departments": "department", "communes": "commune"}
AgencyCode = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$", max_length=64)]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class _AgencyRow(_Frozen):
    code: AgencyCode
    kind: Kind
    name: str = Field(min_length=1, max_length=200)


class _District(_Frozen):
    code: AgencyCode
    name: str = Field(min_length=1, max_length=200)


class _AgenciesFile(_Frozen):
    district: _District
    agencies: tuple[_AgencyRow, ...] = Field(min_length=1)


class _ExtraFile(_Frozen):
    """An operator's extension: more units of the same district (the district stays the main file's)."""

    agencies: tuple[_AgencyRow, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Agency:
    code: str
    kind: str
    name: str


@dataclass(frozen=True)
class AgencyDirectory:
    """The district and its units, in file order (the main file's, then the extra file's)."""

    district_code: str
    district_name: str
    agencies: tuple[Agency, ...]

    @cached_property
    def codes(self) -> frozenset[str]:
        """The units' codes (not the district's)."""
        return frozenset(a.code for a in self.agencies)

    @cached_property
    def _names(self) -> dict[str, str]:
        return {a.code: a.name for a in self.agencies} | {self.district_code: self.district_name}

    def known(self, code: str) -> bool:
        """A unit of the directory, or the district itself."""
        return code in self._names

    def label(self, code: str) -> str:
        """What a metric label, a route or a message may show of ``code``: itself if known, else ``unknown``."""
        return code if code in self._names else UNKNOWN

    def name(self, code: str) -> str:
        """The display name of a known code; :data:`UNKNOWN_NAME` for any other (never the code itself)."""
        return self._names.get(code, UNKNOWN_NAME)

    def names(self) -> dict[str, str]:
        """{code: display name} of the units and the district."""
        return dict(self._names)

    def members(self, group: str) -> tuple[str, ...]:
        """Codes of a group: ``all``, ``departments`` or ``communes``."""
        kind = _GROUP_KIND.get(group)
        if group != "all" and kind is None:
            raise ValueError(f"unknown owner group {group!r}")
        return tuple(a.code for a in self.agencies if group == "all" or a.kind == kind)

    def unknown_among(self, codes: Iterable[str]) -> list[str]:
        """The codes of ``codes`` outside the directory, sorted, each once."""
        return sorted({c for c in codes if c not in self._names})


def _rows(raw: Iterable[_AgencyRow]) -> tuple[Agency, ...]:
    return tuple(Agency(code=r.code, kind=r.kind, name=r.name) for r in raw)


def _check_unique(agencies: Sequence[Agency], district_code: str, *, source: str) -> None:
    codes = [a.code for a in agencies]
    duplicated = sorted({c for c in codes if codes.count(c) > 1} | ({district_code} & set(codes)))
    if duplicated:
        raise ValueError(f"{source}: codes used twice: {', '.join(duplicated)}")


def parse_agencies(text: str, *, source: str = "<agencies>", extra: str | None = None,
                   extra_source: str = "<extra agencies>") -> AgencyDirectory:
    """The directory from a main file's text and, optionally, an extra file's; ``ValueError`` naming the file."""
    try:
        main = _AgenciesFile.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise ValueError(f"{source}: not a valid agencies file: {exc}") from None
    rows = _rows(main.agencies)
    _check_unique(rows, main.district.code, source=source)
    if extra is not None:
        try:
            more = _ExtraFile.model_validate(yaml.safe_load(extra))
        except (yaml.YAMLError, ValidationError) as exc:
            raise ValueError(f"{extra_source}: not a valid extra agencies file: {exc}") from None
        rows += _rows(more.agencies)
        _check_unique(rows, main.district.code, source=f"{source} with {extra_source}")
    return AgencyDirectory(district_code=main.district.code, district_name=main.district.name, agencies=rows)


def load_agencies(path: str | Path | None = None, *, extra: str | Path | None = None) -> AgencyDirectory:
    """The directory at ``path`` (default: ``shared/data/agencies.yaml``), extended by the file ``extra``."""
    main = Path(path or DEFAULT_FILE)
    more = Path(extra) if extra else None
    return parse_agencies(
        main.read_text(encoding="utf-8"),
        source=str(main),
        extra=more.read_text(encoding="utf-8") if more else None,
        extra_source=str(more),
    )


class AgencySettings(BaseSettings):
    """Where the directory comes from (env prefix ``PARWATCH_``), the same for every service."""

    model_config = SettingsConfigDict(env_prefix="PARWATCH_", extra="ignore", frozen=True)

    agencies_file: Path | None = Field(default=None, description="agencies YAML replacing shared/data/agencies.yaml")
    agencies_extra: Path | None = Field(default=None, description="agencies YAML adding units to the directory")

    def load(self, *, override: Path | None = None) -> AgencyDirectory:
        """The directory; ``override`` (a service's own older ``agencies_file`` setting) wins over
        ``PARWATCH_AGENCIES_FILE``."""
        for path in (override, self.agencies_file, self.agencies_extra):
            if path is not None and not path.is_file():
                raise ValueError(f"agencies file {path} does not exist")
        return load_agencies(override or self.agencies_file, extra=self.agencies_extra)

