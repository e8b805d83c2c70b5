"""Writing things a person looks at: GIFs, PNGs, MP4s, video grids, text labels.

Conventions: frames_THWC are uint8 RGB (C=3); grayscale (THW or C=1) and RGBA
(C=4, alpha dropped where the format can't use it) are accepted. Float inputs in
[0, 1] (NumPy or JAX) go through ``to_uint8`` first. Files are written atomically
(temp file in the destination dir, then ``os.replace``) so a reader never sees a
half-written file, and parent directories are created.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(frames: Any) -> np.ndarray:
    """Float in [0, 1] (any array type, e.g. jax.Array) -> uint8 in [0, 255].

    Values are scaled by 255, rounded to nearest, clipped; NaN becomes 0.
    uint8 input is returned unchanged (as a NumPy array).
    """
    x = np.asarray(frames)
    if x.dtype == np.uint8:
        return x
    x = np.nan_to_num(x.astype(np.float32), nan=0.0)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def _to_rgb(frames: Any, ndim: int, keep_alpha: bool = False) -> np.ndarray:
    """uint8 RGB (or RGBA with keep_alpha) with ``ndim`` dims, channel axis last.

    Accepts the same array without a channel axis (grayscale, ndim - 1 dims) or
    with 1, 3 or 4 channels.
    """
    x = to_uint8(frames)
    if x.ndim == ndim - 1:
        x = x[..., None]  # grayscale without a channel axis
    if x.ndim != ndim or x.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected {ndim} dims with 1, 3 or 4 channels last, got {x.shape}")
    channels = x.shape[-1]
    if channels == 1:
        return np.repeat(x, 3, axis=-1)
    if channels == 4 and not keep_alpha:
        return x[..., :3]
    return x


def _upscale(x_THWC: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour upscale of the H and W axes (crisp pixels for tiny frames)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    if scale == 1:
        return x_THWC
    return np.repeat(np.repeat(x_THWC, scale, axis=-3), scale, axis=-2)


@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; move it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp makes 0600: pictures are for people and other tools to open
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_gif(frames_THWC: Any, path: str | os.PathLike, fps: int = 10, scale: int = 1) -> Path:
    """Write an animated GIF that loops forever.

    GIF stores frame delays in 1/100 s, so the delay is ``round(100 / fps)``
    centiseconds (10 fps -> 100 ms exactly; above ~50 fps browsers slow it down).
    Frames with more than 256 colours are palette-quantised by Pillow. Pillow merges
    consecutive identical frames into one longer frame: playback is unchanged but
    the decoded frame count can be lower than T.
    """
    frames = _upscale(_to_rgb(frames_THWC, ndim=4), scale)
    if frames.shape[0] == 0:
        raise ValueError(f"expected non-empty frames_THWC, got shape {frames.shape}")
    duration_ms = 10 * max(1, round(100 / fps))
    images = [Image.fromarray(f, mode="RGB") for f in frames]
    path = Path(path)
    with _atomic_target(path) as tmp:
        images[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=duration_ms,
            loop=0,  # 0 = loop forever
        )
    return path


def save_png(image_HWC: Any, path: str | os.PathLike, scale: int = 1) -> Path:
    """Write one image as PNG (RGB, or RGBA if given 4 channels)."""
    image = _upscale(_to_rgb(image_HWC, ndim=3, keep_alpha=True), scale)
    path = Path(path)
    with _atomic_target(path) as tmp:
        Image.fromarray(image).save(tmp, format="PNG")
    return path


def _pad_even(frames_THWC: np.ndarray) -> np.ndarray:
    """Pad H and W up to even sizes by repeating the last row/column (yuv420p
    subsamples chroma 2x2, so libx264 rejects odd sizes)."""
    h, w = frames_THWC.shape[1:3]
    return np.pad(frames_THWC, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def save_mp4(
    frames_THWC: Any, path: str | os.PathLike, fps: int = 10, scale: int = 1, crf: int = 18
) -> Path:
    """Write an H.264 (libx264, yuv420p) MP4 that ordinary players can open.

    Odd sizes are padded to even by edge replication. ``crf`` 18 is visually near
    lossless; small frames benefit from ``scale`` > 1 because players blur
    upscaled video and yuv420p halves colour resolution.
    """
    import av  # local import: only this function needs PyAV

    frames = _pad_even(_upscale(_to_rgb(frames_THWC, ndim=4), scale))
    if frames.shape[0] == 0:
        raise ValueError(f"expected non-empty frames_THWC, got shape {frames.shape}")
    path = Path(path)
    with _atomic_target(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.height, stream.width = frames.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            for frame in frames:
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
                container.mux(stream.encode(video_frame))
            container.mux(stream.encode())  # flush delayed frames
    return path


def video_grid(
    videos_NTHWC: Any, ncols: int, pad: int = 1, pad_value: int = 255
) -> np.ndarray:
    """Tile N equally sized videos into a grid, frame by frame.

    Videos fill rows left to right; empty trailing cells are ``pad_value``.
    ``pad`` pixels separate cells and also frame the border, so the result is
    (T, rows*(H+pad)+pad, ncols*(W+pad)+pad, 3) with rows = ceil(N / ncols), and
    column j starts at x = pad + j*(W+pad). Accepts uint8 or float [0, 1];
    grayscale is expanded to RGB, alpha dropped. Returns uint8 frames_THWC.
    """
    videos = _to_rgb(videos_NTHWC, ndim=5)
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    n, t, h, w, c = videos.shape
    nrows = max(1, -(-n // ncols))
    grid = np.full(
        (t, nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8
    )
    for i in range(n):
        y = pad + (i // ncols) * (h + pad)
        x = pad + (i % ncols) * (w + pad)
        grid[:, y : y + h, x : x + w] = videos[i]
    return grid


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, max_width: int) -> str:
    """Trim ``text`` (ending in '..') until it fits into max_width pixels."""
    if draw.textlength(text, font=font) <= max_width:
        return text
    while text and draw.textlength(text + "..", font=font) > max_width:
        text = text[:-1]
    return text + ".." if text else ""


def label_strip(
    texts: Sequence[str],
    width_each: int,
    height: int,
    *,
    left_pad: int = 0,
    background: int = 255,
    color: int = 0,
) -> np.ndarray:
    """Render one small text label per cell, centred, as a uint8 (height, W, 3) strip.

    Uses Pillow's built-in bitmap font (crisp at small sizes, ~11 px tall, so
    ``height`` >= 12 shows it whole; it is clipped otherwise; Latin-1 text only).
    Labels too wide for their cell are trimmed with '..'.
    W = left_pad + len(texts) * width_each. To put it above a ``video_grid``
    with ``ncols == len(texts)``: width_each = W_video + pad, left_pad = pad; then
    its width equals the grid's and ``np.concatenate([strip[None].repeat(T, 0),
    grid], axis=1)`` adds a header row.
    """
    total_w = left_pad + len(texts) * width_each
    image = Image.new("L", (max(total_w, 1), max(height, 1)), color=background)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default_imagefont()  # the bitmap font, not FreeType
    for j, text in enumerate(texts):
        text = _fit_text(draw, str(text), font, width_each - 2)
        if not text:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        x = left_pad + j * width_each + (width_each - (right - left)) // 2 - left
        y = (height - (bottom - top)) // 2 - top
        draw.text((x, y), text, fill=color, font=font)
    strip = np.asarray(image, dtype=np.uint8)[:height, :total_w]
    return np.repeat(strip[..., None], 3, axis=-1)
