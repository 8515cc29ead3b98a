"""Drive an ASGI app by its messages, as a server would, in the test's task: for websockets and
lifespan events, which httpx's ASGI transport does not speak."""

from __future__ import annotations

import asyncio
from typing import Any


async def talk(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[Any]:
    """Run ``app`` on one ASGI connection fed ``messages``; what it sent back."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for message in messages:
        inbox.put_nowait(message)
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, inbox.get, send)
    return sent


def websocket(host: str = "app", headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The scope of a websocket handshake on ``/live``."""
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return {
        "type": "websocket", "asgi": {"version": "3.0"}, "scheme": "ws", "path": "/live",
        "raw_path": b"/live", "root_path": "", "query_string": b"", "subprotocols": [],
        "headers": [(b"host", host.encode()), *extra], "server": (host, 80), "client": ("127.0.0.1", 5000),
    }
