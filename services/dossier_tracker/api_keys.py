"""API keys of the HTTP ingest (``POST /events``): one key, one ``source``.

A key reads ``pwk_<key id>.<secret>``: the key id (10 hex digits) names the
row, the secret (32 random bytes, URL-safe base64) proves it. Only a hash of
the secret is stored (``hashlib.scrypt``, a salt of its own per key), in the
tracker's database (table ``tracker_api_key``); the whole key is shown once,
by ``parwatch keys add``, and cannot be read back. A request's key is found by
its id and checked with a constant-time comparison (``hmac.compare_digest``).

scrypt costs about 50 ms of CPU on purpose; a key that passed is remembered in
this process by a SHA-256 of the whole key (:class:`KeyChecker`), so a client
sending many requests pays it once. The row is read at every request, so a
revoked key is refused from the next request on. Guessing secrets under a
known key id cannot burn that CPU either: after :data:`MAX_FAILURES` wrong
secrets for one id within :data:`FAILURE_WINDOW` seconds, the id's uncached
secrets are refused unchecked until the window ends (its client, whose key
is remembered, goes on).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Column, Engine, MetaData, String, Table, insert, select, update

from shared.db import UtcDateTime
from shared.events import ShortText

PREFIX = "pwk_"
KEY_PATTERN = re.compile(r"^pwk_([0-9a-f]{10})\.([A-Za-z0-9_-]{43})$")
#: Wrong secrets for one key id within FAILURE_WINDOW seconds before that id's secrets are refused unchecked.
MAX_FAILURES = 10
FAILURE_WINDOW = 60.0
#: scrypt's cost: n = 2**14, r = 8, p = 1 (16 MiB, tens of milliseconds), as hashlib's documentation suggests.
SCRYPT = {"n": 2**14, "r": 8, "p": 1}

METADATA = MetaData()
API_KEYS = Table(
    "tracker_api_key",
    METADATA,
    Column("key_id", String(16), primary_key=True),
    Column("source", String(256), nullable=False),
    Column("secret_hash", String(256), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
)

_SOURCE = TypeAdapter(ShortText)


def create_key_schema(engine: Engine) -> None:
    METADATA.create_all(engine, tables=[API_KEYS])


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    source: str
    secret_hash: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


def check_source(source: str) -> str:
    """``source`` as the contract takes it (1..256 characters, no control character); ValueError otherwise."""
    try:
        return _SOURCE.validate_python(source)
    except ValidationError:
        raise ValueError("source must be 1 to 256 characters without control, format or line-separator characters")\
            from None


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **SCRYPT)
    return f"scrypt${SCRYPT['n']}${SCRYPT['r']}${SCRYPT['p']}${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` is the one ``stored`` (from :func:`hash_secret`) was made of; constant-time compare."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except ValueError:
        return False
    return hmac.compare_digest(computed, bytes.fromhex(digest))


def split_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    found = KEY_PATTERN.match(key)
    return (found.group(1), found.group(2)) if found else None


class KeyStore:
    """The ``tracker_api_key`` table: all SQL about keys."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, source: str, *, now: dt.datetime) -> tuple[str, str]:
        """A new key for ``source``: (its id, the whole key). The key itself is not kept."""
        source = check_source(source)
        key_id, secret = secrets.token_hex(5), secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(insert(API_KEYS).values(key_id=key_id, source=source, secret_hash=hash_secret(secret),
                                                 created_at=now, revoked_at=None))
        return key_id, f"{PREFIX}{key_id}.{secret}"

    def get(self, key_id: str) -> KeyRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(API_KEYS).where(API_KEYS.c.key_id == key_id)).mappings().first()
        return KeyRecord(**row) if row is not None else None

    def all(self) -> list[KeyRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(API_KEYS).order_by(API_KEYS.c.created_at, API_KEYS.c.key_id)).mappings().all()
        return [KeyRecord(**r) for r in rows]

    def revoke(self, key_id: str, *, now: dt.datetime) -> bool:
        """Revoke a key (True), or say there is no such key still valid (False)."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(API_KEYS).where(API_KEYS.c.key_id == key_id, API_KEYS.c.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        return bool(done.rowcount)


class KeyChecker:
    """Which source a presented key may publish as (None: no valid key). Blocking: call it in a thread."""

    def __init__(self, store: KeyStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.clock = clock
        self._passed: dict[str, bytes] = {}  # key id -> SHA-256 of the whole key that passed scrypt
        self._failed: dict[str, tuple[float, int]] = {}  # key id -> (start of its window, wrong secrets in it)

    def source_of(self, key: str) -> str | None:
        parts = split_key(key)
        if parts is None:
            return None
        key_id, secret = parts
        record = self.store.get(key_id)
        if record is None or record.revoked_at is not None:
            self._passed.pop(key_id, None)
            return None
        fingerprint = hashlib.sha256(key.encode()).digest()
        known = self._passed.get(key_id)
        if known is not None and hmac.compare_digest(known, fingerprint):
            return record.source
        now = self.clock()
        since, failures = self._failed.get(key_id, (now, 0))
        if now - since >= FAILURE_WINDOW:
            since, failures = now, 0
        if failures >= MAX_FAILURES:
            return None
        if not secret_matches(secret, record.secret_hash):
            self._failed[key_id] = (since, failures + 1)
            return None
        self._failed.pop(key_id, None)
        self._passed[key_id] = fingerprint
        return record.source
