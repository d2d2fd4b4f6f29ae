"""Listen to a ComfyUI server's websocket (``/ws?clientId=...``) in a background thread.

The messages a prompt queued with the same client id produces (progress, executing, executed, and the
pack's ``tokenmerge.heatmap`` live frames) are collected as parsed JSON; binary preview frames are counted.
Uses aiohttp, which ComfyUI itself depends on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from typing import Any, Self


class ServerEvents:
    def __init__(self, url: str, client_id: str) -> None:
        self.ws_url = url.replace("http://", "ws://", 1) + f"/ws?clientId={client_id}"
        self.messages: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.perf_counter() at each message's arrival
        self.binary_frames = 0
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._listen()), daemon=True)

    async def _listen(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.ws_url) as ws:
            self._connected.set()
            while not self._stop.is_set():
                try:
                    message = await ws.receive(timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                if message.type == aiohttp.WSMsgType.TEXT:
                    self.arrivals.append(time.perf_counter())
                    self.messages.append(json.loads(message.data))
                elif message.type == aiohttp.WSMsgType.BINARY:
                    self.binary_frames += 1
                elif message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._connected.wait(10):
            raise RuntimeError(f"could not connect to {self.ws_url}")
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # let the last messages of a finished prompt arrive
        self._stop.set()
        self._thread.join(5)

    def node_seconds(self) -> dict[str, float]:
        """Seconds each node ran, from the arrival of its ``executing`` message to the next one's."""
        starts = [
            (t, m["data"]["node"])
            for t, m in zip(self.arrivals, self.messages, strict=True)
            if m.get("type") == "executing"
        ]
        return {node: later - t for (t, node), (later, _) in itertools.pairwise(starts) if node}

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m["data"] for m in self.messages if m.get("type") == kind]
