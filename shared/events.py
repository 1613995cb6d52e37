"""The public event contract (``../shared/contract.md``) as strict pydantic models.

Every message is a CloudEvents 1.0 event in structured JSON mode. Parsing is
strict: unknown fields, naive datetimes, NaN, wrong JSON types and over-long
strings are rejected with a message that names the field and never echoes the
rejected value nor a key the sender invented (see :func:`parse_event`).

What the door lets in is what every store (SQLite, PostgreSQL) can keep and
every reader can show:

* codes (agency, procedure, field, plan, task, a dead letter's stream) are
  printable identifiers, :data:`CODE_PATTERN`: 1 to 64 ASCII letters, digits,
  ``.``, ``_``, ``/`` or ``-``, a letter or digit first;
* times carry an offset and lie in [:data:`EARLIEST`, :data:`LATEST`) (so no
  year 0001 or 9999 that overflows once moved to UTC);
* free text that is stored or shown (ids, sources, subjects, alert texts) has
  no control, format or line-separator character (:data:`TEXT_PATTERN`; a
  plan report's ``note`` may hold line breaks and tabs): PostgreSQL refuses
  NUL, and the others forge or hide text on a screen.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import ErrorDetails

from shared.text import safe_text

CONTENT_TYPE = "application/cloudevents+json"
SPECVERSION = "1.0"

#: Largest message any parwatch stream accepts (bytes).
MAX_MESSAGE_BYTES = 64 * 1024

#: A code: agency, procedure, field, plan, task, stream. Printable ASCII, a letter or digit first.
CODE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$"
#: A dossier code (MaHoSo), as the contract has always written it.
DOSSIER_CODE_PATTERN = r"^[A-Za-z0-9._/-]+$"
#: Free text: no control (Cc), format (Cf: bidirectional controls, zero-width characters) or line and paragraph
#: separator (Zl, Zp) character. Unicode categories, as :mod:`shared.text` reads them.
TEXT_PATTERN = r"^[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]*$"
#: A plan report's note: free text that may also break lines and hold tabs.
NOTE_PATTERN = r"^(?:[^\p{Cc}\p{Cf}\p{Zl}\p{Zp}]|[\t\n\r])*$"
#: ``[0-9]``, not ``\d``: pydantic's regex takes any script's digits for ``\d`` (``٢٠٢٦``, ``２０２６``).
PERIOD_PATTERN = r"^[0-9]{4}(-W(0[1-9]|[1-4][0-9]|5[0-3])|-(0[1-9]|1[0-2]))?$"
#: Times lie in [EARLIEST, LATEST): every store and every offset's arithmetic holds them.
EARLIEST = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(2100, 1, 1, tzinfo=dt.timezone.utc)

Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=CODE_PATTERN)]
DossierCode = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=DOSSIER_CODE_PATTERN)]
Period = Annotated[str, StringConstraints(pattern=PERIOD_PATTERN)]
Time = Annotated[AwareDatetime, Field(ge=EARLIEST, lt=LATEST)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=TEXT_PATTERN)]
Subject = Annotated[str, StringConstraints(max_length=256, pattern=TEXT_PATTERN)]


class Contract(BaseModel):
    """Base of every contract model: strict, closed, immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        allow_inf_nan=False,
        str_strip_whitespace=False,
        hide_input_in_errors=True,
    )


# -- vn.tthc.dossier.status_changed -------------------------------------------

DOSSIER_TYPE = "vn.tthc.dossier.status_changed"
RATING_TYPE = "vn.tthc.rating.submitted"
PLAN_TYPE = "vn.tthc.plan.task_reported"
ALERT_FIRING_TYPE = "vn.tthc.alert.firing"
ALERT_RESOLVED_TYPE = "vn.tthc.alert.resolved"
DEADLETTER_TYPE = "vn.tthc.deadletter"

# Internal facts published by parwatch's own services (additions to the contract).
DOSSIER_STATE_TYPE = "vn.parwatch.dossier.state_changed"
PLAN_TASK_STATE_TYPE = "vn.parwatch.plan.task_state_changed"

RECEIVED = 2
SUPPLEMENT = 5
FINANCIAL = 6
PAUSE_STATUSES = frozenset({SUPPLEMENT, FINANCIAL})
END_STATUSES = frozenset({3, 7, 8, 9, 10})


class StatutoryDuration(Contract):
    value: float = Field(gt=0, le=10_000)
    unit: Literal["working_days", "days", "hours"]


class DossierStatusChanged(Contract):
    dossier_code: DossierCode
    sequence: int | None = Field(default=None, ge=1, le=2**53)
    status: int = Field(ge=1, le=10)
    occurred_at: Time
    agency_code: Code
    procedure_code: Code
    field_code: Code
    received_at: Time | None = None
    due_at: Time | None = None
    statutory_duration: StatutoryDuration | None = None
    channel: int | None = Field(default=None, ge=1, le=3)
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None

    @model_validator(mode="after")
    def _received_at_with_status_2(self) -> DossierStatusChanged:
        if self.status == RECEIVED and self.received_at is None:
            raise ValueError("received_at is required when status is 2")
        return self


# -- vn.tthc.rating.submitted ---------------------------------------------------

CriterionId = Literal["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "c9"]


class RatingSubmitted(Contract):
    dossier_code: DossierCode
    agency_code: Code
    rated_at: Time
    overall: Literal["very_satisfied", "satisfied", "unsatisfied"]
    criteria: dict[CriterionId, Literal[0, 1, 2]] | None = None


# -- vn.tthc.plan.task_reported ---------------------------------------------------


class PlanTaskReported(Contract):
    plan_id: Code
    task_id: Code
    agency_code: Code
    state: Literal["done", "in_progress", "blocked"]
    reported_at: Time
    period: Period | None = None
    note: Annotated[str, StringConstraints(max_length=2000, pattern=NOTE_PATTERN)] | None = None


# -- alerts -------------------------------------------------------------------------

#: The alert kinds: a closed set (they are a metric label).
AlertKind = Literal[
    "dossier_due_soon",
    "dossier_overdue",
    "dossier_apology_due",
    "plan_task_due_soon",
    "plan_task_overdue",
    "kpi_below_target",
    "deadletter",
    "unknown_agency",
    "operator_alert",  # Prometheus's alerts, handed over by Alertmanager to the notifier's receiver
]
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)


class Alert(Contract):
    alert_key: ShortText
    kind: AlertKind
    severity: Literal["info", "warning", "critical"]
    agency_code: Code
    ref: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=TEXT_PATTERN)]
    summary: Annotated[str, StringConstraints(min_length=1, max_length=1000, pattern=TEXT_PATTERN)]
    starts_at: Time
    ends_at: Time | None = None
    labels: dict[
        Annotated[str, StringConstraints(max_length=64, pattern=TEXT_PATTERN)], Subject
    ] = Field(default_factory=dict, max_length=32)


# -- dead letters -------------------------------------------------------------------


class DeadLetter(Contract):
    stream: Code
    stream_seq: int = Field(ge=0, le=2**63 - 1)
    subject: Subject
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000, pattern=TEXT_PATTERN)]
    received_at: Time


# -- internal facts ------------------------------------------------------------------

Timeliness = Literal["early", "on_time", "late"]


class DossierStateChanged(Contract):
    """A dossier's derived state after an accepted event (dossier_tracker -> others).

    ``revision`` grows with every change of the dossier's event history, so a
    consumer keeps the snapshot with the highest revision and ignores older
    ones, whatever the arrival order.
    """

    dossier_code: DossierCode
    revision: int = Field(ge=1)
    agency_code: Code
    procedure_code: Code
    field_code: Code
    status: int = Field(ge=1, le=10)
    counted: bool  # reached status 2 (rule 1)
    received_at: Time | None = None
    receipt_day: dt.date | None = None
    due_day: dt.date | None = None
    due_from_source: bool = False
    paused: bool = False
    pause_started_on: dt.date | None = None
    supplement_requests: int = 0
    ended_on: dt.date | None = None
    end_status: int | None = None
    timeliness: Timeliness | None = None
    channel: int | None = None
    online_payment: bool | None = None
    digitized: bool | None = None
    synced_national: bool | None = None
    updated_at: Time
    #: The latest ``occurred_at`` of the events this fact follows from: its event time, where the tracker's
    #: input stands (``updated_at`` is the tracker's clock). None in facts of older trackers.
    occurred_at: Time | None = None
    #: Set on a dossier's state as it stood at the end of this local day, the last day of a month a batch of
    #: its events crossed (told for closed months, quarters and years); not its current state, which a later
    #: revision carries. None on a current state, and in facts of older trackers.
    period_end: dt.date | None = None
    #: How many times the tracker folded this dossier's history again from its start (a late event that sorts
    #: before events already folded); 0 until then, and in facts of older trackers.
    generation: int = Field(default=0, ge=0)
    #: Set on the facts of a batch that tells the dossier again from this revision on (a history folded again,
    #: or a batch delivered again): what a consumer holds of the dossier from this revision on, of an earlier
    #: generation, follows from a history without the late event and is replaced by what this batch tells.
    rewrites_from: int | None = Field(default=None, ge=1)


class PlanTaskStateChanged(Contract):
    """The state of one occurrence of a plan task (deadline_monitor -> scoring)."""

    plan_id: Code
    task_id: Code
    agency_code: Code
    period: str | None = None
    due_day: dt.date
    state: Literal["open", "done", "done_late", "overdue"]
    done_on: dt.date | None = None
    updated_at: Time


DataT = TypeVar("DataT", bound=Contract)


class CloudEvent(Contract, Generic[DataT]):
    specversion: Literal["1.0"]
    id: ShortText
    source: ShortText
    type: str
    time: Time | None = None
    subject: Subject | None = None
    datacontenttype: Literal["application/json"] | None = None
    dataschema: Annotated[str, StringConstraints(max_length=512, pattern=TEXT_PATTERN)] | None = None
    data: DataT


class DossierEvent(CloudEvent[DossierStatusChanged]):
    type: Literal["vn.tthc.dossier.status_changed"]

    @model_validator(mode="after")
    def _subject_is_code(self) -> DossierEvent:
        if self.subject != self.data.dossier_code:
            raise ValueError("subject must equal data.dossier_code")
        return self


class RatingEvent(CloudEvent[RatingSubmitted]):
    type: Literal["vn.tthc.rating.submitted"]


class PlanEvent(CloudEvent[PlanTaskReported]):
    type: Literal["vn.tthc.plan.task_reported"]


class AlertEvent(CloudEvent[Alert]):
    type: Literal["vn.tthc.alert.firing", "vn.tthc.alert.resolved"]

    @model_validator(mode="after")
    def _ends_at_on_resolved(self) -> AlertEvent:
        if self.type == ALERT_RESOLVED_TYPE and self.data.ends_at is None:
            raise ValueError("data.ends_at is required on vn.tthc.alert.resolved")
        return self


class DeadLetterEvent(CloudEvent[DeadLetter]):
    type: Literal["vn.tthc.deadletter"]


class DossierStateEvent(CloudEvent[DossierStateChanged]):
    type: Literal["vn.parwatch.dossier.state_changed"]


class PlanTaskStateEvent(CloudEvent[PlanTaskStateChanged]):
    type: Literal["vn.parwatch.plan.task_state_changed"]


ENVELOPES: dict[str, type[CloudEvent[Any]]] = {
    DOSSIER_TYPE: DossierEvent,
    RATING_TYPE: RatingEvent,
    PLAN_TYPE: PlanEvent,
    ALERT_FIRING_TYPE: AlertEvent,
    ALERT_RESOLVED_TYPE: AlertEvent,
    DEADLETTER_TYPE: DeadLetterEvent,
    DOSSIER_STATE_TYPE: DossierStateEvent,
    PLAN_TASK_STATE_TYPE: PlanTaskStateEvent,
}

_ADAPTERS = {t: TypeAdapter(model) for t, model in ENVELOPES.items()}


def types_of(envelope: type[CloudEvent[Any]]) -> frozenset[str]:
    """The CloudEvents ``type`` values an envelope model takes."""
    return frozenset(t for t, model in ENVELOPES.items() if model is envelope)


class EventRejected(ValueError):
    """A message that cannot be accepted; ``reason`` is safe to log and publish."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: What a pattern asks for, in words (a reason never prints a regular expression).
PATTERN_WORDS = {
    CODE_PATTERN: "must be a code: 1 to 64 letters, digits, '.', '_', '/' or '-', a letter or digit first",
    DOSSIER_CODE_PATTERN: "must be 1 to 64 letters, digits, '.', '_', '/' or '-'",
    TEXT_PATTERN: "must not contain control, format or line-separator characters",
    NOTE_PATTERN: "must not contain control or format characters other than line breaks and tabs",
    PERIOD_PATTERN: "must be a year (2023), a month (2023-07) or an ISO week (2023-W27)",
}
_REASON_PART = 300  # characters of one error's sentence
_TIME_BOUNDS = (f"{EARLIEST:%Y-%m-%dT%H:%M:%S}", f"{LATEST:%Y-%m-%dT%H:%M:%S}")


def describe_validation_error(exc: ValidationError, *, limit: int = 5, model: type[BaseModel] | None = None) -> str:
    """A readable sentence naming each bad field of the contract, never a value and never a key the sender
    invented.

    An error's location is walked through the model's fields (``model``, else the model the error names):
    a key that is no field becomes "unexpected field in data" (or "in event"), a key inside a map (a rating's
    ``criteria``, an alert's ``labels``) is named by the map's field only. Repeated sentences are said once.
    """
    root = model or _contract_models().get(exc.title)
    return join_errors(exc, lambda err: _describe(err, root), limit=limit)


def join_errors(exc: ValidationError, sentence: Callable[[ErrorDetails], str], *, limit: int = 5) -> str:
    """The ``sentence`` of each of ``exc``'s errors, joined by ``; ``: a repeated one once, the first ``limit``
    and a count of the rest."""
    parts: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        part = sentence(err)
        if part not in parts:
            parts.append(part)
    shown = parts[:limit]
    if len(parts) > limit:
        shown.append(f"and {len(parts) - limit} more error(s)")
    return "; ".join(shown)


def _describe(err: ErrorDetails, root: type[BaseModel] | None) -> str:
    path, invented = _contract_path(err["loc"], root)
    if err["type"] == "extra_forbidden" or invented:
        return f"unexpected field in {path or 'event'}"
    where = path or "event"
    if err["loc"] and err["loc"][-1] == "[key]":
        where += " key"
    return f"{where}: {safe_text(_words(err), limit=_REASON_PART)}"


def _contract_path(loc: tuple[int | str, ...], root: type[BaseModel] | None) -> tuple[str, bool]:
    """(the dotted path of contract fields along ``loc``, whether ``loc`` went through a key the contract does not
    have). The walk stops at a map or a value: what lies below it is the sender's."""
    names: list[str] = []
    fields = _fields_of(root)
    for part in loc:
        if fields is None:
            break
        if part not in fields:
            return ".".join(names), True
        names.append(str(part))
        fields = _fields_of(fields[str(part)].annotation)
    return ".".join(names), False


def _fields_of(annotation: Any) -> dict[str, Any] | None:
    """The fields of the model ``annotation`` is (or holds, as ``X | None``), else None (a map, a value)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_fields
    if get_origin(annotation) is not None and get_origin(annotation) is not dict:
        for arg in get_args(annotation):
            fields = _fields_of(arg)
            if fields is not None:
                return fields
    return None


def _words(err: ErrorDetails) -> str:
    """The error's sentence, in pydantic's words except where those would print a pattern or a prefix."""
    ctx = err.get("ctx") or {}
    if err["type"] == "string_pattern_mismatch":
        return PATTERN_WORDS.get(str(ctx.get("pattern")), "has characters that are not allowed")
    bound = str(ctx.get("ge", ctx.get("lt", "")))
    if err["type"] in ("greater_than_equal", "less_than") and bound.startswith(_TIME_BOUNDS):
        return f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST - dt.timedelta(days=1):%Y-%m-%d} (UTC)"
    return err["msg"].removeprefix("Value error, ")


def _contract_models() -> dict[str, type[BaseModel]]:
    """Every contract model by its name (the ``title`` of its validation errors)."""
    found: dict[str, type[BaseModel]] = {}
    pending: list[type[BaseModel]] = [Contract]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.__name__, cls)
        pending.extend(cls.__subclasses__())
    return found


def parse_event(raw: bytes | str, *, accept: frozenset[str] | set[str] | None = None) -> CloudEvent[Any]:
    """Parse and validate one structured-mode CloudEvent.

    Raises :class:`EventRejected` with a clear reason for bad JSON, a missing
    or unknown ``type``, a type not accepted here, or any schema violation.
    """
    if isinstance(raw, str):
        raw = raw.encode()
    if len(raw) > MAX_MESSAGE_BYTES:
        raise EventRejected(f"message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    if accept is not None and len(accept) == 1:
        # The usual case, one pass: a subject takes one type, and the envelope's
        # ``type`` is a literal, so what validates here is what the diagnosis
        # below would accept. Anything else gets the diagnosis and its reason.
        adapter = _ADAPTERS.get(next(iter(accept)))
        if adapter is not None:
            try:
                return adapter.validate_json(raw, strict=True)
            except ValidationError:
                pass
    try:
        head = json.loads(raw, parse_constant=_refuse_constant)
    except _NonFiniteNumber as exc:
        raise EventRejected(f"body holds {exc}, which is not a valid JSON number") from None
    except (ValueError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise EventRejected(f"body is not valid JSON{where}") from None
    if not isinstance(head, dict):
        raise EventRejected("body must be a JSON object (CloudEvents structured mode)")
    etype = head.get("type")
    if not isinstance(etype, str):
        raise EventRejected("type: field required (a CloudEvents type string)")
    adapter = _ADAPTERS.get(etype)
    if adapter is None:
        raise EventRejected("type: unknown event type")
    if accept is not None and etype not in accept:
        raise EventRejected(f"type: not accepted on this subject, which takes {', '.join(sorted(accept))}")
    try:
        return adapter.validate_json(raw, strict=True)
    except ValidationError as exc:
        raise EventRejected(describe_validation_error(exc, model=ENVELOPES[etype])) from None


class _NonFiniteNumber(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFiniteNumber(name)


def new_event(*, type: str, source: str, data: Contract, subject: str | None = None, id: str | None = None,
              time: dt.datetime | None = None) -> CloudEvent[Any]:
    """Build an envelope for one of parwatch's own events."""
    model = ENVELOPES[type]
    return model(
        specversion=SPECVERSION,
        id=id or str(uuid.uuid4()),
        source=source,
        type=type,
        time=time or dt.datetime.now(dt.timezone.utc),
        subject=subject,
        datacontenttype="application/json",
        data=data,
    )


def encode(event: CloudEvent[Any]) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def headers_for(event: CloudEvent[Any]) -> dict[str, str]:
    return {"Content-Type": CONTENT_TYPE, "Nats-Msg-Id": event.id}
