"""Webhooks with httpx: a JSON body signed with HMAC-SHA256.

Headers: ``X-Parwatch-Signature: sha256=<hex>`` over the exact body bytes
with the official's secret, ``X-Parwatch-Delivery`` (stable across retries:
receivers dedup on it) and ``X-Parwatch-Timestamp``. TLS certificates are
verified. Connection errors, timeouts, 408, 429 and 5xx are retryable; any
other 4xx is not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from pathlib import Path

import httpx

from services.notifier.domain.model import Official
from services.notifier.notify import Message, SendResult

SIGNATURE_HEADER = "X-Parwatch-Signature"
DELIVERY_HEADER = "X-Parwatch-Delivery"
TIMESTAMP_HEADER = "X-Parwatch-Timestamp"
RETRYABLE_STATUS = frozenset({408, 425, 429})


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


class WebhookChannel:
    name = "webhook"

    def __init__(
        self,
        *,
        secret_for: Callable[[str], bytes | None],
        timeout: float = 10.0,
        ca_file: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.secret_for = secret_for
        self.timeout = timeout
        self.verify: str | bool = str(ca_file) if ca_file else True
        self.transport = transport

    async def send(self, official: Official, message: Message) -> SendResult:
        if not official.webhook:
            return SendResult.give_up("official has no webhook")
        secret = self.secret_for(official.id)
        if not secret:
            return SendResult.retry("no webhook secret configured for this receiver")
        body = json.dumps(dict(message.data), ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: sign(secret, body),
            DELIVERY_HEADER: message.delivery_id,
            TIMESTAMP_HEADER: str(message.data.get("sent_at", "")),
            "User-Agent": "parwatch-notifier/1",
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout, verify=self.verify, transport=self.transport,
                                         follow_redirects=False) as client:
                response = await client.post(official.webhook, content=body, headers=headers)
        except httpx.TimeoutException:
            return SendResult.retry("timeout")
        except httpx.TransportError as exc:
            return SendResult.retry(type(exc).__name__)
        status = response.status_code
        if 200 <= status < 300:
            return SendResult.sent()
        if status >= 500 or status in RETRYABLE_STATUS:
            return SendResult.retry(f"HTTP {status}")
        return SendResult.give_up(f"HTTP {status}")
