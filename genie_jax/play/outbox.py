"""A bounded send queue per WebSocket: a client that reads slowly costs its own session dropped frames, never
the server's memory or another session's time."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Awaitable, Callable


class Outbox:
    """Messages (dicts) go out in order through ``send`` by ``run()``, a task of their own. Beyond ``capacity``
    waiting messages the oldest waiting *frame* is dropped (a newer frame supersedes it: every frame message
    carries the index and history); hello and error messages are dropped only if nothing but them waits."""

    def __init__(self, send: Callable[[dict], Awaitable[None]], capacity: int = 16):
        if capacity < 1:
            raise ValueError(f"outbox capacity must be >= 1, got {capacity}")
        self._send = send
        self.capacity = capacity
        self.dropped = 0
        self._items: deque[dict] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, message: dict) -> None:
        if self._closed:
            return
        if len(self._items) >= self.capacity:
            frames = [i for i, m in enumerate(self._items) if m.get("type") == "frame"]
            del self._items[frames[0] if frames else 0]
            self.dropped += 1
        self._items.append(message)
        self._ready.set()

    def close(self) -> None:
        """run() returns once what is already queued has been sent."""
        self._closed = True
        self._ready.set()

    async def run(self) -> None:
        while True:
            while not self._items:
                if self._closed:
                    return
                self._ready.clear()
                await self._ready.wait()
            try:
                await self._send(self._items.popleft())
            except (ConnectionError, RuntimeError):  # the socket closed under us: nothing more can be sent
                self._items.clear()
                return
