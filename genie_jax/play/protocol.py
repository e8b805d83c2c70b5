"""The WebSocket protocol of `genie play`: every client message is validated here before anything acts on it.

Client -> server (JSON text, one object per message):
    {"type": "start", "source": "clip"}                     a random clip of the dataset's validation split
    {"type": "start", "source": "clip", "clip": 12}         that clip
    {"type": "start", "source": "upload", "upload": TOKEN}  an image POSTed to /upload (TOKEN from its reply)
    {"type": "step", "action": 3}                           one latent action, 0 <= action < |A|
    {"type": "rewind"}                                      one step back
    {"type": "reset"}                                       back to the start frame, history cleared

Server -> client: "hello" (once), "frame" (after every start/step/rewind/reset) and "error" messages; see the
``*_message`` builders below. An invalid message gets an "error" reply and changes nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Union

MAX_MESSAGE_CHARS = 4096  # client messages are tiny; anything bigger is a mistake or an attack
UPLOAD_TOKEN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class ProtocolError(ValueError):
    """A client message that is not valid; the text is sent back to the client."""


@dataclass(frozen=True)
class Start:
    source: str  # "clip" or "upload"
    clip: int | None = None  # clip index (source "clip"); None: a random clip
    upload: str | None = None  # upload token (source "upload")


@dataclass(frozen=True)
class Step:
    action: int


@dataclass(frozen=True)
class Rewind:
    pass


@dataclass(frozen=True)
class Reset:
    pass


Message = Union[Start, Step, Rewind, Reset]

# type -> (required fields, optional fields); "type" itself is implied.
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "start": (frozenset({"source"}), frozenset({"clip", "upload"})),
    "step": (frozenset({"action"}), frozenset()),
    "rewind": (frozenset(), frozenset()),
    "reset": (frozenset(), frozenset()),
}


def parse_message(text: Any, num_actions: int) -> Message:
    """A client's text message -> a typed message. Raises ProtocolError naming the problem."""
    if not isinstance(text, str):
        raise ProtocolError("messages must be JSON text, not binary")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ProtocolError(f"message of {len(text)} characters is too long (limit {MAX_MESSAGE_CHARS})")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise ProtocolError("message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"message must be a JSON object, got {type(data).__name__}")
    kind = data.get("type")
    if kind not in _FIELDS:
        raise ProtocolError(f"unknown message type {kind!r}; expected one of {', '.join(sorted(_FIELDS))}")
    required, optional = _FIELDS[kind]
    fields = set(data) - {"type"}
    missing, unknown = required - fields, fields - required - optional
    if missing:
        raise ProtocolError(f"{kind!r} message lacks field(s) {', '.join(sorted(missing))}")
    if unknown:
        raise ProtocolError(f"{kind!r} message has unknown field(s) {', '.join(sorted(unknown))}")
    if kind == "step":
        return Step(check_action(data["action"], num_actions))
    if kind == "start":
        return _parse_start(data)
    return Rewind() if kind == "rewind" else Reset()


def check_action(value: Any, num_actions: int) -> int:
    """A latent action id: an integer (not a bool) in [0, num_actions)."""
    if not _is_int(value):
        raise ProtocolError(f"action must be an integer, got {value!r}")
    if not 0 <= value < num_actions:
        raise ProtocolError(f"action {value} is out of range: this world has {num_actions} latent actions, "
                            f"0..{num_actions - 1}")
    return int(value)


def _parse_start(data: dict) -> Start:
    source = data["source"]
    if source == "clip":
        if "upload" in data:
            raise ProtocolError("a 'clip' start takes no 'upload' field")
        clip = data.get("clip")
        if clip is not None and (not _is_int(clip) or clip < 0):
            raise ProtocolError(f"clip must be a non-negative integer, got {clip!r}")
        return Start("clip", clip=clip)
    if source == "upload":
        token = data.get("upload")
        if "clip" in data:
            raise ProtocolError("an 'upload' start takes no 'clip' field")
        if not isinstance(token, str) or not UPLOAD_TOKEN.match(token):
            raise ProtocolError("an 'upload' start needs the 'upload' token that POST /upload returned")
        return Start("upload", upload=token)
    raise ProtocolError(f"start source must be 'clip' or 'upload', got {source!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---------------------------------------------------------------------------------------------------------------
# Server -> client messages.
def error_message(text: str) -> dict:
    return {"type": "error", "message": text}


def hello_message(*, session: str, num_actions: int, height: int, width: int, mapping: dict[str, int | None],
                  clips: int, action_labels: list[str], max_frames: int, max_upload_bytes: int) -> dict:
    """Everything the page needs to build its controls."""
    return {"type": "hello", "session": session, "num_actions": num_actions, "height": height, "width": width,
            "mapping": mapping, "clips": clips, "action_labels": action_labels, "max_frames": max_frames,
            "max_upload_bytes": max_upload_bytes}


def frame_message(*, png_base64: str, index: int, history: list[int], generate_ms: float | None,
                  start: str) -> dict:
    """One frame: ``index`` frames after the start (0 = the start frame); ``history`` = the actions that led here."""
    return {"type": "frame", "image": "data:image/png;base64," + png_base64, "index": index, "history": history,
            "generate_ms": generate_ms, "start": start}
