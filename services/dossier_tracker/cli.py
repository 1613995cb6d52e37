"""dossier_tracker's operator commands.

    parwatch dossier show CODE                 state and status history of a dossier
    parwatch deadletters list [--limit N]      recent dead letters with their reasons
    parwatch deadletters replay STREAM SEQ     publish a dead-lettered message again
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import Any

from services.dossier_tracker.domain import open_state
from services.dossier_tracker.store import DossierEventRow, TrackerStore
from shared.calendar import VN_TZ, load_calendar, local_date
from shared.db import make_engine
from shared.settings import CommonSettings

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
    lst = lsub.add_parser("list", help="the most recent dead letters")
    lst.add_argument("--limit", type=int, default=20)
    lst.set_defaults(func=_list)
    replay = lsub.add_parser("replay", help="publish a dead-lettered message again on its subject")
    replay.add_argument("stream", help="stream the message came from, e.g. TTHC_DOSSIER")
    replay.add_argument("seq", type=int, help="its sequence in that stream")
    replay.set_defaults(func=_replay)


def _show(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    common = CommonSettings()
    calendar = load_calendar(common.calendar_overrides)
    engine = make_engine(common.database_url_for("dossier_tracker"))
    store = TrackerStore(engine, calendar=calendar)
    state = store.get_state(args.code)
    if state is None:
        print(f"no dossier {args.code}", file=sys.stderr)
        return 1
    print(f"Hồ sơ {state.dossier_code}  (cơ quan {state.agency_code}, TTHC {state.procedure_code})")
    print(f"  tiếp nhận: {state.receipt_day or '-'}   hạn trả: {state.due_day or '-'}"
          f"{' (theo nguồn)' if state.due_from_source else ''}")
    if state.ended_on:
        print(f"  kết thúc: {state.ended_on} ({STATUS_NAMES.get(state.end_status or 0, '?')}),"
              f" {TIMELINESS_NAMES.get(state.timeliness or '', 'không xác định được hạn')}")
    elif state.counted:
        today = local_date(dt.datetime.now(dt.timezone.utc))
        print(f"  đang mở: {open_state(paused=state.paused, due_day=state.due_day, today=today, calendar=calendar)}")
    else:
        print("  chưa được tiếp nhận: không tính vào tỷ lệ")
    print(f"  yêu cầu bổ sung: {state.supplement_requests}   phiên bản: {state.revision}")
    with engine.connect() as conn:
        t = DossierEventRow.__table__
        rows = conn.execute(
            select(t.c.sequence, t.c.occurred_at, t.c.status, t.c.source).where(t.c.dossier_code == args.code)
        ).all()
    for seq, when, status, source in sorted(rows, key=lambda r: (r[0] or 0, r[1])):
        print(f"  #{seq or '-':>3} {when.astimezone(VN_TZ):%d/%m/%Y %H:%M}  {status:>2} {STATUS_NAMES[status]}  [{source}]")
    engine.dispose()
    return 0


async def _fetch_letters(limit: int) -> list[dict[str, Any]]:
    import nats
    from nats.js.errors import NotFoundError

    common = CommonSettings()
    nc = await nats.connect(common.nats_servers())
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info("TTHC_DEADLETTER")
        except NotFoundError:
            return []
        last, first = info.state.last_seq, info.state.first_seq
        out = []
        seq = last
        while seq >= first and len(out) < limit:
            try:
                msg = await js.get_msg("TTHC_DEADLETTER", seq)
            except NotFoundError:
                seq -= 1
                continue
            out.append(json.loads(msg.data)["data"])
            seq -= 1
        return out
    finally:
        await nc.close()


def _list(args: argparse.Namespace) -> int:
    letters = asyncio.run(_fetch_letters(args.limit))
    if not letters:
        print("no dead letters")
        return 0
    for d in letters:
        print(f"{d['received_at']}  {d['stream']}:{d['stream_seq']}  {d['subject']}  {d['reason']}")
    return 0


async def _replay_one(stream: str, seq: int) -> str:
    import nats

    common = CommonSettings()
    nc = await nats.connect(common.nats_servers())
    try:
        js = nc.jetstream()
        msg = await js.get_msg(stream, seq)
        headers = dict(msg.headers or {})
        # A new broker id, so the duplicate window does not swallow the replay;
        # parwatch's own (source, id) dedup still applies downstream.
        headers["Nats-Msg-Id"] = f"replay:{stream}:{seq}:{headers.get('Nats-Msg-Id', '')}"[:256]
        await js.publish(msg.subject, msg.data, headers=headers)
        return msg.subject
    finally:
        await nc.close()


def _replay(args: argparse.Namespace) -> int:
    subject = asyncio.run(_replay_one(args.stream, args.seq))
    print(f"replayed {args.stream}:{args.seq} on {subject}")
    return 0
