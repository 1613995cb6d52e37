"""A service's signing secret: the configured one, else one made on first use and kept in the data folder.

Kept readable by its owner only, so what it signs (the notifier's one-click links, the web page's sessions)
stays valid across restarts without an operator choosing a secret (``make run``).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_secret(configured: bytes | None, data_dir: Path, *, name: str) -> bytes:
    """The configured secret, else the one kept in ``data_dir / name`` (made on first use, owner-only)."""
    if configured:
        return configured
    path = data_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip().encode()
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_urlsafe(32))
    return path.read_text(encoding="utf-8").strip().encode()
