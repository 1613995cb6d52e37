"""Who may call a service's private HTTP routes: a client on this machine, or one that sends the API token.

The web page's back end calls deadline_monitor's and the notifier's JSON APIs, and Alertmanager calls the
notifier's webhook; the web page itself reads openly on this machine. One rule serves them all.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import Request
from fastapi.responses import JSONResponse


def is_loopback(request: Request) -> bool:
    """The client is on this machine (its address is a loopback address)."""
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def trusted_caller(request: Request, token: str | None) -> bool:
    """A caller that sends ``Authorization: Bearer <token>`` when a token is set (compared in constant time),
    else a client on this machine."""
    if token is not None:
        sent = request.headers.get("authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {token}".encode())
    return is_loopback(request)


def refusal(request: Request, *, token: str | None, setting: str) -> JSONResponse | None:
    """None for a :func:`trusted_caller`, else the 403 that names the setting holding the token to send."""
    if trusted_caller(request, token):
        return None
    return JSONResponse({"detail": f"not allowed: send the API token ({setting})"}, status_code=403)
