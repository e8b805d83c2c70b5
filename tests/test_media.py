"""Tests for genie_jax.media: GIF/PNG/MP4 writing, video grids, text labels."""

from __future__ import annotations

from pathlib import Path

import av
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from genie_jax.media import label_strip, save_gif, save_mp4, save_png, to_uint8, video_grid

COLOURS = np.array([[255, 0, 0], [0, 128, 255], [10, 200, 30]], dtype=np.uint8)


def _flat_frames(t: int, h: int, w: int) -> np.ndarray:
    """frames_THWC where frame i is one flat colour (distinct per frame)."""
    return np.broadcast_to(COLOURS[:t, None, None, :], (t, h, w, 3)).copy()


def test_to_uint8_rounds_and_clips() -> None:
    x = np.array([-0.5, 0.0, 0.2, 0.5, 1.0, 1.7, np.nan], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(x), [0, 0, 51, 128, 255, 255, 0])
    np.testing.assert_array_equal(to_uint8(jnp.asarray([0.0, 1.0])), [0, 255])
    u = np.arange(5, dtype=np.uint8)
    assert to_uint8(u).dtype == np.uint8 and np.array_equal(to_uint8(u), u)


def test_gif_round_trip(tmp_path: Path) -> None:
    frames = _flat_frames(3, 4, 5)
    out = save_gif(frames, tmp_path / "sub" / "clip.gif", fps=10, scale=3)
    assert out == tmp_path / "sub" / "clip.gif" and out.exists()
    assert [p.name for p in out.parent.iterdir()] == ["clip.gif"]  # no temp left
    with Image.open(out) as im:
        assert im.n_frames == 3
        assert im.size == (15, 12)  # (W*scale, H*scale)
        assert im.info.get("loop") == 0
        assert im.info.get("duration") == 100
        for i in range(3):
            im.seek(i)
            rgb = np.asarray(im.convert("RGB"))
            assert rgb.shape == (12, 15, 3)
            assert np.all(rgb == COLOURS[i]), (i, np.unique(rgb.reshape(-1, 3), axis=0))


def test_gif_accepts_float_and_grayscale(tmp_path: Path) -> None:
    gray = np.linspace(0, 1, 2 * 6 * 6).reshape(2, 6, 6)  # THW floats
    save_gif(gray, tmp_path / "g.gif")
    with Image.open(tmp_path / "g.gif") as im:
        assert im.n_frames == 2 and im.size == (6, 6)


def test_png_round_trip(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = save_png(img, tmp_path / "x.png", scale=2)
    back = np.asarray(Image.open(out).convert("RGB"))
    assert back.shape == (10, 14, 3)
    np.testing.assert_array_equal(back[::2, ::2], img)
    np.testing.assert_array_equal(back[1::2, 1::2], img)


def test_mp4_decodable_with_odd_size(tmp_path: Path) -> None:
    frames = np.random.default_rng(1).integers(0, 256, (6, 7, 9, 3), dtype=np.uint8)
    out = save_mp4(frames, tmp_path / "clip.mp4", fps=8)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 6
    assert decoded[0].shape == (8, 10, 3)  # padded to even


def test_mp4_flat_colour_is_close(tmp_path: Path) -> None:
    out = save_mp4(_flat_frames(3, 16, 16), tmp_path / "flat.mp4", fps=10)
    with av.open(str(out)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 3
    for i, f in enumerate(decoded):  # lossy + YUV round trip: a few levels off
        assert np.abs(f.astype(int) - COLOURS[i]).max() <= 6


def test_video_grid_shape_and_layout() -> None:
    n, t, h, w = 5, 2, 4, 6
    videos = np.stack([np.full((t, h, w, 3), 10 * (i + 1), np.uint8) for i in range(n)])
    grid = video_grid(videos, ncols=3, pad=1, pad_value=255)
    assert grid.shape == (t, 2 * (h + 1) + 1, 3 * (w + 1) + 1, 3)
    assert grid.dtype == np.uint8
    # video 4 (0-based) sits at row 1, col 1
    y, x = 1 + 1 * (h + 1), 1 + 1 * (w + 1)
    assert np.all(grid[:, y : y + h, x : x + w] == 50)
    assert np.all(grid[:, 0] == 255) and np.all(grid[:, :, 0] == 255)
    # empty last cell (row 1, col 2) is padding
    x2 = 1 + 2 * (w + 1)
    assert np.all(grid[:, y : y + h, x2 : x2 + w] == 255)
    # float and single-channel input
    g = video_grid(np.zeros((2, 1, 3, 3, 1), np.float32), ncols=2, pad=0)
    assert g.shape == (1, 3, 6, 3) and g.max() == 0


def test_label_strip_aligns_with_grid() -> None:
    strip = label_strip(["real", "gen", "a very long label"], width_each=21, height=13, left_pad=1)
    assert strip.shape == (13, 1 + 3 * 21, 3) and strip.dtype == np.uint8
    for j in range(3):  # each cell got some dark (text) pixels
        cell = strip[:, 1 + 21 * j : 1 + 21 * (j + 1)]
        assert cell.min() < 128 and cell.max() == 255
    grid = video_grid(np.zeros((3, 2, 8, 20, 3), np.uint8), ncols=3, pad=1)
    header = label_strip(["a", "b", "c"], width_each=20 + 1, height=12, left_pad=1)
    assert header.shape[1] == grid.shape[2]
    stacked = np.concatenate([np.repeat(header[None], grid.shape[0], 0), grid], axis=1)
    assert stacked.shape == (2, 12 + grid.shape[1], grid.shape[2], 3)


def test_bad_shapes_raise(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_gif(np.zeros((2, 4, 4, 2), np.uint8), tmp_path / "bad.gif")
    with pytest.raises(ValueError):
        video_grid(np.zeros((4, 4, 3), np.uint8), ncols=2)
    assert not list(tmp_path.iterdir())
