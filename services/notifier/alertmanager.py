"""Alertmanager's webhook receiver: Prometheus's alerts on parwatch itself reach the technical desk.

Alertmanager POSTs its webhook payload (version ``"4"``: ``receiver``,
``status``, ``alerts[]`` with ``status``, ``labels``, ``annotations``,
``startsAt``, ``endsAt``, ``fingerprint``, and the group's ``groupKey``,
``groupLabels``, ``commonLabels``, ``commonAnnotations``, ``externalURL``,
``truncatedAlerts``) to ``POST /alertmanager``. Each alert of it becomes one
parwatch alert of kind ``operator_alert`` for the district, recorded exactly as
an alert event from ``tthc.alerts`` is (``NotifierService.receive``), so the
dispatch loop treats it like any other: the technical desk alone hears of it
(``domain.routing.restricted``), grouped, once, reminded, resolved, silenced,
inhibited, acknowledged, quiet hours.

* Identity: ``alert_key`` = ``operator_alert:<alertname>:<fingerprint>``
  (Alertmanager's fingerprint of the label set), the episode its ``startsAt``;
  the event id ``<fingerprint>@<startsAt>:<status>`` from source
  ``alertmanager`` is kept in the notifier's seen events, so a notification
  Alertmanager repeats (``repeat_interval``, a retry, the second instance of
  an HA pair) changes nothing and counts nothing, across restarts too.
* ``status: resolved`` resolves it (``ends_at`` = ``endsAt``); a firing
  alert's ``endsAt`` (``0001-01-01T00:00:00Z``) is ignored.
* Text: ``ref`` is the alert name, ``summary`` the ``summary`` annotation (else
  ``description``, else a fixed Vietnamese sentence); labels are kept (at most
  32, bounded) so inhibit rules can match on them. Every text is made safe
  (:func:`shared.text.safe_text`: control, format and separator characters
  removed, lengths capped) rather than refused: a multi-line description must
  not lose an alert. ``generatorURL`` and the other annotations are not kept.
* Validation is strict on structure, types and sizes (a body of at most
  :data:`MAX_BODY_BYTES`, at most :data:`MAX_ALERTS` alerts, bounded maps and
  strings, a 16-hex-digit fingerprint, times with an offset): 400 with a
  reason that names fields, never a value or a sender's label name; 413 over
  size. Fields Alertmanager may add in a later version are ignored, not
  refused (a refusal is never retried: the alert would be lost).
* Answers: 200 once the alerts are committed; 503 when the database is down
  (Alertmanager retries a 5xx, never a 4xx); 403 without the bearer token
  (``PARWATCH_NOTIFIER_ALERTMANAGER_TOKEN``, else ``PARWATCH_NOTIFIER_API_TOKEN``;
  with neither, loopback callers only).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args, get_origin

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.exc import SQLAlchemyError

from services.notifier.domain.model import OPERATOR_ALERT_KIND
from services.notifier.store import IncomingAlert
from shared.events import ALERT_FIRING_TYPE, ALERT_RESOLVED_TYPE, EARLIEST, LATEST, Alert, Time, join_errors
from shared.text import escape_text, safe_text

log = logging.getLogger(__name__)

#: The path Alertmanager's ``webhook_configs[].url`` names.
PATH = "/alertmanager"
#: The ``source`` of the recorded events (the seen-event key is this and the event id).
SOURCE = "alertmanager"
#: Largest request body accepted (bytes).
MAX_BODY_BYTES = 1024 * 1024
#: Most alerts in one notification (``group_by: ['...']`` in the shipped config sends one).
MAX_ALERTS = 1000
#: Most labels kept on a parwatch alert (the contract's bound).
MAX_KEPT_LABELS = 32

LabelName = Annotated[str, StringConstraints(min_length=1, max_length=128)]
LabelValue = Annotated[str, StringConstraints(max_length=4096)]
AnnotationValue = Annotated[str, StringConstraints(max_length=16384)]
Labels = Annotated[dict[LabelName, LabelValue], Field(max_length=64)]
Annotations = Annotated[dict[LabelName, AnnotationValue], Field(max_length=64)]
Fingerprint = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{16}$")]
Status = Literal["firing", "resolved"]

_ALERTNAME = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]{0,99}$")
_FALLBACK_REF = "Prometheus"
_FALLBACK_SUMMARY = "Prometheus báo một cảnh báo về hệ thống parwatch; xem chi tiết trong Alertmanager."
_SEVERITY = {"critical": "critical", "page": "critical", "error": "critical", "high": "critical",
             "warning": "warning", "warn": "warning", "medium": "warning",
             "info": "info", "informational": "info", "low": "info", "none": "info"}


class _Model(BaseModel):
    # Unknown fields are ignored (a later Alertmanager may add some); known ones are strict.
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True, hide_input_in_errors=True)


class AlertmanagerAlert(_Model):
    status: Status
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    startsAt: Time  # the fields keep Alertmanager's names
    endsAt: AwareDatetime | None = None  # 0001-01-01T00:00:00Z while firing
    generatorURL: Annotated[str, StringConstraints(max_length=4096)] = ""
    fingerprint: Fingerprint


class AlertmanagerPayload(_Model):
    """Alertmanager's webhook body, version 4."""

    version: Literal["4"]
    groupKey: Annotated[str, StringConstraints(max_length=8192)] = ""
    truncatedAlerts: int = Field(default=0, ge=0, le=2**63 - 1)
    status: Status
    receiver: Annotated[str, StringConstraints(max_length=512)] = ""
    groupLabels: Labels = Field(default_factory=dict)
    commonLabels: Labels = Field(default_factory=dict)
    commonAnnotations: Annotations = Field(default_factory=dict)
    externalURL: Annotated[str, StringConstraints(max_length=4096)] = ""
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=MAX_ALERTS)


class PayloadRejected(ValueError):
    """A body that is not Alertmanager's webhook payload; ``reason`` is safe to log and to answer with."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_payload(raw: bytes) -> AlertmanagerPayload:
    """The validated payload, or :class:`PayloadRejected` naming the bad fields (never a value)."""
    if len(raw) > MAX_BODY_BYTES:
        raise PayloadRejected(f"body is {len(raw)} bytes; the limit is {MAX_BODY_BYTES}")
    try:
        return AlertmanagerPayload.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise PayloadRejected(describe(exc)) from None


def describe(exc: ValidationError, *, limit: int = 5) -> str:
    """Each error as ``where: what``; ``where`` names fields of the payload model and list positions, and stops
    at a map (a label's or an annotation's name is the sender's)."""
    return join_errors(exc, lambda err: f"{_where(err['loc'])}: {safe_text(_what(err), limit=200)}", limit=limit)


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    annotation: Any = AlertmanagerPayload
    for part in loc:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and part in annotation.model_fields:
            out += f".{part}" if out else str(part)
            annotation = _unwrap(annotation.model_fields[str(part)].annotation)
        elif get_origin(annotation) is list and isinstance(part, int):
            out += f"[{part}]"
            annotation = _unwrap(get_args(annotation)[0])
        else:
            break  # a map's key, or what lies below a value
    return out or "body"


def _unwrap(annotation: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and of ``X | None``."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = [a for a in get_args(annotation) if a is not type(None)]
    if get_origin(annotation) not in (list, dict) and len(args) == 1:
        return _unwrap(args[0])
    return annotation


def _what(err: ErrorDetails) -> str:
    if err["type"] == "string_pattern_mismatch":
        return "must be 16 hexadecimal digits (Alertmanager's fingerprint)"
    if err["type"] in ("greater_than_equal", "less_than") and err["loc"][-1:] == ("startsAt",):
        return f"must lie between {EARLIEST:%Y-%m-%d} and {LATEST - dt.timedelta(days=1):%Y-%m-%d} (UTC)"
    return err["msg"].removeprefix("Value error, ")


# -- the mapping (pure) -------------------------------------------------------------------------


def alert_key(alert: AlertmanagerAlert) -> str:
    name = alert.labels.get("alertname", "")
    return f"{OPERATOR_ALERT_KIND}:{name if _ALERTNAME.match(name) else 'alert'}:{alert.fingerprint}"


def event_id(alert: AlertmanagerAlert) -> str:
    """One per (alert, episode, status): what Alertmanager sends again is a duplicate."""
    return f"{alert.fingerprint}@{alert.startsAt.astimezone(dt.UTC).isoformat()}:{alert.status}"


def severity_of(labels: Mapping[str, str]) -> Literal["info", "warning", "critical"]:
    """The ``severity`` label read as parwatch's severities (``page``, ``error``: critical); absent or unknown:
    warning."""
    return _SEVERITY.get(labels.get("severity", "").strip().lower(), "warning")  # type: ignore[return-value]


def kept_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """At most :data:`MAX_KEPT_LABELS` labels made safe, ``alertname`` and ``severity`` first; a name that does not
    fit 64 safe characters is dropped."""
    order = sorted(labels, key=lambda k: (k not in ("alertname", "severity"), k))
    out: dict[str, str] = {}
    for name in order:
        safe = safe_text(name, limit=65)
        if not safe or len(safe) > 64 or safe in out:
            continue
        out[safe] = safe_text(labels[name], limit=256)
        if len(out) == MAX_KEPT_LABELS:
            break
    return out


def _text(value: str | None, *, limit: int) -> str:
    return safe_text(value or "", limit=limit).strip()


def to_alert(alert: AlertmanagerAlert, *, agency_code: str, now: dt.datetime) -> tuple[str, Alert]:
    """(the CloudEvents type, the parwatch alert) of one Alertmanager alert, for the agency ``agency_code``."""
    resolved = alert.status == "resolved"
    ends_at: dt.datetime | None = None
    if resolved:
        ends_at = alert.endsAt if alert.endsAt is not None and EARLIEST <= alert.endsAt < LATEST else now
    annotations = alert.annotations
    summary = (_text(annotations.get("summary"), limit=1000) or _text(annotations.get("description"), limit=1000)
               or _FALLBACK_SUMMARY)
    data = Alert(
        alert_key=alert_key(alert),
        kind=OPERATOR_ALERT_KIND,
        severity=severity_of(alert.labels),
        agency_code=agency_code,
        ref=_text(alert.labels.get("alertname"), limit=128) or _FALLBACK_REF,
        summary=summary,
        starts_at=alert.startsAt,
        ends_at=ends_at,
        labels=kept_labels(alert.labels),
    )
    return (ALERT_RESOLVED_TYPE if resolved else ALERT_FIRING_TYPE), data


def incoming_alerts(payload: AlertmanagerPayload, *, agency_code: str, now: dt.datetime) -> list[IncomingAlert]:
    """The payload's alerts as the store records alert events (source :data:`SOURCE`, id :func:`event_id`)."""
    out = []
    for a in payload.alerts:
        etype, data = to_alert(a, agency_code=agency_code, now=now)
        out.append(IncomingAlert(source=SOURCE, event_id=event_id(a), type=etype, alert=data))
    return out


# -- the HTTP receiver ------------------------------------------------------------------------


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, *, limit: int) -> bytes:
    """The request body, or :class:`BodyTooLarge` as soon as it passes ``limit`` bytes (never read whole)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(kw_only=True, eq=False)
class AlertmanagerReceiver:
    """``POST /alertmanager``: records the payload's alerts through ``record`` (``NotifierService.receive``)."""

    record: Callable[[Sequence[IncomingAlert]], Awaitable[list[bool]]]
    agency_code: str  # the district's: operator alerts are the district's own
    clock: Callable[[], dt.datetime]
    trusted: Callable[[Request], bool]  # the caller may hand over alerts

    def router(self) -> APIRouter:
        r = APIRouter(tags=["alertmanager"])
        r.add_api_route(PATH, self.receive, methods=["POST"], summary="Alertmanager's webhook (version 4)")
        return r

    async def receive(self, request: Request) -> JSONResponse:
        if not self.trusted(request):
            return JSONResponse({"detail": "not allowed: send the bearer token (PARWATCH_NOTIFIER_ALERTMANAGER_TOKEN)"},
                                status_code=403)
        try:
            raw = await read_body(request, limit=MAX_BODY_BYTES)
            payload = parse_payload(raw)
        except BodyTooLarge:
            log.warning("alertmanager notification refused reason=body over %d bytes", MAX_BODY_BYTES)
            return JSONResponse({"detail": f"body over {MAX_BODY_BYTES} bytes"}, status_code=413)
        except PayloadRejected as exc:
            log.warning("alertmanager notification refused reason=%s", escape_text(exc.reason, limit=600))
            return JSONResponse({"detail": exc.reason}, status_code=400)
        events = incoming_alerts(payload, agency_code=self.agency_code, now=self.clock())
        try:
            fresh = await self.record(events)
        except SQLAlchemyError:  # the database is down: Alertmanager retries a 5xx
            log.exception("alertmanager notification not recorded alerts=%d", len(events))
            return JSONResponse({"detail": "not recorded: the database is unavailable; retry"}, status_code=503,
                                headers={"Retry-After": "10"})
        recorded = sum(fresh)
        if payload.truncatedAlerts:
            log.warning("alertmanager truncated alerts=%d (raise max_alerts in its webhook config)",
                        payload.truncatedAlerts)
        log.info("alertmanager notification receiver=%s alerts=%d recorded=%d duplicates=%d",
                 escape_text(payload.receiver, limit=100), len(events), recorded, len(events) - recorded)
        return JSONResponse({"alerts": len(events), "recorded": recorded, "duplicates": len(events) - recorded})
