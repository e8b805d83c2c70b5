"""A session's frames as a downloadable GIF or MP4 (through genie_jax.media, which writes files)."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from genie_jax.media import save_gif, save_mp4

FORMATS = {"gif": "image/gif", "mp4": "video/mp4"}
MIN_SIDE = 256  # tiny model frames are upscaled (nearest neighbour) to at least this many pixels


def encode_recording(frames: Sequence[np.ndarray], fmt: str, fps: int) -> bytes:
    """frames: (H, W, 3) uint8 each -> the bytes of a GIF or MP4 file at ``fps`` frames per second."""
    if fmt not in FORMATS:
        raise ValueError(f"recording format {fmt!r} is not one of {', '.join(FORMATS)}")
    if not frames:
        raise ValueError("nothing to record yet: start a world first")
    video = np.stack(frames)
    scale = max(1, math.ceil(MIN_SIDE / max(video.shape[1:3])))
    with tempfile.TemporaryDirectory(prefix="genie_play_") as tmp:
        path = Path(tmp) / f"session.{fmt}"
        (save_gif if fmt == "gif" else save_mp4)(video, path, fps=fps, scale=scale)
        return path.read_bytes()
