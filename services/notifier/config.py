"""The directory and routes file: loaded and validated at start, with clear errors.

Every problem is reported at once, each naming the file, the line and the
field, e.g. ``directory.yaml:14: agencies[1].officials[0].role: Input should
be 'officer', 'head' or 'district_leadership'``. Agency codes must be those of
the agency directory (``shared.agencies``: ``shared/data/agencies.yaml`` and
the operator's extension); display names come from there.

``technical_desk`` lists the official ids that hear of ``unknown_agency``
alerts and of every alert for a code outside the directory (nobody else
does, whatever the routes say). Without it, the official ids a
``deadletter`` route names are the desk.

``inhibit_rules`` are Alertmanager's (``domain.inhibit``); without the key,
:data:`~services.notifier.domain.inhibit.DEFAULT_INHIBIT_RULES` apply, and
``inhibit_rules: []`` turns inhibition off.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from services.notifier.domain.inhibit import DEFAULT_INHIBIT_RULES, InhibitRule, parse_matcher
from services.notifier.domain.model import ROLES, Directory, Match, Official, Route, parse_duration
from services.notifier.settings import is_loopback_host
from shared.agencies import DEFAULT_FILE, AgencyDirectory, load_agencies
from shared.events import ALERT_KINDS

AGENCIES_FILE = DEFAULT_FILE

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")
Ident = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Duration = Annotated[str | int | float, Field(union_mode="left_to_right")]


class ConfigError(ValueError):
    """The directory file is not valid; ``problems`` are ``file:line: field: message`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid notifier directory:\n  " + "\n  ".join(self.problems))


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OfficialSpec(_Spec):
    id: Ident
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    role: Literal["officer", "head", "district_leadership"]
    email: str | None = None
    webhook: str | None = None
    direct_only: bool = False

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        if v is not None and not _EMAIL.match(v):
            raise ValueError("not an e-mail address")
        return v

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("a webhook is an https:// URL")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("a webhook must use https:// (plain http only on a loopback address)")
        return v


class AgencySpec(_Spec):
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    officials: list[OfficialSpec] = Field(default_factory=list)


class MatchSpec(_Spec):
    kind: list[str] = Field(default_factory=list)
    severity: list[Literal["info", "warning", "critical"]] = Field(default_factory=list)
    agency: list[str] = Field(default_factory=list)


class RouteSpec(_Spec):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Ident
    match: MatchSpec = Field(default_factory=MatchSpec)
    receivers: list[str] = Field(min_length=1)
    continue_: bool = Field(default=False, alias="continue")
    escalate: bool = True
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None

    @field_validator("group_wait", "group_interval", "repeat_interval")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        if v is not None:
            parse_duration(v)
        return v


class InhibitRuleSpec(_Spec):
    name: Ident
    source_matchers: list[str] = Field(min_length=1)
    target_matchers: list[str] = Field(min_length=1)
    equal: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = Field(default_factory=list)
    receivers: list[str] = Field(default_factory=list)

    @field_validator("source_matchers", "target_matchers")
    @classmethod
    def _matchers(cls, v: list[str]) -> list[str]:
        for text in v:
            parse_matcher(text)
        return v


class DirectorySpec(_Spec):
    version: Literal[1] = 1
    agencies: list[AgencySpec] = Field(min_length=1)
    technical_desk: list[Ident] = Field(default_factory=list)
    routes: list[RouteSpec] = Field(min_length=1)
    inhibit_rules: list[InhibitRuleSpec] | None = None


def agency_names(agencies: AgencyDirectory) -> tuple[str, str, dict[str, str]]:
    """(district code, district name, {agency code: display name}) of the agency directory."""
    return agencies.district_code, agencies.district_name, agencies.names()


def load_agency_names(path: Path = AGENCIES_FILE) -> tuple[str, str, dict[str, str]]:
    """(district code, district name, {agency code: display name}) from an agencies file."""
    return agency_names(load_agencies(path))


def load_directory(
    path: Path, *, agencies_file: Path = AGENCIES_FILE, agencies: AgencyDirectory | None = None
) -> Directory:
    """The directory file at ``path`` against ``agencies`` (default: the agencies file ``agencies_file``)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the file ({exc.strerror or exc})"]) from None
    return parse_directory(text, source=str(path), agencies_file=agencies_file, agencies=agencies)


def parse_directory(
    text: str,
    *,
    source: str = "<directory>",
    agencies_file: Path = AGENCIES_FILE,
    agencies: AgencyDirectory | None = None,
) -> Directory:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError([f"{source}{where}: not valid YAML: {problem}"]) from None
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}:1: the file must be a mapping with agencies and routes"])
    try:
        spec = DirectorySpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = tuple(err["loc"])
            problems.append(f"{source}:{_line(root, loc)}: {_path(loc)}: {err['msg']}")
        raise ConfigError(problems) from None
    district_code, district_name, names = agency_names(agencies or load_agencies(agencies_file))
    problems = [f"{source}:{_line(root, loc)}: {_path(loc)}: {msg}" for loc, msg in _cross_check(spec, names)]
    if problems:
        raise ConfigError(problems)
    return _to_domain(spec, names, district_code, district_name)


def _cross_check(spec: DirectorySpec, names: dict[str, str]) -> list[tuple[tuple[Any, ...], str]]:
    out: list[tuple[tuple[Any, ...], str]] = []
    known = sorted(names)
    seen_agencies: dict[str, int] = {}
    seen_ids: dict[str, tuple[Any, ...]] = {}
    for i, agency in enumerate(spec.agencies):
        if agency.code not in names:
            out.append((("agencies", i, "code"),
                        f"unknown agency code {agency.code!r}; known codes: {', '.join(known)}"))
        if agency.code in seen_agencies:
            out.append((("agencies", i, "code"),
                        f"agency {agency.code!r} is listed twice (also agencies[{seen_agencies[agency.code]}])"))
        seen_agencies.setdefault(agency.code, i)
        for j, o in enumerate(agency.officials):
            loc = ("agencies", i, "officials", j)
            if o.id in ROLES:
                out.append(((*loc, "id"), f"{o.id!r} is a role name; choose another id"))
            if o.id in seen_ids:
                out.append(((*loc, "id"), f"official id {o.id!r} is used twice (also {_path(seen_ids[o.id])})"))
            seen_ids.setdefault(o.id, loc)
            if not o.email and not o.webhook:
                out.append((loc, "an official needs an email or a webhook"))
    for j, desk in enumerate(spec.technical_desk):
        if desk not in seen_ids:
            out.append((("technical_desk", j), f"{desk!r} is not an official id of this file"))
    route_names: set[str] = set()
    for i, r in enumerate(spec.routes):
        if r.name in route_names:
            out.append((("routes", i, "name"), f"route name {r.name!r} is used twice"))
        route_names.add(r.name)
        for j, kind in enumerate(r.match.kind):
            if kind not in ALERT_KINDS:
                out.append((("routes", i, "match", "kind", j),
                            f"unknown alert kind {kind!r}; known kinds: {', '.join(ALERT_KINDS)}"))
        for j, code in enumerate(r.match.agency):
            if code not in names:
                out.append((("routes", i, "match", "agency", j), f"unknown agency code {code!r}"))
        for j, receiver in enumerate(r.receivers):
            if receiver not in ROLES and receiver not in seen_ids:
                out.append((("routes", i, "receivers", j),
                            f"{receiver!r} is neither a role ({', '.join(ROLES)}) nor an official id of this file"))
    out += _check_inhibit_rules(spec, set(seen_ids))
    return out


def _check_inhibit_rules(spec: DirectorySpec, official_ids: set[str]) -> list[tuple[tuple[Any, ...], str]]:
    """Unique names, known kinds in ``kind="..."`` matchers, receivers that exist."""
    out: list[tuple[tuple[Any, ...], str]] = []
    names: set[str] = set()
    for i, rule in enumerate(spec.inhibit_rules or ()):
        if rule.name in names:
            out.append((("inhibit_rules", i, "name"), f"inhibit rule name {rule.name!r} is used twice"))
        names.add(rule.name)
        for side in ("source_matchers", "target_matchers"):
            for j, text in enumerate(getattr(rule, side)):
                m = parse_matcher(text)
                if m.name == "kind" and m.op in ("=", "!=") and m.value not in ALERT_KINDS:
                    out.append((("inhibit_rules", i, side, j),
                                f"unknown alert kind {m.value!r}; known kinds: {', '.join(ALERT_KINDS)}"))
        for j, receiver in enumerate(rule.receivers):
            if receiver not in ROLES and receiver not in official_ids:
                out.append((("inhibit_rules", i, "receivers", j),
                            f"{receiver!r} is neither a role ({', '.join(ROLES)}) nor an official id of this file"))
    return out


def _inhibit_rules(spec: DirectorySpec) -> tuple[InhibitRule, ...]:
    if spec.inhibit_rules is None:
        return DEFAULT_INHIBIT_RULES
    return tuple(
        InhibitRule(name=r.name, source=tuple(parse_matcher(m) for m in r.source_matchers),
                    target=tuple(parse_matcher(m) for m in r.target_matchers), equal=tuple(r.equal),
                    receivers=frozenset(r.receivers))
        for r in spec.inhibit_rules
    )


def _to_domain(spec: DirectorySpec, names: dict[str, str], district_code: str, district_name: str) -> Directory:
    officials = {
        o.id: Official(id=o.id, agency_code=a.code, role=o.role, title=o.name, email=o.email, webhook=o.webhook,
                        direct_only=o.direct_only)
        for a in spec.agencies
        for o in a.officials
    }
    routes = tuple(
        Route(
            name=r.name,
            match=Match(kinds=frozenset(r.match.kind), severities=frozenset(r.match.severity),
                        agencies=frozenset(r.match.agency)),
            receivers=tuple(r.receivers),
            continue_=r.continue_,
            escalate=r.escalate,
            group_wait=None if r.group_wait is None else parse_duration(r.group_wait),
            group_interval=None if r.group_interval is None else parse_duration(r.group_interval),
            repeat_interval=None if r.repeat_interval is None else parse_duration(r.repeat_interval),
        )
        for r in spec.routes
    )
    return Directory(officials=officials, routes=routes, agency_names=names, district_code=district_code,
                     district_name=district_name, technical_desk=_technical_desk(spec),
                     inhibit_rules=_inhibit_rules(spec))


def _technical_desk(spec: DirectorySpec) -> tuple[str, ...]:
    """The ids of ``technical_desk``, else the official ids (not roles) the ``deadletter`` routes name."""
    if spec.technical_desk:
        return tuple(dict.fromkeys(spec.technical_desk))
    named = [x for r in spec.routes if "deadletter" in r.match.kind for x in r.receivers if x not in ROLES]
    return tuple(dict.fromkeys(named))


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = "continue" if part == "continue_" else str(part)
            out += f".{name}" if out else name
    return out or "file"


def _line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The line (1-based) of the deepest YAML node on ``loc``."""
    if node is None:
        return 1
    line = node.start_mark.line + 1
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == ("continue" if part == "continue_" else part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line
