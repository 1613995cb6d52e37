"""E-mail over SMTP with aiosmtplib: STARTTLS or implicit TLS, certificates verified.

The server certificate is always verified (system CAs, or ``ca_file``) and
its host name checked; plain SMTP is allowed by the settings only to a
loopback host. The password comes from the environment or a secret file.
Each message carries a stable ``Message-ID`` built from the delivery id, so
a receiving system can tell a retry from a new notice.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from dataclasses import dataclass
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Literal

import aiosmtplib

from services.notifier.domain.model import Official
from services.notifier.notify import Message, SendResult

log = logging.getLogger(__name__)


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context that verifies the server: CERT_REQUIRED and host name check."""
    ctx = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    return ctx


@dataclass(kw_only=True, eq=False, repr=False)  # no repr: it would show the password
class SmtpChannel:
    name = "smtp"

    host: str
    port: int
    security: Literal["starttls", "tls", "none"]
    sender: str
    user: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # CA bundle to verify the server with (default: system CAs)
    timeout: float = 30.0
    domain: str = "parwatch.invalid"

    def __post_init__(self) -> None:
        self.context = tls_context(self.ca_file) if self.security != "none" else None

    def build(self, official: Official, message: Message) -> MIMEMultipart:
        """A multipart/alternative mail (plain text, then HTML), UTF-8.

        Built with the compat32 classes on purpose: the newer ``EmailMessage``
        folding of Python 3.11 drops the space between two RFC 2047 encoded
        words ("1 hồ sơ" arrives as "1 hồsơ"); ``Header`` folds correctly.
        """
        if not official.email:
            raise ValueError("official has no e-mail address")
        mail = MIMEMultipart("alternative")
        mail["Subject"] = Header(message.subject, "utf-8")
        mail["From"] = self.sender
        mail["To"] = official.email
        mail["Message-ID"] = make_msgid(idstring=message.delivery_id, domain=self.domain)
        mail["X-Parwatch-Delivery"] = message.delivery_id
        mail["Auto-Submitted"] = "auto-generated"
        if "sent_at" in message.data:
            mail["Date"] = format_datetime(dt.datetime.fromisoformat(message.data["sent_at"]))
        mail.attach(MIMEText(message.text, "plain", "utf-8"))
        mail.attach(MIMEText(message.html, "html", "utf-8"))
        return mail

    async def send(self, official: Official, message: Message) -> SendResult:
        if not official.email:
            return SendResult.give_up("official has no e-mail address")
        mail = self.build(official, message)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            use_tls=self.security == "tls",
            start_tls=True if self.security == "starttls" else False,
            tls_context=self.context,
            timeout=self.timeout,
            local_hostname=self.domain,
        )
        try:
            async with client:
                if self.user:
                    await client.login(self.user, self.password or "")
                await client.send_message(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            if all(400 <= c < 500 for c in codes):
                return SendResult.retry(f"recipient deferred ({codes})")
            return SendResult.give_up(f"recipient refused ({codes})")
        except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError) as exc:
            if 400 <= exc.code < 500:
                return SendResult.retry(f"{type(exc).__name__} {exc.code}")
            return SendResult.give_up(f"{type(exc).__name__} {exc.code}")
        except aiosmtplib.SMTPAuthenticationError as exc:
            # A wrong password is fixed by an operator; the notice waits for it.
            log.error("smtp authentication failed code=%s; notices wait until it is fixed", exc.code)
            return SendResult.retry(f"authentication failed ({exc.code})")
        except ssl.SSLCertVerificationError as exc:
            log.error("smtp server certificate not trusted host=%s: %s", self.host, exc.verify_message)
            return SendResult.retry("server certificate verification failed")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLCertVerificationError):
                log.error("smtp server certificate not trusted host=%s: %s", self.host, cause.verify_message)
                return SendResult.retry("server certificate verification failed")
            return SendResult.retry(f"{type(exc).__name__}")
        return SendResult.sent()
