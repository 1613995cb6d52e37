"""The HTTP door of the public input streams: CloudEvents over HTTP, for systems that cannot speak NATS.

``POST /events`` follows the CloudEvents HTTP protocol binding, the mode
chosen by the request's ``Content-Type``:

* structured: ``application/cloudevents+json``, the body is one event;
* batch: ``application/cloudevents-batch+json``, the body is a JSON array of
  at most ``http_max_batch`` events;
* binary: any other content type with ``ce-*`` headers: each header
  ``ce-<attribute>`` is an attribute (percent-decoded), the body is ``data``
  and ``Content-Type`` its ``datacontenttype`` (``application/json``).

Every event is checked by :func:`shared.events.parse_event`, the function the
NATS consumers use, so a refusal gives the dead letter's reason word for word
(naming fields, never a value). An accepted event is published on its input
subject (``tthc.dossier.events``, ``tthc.rating.events``,
``tthc.plan.events``) with ``Nats-Msg-Id`` = :func:`shared.publishing.source_scoped_id`,
and the tracker consumes it like any other: the same event sent twice is
stored once by the broker inside its duplicate window and counted once by
the tracker's own (``source``, ``id``) dedup beyond it.

The answers, in the order they are decided:

* ``401``: no ``Authorization: Bearer`` key, or one that is not valid (unknown, revoked, wrong);
* ``415``: a content type that is none of the three modes;
* ``413``: a body over the limit (64 KiB for one event, ``http_max_batch_bytes`` for a batch), counted
  before parsing, from ``Content-Length`` and while reading;
* ``429`` with ``Retry-After``: the key's source has no tokens left; each event of a request takes one
  (:class:`TokenBucket`, ``http_rate`` a second, ``http_burst`` at most), a body that cannot be read one;
* ``400``: a body that cannot be read as the mode's JSON, or a batch empty or over ``http_max_batch``;
* ``403``: an event whose ``source`` is not the key's;
* ``400``: an event that fails the contract; nothing of the request is published;
* ``503`` with ``Retry-After``: JetStream did not acknowledge every event (sending the request again is safe);
* ``202``: JetStream stored every event of the request.

The answer's body is JSON: ``{"events": [{"index": i, "outcome": ...}, ...]}`` with one entry per event
(``stored``, ``duplicate`` when the broker already held it, ``rejected`` with a ``reason``, ``not_sent``
for a good event of a refused request, ``not_stored`` after an outage), plus ``error`` on a refusal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from nats.js import JetStreamContext
from pydantic import BaseModel

from shared.events import (
    DOSSIER_TYPE,
    MAX_MESSAGE_BYTES,
    PLAN_TYPE,
    RATING_TYPE,
    CloudEvent,
    EventRejected,
    encode,
    parse_event,
)
from shared.publishing import source_scoped_id
from shared.streams import DOSSIER_EVENTS, PLAN_EVENTS, RATING_EVENTS, stream_for

log = logging.getLogger(__name__)

PATH = "/events"
STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
#: The event types the HTTP door takes, and the input subject of each.
SUBJECTS: dict[str, str] = {DOSSIER_TYPE: DOSSIER_EVENTS, RATING_TYPE: RATING_EVENTS, PLAN_TYPE: PLAN_EVENTS}
NOT_ACCEPTED = f"type: not accepted over HTTP, which takes {', '.join(sorted(SUBJECTS))}"


# -- rate ------------------------------------------------------------------------------------------------


class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``capacity`` held; starts full.

    ``take(n)`` takes ``n`` tokens and answers 0, or takes none and answers the seconds until ``n`` will be
    there. ``n`` may not exceed ``capacity`` (the settings keep a batch within the burst).
    """

    def __init__(self, *, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.at = now

    def take(self, n: float, *, now: float) -> float:
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= n:
            self.tokens -= n
            return 0.0
        return (n - self.tokens) / self.rate


class SourceLimits:
    """A bucket per source (as many as there are sources with a key)."""

    def __init__(self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, source: str, n: int) -> float:
        now = self.clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            bucket = self._buckets[source] = TokenBucket(rate=self.rate, capacity=self.burst, now=now)
        return bucket.take(min(n, self.burst), now=now)


# -- decoding ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """One event of a request: the event, or why it is refused."""

    event: CloudEvent[Any] | None
    reason: str | None = None


class BadRequest(Exception):
    """The request as a whole cannot be read (not one of its events): 400 with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check(raw: bytes) -> Decoded:
    """One structured-mode event, checked as the NATS consumers check it, then its type against the door's."""
    try:
        event = parse_event(raw)
    except EventRejected as exc:
        return Decoded(None, exc.reason)
    if event.type not in SUBJECTS:
        return Decoded(None, NOT_ACCEPTED)
    return Decoded(event)


def decode_batch(body: bytes, *, max_events: int) -> list[Decoded]:
    try:
        items = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise BadRequest("body is not valid JSON (a batch is a JSON array of structured-mode events)") from None
    if not isinstance(items, list):
        raise BadRequest("body must be a JSON array of events (CloudEvents batch mode)")
    if not items:
        raise BadRequest("batch holds no event")
    if len(items) > max_events:
        raise BadRequest(f"batch holds {len(items)} events; the limit is {max_events}")
    return [check(json.dumps(item).encode()) for item in items]


def decode_binary(headers: list[tuple[str, str]], content_type: str | None, body: bytes) -> Decoded:
    """A binary-mode event: attributes from ``ce-*`` headers, ``data`` from the body."""
    attributes: dict[str, Any] = {}
    for name, value in headers:
        if not name.startswith("ce-"):
            continue
        attribute = name[3:]
        if attribute in attributes:
            return Decoded(None, f"{attribute}: given twice")
        attributes[attribute] = unquote(value)
    if content_type is not None:
        # The contract's only data content type; parse_event refuses any other with its usual reason.
        media = content_type.split(";", 1)[0].strip().lower()
        attributes["datacontenttype"] = media
        if media != "application/json":
            return check(json.dumps(attributes).encode())
    if body.strip():
        try:
            attributes["data"] = json.loads(body, parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return Decoded(None, "data: body is not valid JSON")
    return check(json.dumps(attributes).encode())


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


# -- the route --------------------------------------------------------------------------------------------

Outcome = Literal["stored", "duplicate", "rejected", "not_sent", "not_stored"]


class EventOutcome(BaseModel):
    index: int
    outcome: Outcome
    reason: str | None = None


class IngestAnswer(BaseModel):
    """The body of every answer of ``POST /events`` (``error`` on a refusal)."""

    events: list[EventOutcome] = []
    error: str | None = None


@dataclass(frozen=True)
class IngestLimits:
    max_batch: int
    max_batch_bytes: int
    publish_timeout: float = 10.0


def ingest_router(
    *,
    source_of: Callable[[str], str | None],
    limits: IngestLimits,
    rates: SourceLimits,
    jetstream: Callable[[], JetStreamContext],
) -> APIRouter:
    """The ``POST /events`` route. ``source_of(key)``: the source a key may publish as, None if it is no valid
    key (blocking: run in a thread). ``jetstream()``: the service's JetStream context, once connected."""
    router = APIRouter(tags=["ingest"])
    contexts: list[JetStreamContext] = []  # one, made at the first request (the broker connects at start)

    @router.post(
        PATH,
        status_code=202,
        summary="Publish CloudEvents over HTTP (structured, binary or batch mode)",
        response_model=IngestAnswer,
        responses={
            202: {"description": "JetStream stored every event of the request (each one's outcome listed)"},
            400: {"model": IngestAnswer, "description": "A body or an event fails the contract; nothing published"},
            401: {"model": IngestAnswer, "description": "No valid API key (Authorization: Bearer pwk_...)"},
            403: {"model": IngestAnswer, "description": "An event's source is not the key's"},
            413: {"model": IngestAnswer, "description": "Body over the size limit"},
            415: {"model": IngestAnswer, "description": "Not a CloudEvents HTTP content mode"},
            429: {"model": IngestAnswer, "description": "Over the source's rate; see Retry-After (seconds)"},
            503: {"model": IngestAnswer, "description": "JetStream did not acknowledge every event; send again"},
        },
        openapi_extra={"requestBody": _REQUEST_BODY, "parameters": _BINARY_HEADERS},
    )
    async def publish_events(request: Request) -> JSONResponse:
        source = await _authenticate(request, source_of)
        if source is None:
            return _answer(401, error="a valid API key is required: Authorization: Bearer pwk_...",
                           headers={"WWW-Authenticate": 'Bearer realm="parwatch"'})
        content_type = request.headers.get("content-type")
        media = (content_type or "").split(";", 1)[0].strip().lower()
        binary = media not in (STRUCTURED, BATCH) and any(k.startswith("ce-") for k in request.headers)
        if media not in (STRUCTURED, BATCH) and not binary:
            return _answer(415, error=f"Content-Type must be {STRUCTURED}, {BATCH}, or binary mode (ce-* headers "
                                      "with application/json data)")
        limit = limits.max_batch_bytes if media == BATCH else MAX_MESSAGE_BYTES
        body = await _read_bounded(request, limit)
        if body is None:
            return _answer(413, error=f"body over {limit} bytes")
        try:
            if media == STRUCTURED:
                decoded = [check(body)]
            elif media == BATCH:
                decoded = decode_batch(body, max_events=limits.max_batch)
            else:
                decoded = [decode_binary(request.headers.items(), content_type, body)]
        except BadRequest as exc:
            decoded, refusal = [], exc.reason
        else:
            refusal = None
        wait = rates.take(source, max(len(decoded), 1))
        if wait > 0:
            return _answer(429, error="over this source's rate", headers={"Retry-After": str(math.ceil(wait))})
        if refusal is not None:
            return _answer(400, error=refusal)
        if any(d.event is not None and d.event.source != source for d in decoded):
            return _answer(403, error="this key publishes only as its own source",
                           events=_refused(decoded, foreign=source))
        if any(d.event is None for d in decoded):
            return _answer(400, error="event rejected", events=_refused(decoded))
        events = [(d.event, encode(d.event)) for d in decoded if d.event is not None]
        if any(len(body) > MAX_MESSAGE_BYTES for _, body in events):  # a guard: the fields' limits keep events far below
            return _answer(413, error=f"an event is over {MAX_MESSAGE_BYTES} bytes as published")
        if not contexts:
            contexts.append(jetstream())
        outcomes = await _publish(contexts[0], events, timeout=limits.publish_timeout)
        if any(o == "not_stored" for o in outcomes):
            return _answer(503, error="JetStream did not acknowledge every event; sending them again is safe",
                           events=[EventOutcome(index=i, outcome=o) for i, o in enumerate(outcomes)],
                           headers={"Retry-After": "5"})
        return _answer(202, events=[EventOutcome(index=i, outcome=o) for i, o in enumerate(outcomes)])

    return router


async def _authenticate(request: Request, source_of: Callable[[str], str | None]) -> str | None:
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return None
    return await asyncio.to_thread(source_of, key.strip())


async def _read_bounded(request: Request, limit: int) -> bytes | None:
    """The body, or None once it is known to be longer than ``limit`` (from Content-Length or while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def _refused(decoded: list[Decoded], *, foreign: str | None = None) -> list[EventOutcome]:
    out = []
    for i, d in enumerate(decoded):
        if d.event is None:
            out.append(EventOutcome(index=i, outcome="rejected", reason=d.reason))
        elif foreign is not None and d.event.source != foreign:
            out.append(EventOutcome(index=i, outcome="rejected", reason="source: not the source of this API key"))
        else:
            out.append(EventOutcome(index=i, outcome="not_sent"))
    return out


async def _publish(js: JetStreamContext, events: list[tuple[CloudEvent[Any], bytes]], *, timeout: float
                   ) -> list[Outcome]:
    """Publish each event (with its encoding) on its input subject and wait for every ack: per event, stored,
    duplicate (the broker held it already) or not_stored."""

    async def one(event: CloudEvent[Any], body: bytes) -> Outcome:
        subject = SUBJECTS[event.type]
        headers = {"Content-Type": STRUCTURED, "Nats-Msg-Id": source_scoped_id(event)}
        ack = await js.publish(subject, body, timeout=timeout, stream=stream_for(subject).name, headers=headers)
        return "duplicate" if ack.duplicate else "stored"

    results = await asyncio.gather(*(one(e, body) for e, body in events), return_exceptions=True)
    outcomes: list[Outcome] = []
    for r in results:
        if isinstance(r, BaseException):
            if not isinstance(r, Exception):
                raise r
            log.warning("http ingest publish failed error=%s", type(r).__name__)
            outcomes.append("not_stored")
        else:
            outcomes.append(r)
    return outcomes


def _answer(status: int, *, error: str | None = None, events: list[EventOutcome] | None = None,
            headers: dict[str, str] | None = None) -> JSONResponse:
    body = IngestAnswer(events=events or [], error=error).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status, headers=headers)


# -- OpenAPI ------------------------------------------------------------------------------------------------

_EVENT_SCHEMA = {
    "type": "object",
    "description": "A CloudEvent of type vn.tthc.dossier.status_changed, vn.tthc.rating.submitted or "
                   "vn.tthc.plan.task_reported, in structured JSON mode (JSON Schemas: docs/contract/schemas/)",
    "required": ["specversion", "id", "source", "type", "data"],
}
_REQUEST_BODY = {
    "required": True,
    "content": {
        STRUCTURED: {"schema": _EVENT_SCHEMA},
        BATCH: {"schema": {"type": "array", "items": _EVENT_SCHEMA, "minItems": 1}},
        "application/json": {"schema": {"type": "object", "description": "Binary mode: the event's data; its "
                                                                         "attributes in ce-* headers"}},
    },
}
_BINARY_HEADERS = [
    {"name": f"ce-{name}", "in": "header", "required": False, "schema": {"type": "string"},
     "description": f"binary mode: the event's {name} (percent-encoded)"}
    for name in ("specversion", "id", "source", "type", "time", "subject")
]
