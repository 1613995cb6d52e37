"""Subjects and JetStream stream definitions (contract: Transport).

File storage, a duplicate window for ``Nats-Msg-Id``, a maximum message size
and a bounded retention for every stream. :func:`ensure_streams` creates them
or brings an existing stream's settings up to date.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from shared.events import MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

DAY = 24 * 3600

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


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    max_age_days: int
    duplicate_window_s: int = 2 * 3600
    max_msg_size: int = MAX_MESSAGE_BYTES
    max_bytes: int = -1
    description: str = ""
    # Atomic batch publishing (nats-server >= 2.12): a backlog's facts go in batches stored all or none, acked once.
    allow_atomic: bool = False

    def config(self, *, replicas: int = 1) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            description=self.description,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=float(self.max_age_days * DAY),
            max_bytes=self.max_bytes,
            max_msg_size=self.max_msg_size,
            duplicate_window=float(self.duplicate_window_s),
            num_replicas=replicas,
            allow_direct=True,
            allow_atomic=self.allow_atomic or None,
        )


# Inputs are kept for 400 days: a year of history can be replayed into a new
# service (``rebuild``), and a ranking year always fits.
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("TTHC_DOSSIER", (DOSSIER_EVENTS,), 400, description="Dossier status events from one-stop-shop systems"),
    StreamSpec("TTHC_RATING", (RATING_EVENTS,), 400, description="Citizen ratings of handled dossiers"),
    StreamSpec("TTHC_PLAN", (PLAN_EVENTS,), 400, description="Plan task progress reports"),
    StreamSpec("TTHC_ALERTS", (ALERTS,), 90, description="Alerts from deadline_monitor and scoring"),
    StreamSpec("TTHC_DEADLETTER", (DEADLETTER,), 90, description="Messages rejected by any service, with reasons"),
    StreamSpec(
        "PARWATCH_DOSSIER_STATE",
        (DOSSIER_STATE,),
        400,
        description="Derived dossier state (dossier_tracker)",
        allow_atomic=True,
    ),
    StreamSpec("PARWATCH_PLAN_STATE", (PLAN_TASK_STATE,), 400, description="Plan task occurrence states (deadline_monitor)"),
    StreamSpec(
        "PARWATCH_ACCEPTED",
        (ACCEPTED_RATINGS, ACCEPTED_PLAN_REPORTS),
        400,
        description="Ratings and plan reports accepted by dossier_tracker",
    ),
)

STREAM_BY_NAME = {s.name: s for s in STREAMS}


def stream_for(subject: str) -> StreamSpec:
    for spec in STREAMS:
        if subject in spec.subjects:
            return spec
    raise KeyError(subject)


async def ensure_streams(js: JetStreamContext, *, replicas: int = 1) -> None:
    """Create every stream, or update one whose settings drifted."""
    for spec in STREAMS:
        cfg = spec.config(replicas=replicas)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(cfg)
            log.info("stream created name=%s", spec.name)
        else:
            await js.update_stream(cfg)
