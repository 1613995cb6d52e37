"""The page reads the notifier's and deadline_monitor's data through their HTTP APIs (services share no code).

Each peer is a base URL and an optional bearer token (the peer's ``API_TOKEN``). A peer that does not answer is
:class:`PeerDown`: the page says so and shows the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 5.0


class PeerDown(RuntimeError):
    """The peer did not answer, or answered with an error the page cannot show as a refusal."""


@dataclass(frozen=True)
class PeerAnswer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def detail(self) -> str:
        return str(self.body.get("detail", "")) if isinstance(self.body, dict) else ""


@dataclass(frozen=True)
class Peer:
    name: str
    base_url: str
    token: str | None = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json: dict[str, Any] | None = None) -> PeerAnswer:
        url = self.base_url.rstrip("/") + path
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                r = await client.request(method, url, params={k: v for k, v in (params or {}).items()
                                                              if v is not None},
                                         json=json, headers=self._headers())
        except httpx.HTTPError as exc:
            raise PeerDown(f"{self.name} did not answer ({type(exc).__name__})") from None
        if r.status_code >= 500:
            raise PeerDown(f"{self.name} answered {r.status_code}")
        try:
            body = r.json()
        except ValueError:
            raise PeerDown(f"{self.name} answered something other than JSON") from None
        return PeerAnswer(r.status_code, body if isinstance(body, dict) else {"items": body})

    async def get(self, path: str, **params: Any) -> dict[str, Any]:
        answer = await self.call("GET", path, params=params)
        if not answer.ok:
            raise PeerDown(f"{self.name} refused {path}: {answer.status}")
        return answer.body

    async def post(self, path: str, body: dict[str, Any]) -> PeerAnswer:
        return await self.call("POST", path, json=body)


@dataclass(frozen=True)
class Peers:
    notifier: Peer
    monitor: Peer
