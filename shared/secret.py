"""A service's signing secret: the configured one, else one made on first use and kept in the data folder.

Kept readable by its owner only, so what it signs (the notifier's one-click links, the web page's sessions)
stays valid across restarts without an operator choosing a secret (``make run``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

#: The shortest kept secret accepted (a made one is 43 characters).
MIN_SECRET = 32


def load_secret(configured: bytes | None, data_dir: Path, *, name: str) -> bytes:
    """The configured secret, else the one kept in ``data_dir / name`` (made on first use, owner-only).

    The file appears whole or not at all (written aside, then linked in place), so a process starting beside
    the one making it, or after a crash while it was written, never signs with an empty or partial key: a kept
    file shorter than :data:`MIN_SECRET` is refused (``ValueError``) rather than used."""
    if configured:
        return configured
    path = data_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = data_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(32))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)  # fails if another process linked its own first: that one is kept
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text(encoding="utf-8").strip().encode()
    if len(secret) < MIN_SECRET:
        raise ValueError(f"{path} holds no usable secret (empty or shorter than {MIN_SECRET} characters): delete it "
                         "to have a new one made, or configure the secret")
    return secret
