"""Who may do what on the officials' page: passwords, sessions, CSRF tokens and scopes.

* An official is one of the notifier's directory (asked through its API, :mod:`services.scoring.web.peers`); a
  password set with ``parwatch web password OFFICIAL`` is kept as an Argon2id hash (argon2-cffi) in scoring's
  database, never the password itself.
* A session is a cookie signed with itsdangerous (HMAC-SHA1 over the payload, a timestamp checked against its
  age): the official's id, the agencies the official may act for, a CSRF token and a fingerprint of the
  password hash, so a changed or removed password ends every session. HttpOnly, SameSite=Lax, Secure over TLS.
* A write (a form POST) needs the session and the form's CSRF token equal to the session's.
* A write for an agency needs that agency in the official's scope: the own agency, or every agency (``*``) for
  the district leadership and the district's own officials (the notifier's directory says which).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "parwatch_session"
SECRET_FILE = "scoring-web-secret"
_SALT = "parwatch-web-session"
_HASHER = PasswordHasher()
#: A password is at least this long (no other rule: a passphrase is welcome).
MIN_PASSWORD = 10


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password has at least {MIN_PASSWORD} characters")
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; without a hash, the same work is done and False returned,
    so the answer's time does not say whether the official has a password."""
    if stored_hash is None:
        _HASHER.hash(password or "-")
        return False
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def fingerprint(stored_hash: str) -> str:
    """A short digest of the stored hash: a session made before the password changed no longer holds."""
    return hashlib.sha256(stored_hash.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Session:
    official: str
    title: str
    agency: str
    scope: tuple[str, ...]
    csrf: str
    fingerprint: str

    def may_act_for(self, agency: str) -> bool:
        return "*" in self.scope or agency in self.scope

    @property
    def wide(self) -> bool:
        return "*" in self.scope


class Sessions:
    """Signs and reads the session cookie."""

    def __init__(self, secret: bytes, *, max_age_seconds: int) -> None:
        self._s = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age = max_age_seconds

    def issue(self, *, official: str, title: str, agency: str, scope: Sequence[str], fingerprint: str) -> tuple[
            str, Session]:
        session = Session(official=official, title=title, agency=agency, scope=tuple(scope),
                          csrf=secrets.token_urlsafe(24), fingerprint=fingerprint)
        payload: dict[str, Any] = {"o": official, "t": title, "a": agency, "s": list(scope), "c": session.csrf,
                                   "f": fingerprint}
        return self._s.dumps(payload), session

    def read(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            p = self._s.loads(cookie, max_age=self.max_age)
        except BadSignature:  # a bad signature or too old (SignatureExpired is one)
            return None
        try:
            return Session(official=str(p["o"]), title=str(p["t"]), agency=str(p["a"]),
                           scope=tuple(str(x) for x in p["s"]), csrf=str(p["c"]), fingerprint=str(p["f"]))
        except (KeyError, TypeError):
            return None


def csrf_ok(session: Session | None, sent: str | None) -> bool:
    return session is not None and bool(sent) and hmac.compare_digest(session.csrf.encode(), (sent or "").encode())
