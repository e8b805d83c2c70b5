"""One player's world: its own simulator state, the frames shown so far, the actions taken, and the states
before each step (for rewind). Methods block (they run the model) and are called from a worker thread, one at a
time per session (the server awaits each before reading the session's next message)."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from genie_jax.simulator import SimulatorState, WorldSimulator


class SessionError(ValueError):
    """A request that does not fit the session's state (no start yet, nothing to rewind, full); sent to the client."""


class PlaySession:
    def __init__(self, sim: WorldSimulator, max_frames: int):
        self.sim = sim
        self.max_frames = max_frames
        self.frames: list[np.ndarray] = []  # frames[0]: the start frame; then one per step
        self.history: list[int] = []  # history[i]: the action that made frames[i + 1]
        self.start_name = ""  # what the world started from, e.g. "clip 12" or "upload"
        self._states: list[SimulatorState] = []  # _states[i]: the simulator state before step i

    @property
    def started(self) -> bool:
        return bool(self.frames)

    def start(self, context_THWC: np.ndarray, name: str) -> np.ndarray:
        """A new world from real context frames; the last one is the start frame."""
        start = self.sim.reset(context_THWC)
        self.frames, self.history, self._states = [start], [], []
        self.start_name = name
        return start

    def step(self, action: int) -> np.ndarray:
        self._require_start()
        if len(self.frames) >= self.max_frames:
            raise SessionError(f"this session reached its limit of {self.max_frames} frames: download it, "
                               f"then rewind, reset or start a new world")
        before = self.sim.state()
        frame = self.sim.step(action)
        self._states.append(before.without_caches())  # bounded memory; a rewind rebuilds the caches once
        self.frames.append(frame)
        self.history.append(action)
        return frame

    def rewind(self) -> np.ndarray:
        """One step back: the state before the last step comes back (the same action then gives the same frame)."""
        self._require_start()
        if not self.history:
            raise SessionError("nothing to rewind: this is the start frame")
        self.sim.restore(self._states.pop())
        self.frames.pop()
        self.history.pop()
        return self.frames[-1]

    def reset(self) -> np.ndarray:
        """Back to the start frame with the history cleared."""
        self._require_start()
        if self._states:
            self.sim.restore(self._states[0])
        self.frames, self.history, self._states = self.frames[:1], [], []
        return self.frames[0]

    def _require_start(self) -> None:
        if not self.started:
            raise SessionError("no world yet: start from a clip or an uploaded image first")


def encode_png(frame_HWC: np.ndarray) -> str:
    """A frame as base64 PNG text (lossless; the page scales it up with crisp pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame_HWC)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
