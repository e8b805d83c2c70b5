"""The `genie play` web server (aiohttp): the page, a WebSocket per player, image uploads, recording downloads.

Routes: GET / (the page), GET /static/* (its script and style), GET /ws (the game, see protocol.py),
POST /upload (raw image bytes -> {"upload": token}), GET /download?session=ID&format=gif|mp4[&fps=N].

Isolation: each WebSocket is a session with its own simulator state; the model runs in a thread pool, never on
the event loop, and a session handles one message at a time, so a busy or slow client delays only itself; what
the server sends goes through a bounded Outbox per session. Defaults are for one person on their own machine:
bind 127.0.0.1, accept only local Host names (against DNS rebinding) and same-origin WebSocket/upload requests
(so another web page open in the browser cannot drive the server).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from genie_jax.play.outbox import Outbox
from genie_jax.play.protocol import (ProtocolError, Reset, Rewind, Start, Step, error_message, frame_message,
                                     hello_message, parse_message)
from genie_jax.play.recording import FORMATS, encode_recording
from genie_jax.play.session import PlaySession, SessionError, encode_png
from genie_jax.play.uploads import DEFAULT_MAX_PIXELS, UploadError, UploadStore, decode_upload
from genie_jax.play.world import PlayWorld

log = logging.getLogger("genie_jax.play")
STATIC_DIR = Path(__file__).parent / "static"
LOCAL_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
ANY_INTERFACE = frozenset({"0.0.0.0", "::", ""})
HISTORY_TAIL = 200  # actions sent with each frame (the page shows the recent ones)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
       "media-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@dataclass(frozen=True)
class PlayConfig:
    host: str = "127.0.0.1"  # the bound address; Host headers must name it or a loopback name
    max_sessions: int = 8
    max_frames: int = 2000  # per session (the recording lives in memory)
    max_upload_bytes: int = 5 * 2**20
    max_upload_pixels: int = DEFAULT_MAX_PIXELS
    outbox_capacity: int = 16
    workers: int = 2  # threads that run the model
    max_fps: int = 60  # download frame rate limit


APP_SERVER = web.AppKey("play_server", "PlayServer")


class PlayServer:
    def __init__(self, world: PlayWorld, config: PlayConfig):
        self.world, self.config = world, config
        self.sessions: dict[str, PlaySession] = {}
        self.sockets: set[web.WebSocketResponse] = set()  # open ones, closed on shutdown so Ctrl-C exits at once
        self.uploads = UploadStore()
        self.executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="genie-play")
        self.rng = random.Random()
        self.allowed_names = None if config.host in ANY_INTERFACE else LOCAL_NAMES | {config.host.strip("[]")}

    # ---------------------------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": CSP,
                                                                     "Cache-Control": "no-store"})

    async def upload(self, request: web.Request) -> web.Response:
        limit = self.config.max_upload_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json_error(f"upload of {request.content_length} bytes is over the {limit}-byte limit", 413)
        try:
            data = await request.read()  # aiohttp stops reading past client_max_size (== limit)
        except web.HTTPRequestEntityTooLarge:
            return _json_error(f"upload is over the {limit}-byte limit", 413)
        sim = self.world.sim
        try:
            image = await self._in_thread(decode_upload, data, sim.height, sim.width, self.config.max_upload_pixels)
        except UploadError as error:
            return _json_error(str(error), 400)
        return web.json_response({"upload": self.uploads.add(image), "height": sim.height, "width": sim.width})

    async def download(self, request: web.Request) -> web.Response:
        query = request.query
        session = self.sessions.get(query.get("session", ""))
        if session is None:
            return _json_error("unknown session: downloads work while the page that made them is open", 404)
        fmt = query.get("format", "gif")
        if fmt not in FORMATS:
            return _json_error(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}", 400)
        fps_text = query.get("fps", "10")
        if not fps_text.isdigit() or not 1 <= int(fps_text) <= self.config.max_fps:
            return _json_error(f"fps must be an integer in 1..{self.config.max_fps}, got {fps_text!r}", 400)
        frames = list(session.frames)  # a snapshot: the session may step meanwhile
        try:
            body = await self._in_thread(encode_recording, frames, fmt, int(fps_text))
        except ValueError as error:
            return _json_error(str(error), 400)
        name = f"genie_play_{len(frames)}_frames.{fmt}"
        return web.Response(body=body, content_type=FORMATS[fmt],
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if len(self.sessions) >= self.config.max_sessions:
            return _json_error(f"the server already has {self.config.max_sessions} players: close a page "
                               f"or restart with a larger limit", 503)
        session_id = secrets.token_urlsafe(16)
        session = PlaySession(self.world.new_simulator(secrets.randbelow(2**31)), self.config.max_frames)
        self.sessions[session_id] = session  # the slot is taken before the first await: no race past the limit
        ws = web.WebSocketResponse(max_msg_size=64 * 1024, heartbeat=30, compress=False)
        outbox = Outbox(ws.send_json, self.config.outbox_capacity)
        sender = asyncio.create_task(outbox.run())
        self.sockets.add(ws)
        try:
            await ws.prepare(request)
            outbox.put(self._hello(session_id))
            async for message in ws:
                if message.type == WSMsgType.TEXT:
                    outbox.put(await self._answer(session, message.data))
                elif message.type == WSMsgType.BINARY:
                    outbox.put(error_message("binary messages are not accepted: send JSON text"))
        finally:
            del self.sessions[session_id]
            self.sockets.discard(ws)
            outbox.close()
            sender.cancel()  # the socket is closed: whatever is still queued cannot be delivered
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        return ws

    # ---------------------------------------------------------------------------------------------------------
    def _hello(self, session_id: str) -> dict:
        sim, world = self.world.sim, self.world
        return hello_message(session=session_id, num_actions=sim.num_actions, height=sim.height, width=sim.width,
                             mapping=world.mapping, clips=len(world.clips) if world.clips is not None else 0,
                             action_labels=world.labels, max_frames=self.config.max_frames,
                             max_upload_bytes=self.config.max_upload_bytes)

    async def _answer(self, session: PlaySession, text: str) -> dict:
        """The reply to one client message: a frame, or an error; the server keeps serving either way."""
        try:
            message = parse_message(text, self.world.sim.num_actions)
            if isinstance(message, Start):
                context, name = self._start_frames(message)
                work: Callable[[], np.ndarray] = partial(session.start, context, name)
            elif isinstance(message, Step):
                work = partial(session.step, message.action)
            elif isinstance(message, Rewind):
                work = session.rewind
            else:
                assert isinstance(message, Reset)
                work = session.reset
            return await self._in_thread(_frame_reply, session, work, isinstance(message, Step))
        except (ProtocolError, SessionError, UploadError, ValueError) as error:
            return error_message(str(error))
        except Exception as error:  # a bug must not take the server down: log it, tell the client
            log.exception("genie play: request %r failed", text[:200])
            return error_message(f"internal error ({type(error).__name__}): see the server's log")

    def _start_frames(self, message: Start) -> tuple[np.ndarray, str]:
        if message.source == "upload":
            return self.uploads.get(message.upload)[None], "upload"
        frames, index = self.world.clip_start(message.clip, self.rng)
        return frames, f"clip {index}"

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    @web.middleware
    async def guard(self, request: web.Request, handler):
        """Host and Origin checks, and headers that keep the page from being framed or sniffed."""
        if self.allowed_names is not None and _host_name(request.host) not in self.allowed_names:
            return _json_error(f"unexpected Host {request.host!r}: open the page at http://127.0.0.1:PORT/", 403)
        origin = request.headers.get("Origin")
        if request.path in ("/ws", "/upload") and origin is not None and urlsplit(origin).netloc != request.host:
            return _json_error(f"cross-origin request from {origin!r} refused", 403)
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response


def _frame_reply(session: PlaySession, work: Callable[[], np.ndarray], timed: bool) -> dict:
    """Runs in a worker thread: the session's work, then the frame message (PNG-encoded off the event loop)."""
    began = time.perf_counter()
    frame = work()
    elapsed_ms = (time.perf_counter() - began) * 1000 if timed else None
    return frame_message(png_base64=encode_png(frame), index=len(session.history),
                         history=session.history[-HISTORY_TAIL:], generate_ms=elapsed_ms, start=session.start_name)


def _host_name(host: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1'; '[::1]:8000' -> '::1'."""
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _json_error(text: str, status: int) -> web.Response:
    return web.json_response({"error": text}, status=status)


def make_app(world: PlayWorld, config: PlayConfig = PlayConfig()) -> web.Application:
    server = PlayServer(world, config)
    app = web.Application(middlewares=[server.guard], client_max_size=config.max_upload_bytes)
    app[APP_SERVER] = server
    app.router.add_get("/", server.index)
    app.router.add_get("/ws", server.websocket)
    app.router.add_post("/upload", server.upload)
    app.router.add_get("/download", server.download)
    app.router.add_static("/static", STATIC_DIR)

    async def close_sockets(_app: web.Application) -> None:
        for ws in list(server.sockets):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def stop_workers(_app: web.Application) -> None:
        server.executor.shutdown(wait=False, cancel_futures=True)

    app.on_shutdown.append(close_sockets)
    app.on_cleanup.append(stop_workers)
    return app


def serve(world: PlayWorld, host: str = "127.0.0.1", port: int = 8000, config: PlayConfig | None = None) -> None:
    """Serves until interrupted (Ctrl-C)."""
    config = replace(config or PlayConfig(), host=host)
    shown = f"[{host}]" if ":" in host else host
    if host in ANY_INTERFACE:
        print("genie play: listening on every network interface: anyone who can reach this machine can play")
        shown = "127.0.0.1"
    try:
        web.run_app(make_app(world, config), host=host, port=port, access_log=None,
                    print=lambda *_: print(f"genie play: open http://{shown}:{port}/ (Ctrl-C to stop)", flush=True))
    except OSError as error:  # e.g. the port is taken
        raise RuntimeError(f"cannot listen on {host}:{port} ({error.strerror or error}): pick another --port") from None
