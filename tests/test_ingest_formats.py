"""Videos and images as users' files come: turned by display metadata, with non-square pixels, cover art, Matroska
timelines that do not start at zero or end with the sound, 16-bit grey, slow frame rates."""

import fractions
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from ingest_fixtures import frame_image
from PIL import Image

from data_ingest import decode
from data_ingest.decode import RawFrame, SourceError, image_frames, target_chunks, video_frames
from data_ingest.filters import motion_score, segment
from data_ingest.process import cut_segments
from data_ingest.settings import IngestSettings

PAD = IngestSettings(resize="pad")


def banded(index: int, width: int, height: int) -> np.ndarray:
    """Dark grey with a white band along the top edge (which edge it ends on shows the turn) and a moving block."""
    img = np.full((height, width, 3), 60, np.uint8)
    img[:height // 8] = 255
    x = (index * 4) % (width - 20)
    img[height // 2:height // 2 + 20, x:x + 20] = (200, 40, 40)
    return img


def write(path: Path, width: int, height: int, frames: int = 30, *, rotation: int = 0,
          pixel_aspect: fractions.Fraction | None = None, first_pts: int = 0, audio_seconds: float = 0) -> Path:
    """A video of banded() pictures at 30 fps (H.264; VP9 and Opus in WebM), with the given display rotation
    (counterclockwise degrees), sample aspect ratio, first timestamp (in frames), and ``audio_seconds`` of
    silence."""
    webm = path.suffix == ".webm"
    with av.open(str(path), "w") as container:
        stream = (container.add_stream("libvpx-vp9", rate=30, options={"deadline": "realtime", "cpu-used": "8"})
                  if webm else container.add_stream("libx264", rate=30, options={"crf": "12", "preset": "ultrafast"}))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        if pixel_aspect:
            stream.codec_context.sample_aspect_ratio = pixel_aspect
        audio = container.add_stream("libopus" if webm else "aac", rate=48000) if audio_seconds else None
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(banded(i, width, height), format="rgb24")
            frame.pts, frame.time_base = first_pts + i, fractions.Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            for start in range(0, int(48000 * audio_seconds), 1024):
                silence = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                silence.sample_rate, silence.pts = 48000, start
                for packet in audio.encode(silence):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


def first_target_frame(path: Path, settings: IngestSettings = PAD) -> np.ndarray:
    _, frames = next(iter(target_chunks(video_frames(path, settings), settings)))
    return frames[0]


def content_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of the non-black part of a padded frame, inclusive."""
    rows, cols = np.nonzero(frame.max(axis=(1, 2)) > 20)[0], np.nonzero(frame.max(axis=(0, 2)) > 20)[0]
    return rows.min(), rows.max(), cols.min(), cols.max()


def white_columns(frame: np.ndarray) -> tuple[int, int]:
    cols = np.nonzero((frame.min(axis=2) > 200).any(axis=0))[0]
    return cols.min(), cols.max()


def test_display_rotation_turns_the_picture_as_players_show_it(tmp_path):
    """A phone stores portrait video as landscape plus a rotation: ingest shows it upright, the way FFmpeg's
    players turn it (the display matrix's counterclockwise angle)."""
    upright = first_target_frame(write(tmp_path / "landscape.mp4", 320, 180))
    assert content_box(upright)[:2] == (14, 49)  # 16:9 padded into 64x64: 36 rows
    for rotation, band_side in ((90, "left"), (-90, "right")):
        frame = first_target_frame(write(tmp_path / f"rot{rotation}.mp4", 320, 180, rotation=rotation))
        top, bottom, left, right = content_box(frame)
        assert (top, bottom, left, right) == (0, 63, 14, 49), rotation  # portrait now: 36 columns
        band_left, band_right = white_columns(frame)
        # The stored top edge (the white band, an eighth of it) ends up on the left after a counterclockwise turn.
        if band_side == "left":
            assert band_left == 14 and band_right <= 19, (rotation, band_left, band_right)
        else:
            assert band_left >= 44 and band_right == 49, (rotation, band_left, band_right)
    upside_down = first_target_frame(write(tmp_path / "rot180.mp4", 320, 180, rotation=180))
    assert (upside_down[46:49].min(axis=2) > 200).all() and not (upside_down[14:20].min(axis=2) > 200).any()
    # Cropped to a wide target, the portrait picture loses rows, not its band (an eighth of 64 columns).
    wide = IngestSettings(height=32, width=64, resize="crop")
    cropped = first_target_frame(tmp_path / "rot90.mp4", wide)
    assert cropped.shape == (32, 64, 3) and white_columns(cropped) == (0, 7)


def test_non_square_pixels_keep_the_shown_shape(tmp_path):
    """240x180 stored, pixels 4/3 as wide as tall: shown (and ingested) as 320x180, 16:9."""
    frame = first_target_frame(write(tmp_path / "anamorphic.mp4", 240, 180, pixel_aspect=fractions.Fraction(4, 3)))
    assert content_box(frame) == (14, 49, 0, 63)
    square = first_target_frame(write(tmp_path / "square.mp4", 240, 180))
    assert content_box(square) == (8, 55, 0, 63)  # 4:3 without the aspect ratio: 48 rows


def test_cover_art_is_not_the_video(tmp_path):
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as container:
        cover = container.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        for packet in [*cover.encode(av.VideoFrame.from_ndarray(banded(0, 64, 64), format="rgb24")), *cover.encode()]:
            container.mux(packet)
    with pytest.raises(SourceError, match="only a cover picture"):
        list(video_frames(path, IngestSettings()))


@pytest.mark.parametrize("suffix", [".mkv", ".webm"])
def test_matroska_timelines_that_start_late_or_end_with_the_sound_are_whole(tmp_path, suffix):
    """Matroska's declared duration runs from the timeline's zero and covers the longest track: a video starting
    at 1.5 s, or followed by 4 s more sound, is not truncated. A file cut in half still is."""
    frames = list(video_frames(write(tmp_path / f"late{suffix}", 96, 64, frames=60, first_pts=45), IngestSettings()))
    assert len(frames) == 60 and frames[0].time == 0 and frames[-1].time == pytest.approx(59 / 30, abs=1e-3)
    sounding = write(tmp_path / f"sound{suffix}", 96, 64, frames=30, audio_seconds=5)
    assert len(list(video_frames(sounding, IngestSettings()))) == 30
    whole = write(tmp_path / f"whole{suffix}", 96, 64, frames=150, audio_seconds=5).read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole[:len(whole) // 2])
    with pytest.raises(SourceError, match="truncated"):
        list(video_frames(cut, IngestSettings()))
    # Each of the two ways a whole file is told from a cut one, on its own: the video track's own end, and the
    # sound stored after the video's end.
    with av.open(str(sounding)) as container:
        assert decode._declared_end(container, container.streams.video[0]) == pytest.approx(1.0, abs=0.05)
        assert container.duration / av.time_base > 4.9  # what the segment (and FFmpeg's stream) declares
        assert decode._holds_data_after(container, 4.0) and not decode._holds_data_after(container, 5.5)
    with av.open(str(cut)) as container:
        assert not decode._holds_data_after(container, 4.0)


def test_exif_orientation_and_16_bit_grey_images(tmp_path):
    turned = tmp_path / "turned"
    turned.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation 6: shown turned 90 degrees clockwise
    for i in range(2):
        Image.fromarray(banded(i, 160, 90)).save(turned / f"f{i}.jpg", quality=95, exif=exif)
    [first, _] = image_frames(sorted(turned.iterdir()), IngestSettings())
    assert first.image.shape == (160, 90, 3)
    assert first.image[:, -5:].min() > 200 and first.image[:, :5].max() < 120  # the top band now on the right
    grey = tmp_path / "grey16"
    grey.mkdir()
    for i in range(2):
        Image.fromarray(np.array([[0, 120 * 257, 65535]], np.uint16).repeat(10, 0).repeat(10, 1)).save(
            grey / f"g{i}.png")
    assert Image.open(grey / "g0.png").mode.startswith("I")  # what Pillow makes of 16-bit grey
    [frame, _] = image_frames(sorted(grey.iterdir()), IngestSettings())
    assert frame.image[0, ::10].tolist() == [[0, 0, 0], [120, 120, 120], [255, 255, 255]]


def test_slow_sources_repeated_frames_do_not_count_as_frozen():
    """A 5 fps source resampled to 10 fps shows every frame twice: the built-in score leaves those repeats out
    (else every clip of a slow source scored ~0.5 and was dropped); a game paused over distinct frames still
    counts as frozen."""
    s = IngestSettings(clip_len=8, static_seconds=2)
    pictures = [frame_image(i, seed=3, size=64) for i in range(8)]
    pictures += [pictures[-1]] * 8  # paused for 1.6 s (not yet static): distinct source frames, the same picture
    raw = [RawFrame(i, i / 5, picture) for i, picture in enumerate(pictures)]
    clips = list(cut_segments(segment(target_chunks(raw, s), s, Counter()), s, Counter()))
    assert [clip.indices[0] for clip in clips] == [0, 4, 8]
    moving, paused = clips[0], clips[2]
    assert moving.indices == [0, 0, 1, 1, 2, 2, 3, 3]
    assert motion_score(moving.changed, moving.indices) == 1.0
    assert motion_score(moving.changed) == pytest.approx(3 / 7)  # counted the old way: the repeats as frozen
    assert motion_score(paused.changed, paused.indices) == 0.0
