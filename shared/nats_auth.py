"""How a parwatch process authenticates to NATS and checks its servers: an nkey seed file and TLS files.

Nothing set (``make run``): a plain connection, as before. With a seed file
(``PARWATCH_NATS_NKEY_SEED_FILE``) the process signs the server's nonce with
its nkey and takes its replies on its private inbox, ``_INBOX_<public key>``
(the only inbox its permissions let it read, ``parwatch.nats_access``). With a
CA file (``PARWATCH_NATS_TLS_CA_FILE``) the connection is TLS and the
server's certificate is checked against it; a client certificate is added
when the server asks one. The seed is read from its file when needed and
never logged.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def inbox_prefix(public_key: str) -> str:
    """The private inbox prefix of the user whose nkey is ``public_key``: only that user may subscribe under it."""
    return f"_INBOX_{public_key}"


def public_key_of(seed_file: Path) -> str:
    """The public key of the nkey user seed in ``seed_file`` (``ValueError`` if it holds none)."""
    import nkeys

    seed = bytearray(seed_file.read_bytes().strip())
    try:
        kp = nkeys.from_seed(seed)
        public = kp.public_key.decode()
        kp.wipe()
    except (nkeys.NkeysError, ValueError):
        raise ValueError(f"{seed_file} does not hold an nkey seed") from None
    finally:
        seed[:] = b"\0" * len(seed)
    if not public.startswith("U"):
        raise ValueError(f"{seed_file} holds an nkey seed that is not a user's")
    return public


@dataclass(frozen=True)
class NatsAuth:
    seed_file: Path | None = None
    public_key: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def of(
        cls,
        *,
        seed_file: Path | None,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
    ) -> NatsAuth:
        public = public_key_of(seed_file) if seed_file is not None else None
        return cls(seed_file=seed_file, public_key=public, ca_file=ca_file, cert_file=cert_file, key_file=key_file)

    @property
    def inbox_prefix(self) -> str | None:
        return inbox_prefix(self.public_key) if self.public_key else None

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of ``nats.connect`` (none when nothing is set)."""
        options: dict[str, Any] = {}
        context = self.ssl_context()
        if context is not None:
            options["tls"] = context
        if self.seed_file is not None:
            options["nkeys_seed"] = str(self.seed_file)
            options["inbox_prefix"] = self.inbox_prefix
        return options

    def broker_options(self) -> dict[str, Any]:
        """Keyword arguments of FastStream's ``NatsBroker`` (its ``security`` object, the inbox prefix)."""
        from faststream.nats.security import NatsNKey, NatsSecurity

        options: dict[str, Any] = {}
        context = self.ssl_context()
        if self.seed_file is not None:
            options["security"] = NatsNKey(self.seed_file, ssl_context=context, use_ssl=context is not None)
            options["inbox_prefix"] = self.inbox_prefix
        elif context is not None:
            options["security"] = NatsSecurity(ssl_context=context, use_ssl=True)
        return options


async def report_nats_error(error: Exception) -> None:
    """A connection's error callback: a refused permission says which and where to look, never a payload."""
    text = str(error)
    if "permissions violation" in text.lower():
        log.error(
            "NATS refused an operation: %s; this process's credential does not allow it (docs/running.md "
            '"Accounts and permissions")',
            text.removeprefix("nats: "),
        )
    else:
        log.warning("NATS connection error: %r", error)
