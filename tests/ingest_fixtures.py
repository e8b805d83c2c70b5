"""Generated media for the ingest tests: videos whose frames carry their own index, frame folders, a web server.

Frames are drawn so that each one is recognisable after resizing: a 4x4 grid of black/white cells in the top half
spells the source frame index in binary (readable from any resize of the frame), and a coloured square moves
across the bottom half on a per-video background, so different videos never look alike.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image

GRID = 4  # index bits: GRID * GRID


def frame_image(index: int, seed: int, size: int = 128) -> np.ndarray:
    """uint8 [size, size, 3]: index bits in the top half, a moving square on the video's background below."""
    rng = np.random.default_rng(seed)
    background = rng.integers(40, 200, size=3)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = background
    cell = size // (2 * GRID)  # the grid covers the top half: GRID x GRID cells of `cell` px
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        value = 255 if (index >> bit) & 1 else 0
        img[r * cell:(r + 1) * cell, c * 2 * cell:(c + 1) * 2 * cell] = value
    square = size // 8
    x = (index * 3 + seed * 17) % (size - square)
    img[size // 2 + square:size // 2 + 2 * square, x:x + square] = (255 - background) // 1
    return img


def read_index(frame_HWC: np.ndarray) -> int:
    """Inverse of frame_image's top half, for a frame resized (stretch) to any size."""
    h, w = frame_HWC.shape[:2]
    grey = frame_HWC.mean(axis=2)
    index = 0
    for bit in range(GRID * GRID):
        r, c = divmod(bit, GRID)
        y0, y1 = r * h // (2 * GRID), (r + 1) * h // (2 * GRID)
        x0, x1 = c * w // GRID, (c + 1) * w // GRID
        core = grey[y0 + (y1 - y0) // 4:y1 - (y1 - y0) // 4, x0 + (x1 - x0) // 4:x1 - (x1 - x0) // 4]
        index |= int(core.mean() > 127) << bit
    return index


def write_video(path: Path, num_frames: int, *, seed: int, fps: int = 30, size: int = 128,
                codec: str = "libx264", frames: Iterator[np.ndarray] | None = None,
                b_frames: bool = False) -> Path:
    """Encodes frame_image(0..num_frames-1) (or ``frames``) with ``codec``; lossless where the codec allows.

    b_frames (H.264): three B-frames between references, some referenced (pyramid), as web video has;
    otherwise none (x264's ultrafast preset)."""
    options, pix_fmt = {}, "yuv420p"
    if codec == "libx264":
        options = {"crf": "12", "preset": "ultrafast"}
        if b_frames:
            options = {"crf": "12", "preset": "veryfast", "x264-params": "bframes=3:b-adapt=0:b-pyramid=normal"}
    elif codec == "libvpx-vp9":
        options = {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}
    elif codec == "gif":
        pix_fmt = "rgb8"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        images = frames if frames is not None else (frame_image(i, seed, size) for i in range(num_frames))
        for img in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_frame_folder(folder: Path, num_frames: int, *, seed: int, ext: str = "png") -> Path:
    folder.mkdir(parents=True)
    for i in range(num_frames):
        Image.fromarray(frame_image(i, seed)).save(folder / f"frame_{i:04d}.{ext}")
    return folder


def write_sidecar(video: Path, actions: list[int], meanings: list[str]) -> Path:
    path = video.with_name((video.name if video.is_dir() else video.stem) + ".actions.json")
    path.write_text(json.dumps({"actions": actions, "meanings": meanings}))
    return path


@contextlib.contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serves ``folder`` over HTTP on 127.0.0.1 (a free port) in a thread; yields the base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None: ...

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def tree_snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under ``root`` except under ``skip``: to prove nothing else was written."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and skip not in p.parents}
