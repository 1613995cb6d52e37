"""The officials' web page, hosted by scoring (docs/web.md): :func:`build_web` wires it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter
from sqlalchemy import Engine

from services.scoring.board import Directory, Scoreboard
from services.scoring.settings import PeerSettings, ScoringSettings
from services.scoring.web.auth import SECRET_FILE, Sessions
from services.scoring.web.pages import WebPages
from services.scoring.web.peers import Peer, Peers
from services.scoring.web.store import WebStore
from shared.secret import load_secret


def _secret(value: object) -> str | None:
    return value.get_secret_value() if value is not None else None  # type: ignore[attr-defined]


def peers_from(settings: ScoringSettings, peers: PeerSettings) -> Peers:
    return Peers(
        notifier=Peer("notifier", settings.web_notifier_url or f"http://127.0.0.1:{peers.notifier_port}",
                      _secret(peers.notifier_api_token)),
        monitor=Peer("deadline_monitor", settings.web_monitor_url or f"http://127.0.0.1:{peers.monitor_port}",
                     _secret(peers.monitor_api_token)),
    )


def build_web(*, board: Scoreboard, directory: Directory, clock: Callable[[], dt.datetime], engine: Engine,
              settings: ScoringSettings, data_dir: Path, peers: PeerSettings | None = None) -> tuple[APIRouter,
                                                                                                      WebStore]:
    """The page's router and its store (whose schema the caller creates at start)."""
    store = WebStore(engine)
    secret = load_secret(settings.web_secret.get_secret_value().encode() if settings.web_secret else None, data_dir,
                         name=SECRET_FILE)
    pages = WebPages(board=board, directory=directory, clock=clock, store=store,
                     sessions=Sessions(secret, max_age_seconds=int(settings.web_session_hours * 3600)),
                     peers=peers_from(settings, peers or PeerSettings()),
                     open_read_on_loopback=settings.web_open_read_on_loopback,
                     secure_cookies=settings.web_secure_cookies)
    return pages.router(), store
