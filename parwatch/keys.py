"""``parwatch keys``: the API keys of dossier_tracker's HTTP ingest (``POST /events``).

    parwatch keys add --source SOURCE    issue a key for SOURCE; printed once, only its hash is kept
    parwatch keys list                   every key: id, source, created, revoked (never the key)
    parwatch keys revoke KEY_ID          refuse the key from the next request on

The keys live in the tracker's database (``PARWATCH_DATABASE_URL``, else the
SQLite file under ``PARWATCH_DATA_DIR``), the table made here if the tracker
never ran yet (:mod:`services.dossier_tracker.api_keys`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from services.dossier_tracker.api_keys import KeyStore, create_key_schema
from shared.calendar import VN_TZ
from shared.db import make_engine
from shared.settings import CommonSettings
from shared.text import safe_text


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="API keys of the HTTP ingest (POST /events on dossier_tracker)")
    ksub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    add = ksub.add_parser("add", help="issue a key bound to one source; it is printed once")
    add.add_argument("--source", required=True, help="the CloudEvents source this key may publish as")
    add.set_defaults(func=_add)
    lst = ksub.add_parser("list", help="every key (id, source, created, revoked); never the key itself")
    lst.set_defaults(func=_list)
    revoke = ksub.add_parser("revoke", help="revoke a key by its id (the 10 hex digits after pwk_)")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)


def _store() -> KeyStore:
    engine = make_engine(CommonSettings().database_url_for("dossier_tracker"))
    create_key_schema(engine)
    return KeyStore(engine)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _add(args: argparse.Namespace) -> int:
    store = _store()
    try:
        key_id, key = store.add(args.source, now=_now())
    except ValueError as exc:
        print(f"parwatch keys add: {exc}", file=sys.stderr)
        return 2
    finally:
        store.engine.dispose()
    print(key)
    print(f"key {key_id} for source {safe_text(args.source, limit=256)}: shown this once, only its hash is kept; "
          "send it as 'Authorization: Bearer <key>'", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store()
    try:
        records = store.all()
    finally:
        store.engine.dispose()
    if not records:
        print("no API keys")
        return 0
    for r in records:
        state = f"revoked {r.revoked_at.astimezone(VN_TZ):%Y-%m-%d %H:%M}" if r.revoked_at else "valid"
        print(f"{r.key_id}  {r.created_at.astimezone(VN_TZ):%Y-%m-%d %H:%M}  {state:<24}  "
              f"{safe_text(r.source, limit=256)}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = _store()
    try:
        done = store.revoke(args.key_id, now=_now())
    finally:
        store.engine.dispose()
    if not done:
        print(f"no valid key {safe_text(args.key_id, limit=40)}", file=sys.stderr)
        return 1
    print(f"key {args.key_id} revoked")
    return 0
