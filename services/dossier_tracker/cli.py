"""dossier_tracker's operator commands.

    parwatch dossier show CODE                 state and status history of a dossier
    parwatch deadletters list [--limit N] [--reason TEXT] [--since TIME] [--until TIME]
                                               recent dead letters with their reasons
    parwatch deadletters replay STREAM SEQ     publish one rejected message again
    parwatch deadletters replay [--reason TEXT] [--since TIME] [--until TIME]
                                               publish again every rejected message whose dead letter matches

What a dead letter holds came partly from outside (its subject, a reason
naming the sender's fields): it is printed through :func:`shared.text.safe_text`,
so no escape sequence or bidirectional control reaches the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import AsyncIterator, Iterable
from typing import Any

from services.dossier_tracker.domain import open_state
from services.dossier_tracker.store import DossierEventRow, TrackerStore
from shared.calendar import VN_TZ, load_calendar, local_date
from shared.db import make_engine
from shared.events import DEADLETTER_TYPE, EventRejected, parse_event
from shared.settings import CommonSettings
from shared.streams import DEADLETTER, stream_for
from shared.text import safe_text

STATUS_NAMES = {
    1: "Mới đăng ký",
    2: "Được tiếp nhận",
    3: "Không được tiếp nhận",
    4: "Đang xử lý",
    5: "Yêu cầu bổ sung giấy tờ",
    6: "Yêu cầu thực hiện nghĩa vụ tài chính",
    7: "Công dân yêu cầu rút hồ sơ",
    8: "Dừng xử lý",
    9: "Đã xử lý xong",
    10: "Đã trả kết quả",
}
TIMELINESS_NAMES = {"early": "trước hạn", "on_time": "đúng hạn", "late": "trễ hạn"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    dossier = sub.add_parser("dossier", help="inspect a dossier's derived state")
    dsub = dossier.add_subparsers(dest="dossier_command", metavar="COMMAND", required=True)
    show = dsub.add_parser("show", help="state and status history of one dossier")
    show.add_argument("code", help="dossier code (MaHoSo)")
    show.set_defaults(func=_show)

    letters = sub.add_parser("deadletters", help="messages rejected by parwatch, and replays")
    lsub = letters.add_subparsers(dest="deadletters_command", metavar="COMMAND", required=True)
    lst = lsub.add_parser("list", help="the most recent dead letters (those matching, with a selection)")
    lst.add_argument("--limit", type=int, default=20)
    _add_selection(lst)
    lst.set_defaults(func=_list)
    replay = lsub.add_parser(
        "replay",
        help="publish rejected messages again on their subjects: one by STREAM SEQ, or every one whose dead letter "
             "matches --reason/--since/--until",
    )
    replay.add_argument("stream", nargs="?", help="stream the message came from, e.g. TTHC_DOSSIER")
    replay.add_argument("seq", nargs="?", type=int, help="its sequence in that stream")
    _add_selection(replay)
    replay.set_defaults(func=_replay)


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", metavar="TEXT", help="dead letters whose reason holds TEXT (any case)")
    parser.add_argument("--since", metavar="TIME", type=_time,
                        help="received at or after TIME (ISO 8601; a date or a time without offset is in Vietnam)")
    parser.add_argument("--until", metavar="TIME", type=_time, help="received before TIME (same forms)")


def _time(text: str) -> dt.datetime:
    """An ISO 8601 date or time; without an offset, in the business time zone (Asia/Ho_Chi_Minh)."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "not an ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T08:00+07:00") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=VN_TZ)


def _show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    common = CommonSettings()
    calendar = load_calendar(common.calendar_overrides)
    engine = make_engine(common.database_url_for("dossier_tracker"))
    store = TrackerStore(engine, calendar=calendar)
    state = store.get_state(args.code)
    if state is None:
        print(f"no dossier {safe_text(args.code, limit=80)}", file=sys.stderr)
        return 1
    code, agency, procedure = (safe_text(v, limit=80) for v in (state.dossier_code, state.agency_code,
                                                                 state.procedure_code))
    print(f"Hồ sơ {code}  (cơ quan {agency}, TTHC {procedure})")
    print(f"  tiếp nhận: {state.receipt_day or '-'}   hạn trả: {state.due_day or '-'}"
          f"{' (theo nguồn)' if state.due_from_source else ''}")
    if state.ended_on:
        print(f"  kết thúc: {state.ended_on} ({STATUS_NAMES.get(state.end_status or 0, '?')}),"
              f" {TIMELINESS_NAMES.get(state.timeliness or '', 'không xác định được hạn')}")
    elif state.counted:
        today = local_date(dt.datetime.now(dt.timezone.utc))
        now_open = open_state(paused=state.paused, due_day=state.due_day, today=today, calendar=calendar,
                              pause_started_on=state.pause_started_on, supplement_requests=state.supplement_requests)
        print(f"  đang mở: {now_open}")
    else:
        print("  chưa được tiếp nhận: không tính vào tỷ lệ")
    print(f"  yêu cầu bổ sung: {state.supplement_requests}   phiên bản: {state.revision}")
    with engine.connect() as conn:
        t = DossierEventRow.__table__
        rows = conn.execute(
            select(t.c.sequence, t.c.occurred_at, t.c.status, t.c.source).where(t.c.dossier_code == args.code)
        ).all()
    for seq, when, status, source in sorted(rows, key=lambda r: (r[0] or 0, r[1])):
        print(f"  #{seq or '-':>3} {when.astimezone(VN_TZ):%d/%m/%Y %H:%M}  {status:>2} {STATUS_NAMES[status]}"
              f"  [{safe_text(source, limit=80)}]")
    engine.dispose()
    return 0


# -- dead letters ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Letter:
    """A dead letter as the stream holds it (the contract's fields; ``received_at`` None if unreadable)."""

    stream: str
    stream_seq: int
    subject: str
    reason: str
    received_at: dt.datetime | None


def letter_of(raw: bytes) -> Letter | None:
    """The dead letter a message of the stream holds, None if it holds none.

    One written before the contract's text rules, or by another writer, is read as far as its fields allow:
    what it says is shown through :func:`shared.text.safe_text` like any other, and its message can be replayed.
    """
    try:
        d = parse_event(raw, accept={DEADLETTER_TYPE}).data
        return Letter(stream=d.stream, stream_seq=d.stream_seq, subject=d.subject, reason=d.reason,
                      received_at=d.received_at)
    except EventRejected:
        pass
    try:
        data = json.loads(raw)["data"]
        return Letter(stream=str(data["stream"]), stream_seq=int(data["stream_seq"]),
                      subject=str(data.get("subject", "")), reason=str(data.get("reason", "")),
                      received_at=_aware(data.get("received_at")))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
        return None


def _aware(text: object) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which dead letters: a reason holding ``reason`` (any case), received in [``since``, ``until``)."""

    reason: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None

    @classmethod
    def of(cls, args: argparse.Namespace) -> Selection:
        return cls(reason=args.reason, since=args.since, until=args.until)

    @property
    def empty(self) -> bool:
        return self.reason is None and self.since is None and self.until is None

    def matches(self, letter: Letter) -> bool:
        if self.reason is not None and self.reason.casefold() not in letter.reason.casefold():
            return False
        if self.since is None and self.until is None:
            return True
        if letter.received_at is None:  # when is unknown: in no time range
            return False
        return (self.since is None or letter.received_at >= self.since) and (
            self.until is None or letter.received_at < self.until)


@dataclasses.dataclass
class Replayed:
    """What a replay did: the messages published again, and why the others could not be."""

    matched: int = 0
    published: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)  # (stream, seq, subject)
    not_replayed: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)  # why -> how many

    def summary(self) -> str:
        if not self.matched:
            return "no dead letter matches; nothing replayed"
        text = f"replayed {len(self.published)} of {self.matched} matching message(s)"
        if self.not_replayed:
            why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.not_replayed.items()))
            text += f"; {sum(self.not_replayed.values())} could not be: {why}"
        return text


class NotReplayed(Exception):
    """A message that cannot be published again; ``why`` is a short phrase for the summary."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


@contextlib.asynccontextmanager
async def _jetstream() -> AsyncIterator[Any]:
    import nats

    common = CommonSettings()
    nc = await nats.connect(common.nats_servers(), **common.nats_auth().connect_options())
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


#: Messages of the dead-letter stream asked for at once, each by its sequence.
READ_WINDOW = 64


async def _read_letters(js: Any, *, selection: Selection | None = None, newest: int | None = None) -> list[Letter]:
    """The dead letters the stream holds that match ``selection``, oldest first: every one, or the ``newest``
    most recent. Each message is read by its sequence (``$JS.API.STREAM.MSG.GET``, answered by the stream's
    leader), newest first, so ``list`` stops once it has its ``--limit``; no consumer is created, which the
    operator's read-only credential may not do. A message there that holds no dead letter is skipped, and so is a
    sequence the stream no longer holds."""
    from nats.js.errors import NotFoundError

    selection = selection or Selection()
    stream = stream_for(DEADLETTER).name
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    if not info.state.messages:
        return []

    async def get(seq: int) -> bytes | None:
        try:
            return (await js.get_msg(stream, seq)).data or b""
        except NotFoundError:  # removed since (the stream's limits), or never stored (a gap)
            return None

    found: list[Letter] = []
    top = info.state.last_seq
    while top >= info.state.first_seq and (newest is None or len(found) < newest):
        seqs = range(top, max(info.state.first_seq, top - READ_WINDOW + 1) - 1, -1)
        for raw in await asyncio.gather(*(get(seq) for seq in seqs)):
            letter = letter_of(raw) if raw is not None else None
            if letter is not None and selection.matches(letter) and (newest is None or len(found) < newest):
                found.append(letter)
        top = seqs[-1] - 1
    found.reverse()
    return found


async def _fetch_letters(limit: int, selection: Selection | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most recent dead letters that match, newest first (as dicts of the contract's fields)."""
    if limit <= 0:
        return []
    async with _jetstream() as js:
        letters = await _read_letters(js, selection=selection, newest=limit)
    return [dataclasses.asdict(d) for d in reversed(letters)]


def _list(args: argparse.Namespace) -> int:
    letters = asyncio.run(_fetch_letters(args.limit, Selection.of(args)))
    if not letters:
        print("no dead letters" if Selection.of(args).empty else "no dead letter matches")
        return 0
    for d in letters:
        print(_letter_line(d))
    return 0


def _letter_line(d: dict[str, Any]) -> str:
    """One dead letter on one line; everything in it that came from outside is made safe to print."""
    when = d["received_at"]
    received = when.astimezone(VN_TZ).isoformat(timespec="seconds") if when is not None else "?"
    where = safe_text(f"{d['stream']}:{d['stream_seq']}", limit=100)
    return f"{received}  {where}  {safe_text(d['subject'], limit=120)}  {safe_text(d['reason'], limit=500)}"


async def _republish(js: Any, stream: str, seq: int) -> str:
    """Publish message ``seq`` of ``stream`` again on its subject; its subject. Raises :class:`NotReplayed`."""
    from nats.errors import Error as NatsError
    from nats.js.errors import NotFoundError

    try:
        msg = await js.get_msg(stream, seq)
    except NotFoundError:
        raise NotReplayed("no longer in their stream (retention or limits removed them)") from None
    except NatsError as exc:
        raise NotReplayed(f"not readable from their stream ({type(exc).__name__})") from None
    headers = dict(msg.headers or {})
    # A new broker id, so the duplicate window does not swallow the replay;
    # parwatch's own (source, id) dedup still applies downstream.
    headers["Nats-Msg-Id"] = f"replay:{stream}:{seq}:{headers.get('Nats-Msg-Id', '')}"[:256]
    try:
        ack = await js.publish(msg.subject, msg.data, headers=headers)
    except NatsError as exc:
        raise NotReplayed(f"refused by the broker ({type(exc).__name__})") from None
    if ack.duplicate:
        raise NotReplayed("already replayed within the broker's duplicate window")
    return str(msg.subject)


async def _replay_one(stream: str, seq: int) -> str:
    async with _jetstream() as js:
        return await _republish(js, stream, seq)


async def _replay_messages(js: Any, targets: Iterable[tuple[str, int]]) -> Replayed:
    """Publish each (stream, seq) again, once each, in order; count what could not be and why."""
    done = Replayed()
    for stream, seq in dict.fromkeys(targets):  # a message two services rejected is replayed once
        done.matched += 1
        try:
            done.published.append((stream, seq, await _republish(js, stream, seq)))
        except NotReplayed as exc:
            done.not_replayed[exc.why] += 1
    return done


async def _replay_selected(selection: Selection) -> Replayed:
    """Replay every message whose dead letter matches ``selection``, oldest first."""
    async with _jetstream() as js:
        letters = [d for d in await _read_letters(js) if selection.matches(d)]
        return await _replay_messages(js, [(d.stream, d.stream_seq) for d in letters])


def _replay(args: argparse.Namespace) -> int:
    selection = Selection.of(args)
    if (args.stream is None) != (args.seq is None) or (args.stream is None) == selection.empty:
        print("give either STREAM SEQ, or a selection (--reason, --since, --until)", file=sys.stderr)
        return 2
    if args.stream is not None:
        done = asyncio.run(_replay_targets([(args.stream, args.seq)]))
    else:
        done = asyncio.run(_replay_selected(selection))
    for stream, seq, subject in done.published:
        print(f"replayed {safe_text(stream, limit=100)}:{seq} on {safe_text(subject, limit=120)}")
    print(done.summary())
    return 1 if done.not_replayed else 0


async def _replay_targets(targets: list[tuple[str, int]]) -> Replayed:
    async with _jetstream() as js:
        return await _replay_messages(js, targets)
