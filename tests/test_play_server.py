"""The `genie play` server in-process (on 127.0.0.1, in a thread of its own) with a model-free stand-in world:
the protocol over a real WebSocket, uploads, downloads, the security checks, and isolation between sessions."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time

import numpy as np
import pytest
import aiohttp
from PIL import Image
from play_helpers import SLOW_ACTION, SLOW_SECONDS, fake_world, running_server

from genie_jax.play.server import PlayConfig, _host_name, make_app

TIMEOUT = 10  # seconds any single reply may take


def serve(test, world=None, **config):
    """Runs ``test(client, port)`` against a fresh app served from another thread on a 127.0.0.1 port."""
    async def run(port):
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{port}") as client:
            await asyncio.wait_for(test(client, port), 60)

    with running_server(make_app(world or fake_world(), PlayConfig(**config))) as port:
        asyncio.run(run(port))


async def open_session(client):
    ws = await client.ws_connect("/ws")
    hello = await ws.receive_json(timeout=TIMEOUT)
    assert hello["type"] == "hello"
    return ws, hello


async def ask(ws, message) -> dict:
    await (ws.send_str(message) if isinstance(message, str) else ws.send_json(message))
    return await ws.receive_json(timeout=TIMEOUT)


def pixel(frame_message: dict) -> int:
    """The first pixel's red value of a frame message's PNG."""
    import base64

    png = base64.b64decode(frame_message["image"].split(",", 1)[1])
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB").getpixel((0, 0))[0]


def test_page_and_static_files_are_served_with_safe_headers():
    async def test(client, port):
        page = await client.get("/")
        assert page.status == 200 and "genie play" in await page.text()
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        for name in ("play.js", "play.css"):
            assert (await client.get(f"/static/{name}")).status == 200
        assert (await client.get("/static/../server.py")).status in (403, 404)
    serve(test)


def test_hello_start_step_rewind_reset():
    async def test(client, port):
        ws, hello = await open_session(client)
        assert (hello["num_actions"], hello["height"], hello["width"], hello["clips"]) == (4, 8, 8, 3)
        assert hello["mapping"] == {"left": 1, "right": 2, "up": None, "down": 0}
        early = await ask(ws, {"type": "step", "action": 0})
        assert early["type"] == "error" and "start from a clip" in early["message"]
        start = await ask(ws, {"type": "start", "source": "clip", "clip": 2})
        assert (start["type"], start["index"], start["history"], start["start"]) == ("frame", 0, [], "clip 2")
        assert pixel(start) == 2
        one = await ask(ws, {"type": "step", "action": 1})
        assert (one["index"], one["history"], pixel(one)) == (1, [1], 22)
        assert one["generate_ms"] >= 0
        two = await ask(ws, {"type": "step", "action": 0})
        assert (two["index"], two["history"], pixel(two)) == (2, [1, 0], 32)
        back = await ask(ws, {"type": "rewind"})
        assert (back["index"], back["history"], pixel(back)) == (1, [1], 22)
        reset = await ask(ws, {"type": "reset"})
        assert (reset["index"], reset["history"], pixel(reset)) == (0, [], 2)
        random_start = await ask(ws, {"type": "start", "source": "clip"})
        assert random_start["type"] == "frame" and random_start["start"].startswith("clip ")
        await ws.close()
    serve(test)


def test_malformed_messages_get_an_error_and_the_session_keeps_working():
    async def test(client, port):
        ws, _ = await open_session(client)
        await ask(ws, {"type": "start", "source": "clip", "clip": 0})
        bad = ["{", "[]", '{"type": "fly"}', '{"type": "step"}', '{"type": "step", "action": 4}',
               '{"type": "step", "action": -1}', '{"type": "step", "action": 2.5}', '{"type": "step", "action": null}',
               '{"type": "start", "source": "clip", "clip": 99}', '{"type": "start", "source": "upload", '
               '"upload": "nosuchtoken1"}', "x" * 10_000]
        for text in bad:
            reply = await ask(ws, text)
            assert reply["type"] == "error", text
        assert "action 4 is out of range" in (await ask(ws, '{"type": "step", "action": 4}'))["message"]
        await ws.send_bytes(b"\x00\x01")
        assert "binary messages are not accepted" in (await ws.receive_json(timeout=TIMEOUT))["message"]
        good = await ask(ws, {"type": "step", "action": 2})
        assert (good["type"], good["index"], pixel(good)) == ("frame", 1, 30)
        # another player is unaffected too
        other, _ = await open_session(client)
        assert (await ask(other, {"type": "start", "source": "clip", "clip": 1}))["type"] == "frame"
    serve(test)


def test_upload_starts_a_world_and_bad_uploads_are_refused():
    async def test(client, port):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (90, 10, 10)).save(buffer, format="PNG")
        reply = await client.post("/upload", data=buffer.getvalue(), headers={"Content-Type": "image/png"})
        assert reply.status == 200
        token = (await reply.json())["upload"]
        ws, _ = await open_session(client)
        start = await ask(ws, {"type": "start", "source": "upload", "upload": token})
        assert (start["type"], start["start"], pixel(start)) == ("frame", "upload", 90)

        too_big = await client.post("/upload", data=b"\0" * 5000)
        assert too_big.status == 413 and "over the 4096-byte limit" in (await too_big.json())["error"]
        garbage = await client.post("/upload", data=b"this is not an image")
        assert garbage.status == 400 and "cannot read the upload" in (await garbage.json())["error"]
        assert (await ask(ws, {"type": "step", "action": 0}))["type"] == "frame"  # still serving
    serve(test, max_upload_bytes=4096)


def test_upload_without_content_length_is_still_limited():
    async def test(client, port):
        async def chunks():
            for _ in range(10):
                yield b"\0" * 1000

        reply = await client.post("/upload", data=chunks())  # chunked: no Content-Length up front
        assert reply.status == 413
    serve(test, max_upload_bytes=4096)


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_download_the_session(fmt):
    async def test(client, port):
        ws, hello = await open_session(client)
        await ask(ws, {"type": "start", "source": "clip", "clip": 0})
        for action in (0, 1, 2):
            await ask(ws, {"type": "step", "action": action})
        reply = await client.get("/download", params={"session": hello["session"], "format": fmt, "fps": "5"})
        assert reply.status == 200 and "attachment" in reply.headers["Content-Disposition"]
        data = await reply.read()
        if fmt == "gif":
            with Image.open(io.BytesIO(data)) as gif:
                assert gif.n_frames == 4
        else:
            import av

            with av.open(io.BytesIO(data)) as container:
                assert sum(1 for _ in container.decode(video=0)) == 4
        for params, status in [({"session": "nope", "format": fmt}, 404),
                               ({"session": hello["session"], "format": "avi"}, 400),
                               ({"session": hello["session"], "format": fmt, "fps": "0"}, 400),
                               ({"session": hello["session"], "format": fmt, "fps": "x"}, 400)]:
            assert (await client.get("/download", params=params)).status == status
    serve(test)


def test_cross_origin_and_foreign_host_requests_are_refused():
    async def test(client, port):
        with pytest.raises(Exception) as refused:
            await client.ws_connect("/ws", headers={"Origin": "http://evil.example"})
        assert "403" in str(refused.value)
        upload = await client.post("/upload", data=b"x", headers={"Origin": "http://evil.example"})
        assert upload.status == 403
        rebound = await client.get("/", headers={"Host": "evil.example:8000"})
        assert rebound.status == 403 and "unexpected Host" in (await rebound.json())["error"]
        same = await client.ws_connect("/ws", headers={"Origin": f"http://127.0.0.1:{port}"})
        assert (await same.receive_json(timeout=TIMEOUT))["type"] == "hello"
    serve(test)


def test_host_names():
    assert _host_name("127.0.0.1:8000") == "127.0.0.1"
    assert _host_name("[::1]:8000") == "::1"
    assert _host_name("localhost") == "localhost"


def test_a_busy_session_does_not_stall_another():
    async def test(client, port):
        busy, _ = await open_session(client)
        quick, _ = await open_session(client)
        for ws in (busy, quick):
            await ask(ws, {"type": "start", "source": "clip", "clip": 0})
        for _ in range(2):  # seconds of work queued on the busy session
            await busy.send_json({"type": "step", "action": SLOW_ACTION})
        await asyncio.sleep(0.1)
        began = time.perf_counter()
        for action in (0, 1, 2):
            assert (await ask(quick, {"type": "step", "action": action}))["type"] == "frame"
        assert time.perf_counter() - began < SLOW_SECONDS / 2
        replies = [await busy.receive_json(timeout=TIMEOUT) for _ in range(2)]
        assert [r["index"] for r in replies] == [1, 2]
    serve(test, workers=2)


def test_session_limit():
    async def test(client, port):
        first = await client.ws_connect("/ws")
        with pytest.raises(Exception) as refused:
            await client.ws_connect("/ws")
        assert "503" in str(refused.value)
        await first.close()
        await asyncio.sleep(0.1)
        again, _ = await open_session(client)  # the slot is free again
        await again.close()
    serve(test, max_sessions=1)


def test_uploads_only_world():
    async def test(client, port):
        ws, hello = await open_session(client)
        assert hello["clips"] == 0
        reply = await ask(ws, {"type": "start", "source": "clip"})
        assert "no dataset to take start clips from" in reply["message"]
    serve(test, world=fake_world(clips=0))


def test_frames_are_pngs_of_the_model_size():
    async def test(client, port):
        ws, _ = await open_session(client)
        start = await ask(ws, {"type": "start", "source": "clip", "clip": 1})
        import base64

        with Image.open(io.BytesIO(base64.b64decode(start["image"].split(",", 1)[1]))) as image:
            assert image.format == "PNG" and image.size == (8, 8)
            assert np.asarray(image.convert("RGB")).max() == 1
    serve(test)


def test_shutdown_closes_open_sockets_at_once():
    async def scenario(port, stop):
        async with aiohttp.ClientSession() as client:
            ws = await client.ws_connect(f"http://127.0.0.1:{port}/ws")
            assert (await ws.receive_json(timeout=TIMEOUT))["type"] == "hello"
            began = time.perf_counter()
            await asyncio.to_thread(stop)  # what Ctrl-C does: the app shuts down
            closing = await ws.receive(timeout=TIMEOUT)
            assert (closing.type, closing.data) == (aiohttp.WSMsgType.CLOSE, aiohttp.WSCloseCode.GOING_AWAY)
            assert time.perf_counter() - began < 5

    with contextlib.ExitStack() as stack:
        port = stack.enter_context(running_server(make_app(fake_world())))
        asyncio.run(scenario(port, stack.close))
