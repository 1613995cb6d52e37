"""Operator commands: ``parwatch silence add|list|expire``, ``parwatch alerts ack`` and ``parwatch notifications``.

They read the same settings (``PARWATCH_*``, ``PARWATCH_NOTIFIER_*``) and the
same database as the running notifier, which picks up a new or expired
silence, or an acknowledgement, at its next dispatch pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from services.notifier.ack import AckRefused, acknowledge
from services.notifier.config import ConfigError, load_directory
from services.notifier.domain.ack import ACK_KINDS, Acknowledgement
from services.notifier.domain.model import parse_duration
from services.notifier.domain.silence import Silence, check_new_silence
from services.notifier.service import Notice
from services.notifier.settings import NotifierSettings
from services.notifier.store import Store
from shared.agencies import AgencySettings
from shared.calendar import VN_TZ
from shared.db import make_engine
from shared.events import ALERT_KINDS
from shared.settings import CommonSettings


def register(subparsers: Any) -> None:
    silence = subparsers.add_parser("silence", help="mute notifier alerts for a while (add, list, expire)")
    ssub = silence.add_subparsers(dest="silence_command", metavar="ACTION")
    ssub.required = True

    add = ssub.add_parser("add", help="add a silence; at least one matcher and a comment")
    add.add_argument("--kind", action="append", default=[], help="alert kind (repeatable)")
    add.add_argument("--severity", action="append", default=[], choices=["info", "warning", "critical"])
    add.add_argument("--agency", action="append", default=[], help="agency code, e.g. PTP (repeatable)")
    add.add_argument("--ref", action="append", default=[], help="dossier code or plan task id (repeatable)")
    add.add_argument("--alert-key", action="append", default=[], dest="alert_keys", help="exact alert_key")
    add.add_argument("--receiver", action="append", default=[], help="official id of the directory (repeatable)")
    span = add.add_mutually_exclusive_group(required=True)
    span.add_argument("--duration", help="how long, e.g. 2h, 3d, 1w")
    span.add_argument("--until", help="end time, RFC 3339 with an offset, e.g. 2026-12-01T17:00:00+07:00")
    add.add_argument("--starts-at", help="start time (default now), RFC 3339 with an offset")
    add.add_argument("--comment", required=True, help="why (no personal data)")
    add.add_argument("--json", action="store_true", help="print the silence as JSON")
    add.set_defaults(func=_silence_add)

    lst = ssub.add_parser("list", help="list active and pending silences")
    lst.add_argument("--all", action="store_true", help="include expired silences")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=_silence_list)

    exp = ssub.add_parser("expire", help="end a silence now")
    exp.add_argument("silence_id")
    exp.set_defaults(func=_silence_expire)

    alerts = subparsers.add_parser("alerts", help="answer for a notifier alert (ack)")
    asub = alerts.add_subparsers(dest="alerts_command", metavar="ACTION")
    asub.required = True
    ack = asub.add_parser("ack", help="acknowledge an alert: no more reminders or escalation until it changes")
    ack.add_argument("alert_key", metavar="ALERT_KEY")
    ack.add_argument("--as", dest="official", required=True, metavar="OFFICIAL", help="official id of the directory")
    ack.add_argument("--kind", required=True, choices=list(ACK_KINDS),
                     help="apology_sent (đã gửi thư xin lỗi) or handling (đang xử lý)")
    ack.add_argument("--note", default="", help="optional note (no personal data)")
    ack.set_defaults(func=_alerts_ack)

    notes = subparsers.add_parser("notifications", help="query the notifier's notification log, outbox and failures")
    notes.add_argument("--receiver", help="official id")
    notes.add_argument("--agency", help="agency code")
    notes.add_argument("--alert-key")
    notes.add_argument("--since", help="a duration back from now (2d) or a time with an offset")
    notes.add_argument("--limit", type=int, default=50)
    notes.add_argument("--outbox", choices=["pending", "sent", "failed", "all"],
                       help="show notices instead of the log: waiting in the outbox, sent, or given up")
    notes.add_argument("--json", action="store_true")
    notes.set_defaults(func=_notifications)


def _open() -> tuple[Store, NotifierSettings]:
    common = CommonSettings()
    settings = NotifierSettings()
    store = Store(make_engine(common.database_url_for("notifier")))
    store.create_schema()
    return store, settings


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _time(value: str, *, name: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise SystemExit(f"{name}: {value!r} is not a time (RFC 3339, e.g. 2026-12-01T17:00:00+07:00)") from None
    if moment.tzinfo is None:
        raise SystemExit(f"{name}: a time needs an offset, e.g. +07:00")
    return moment.astimezone(dt.timezone.utc)


def _local(moment: dt.datetime | None) -> str:
    return moment.astimezone(VN_TZ).strftime("%d/%m/%Y %H:%M") if moment else "-"


def _silence_dict(s: Silence, now: dt.datetime) -> dict[str, Any]:
    matchers = {k: sorted(getattr(s, k)) for k in ("kinds", "severities", "agencies", "refs", "alert_keys",
                                                    "receivers") if getattr(s, k)}
    return {"id": s.id, "state": s.state(now), "starts_at": s.starts_at.isoformat(), "ends_at": s.ends_at.isoformat(),
            "matchers": matchers, "comment": s.comment}


def _print_silences(silences: list[Silence], now: dt.datetime, as_json: bool) -> None:
    if as_json:
        print(json.dumps([_silence_dict(s, now) for s in silences], ensure_ascii=False, indent=2))
        return
    if not silences:
        print("no silences")
        return
    for s in silences:
        d = _silence_dict(s, now)
        match = " ".join(f"{k}={','.join(v)}" for k, v in d["matchers"].items())
        print(f"{s.id}  {d['state']:<8} {_local(s.starts_at)} -> {_local(s.ends_at)}  {match}  # {s.comment}")


def _silence_add(args: argparse.Namespace) -> int:
    store, settings = _open()
    now = _now()
    try:
        directory = load_directory(settings.directory_path(), agencies=AgencySettings().load())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    problems = [f"--kind: unknown alert kind {k!r}" for k in args.kind if k not in ALERT_KINDS]
    problems += [f"--agency: unknown agency code {a!r}" for a in args.agency if a not in directory.agency_names]
    problems += [f"--receiver: no official {r!r} in the directory" for r in args.receiver
                 if r not in directory.officials]
    starts = _time(args.starts_at, name="--starts-at") if args.starts_at else now
    if args.duration:
        try:
            ends = starts + parse_duration(args.duration)
        except ValueError as exc:
            problems.append(f"--duration: {exc}")
            ends = starts
    else:
        ends = _time(args.until, name="--until")
    silence = Silence(id="", starts_at=starts, ends_at=ends, comment=args.comment, created_at=now,
                      kinds=frozenset(args.kind), severities=frozenset(args.severity),
                      agencies=frozenset(args.agency), refs=frozenset(args.ref), alert_keys=frozenset(args.alert_keys),
                      receivers=frozenset(args.receiver))
    if not problems:
        try:
            check_new_silence(silence)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        for p in problems:
            print(f"parwatch silence add: {p}", file=sys.stderr)
        return 2
    saved = store.add_silence(silence)
    if args.json:
        print(json.dumps(_silence_dict(saved, now), ensure_ascii=False, indent=2))
    else:
        print(f"silence {saved.id} added, active {_local(saved.starts_at)} -> {_local(saved.ends_at)}")
    return 0


def _silence_list(args: argparse.Namespace) -> int:
    store, _ = _open()
    now = _now()
    _print_silences(store.silences(now=now, include_expired=args.all), now, args.json)
    return 0


def _silence_expire(args: argparse.Namespace) -> int:
    store, _ = _open()
    s = store.expire_silence(args.silence_id, now=_now())
    if s is None:
        print(f"parwatch silence expire: no silence {args.silence_id!r}", file=sys.stderr)
        return 1
    print(f"silence {s.id} expired at {_local(s.ends_at)}")
    return 0


def _alerts_ack(args: argparse.Namespace) -> int:
    store, settings = _open()
    try:
        directory = load_directory(settings.directory_path(), agencies=AgencySettings().load())
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        ack = acknowledge(store, directory, alert_key=args.alert_key, official_id=args.official, kind=args.kind,
                          note=args.note, via="cli", now=_now())
    except AckRefused as exc:
        print(f"parwatch alerts ack: {exc}", file=sys.stderr)
        return 1
    print(f"alert {ack.alert_key} acknowledged: {ack.kind_text} by {ack.official_id} at {_local(ack.acked_at)}")
    return 0


def _ack_line(ack: Acknowledgement | None) -> str:
    return f"  ack: {ack.kind} by {ack.official_id} {_local(ack.acked_at)}" if ack else ""


def _ack_json(ack: Acknowledgement | None) -> dict[str, Any] | None:
    if ack is None:
        return None
    return {"official": ack.official_id, "kind": ack.kind, "note": ack.note, "at": ack.acked_at.isoformat(),
            "via": ack.via, "episode": ack.episode.isoformat()}


@dataclass(frozen=True)
class _NoticeView:
    """One notice as ``notifications --outbox`` shows it: waiting, sent or given up."""

    id: int
    status: str
    kind: str
    receiver: str
    channel: str
    agency: str
    notices: list[str]
    at: dt.datetime  # queued (pending), sent, given up
    attempts: int | None = None
    next_attempt_at: dt.datetime | None = None
    last_error: str | None = None

    def line(self) -> str:
        when = {"pending": f"attempts={self.attempts} next={_local(self.next_attempt_at)}",
                "failed": f"attempts={self.attempts} failed={_local(self.at)}", "sent": f"sent={_local(self.at)}"}
        return (f"#{self.id:<6} {self.status:<9} {self.channel:<7} {self.receiver:<28} {self.agency:<14} "
                f"{when[self.status]} {self.last_error or ''}").rstrip()

    def json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("at", "next_attempt_at"):
            out[key] = out[key].isoformat() if out[key] else None
        return out


def _notices(store: Store, which: str, *, limit: int) -> list[_NoticeView]:
    """Pending notices from the outbox, sent ones from the notification log, failed ones from the failures."""
    out: list[_NoticeView] = []
    if which in ("pending", "all"):
        for w in store.waiting(limit=limit):
            n = Notice(w.channel, json.loads(w.payload))
            out.append(_NoticeView(w.id, "pending", n.kind, n.receiver_id, n.channel, n.agency_code, n.notice_keys,
                                   w.created_at, w.attempts, w.next_attempt_at, w.last_error))
    if which in ("sent", "all"):
        for entries in store.sent(limit=limit):
            e = entries[0]
            out.append(_NoticeView(e.outbox_id, "sent", "digest" if e.state == "digest" else "alerts", e.receiver_id,
                                   e.channel, e.agency_code, [x.notice_key for x in entries], e.sent_at))
    if which in ("failed", "all"):
        for f in store.failures(limit=limit):
            out.append(_NoticeView(f.id or 0, "failed", f.kind, f.receiver_id, f.channel, f.agency_code,
                                   list(f.notice_keys), f.failed_at, f.attempts, last_error=f.reason))
    return sorted(out, key=lambda v: v.at, reverse=True)[:limit]


def _print_notices(views: list[_NoticeView], as_json: bool) -> int:
    if as_json:
        print(json.dumps([v.json() for v in views], ensure_ascii=False, indent=2))
    else:
        for v in views:
            print(v.line())
        if not views:
            print("no notices")
    return 0


def _notifications(args: argparse.Namespace) -> int:
    store, _ = _open()
    since = None
    if args.since:
        try:
            since = _now() - parse_duration(args.since)
        except ValueError:
            since = _time(args.since, name="--since")
    if args.outbox:
        return _print_notices(_notices(store, args.outbox, limit=args.limit), args.json)
    rows = store.query_log(receiver_id=args.receiver, agency_code=args.agency, alert_key=args.alert_key, since=since,
                           limit=args.limit)
    # Who answers for each alert: its latest acknowledgement (of whatever episode; the JSON says which).
    acks = store.latest_acks(r.alert_key for r in rows if r.state != "digest")
    if args.json:
        print(json.dumps([{"sent_at": r.sent_at.isoformat(), "receiver": r.receiver_id, "channel": r.channel,
                           "agency": r.agency_code, "alert_key": r.alert_key, "state": r.state, "kind": r.kind,
                           "severity": r.severity, "outbox_id": r.outbox_id, "ack": _ack_json(acks.get(r.alert_key))}
                          for r in rows], ensure_ascii=False, indent=2))
        return 0
    if not rows:
        print("no notifications")
    for r in rows:
        print(f"{_local(r.sent_at)}  {r.channel:<7} {r.receiver_id:<28} {r.agency_code:<14} {r.state:<8} "
              f"{r.kind:<20} {r.alert_key}{_ack_line(acks.get(r.alert_key))}")
    return 0
