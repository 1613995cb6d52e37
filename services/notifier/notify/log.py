"""The log channel: the embedded default, writes that a notice would go out.

It logs the delivery id, receiver id and subject line's agency, never an
address or the body. It cannot fail.
"""

from __future__ import annotations

import logging

from services.notifier.domain.model import Official
from services.notifier.notify import Message, SendResult

log = logging.getLogger(__name__)


class LogChannel:
    name = "log"

    async def send(self, official: Official, message: Message) -> SendResult:
        log.info(
            "notification delivery=%s receiver=%s agency=%s type=%s items=%d",
            message.delivery_id,
            official.id,
            message.data.get("agency", {}).get("code", "-"),
            message.data.get("type", "-"),
            len(message.data.get("alerts", ())),
        )
        return SendResult.sent()
