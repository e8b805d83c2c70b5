"""Ingest building blocks, one at a time: resampling, resizing, filters, clip cutting, actions, discovery."""

from collections import Counter

import numpy as np
import pytest
from ingest_fixtures import frame_image, read_index, write_frame_folder, write_sidecar, write_video

from data_ingest.decode import (RawFrame, SourceError, image_frames, resample, scaled_size, target_chunks,
                                to_target, video_frames)
from data_ingest.filters import (CUT, KeptFrame, clip_signature, colour_histograms, load_quality_filter, motion_quality,
                                 motion_score, segment)
from data_ingest.process import aligned_actions, cut_segments, load_sidecar
from data_ingest.settings import IngestSettings
from data_ingest.sources import discover


def chunks(frames: list[np.ndarray], size: int = 4) -> list[tuple[list[int], np.ndarray]]:
    """Frames as segment() takes them: (indices, uint8 [K, H, W, 3]), ``size`` at a time."""
    return [(list(range(i, min(i + size, len(frames)))), np.stack(frames[i:i + size]))
            for i in range(0, len(frames), size)]


def frames_at(times: list[float]) -> list[RawFrame]:
    return [RawFrame(i, t, i) for i, t in enumerate(times)]


def test_resample_down_up_and_variable_rate():
    thirty = frames_at([i / 30 for i in range(31)])  # 1 s at 30 fps
    assert [f.index for f in resample(thirty, 10)] == list(range(0, 31, 3))
    five = frames_at([i / 5 for i in range(5)])  # 0.8 s at 5 fps: every frame shown twice, the last once
    assert [f.index for f in resample(five, 10)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    jittered = frames_at([0, 0.0339, 0.0661, 0.1004, 0.134, 0.166, 0.2001])  # WebM-style rounding
    assert [f.index for f in resample(jittered, 10)] == [0, 3, 6]
    gappy = frames_at([0, 0.05, 0.5])  # a stall: the last frame before it is held
    assert [f.index for f in resample(gappy, 10)] == [0, 1, 1, 1, 1, 2]
    assert list(resample([], 10)) == []


def test_resample_has_no_float_drift_over_long_videos():
    """Float times, checked against exact fractions: three hours of NTSC video (30000/1001 fps) to 10 fps."""
    n = 3 * 3600 * 30
    got = [f.index for f in resample((RawFrame(i, i * 1001 / 30000, None) for i in range(n)), 10)]
    # Output k shows the last source frame i with i * 1001/30000 <= k/10 + 1 ms (the slack), in integers:
    # i * 1001 <= 3000 k + 30; a frame exactly on that bound may fall either way.
    for k, index in enumerate(got):
        assert index in {(3000 * k + 29) // 1001, (3000 * k + 30) // 1001}, (k, index)
    assert len(got) == (n - 1) * 1001 // 3000 + 1


@pytest.mark.parametrize("name, fps, threads, b_frames", [("a.mp4", 30, 1, True), ("b.mkv", 25, 2, True),
                                                          ("c.mov", 60, 1, True), ("d.mp4", 30, 1, False)])
def test_unshown_frames_are_not_decoded_and_the_clip_frames_stay_the_same(tmp_path, name, fps, threads, b_frames):
    """H.264 B-frames that resampling to 10 fps will not show are skipped by the decoder; the frames that are
    shown, their source indices and the count of source frames are those of decoding every frame. Without
    B-frames every frame is decoded."""
    video = write_video(tmp_path / name, 2 * fps, seed=5, fps=fps, size=64, b_frames=b_frames)
    settings = IngestSettings()
    every = list(video_frames(video, settings, threads=threads))
    skipping = list(video_frames(video, settings, threads=threads, skip_unshown=True))
    assert len(every) == 2 * fps
    assert len(skipping) < len(every) * 0.8 if b_frames else len(skipping) == len(every)
    assert [f.index for f in skipping] == sorted({f.index for f in skipping}) and skipping[-1].index == 2 * fps - 1
    shown = list(target_chunks(every, settings, size=8))
    assert [len(indices) for indices, _ in shown] == [8, 8, 4]
    for (indices, rgb), (indices_skipping, rgb_skipping) in zip(shown, target_chunks(skipping, settings, size=8),
                                                                strict=True):
        assert indices == indices_skipping and np.array_equal(rgb, rgb_skipping)


def test_large_pictures_come_in_smaller_chunks():
    """A chunk holds its decoded source pictures until they are resized: 4K frames come one at a time."""
    big = np.zeros((2160, 3840, 3), np.uint8)
    frames = [RawFrame(i, i / 10, big) for i in range(3)]
    got = list(target_chunks(frames, IngestSettings()))
    assert [indices for indices, _ in got] == [[0], [1], [2]] and got[0][1].shape == (1, 64, 64, 3)


@pytest.mark.parametrize("policy, expect", [("crop", (114, 64)), ("pad", (64, 36)), ("stretch", (64, 64))])
def test_resize_policies(policy, expect):
    s = IngestSettings(height=64, width=64, resize=policy)
    assert scaled_size(1600, 900, s) == expect
    wide = np.zeros((90, 160, 3), np.uint8)
    wide[:, :40] = (220, 160, 30)  # an orange band on the left quarter
    out = to_target(wide, s)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    inside = out[32, 2] if policy != "crop" else out[32, out[32, :, 0].argmax()]
    assert inside[0] > inside[1] > inside[2], inside  # still orange: red, then green, then blue
    if policy == "crop":  # scaled to 114x64, 25 px cut from each side: ~3.5 px of the 28.5 px band survive
        assert 2 <= (out[32, :, 0] > 100).sum() <= 5 and out[:, 8:].max() == 0
    elif policy == "pad":  # black bars above and below, the band still at the left
        assert out[:10].max() == 0 and out[-10:].max() == 0 and out[32, 2, 0] > 150
    else:
        assert out[:, :14, 0].mean() > 150 and out[:, 20:].max() == 0


def test_segment_drops_blank_and_static_and_cuts_scenes():
    s = IngestSettings(static_seconds=0.5)  # 5 frames
    moving = [frame_image(i, seed=1, size=64) for i in range(6)]
    other_scene = [frame_image(i, seed=99, size=64) for i in range(3)]
    still = [moving[-1]] * 12
    black = [np.zeros((64, 64, 3), np.uint8)] * 2
    stream = moving + still + black + other_scene
    counts = Counter()
    out = list(segment(chunks(stream), s, counts))
    kept = [x[0] for x in out if x is not CUT]
    # The still stretch (12 repeats of frame 5) keeps only its first picture; blanks go; the scene change cuts.
    assert kept == [0, 1, 2, 3, 4, 5, 20, 21, 22]
    assert counts["static"] == 12 and counts["blank"] == 2
    cuts = [i for i, x in enumerate(out) if x is CUT]
    assert cuts and all(out[i - 1] is CUT or out[i - 1][0] in (5,) for i in cuts)
    # A short pause (below static_seconds) is kept as it is.
    counts = Counter()
    short = moving + [moving[-1]] * 3 + [frame_image(7, seed=1, size=64)]
    assert [x[0] for x in segment(chunks(short), s, counts) if x is not CUT] == list(range(10))
    assert counts["static"] == 0


def test_scene_cut_between_different_videos():
    s = IngestSettings()
    a = [frame_image(i, seed=1, size=64) for i in range(3)]
    b = [frame_image(i, seed=2, size=64) for i in range(3)]
    counts = Counter()
    out = list(segment(chunks(a + b), s, counts))
    assert counts["scene_cuts"] == 1 and out[3] is CUT


def test_segment_is_the_same_whatever_the_chunking():
    """The features of a chunk's first frame compare with the previous chunk's last: chunk size changes nothing."""
    s = IngestSettings(static_seconds=0.3)
    moving = [frame_image(i, seed=1, size=32) for i in range(7)]
    black = np.zeros((32, 32, 3), np.uint8)
    stream = moving + [moving[-1]] * 5 + [black] + moving[:3] + [frame_image(0, seed=4, size=32)]
    runs = []
    for size in (1, 3, 16):
        counts = Counter()
        out = [x if x is CUT else (x[0], x[1].tobytes()) for x in segment(chunks(stream, size), s, counts)]
        runs.append((out, counts))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][1]["static"] and runs[0][1]["blank"] == 1 and runs[0][1]["scene_cuts"] == 1


def test_colour_histograms_count_every_pixel_of_every_frame():
    frames = np.random.default_rng(0).integers(0, 256, (1400, 4, 4, 3), dtype=np.uint8)  # 48 * 1400 > 2**16 keys
    got = colour_histograms(frames)
    for k in (0, 700, 1399):
        for c in range(3):
            assert np.array_equal(got[k, c] * 16, np.bincount(frames[k, ..., c].ravel() >> 4, minlength=16))


def test_cut_segments_never_crosses_a_cut_and_counts_frames():
    s = IngestSettings(clip_len=4, stride=2)
    frame = np.zeros((2, 2, 3), np.uint8)
    stream = [KeptFrame(i, frame, i / 10) for i in range(7)] + [CUT] + [KeptFrame(i, frame, 0) for i in range(10, 13)]
    counts = Counter()
    clips = list(cut_segments(stream + [CUT, CUT], s, counts))
    assert [clip.indices for clip in clips] == [[0, 1, 2, 3], [2, 3, 4, 5]]
    assert [(clip.segment, clip.start) for clip in clips] == [(0, 0), (0, 2)]
    assert [clip.changed.tolist() for clip in clips] == [[0.1, 0.2, 0.3], [0.3, 0.4, 0.5]]  # between neighbours
    assert counts["long_segment"] == 7 and counts["short_segment"] == 3


def test_actions_realigned_after_resampling():
    # 30 -> 10 fps: output frames are source frames 0, 3, 6, ...; a transition spans three source actions.
    actions = np.array([0, 0, 1, 2, 2, 2, 3, 1, 1, -1, -1, 0], np.int32)
    got = aligned_actions(actions, [0, 3, 6, 9, 12], "x.actions.json")
    assert got.tolist() == [0, 2, 1, -1]  # majority of each span
    assert aligned_actions(actions, [0, 0, 1], "x").tolist() == [-1, 0]  # a repeated frame has no action
    assert aligned_actions(None, [0, 3, 6], "").tolist() == [-1, -1]
    with pytest.raises(SourceError, match="has 12 actions"):
        aligned_actions(actions, [9, 13], "x.actions.json")


def test_sidecar_errors(tmp_path):
    video = tmp_path / "run.mp4"
    good = write_sidecar(video, [0, 1, -1], ["noop", "jump"])
    actions, meanings = load_sidecar(good)
    assert actions.tolist() == [0, 1, -1] and meanings == ["noop", "jump"]
    write_sidecar(video, [0, 2], ["noop", "jump"])
    with pytest.raises(SourceError, match=r"run.actions.json.*\[-1, 2\)"):
        load_sidecar(good)
    good.write_text("{not json")
    with pytest.raises(SourceError, match="bad sidecar run.actions.json"):
        load_sidecar(good)
    # Nothing is converted: each of these is a mistake in the file, reported by its name.
    for actions, meanings, reason in [([0.7, 1], ["a", "b"], "action 0.7"), (["1"], ["a", "b"], "action '1'"),
                                      ([True], ["a", "b"], "action True"), ([2 ** 70], ["a"], "action 1180591"),
                                      ([0], "AB", "lists"), ([0], ["a", 1], "distinct strings"),
                                      ([0, 1], ["A", "A"], "distinct strings"), ([[0]], ["a"], r"action \[0\]")]:
        write_sidecar(video, actions, meanings)
        with pytest.raises(SourceError, match=f"bad sidecar run.actions.json.*{reason}"):
            load_sidecar(good)


def test_quality_filter_hook():
    still = np.stack([frame_image(0, seed=1, size=32)] * 8)
    moving = np.stack([frame_image(i, seed=1, size=32) for i in range(8)])
    assert motion_quality(still) == 0.0 and motion_quality(moving) == 1.0
    assert load_quality_filter("") is motion_quality
    assert load_quality_filter("data_ingest.filters:motion_quality") is motion_quality
    for bad in ("nocolon", "no_such_module_xyz:f", "data_ingest.filters:nope"):
        with pytest.raises(ValueError, match="--quality-filter"):
            load_quality_filter(bad)


def test_clip_scores_from_segment_features_equal_motion_quality():
    """Ingest scores clips from the changed fractions segment() measured: the same as scoring their frames."""
    s = IngestSettings(clip_len=4, static_seconds=0.5)
    moving = [frame_image(i, seed=1, size=32) for i in range(9)]
    pauses = moving[:3] + [moving[2]] * 2 + moving[3:6] + [moving[5]] * 8 + moving[6:] + [moving[8]] * 3
    stream = pauses + [np.zeros((32, 32, 3), np.uint8)] + [frame_image(i, seed=5, size=32) for i in range(6)]
    clips = list(cut_segments(segment(chunks(stream, 3), s, Counter()), s, Counter()))
    scores = [motion_score(clip.changed) for clip in clips]
    assert scores == [motion_quality(clip.frames) for clip in clips]
    assert len(clips) == 4 and 0 < min(scores) < 1 == max(scores)  # clips with a pause in them among them


def test_clip_signature_is_robust_to_noise_but_not_to_content():
    clip = np.stack([frame_image(i, seed=1, size=64) for i in range(4)])
    noisy = np.clip(clip.astype(int) + np.random.default_rng(0).integers(-2, 3, clip.shape), 0, 255).astype(np.uint8)
    other = np.stack([frame_image(i + 1, seed=1, size=64) for i in range(4)])
    assert clip_signature(clip) == clip_signature(noisy)
    assert clip_signature(clip) != clip_signature(other)


def test_image_frames_refuse_bad_images(tmp_path):
    s = IngestSettings()
    folder = write_frame_folder(tmp_path / "f", 3, seed=1)
    paths = sorted(folder.iterdir())
    got = list(image_frames(paths, s))
    assert [read_index(f.image) for f in got] == [0, 1, 2] and got[1].time == pytest.approx(0.1)
    paths[1].write_bytes(b"not a png")
    with pytest.raises(SourceError, match="unreadable image frame_0001.png"):
        list(image_frames(paths, s))


def test_discover(tmp_path):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    write_video(videos / "a.mp4", 3, seed=1, size=32)
    write_video(videos / "sub" / "b.webm", 3, seed=2, size=32, codec="libvpx-vp9")
    write_sidecar(videos / "a.mp4", [0, 0], ["noop"])
    write_frame_folder(videos / "sub" / "frames", 3, seed=3)
    (videos / "notes.txt").write_text("junk")
    (videos / "cover.png").write_bytes(b"x")  # an image without a number is not a frame
    (videos / ".hidden.mp4").write_bytes(b"x")
    out = tmp_path / "out"
    (tmp_path / "urls.txt").write_text("# my list\nhttp://example.invalid/a.mp4  # first\n\nnot a url\n"
                                       "https://example.invalid/b#t=3\n")
    found = discover([str(videos), str(videos / "a.mp4"), "@" + str(tmp_path / "urls.txt"), "missing.mp4",
                      str(tmp_path / "urls.txt"), "atari:Pong", "@" + str(tmp_path / "none.txt")], out)
    assert [(s.kind, s.name) for s in found.specs] == [
        ("video", f"{videos.as_posix()}/a.mp4"), ("video", f"{videos.as_posix()}/sub/b.webm"),
        ("frames", f"{videos.as_posix()}/sub/frames"), ("atari", "atari:Pong")]
    assert found.specs[0].sidecar.endswith("a.actions.json") and not found.specs[1].sidecar
    assert len(found.specs[2].frames) == 3
    assert found.urls == ["http://example.invalid/a.mp4", "https://example.invalid/b#t=3"]
    assert sorted(Path_names(found.ignored)) == ["cover.png", "notes.txt"]
    problems = dict(found.problems)
    assert problems["missing.mp4"] == "no such file or directory"
    assert "not a video file" in problems[str(tmp_path / "urls.txt")]
    assert "not an http(s) URL" in problems["@" + str(tmp_path / "urls.txt") + ":4"]
    assert "cannot read the URL list" in problems["@" + str(tmp_path / "none.txt")]


def Path_names(paths: list[str]) -> list[str]:
    return [p.rsplit("/", 1)[-1] for p in paths]
