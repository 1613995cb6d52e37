"""The officials' page's own tables in scoring's database: password hashes and the record of every write.

* ``scoring_web_credential``: an official's Argon2id password hash (never the password);
* ``scoring_web_audit``: who did what, for which agency, when, and how it ended (``ok`` or the refusal), for every
  write the page accepts or refuses. No note text, no address: ids, codes and the outcome only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, delete, insert, select, update

from shared.db import UtcDateTime

metadata = MetaData()

CREDENTIAL = Table(
    "scoring_web_credential", metadata,
    Column("official_id", String(64), primary_key=True),
    Column("password_hash", String(256), nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

AUDIT = Table(
    "scoring_web_audit", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False, index=True),
    Column("official_id", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("agency_code", String(64), nullable=False),
    Column("target", String(256), nullable=False),
    Column("outcome", String(256), nullable=False),
)


@dataclass(frozen=True)
class AuditEntry:
    at: dt.datetime
    official_id: str
    action: str
    agency_code: str
    target: str
    outcome: str


class WebStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create_schema(self) -> None:
        metadata.create_all(self.engine)

    def password_hash(self, official_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(select(CREDENTIAL.c.password_hash).where(CREDENTIAL.c.official_id == official_id)
                                ).scalar_one_or_none()

    def set_password_hash(self, official_id: str, password_hash: str, *, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(update(CREDENTIAL).where(CREDENTIAL.c.official_id == official_id)
                                .values(password_hash=password_hash, updated_at=now)).rowcount
            if not done:
                conn.execute(insert(CREDENTIAL).values(official_id=official_id, password_hash=password_hash,
                                                       updated_at=now))

    def remove_password(self, official_id: str) -> bool:
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(CREDENTIAL).where(CREDENTIAL.c.official_id == official_id)).rowcount)

    def record(self, entry: AuditEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(AUDIT).values(at=entry.at, official_id=entry.official_id, action=entry.action,
                                              agency_code=entry.agency_code, target=entry.target[:256],
                                              outcome=entry.outcome[:256]))

    def audit(self, *, action: str | None = None, agencies: list[str] | None = None,
              limit: int = 50) -> list[AuditEntry]:
        stmt = select(AUDIT.c.at, AUDIT.c.official_id, AUDIT.c.action, AUDIT.c.agency_code, AUDIT.c.target,
                      AUDIT.c.outcome).order_by(AUDIT.c.id.desc()).limit(limit)
        if action is not None:
            stmt = stmt.where(AUDIT.c.action == action)
        if agencies is not None:
            stmt = stmt.where(AUDIT.c.agency_code.in_(agencies))
        with self.engine.connect() as conn:
            return [AuditEntry(*row) for row in conn.execute(stmt)]
