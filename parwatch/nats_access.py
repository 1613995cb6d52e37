"""Who may do what on NATS: the one table of parwatch's NATS users and their permissions.

``parwatch nats-config`` writes the server's accounts from it, docs/running.md
("Accounts and permissions") describes it, and the tests check it against a
real nats-server and against what the services register.

Every user is an nkey in one account, ``PARWATCH``, with JetStream. Roles:

* each **service** publishes the subjects it produces (JetStream publishes:
  a plain publish with a reply inbox for the ack), consumes through its own
  durable push consumers (created, read and updated through
  ``$JS.API.CONSUMER.*.<stream>.<durable>``, delivered on
  ``parwatch.deliver.<durable>``, acked on ``$JS.ACK.<stream>.<durable>.>``)
  and reads the information of parwatch's streams. It neither creates nor
  changes a stream: with a credential, a service checks that its streams exist
  and refuses to start otherwise (``shared.streams.check_streams``);
* **admin** provisions: ``parwatch streams ensure`` creates and reconciles the
  streams, ``parwatch deadletters replay`` publishes again. Everything in the
  account; used for a deployment step, not by a running service;
* **operator** reads: stream and consumer information and messages by
  sequence (``parwatch deadletters list``, ``nats stream info``). It publishes
  to no subject but those read requests, creates no consumer (a push
  consumer's deliver subject could be a service's or ``tthc.alerts``: NATS
  cannot check it, so none at all), has no direct get (its answer, the stored
  message, goes to any reply subject), changes and deletes nothing;
* a **publisher** (one per integrating system, named after its ``source``)
  publishes the three input subjects and receives its acks: nothing else, not
  even a subscription to another inbox.

Replies (JetStream acks, API answers) go to a private inbox: a user's inbox
prefix is ``_INBOX_`` and its public key (:func:`inbox_prefix`), and only
that user may subscribe under it, so no user reads another's replies. The
client finds its prefix from its own seed (``shared.settings``).

NATS permissions act on subjects, never on payloads: a publisher's
credential cannot bind the CloudEvents ``source`` inside its messages. One
credential per source is what binds it where NATS can: each system is its
own user, revoked or rotated alone and named in the server's connection list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.nats_auth import inbox_prefix
from shared.streams import (
    ACCEPTED_PLAN_REPORTS,
    ACCEPTED_RATINGS,
    ALERTS,
    DEADLETTER,
    DOSSIER_EVENTS,
    DOSSIER_STATE,
    PLAN_EVENTS,
    PLAN_TASK_STATE,
    RATING_EVENTS,
    STREAMS,
    stream_for,
)

#: The account of every parwatch user (config-file accounts, JetStream enabled).
ACCOUNT = "PARWATCH"
#: The subjects an integrating system publishes (contract: Transport).
INPUT_SUBJECTS = (DOSSIER_EVENTS, RATING_EVENTS, PLAN_EVENTS)
#: Where a push consumer of parwatch delivers (``shared.consumer.Subscription.config``).
DELIVER_PREFIX = "parwatch.deliver"


@dataclass(frozen=True)
class Consumer:
    """A durable consumer of a service: its filter subject and durable name."""

    subject: str
    durable: str

    @property
    def stream(self) -> str:
        return stream_for(self.subject).name


@dataclass(frozen=True)
class ServiceAccess:
    """What one service does on NATS, as its handlers and publishers do it (defaults of its settings)."""

    name: str
    consumes: tuple[Consumer, ...]
    publishes: tuple[str, ...]
    #: Another service's consumers whose information it reads (the monitor: the tracker's backlog).
    watches: tuple[Consumer, ...] = ()


#: The four services, with their settings' default durable names (``PARWATCH_<SERVICE>_DURABLE``): a service
#: whose durable prefix is changed needs its permissions written again (tests/unit/parwatch holds this table
#: equal to what each service registers).
SERVICES: tuple[ServiceAccess, ...] = (
    ServiceAccess(
        "dossier_tracker",
        consumes=(
            Consumer(DOSSIER_EVENTS, "dossier_tracker"),
            Consumer(RATING_EVENTS, "dossier_tracker_ratings"),
            Consumer(PLAN_EVENTS, "dossier_tracker_plan"),
        ),
        # Its HTTP ingest (POST /events) publishes what a key's source sends on the input subjects.
        publishes=(DOSSIER_STATE, ACCEPTED_RATINGS, ACCEPTED_PLAN_REPORTS, DEADLETTER, *INPUT_SUBJECTS),
    ),
    ServiceAccess(
        "deadline_monitor",
        consumes=(
            Consumer(DOSSIER_STATE, "deadline_monitor_dossiers"),
            Consumer(ACCEPTED_PLAN_REPORTS, "deadline_monitor_plan"),
            Consumer(DEADLETTER, "deadline_monitor_deadletter"),
        ),
        # PLAN_EVENTS: the officials' web page reports a duty through its API (POST /plan/report).
        publishes=(ALERTS, PLAN_TASK_STATE, DEADLETTER, PLAN_EVENTS),
        watches=(Consumer(DOSSIER_EVENTS, "dossier_tracker"),),  # PARWATCH_MONITOR_UPSTREAM_CONSUMER
    ),
    ServiceAccess(
        "scoring",
        consumes=(
            Consumer(DOSSIER_STATE, "scoring_state"),
            Consumer(ACCEPTED_RATINGS, "scoring_ratings"),
            Consumer(PLAN_TASK_STATE, "scoring_tasks"),
        ),
        publishes=(ALERTS, DEADLETTER),
    ),
    ServiceAccess("notifier", consumes=(Consumer(ALERTS, "notifier"),), publishes=(DEADLETTER,)),
)
SERVICE_BY_NAME = {s.name: s for s in SERVICES}
#: Roles that are not a service, a credential each.
ADMIN, OPERATOR = "admin", "operator"
#: A publisher's role name: ``publisher-<name>`` (a token of letters, digits, ``_`` and ``-``).
PUBLISHER_PREFIX = "publisher-"


def service_permissions(service: ServiceAccess, *, inbox: str) -> dict[str, Any]:
    stream_info = [f"$JS.API.STREAM.INFO.{spec.name}" for spec in STREAMS]
    consumers: list[str] = []
    acks: list[str] = []
    delivers: list[str] = []
    for c in service.consumes:
        api = f"$JS.API.CONSUMER.%s.{c.stream}.{c.durable}"
        consumers += [api % "INFO", api % "CREATE", api % "CREATE" + ".>", api % "DURABLE.CREATE", api % "DELETE"]
        acks.append(f"$JS.ACK.{c.stream}.{c.durable}.>")
        delivers.append(f"{DELIVER_PREFIX}.{c.durable}")
    consumers += [f"$JS.API.CONSUMER.INFO.{c.stream}.{c.durable}" for c in service.watches]
    return {
        "publish": {"allow": [*service.publishes, *acks, *stream_info, *consumers]},
        "subscribe": {"allow": [*delivers, f"{inbox}.>"]},
    }


def admin_permissions(*, inbox: str) -> dict[str, Any]:
    """Everything in the account: create and reconcile streams, replay, repair."""
    return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}


def operator_permissions(*, inbox: str) -> dict[str, Any]:
    """Read-only: information, and messages by sequence. No consumer: a push consumer delivers where its config
    says, a service's deliver subject or ``tthc.alerts`` as well as the operator's inbox, and NATS permissions
    cannot look into that config. No direct get either: the server sends any answer to the request's reply
    subject, which permissions do not check either, and a direct get answers with the stored message as it is, so
    a reply subject of ``tthc.alerts`` would copy a publisher's message there; a ``STREAM.MSG.GET`` answer is the
    API's JSON, never an event."""
    return {
        "publish": {
            "allow": [
                "$JS.API.INFO",
                "$JS.API.STREAM.NAMES",
                "$JS.API.STREAM.LIST",
                "$JS.API.STREAM.INFO.*",
                "$JS.API.CONSUMER.NAMES.*",
                "$JS.API.CONSUMER.LIST.*",
                "$JS.API.CONSUMER.INFO.*.*",
                "$JS.API.STREAM.MSG.GET.*",
            ]
        },
        "subscribe": {"allow": [f"{inbox}.>"]},
    }


def publisher_permissions(*, inbox: str) -> dict[str, Any]:
    """The three input subjects, and the acks to its own inbox."""
    return {"publish": {"allow": list(INPUT_SUBJECTS)}, "subscribe": {"allow": [f"{inbox}.>"]}}


def permissions_for(role: str, *, public_key: str) -> dict[str, Any]:
    """The permissions of a user of ``role`` whose nkey is ``public_key``."""
    inbox = inbox_prefix(public_key)
    if role in SERVICE_BY_NAME:
        return service_permissions(SERVICE_BY_NAME[role], inbox=inbox)
    if role == ADMIN:
        return admin_permissions(inbox=inbox)
    if role == OPERATOR:
        return operator_permissions(inbox=inbox)
    if role.startswith(PUBLISHER_PREFIX):
        return publisher_permissions(inbox=inbox)
    raise KeyError(f"no NATS role {role!r}")


def fixed_roles() -> tuple[str, ...]:
    """Every role a deployment has a credential for, publishers aside."""
    return (*(s.name for s in SERVICES), ADMIN, OPERATOR)
