"""`genie play` parts without a server: message validation, key mapping, uploads, the outbox, sessions,
recordings, and the command's wiring."""

from __future__ import annotations

import asyncio
import io
import json

import av
import numpy as np
import pytest
from PIL import Image
from play_helpers import FakeSimulator

from genie_jax.cli import main
from genie_jax.play.mapping import check_mapping, load_mapping, suggest_mapping
from genie_jax.play.outbox import Outbox
from genie_jax.play.protocol import MAX_MESSAGE_CHARS, ProtocolError, Reset, Rewind, Start, Step, parse_message
from genie_jax.play.recording import encode_recording
from genie_jax.play.session import PlaySession, SessionError
from genie_jax.play.uploads import UploadError, UploadStore, decode_upload


# ---- protocol ------------------------------------------------------------------------------------------------
def test_valid_messages_parse_to_typed_messages():
    assert parse_message('{"type": "step", "action": 3}', 4) == Step(3)
    assert parse_message('{"type": "step", "action": 0}', 4) == Step(0)
    assert parse_message('{"type": "rewind"}', 4) == Rewind()
    assert parse_message('{"type": "reset"}', 4) == Reset()
    assert parse_message('{"type": "start", "source": "clip"}', 4) == Start("clip")
    assert parse_message('{"type": "start", "source": "clip", "clip": 7}', 4) == Start("clip", clip=7)
    assert parse_message('{"type": "start", "source": "upload", "upload": "abcDEF12_-"}', 4) == \
        Start("upload", upload="abcDEF12_-")


@pytest.mark.parametrize("text, fragment", [
    ("not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"step"', "must be a JSON object"),
    ('{"action": 1}', "unknown message type None"),
    ('{"type": "jump"}', "unknown message type 'jump'"),
    ('{"type": "step"}', "lacks field(s) action"),
    ('{"type": "step", "action": 1, "extra": 2}', "unknown field(s) extra"),
    ('{"type": "step", "action": 4}', "action 4 is out of range: this world has 4 latent actions, 0..3"),
    ('{"type": "step", "action": -1}', "action -1 is out of range"),
    ('{"type": "step", "action": 1.0}', "action must be an integer, got 1.0"),
    ('{"type": "step", "action": true}', "action must be an integer, got True"),
    ('{"type": "step", "action": "1"}', "action must be an integer, got '1'"),
    ('{"type": "step", "action": 1e400}', "action must be an integer"),
    ('{"type": "start", "source": "disk"}', "source must be 'clip' or 'upload'"),
    ('{"type": "start", "source": "clip", "clip": -2}', "clip must be a non-negative integer"),
    ('{"type": "start", "source": "clip", "upload": "abcdefgh"}', "takes no 'upload'"),
    ('{"type": "start", "source": "upload"}', "needs the 'upload' token"),
    ('{"type": "start", "source": "upload", "upload": "../../etc"}', "needs the 'upload' token"),
    ('{"type": "rewind", "steps": 3}', "unknown field(s) steps"),
    ("[" * 100_000, "too long"),
    ("[" * 3000 + "]" * 3000, "too long"),
    ("[" * 2000 + "]" * 2000, "not valid JSON"),  # nesting deeper than the parser recurses
])
def test_malformed_messages_are_refused_with_a_reason(text, fragment):
    with pytest.raises(ProtocolError) as error:
        parse_message(text, 4)
    assert fragment in str(error.value)


def test_binary_and_oversized_messages_are_refused():
    with pytest.raises(ProtocolError, match="not binary"):
        parse_message(b'{"type": "reset"}', 4)
    padded = json.dumps({"type": "reset", "pad": "x" * MAX_MESSAGE_CHARS})
    with pytest.raises(ProtocolError, match=f"limit {MAX_MESSAGE_CHARS}"):
        parse_message(padded, 4)


# ---- key mapping -------------------------------------------------------------------------------------------------
MEANINGS = ("noop", "left", "right", "jump", "left+jump", "right+jump")


def test_mapping_suggests_the_code_whose_majority_true_action_matches():
    # code 0 mostly noop, 1 mostly right, 2 mostly left (but rarely used), 3 mostly left (often used), 4: jump
    codes = np.array([0, 0, 0, 1, 1, 1, 1, 2, 3, 3, 3, 4, 4, 5, 5])
    true = np.array([0, 0, 1, 2, 2, 2, 0, 1, 1, 1, 1, 3, 3, -1, -1])  # code 5: only unknown true actions
    mapping = suggest_mapping(codes, true, MEANINGS, num_actions=6)
    assert mapping == {"left": 3, "right": 1, "up": 4, "down": 0}


def test_mapping_leaves_directions_no_code_stands_for_empty():
    mapping = suggest_mapping(np.array([0, 1]), np.array([2, 2]), MEANINGS, num_actions=2)
    assert mapping == {"left": None, "right": 0, "up": None, "down": None}
    assert suggest_mapping(np.array([0]), np.array([-1]), MEANINGS, 2) == \
        {"left": None, "right": None, "up": None, "down": None}


def test_mapping_file_is_validated(tmp_path):
    good = tmp_path / "map.json"
    good.write_text('{"left": 2, "up": null}')
    assert load_mapping(good, 4) == {"left": 2, "right": None, "up": None, "down": None}
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        load_mapping(tmp_path / "missing.json", 4)
    bad = tmp_path / "bad.json"
    bad.write_text("{left: 2}")
    with pytest.raises(ValueError, match="not readable JSON"):
        load_mapping(bad, 4)
    with pytest.raises(ValueError, match="unknown key.*jump.*use left, right, up, down"):
        check_mapping({"jump": 1}, 4)
    with pytest.raises(ValueError, match="'left' -> 4 is not a latent action id in 0..3"):
        check_mapping({"left": 4}, 4)
    with pytest.raises(ValueError, match="is not a latent action id"):
        check_mapping({"left": True}, 4)
    with pytest.raises(ValueError, match="must be a JSON object"):
        check_mapping([1, 2], 4)


# ---- uploads -----------------------------------------------------------------------------------------------------
def _png(size: tuple[int, int], color=(200, 30, 10), mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_is_cropped_and_resized_to_the_model_frame():
    image = Image.new("RGB", (60, 20), (0, 0, 255))
    image.paste((255, 0, 0), (20, 0, 40, 20))  # red centre square, blue sides: the centre crop keeps red only
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    frame = decode_upload(buffer.getvalue(), 8, 8)
    assert frame.shape == (8, 8, 3) and frame.dtype == np.uint8
    assert frame[..., 0].min() > 200 and frame[..., 2].max() < 60
    rgba = decode_upload(_png((5, 7), (1, 2, 3, 0), mode="RGBA"), 16, 8)
    assert rgba.shape == (16, 8, 3)


def test_upload_pixel_limit_is_checked_before_decoding():
    with pytest.raises(UploadError, match="100x100 pixels is too large"):
        decode_upload(_png((100, 100)), 8, 8, max_pixels=9_999)
    assert decode_upload(_png((100, 100)), 8, 8, max_pixels=10_000).shape == (8, 8, 3)


@pytest.mark.parametrize("data, fragment", [
    (b"", "upload is empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "cannot read the upload"),
    (b"GIF89a" + b"\xff" * 20, "cannot read the upload"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "cannot read the upload"),
    (_png((30, 30))[:60], "cannot read the upload"),  # truncated
])
def test_bad_uploads_are_refused(data, fragment):
    with pytest.raises(UploadError, match=fragment):
        decode_upload(data, 8, 8)


def test_upload_store_keeps_the_newest():
    store = UploadStore(capacity=2)
    tokens = [store.add(np.full((2, 2, 3), i, np.uint8)) for i in range(3)]
    assert len(set(tokens)) == 3
    with pytest.raises(UploadError, match="upload the image again"):
        store.get(tokens[0])
    assert store.get(tokens[2])[0, 0, 0] == 2


# ---- outbox --------------------------------------------------------------------------------------------------------
def test_outbox_drops_the_oldest_frames_of_a_slow_reader_and_keeps_order():
    async def scenario():
        sent, gate = [], asyncio.Event()

        async def slow_send(message):
            await gate.wait()  # the client is not reading
            sent.append(message)

        outbox = Outbox(slow_send, capacity=3)
        task = asyncio.create_task(outbox.run())
        outbox.put({"type": "hello"})
        await asyncio.sleep(0.01)  # hello is now being sent (blocked)
        for i in range(5):
            outbox.put({"type": "frame", "index": i})
        outbox.put({"type": "error", "message": "x"})
        assert outbox.dropped == 3  # frames 0, 1, 2 went; the queue never held more than 3
        gate.set()
        outbox.close()
        await asyncio.wait_for(task, 5)
        return sent, outbox.dropped

    sent, dropped = asyncio.run(scenario())
    assert [m.get("index", m["type"]) for m in sent] == ["hello", 3, 4, "error"]


def test_outbox_stops_when_the_socket_is_gone():
    async def scenario():
        async def broken(message):
            raise ConnectionResetError("gone")

        outbox = Outbox(broken, capacity=2)
        outbox.put({"type": "frame"})
        await asyncio.wait_for(outbox.run(), 5)  # returns instead of raising

    asyncio.run(scenario())


# ---- sessions and recordings ----------------------------------------------------------------------------------------
def test_session_steps_rewinds_and_resets():
    session = PlaySession(FakeSimulator(), max_frames=4)
    with pytest.raises(SessionError, match="start from a clip or an uploaded image first"):
        session.step(0)
    start = session.start(np.full((2, 8, 8, 3), 5, np.uint8), "clip 1")
    assert start[0, 0, 0] == 5 and session.frames[0] is start
    with pytest.raises(SessionError, match="nothing to rewind"):
        session.rewind()
    one = session.step(0)
    two = session.step(1)
    assert (one[0, 0, 0], two[0, 0, 0]) == (15, 35) and session.history == [0, 1]
    assert np.array_equal(session.rewind(), one) and session.history == [0]
    assert session.step(2)[0, 0, 0] == 45  # from the restored state, not from the rewound frame
    session.step(0)
    with pytest.raises(SessionError, match="limit of 4 frames"):
        session.step(0)
    assert np.array_equal(session.reset(), start) and session.history == [] and len(session.frames) == 1
    assert session.step(0)[0, 0, 0] == 15  # the start state came back


@pytest.mark.parametrize("fmt", ["gif", "mp4"])
def test_recording_decodes_with_every_frame(fmt):
    frames = [np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)]
    data = encode_recording(frames, fmt, fps=10)
    if fmt == "gif":
        with Image.open(io.BytesIO(data)) as gif:
            assert gif.n_frames == 5 and gif.size == (256, 256)  # upscaled to at least 256 pixels
    else:
        with av.open(io.BytesIO(data)) as container:
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(decoded) == 5 and decoded[0].shape == (256, 256, 3)
        assert abs(int(decoded[4][128, 128, 0]) - 160) < 8
    with pytest.raises(ValueError, match="nothing to record yet"):
        encode_recording([], fmt, fps=10)


# ---- the command -------------------------------------------------------------------------------------------------
def test_play_command_reports_a_missing_run(tmp_path, capsys):
    assert main(["play", "--run", str(tmp_path / "nope"), "--port", "8123"]) == 2
    assert "nope does not exist" in capsys.readouterr().err
    assert main(["play", "--run", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000 is not a TCP port" in capsys.readouterr().err
