"""Processing one source, start to end: hash it, decode, resample, resize, filter, cut clips, stage them.

``process_source`` never raises for bad input: it returns a result whose status is "ok" (clips staged),
"dropped" (readable but nothing worth keeping, e.g. too short) or "failed" (unreadable; ``reason`` says why).
It runs in worker processes, so it takes and returns plain picklable values.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from data_ingest.decode import RawFrame, SourceError, file_sha256, image_frames, target_chunks, video_frames
from data_ingest.filters import (CUT, KeptFrame, QualityFilter, clip_signature, load_quality_filter, motion_quality,
                                 motion_score, segment)
from data_ingest.settings import IngestSettings
from data_ingest.sources import SourceSpec
from data_ingest.staging import StageWriter, staged_result

RESULT_VERSION = 4  # 2: RGB through swscale's BGR path (colours differ by up to 4 levels); 3: display rotation,
# non-square pixels, EXIF orientation, 16-bit grey images, slow sources' repeated frames left out of the score;
# 4: clips.npz holds the clips' positions
GAME_KINDS = ("atari", "procgen")  # sources that are played, not read: their settings are their content


def source_key(spec: SourceSpec, settings: IngestSettings, content_hash: str) -> str:
    """The staged directory name: same content under the same settings -> same key, whatever the file is called."""
    text = f"v{RESULT_VERSION}|{settings.digest()}|{spec.kind}|{content_hash}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def content_hash(spec: SourceSpec, seed: int) -> tuple[str, str]:
    """sha256 of everything that decides the source's clips (file bytes, frame images, sidecar, or game settings),
    and of its pictures alone (no sidecar) -> (content, pictures)."""
    if spec.kind in GAME_KINDS:
        digest = hashlib.sha256(json.dumps([spec.path, seed, spec.provenance], sort_keys=True).encode()).hexdigest()
        return digest, digest
    files = [Path(f) for f in spec.frames] if spec.kind == "frames" else [Path(spec.path)]
    pictures = file_sha256(files)
    if not spec.sidecar:
        return pictures, pictures
    return hashlib.sha256((pictures + file_sha256([Path(spec.sidecar)])).encode()).hexdigest(), pictures


def process_source(spec: SourceSpec, settings: IngestSettings, out_dir: str, *, threads: int = 0,
                   seed: int = 0) -> dict[str, Any]:
    """Stages ``spec``'s clips under ``out_dir/.ingest`` (or finds them staged) and returns its result record."""
    base = {"name": spec.name, "kind": spec.kind, "provenance": spec.provenance}
    try:
        digest, pictures = content_hash(spec, seed)
    except OSError as exc:
        return {**base, "status": "failed", "reason": f"cannot read: {exc.strerror or exc}"}
    key = source_key(spec, settings, digest)
    done = staged_result(Path(out_dir), key)
    if done is not None:
        return {**done, **base, "media_sha256": pictures, "reused": True}
    writer = StageWriter(Path(out_dir), key)
    try:
        record = _run(spec, settings, writer, threads=threads, seed=seed)
    except SourceError as exc:
        writer.abort()
        return {**base, "status": "failed", "reason": str(exc), "sha256": digest}
    except Exception as exc:  # noqa: BLE001 (a bug or an odd file must not stop the other sources)
        writer.abort()
        return {**base, "status": "failed", "reason": f"internal error: {type(exc).__name__}: {exc}",
                "sha256": digest}
    record = {**record, "sha256": digest, "media_sha256": pictures, "key": key, "result_version": RESULT_VERSION}
    writer.commit(record, settings.clip_len)
    return {**record, **base, "reused": False}


def _run(spec: SourceSpec, settings: IngestSettings, writer: StageWriter, *, threads: int,
         seed: int) -> dict[str, Any]:
    actions_T, meanings = (None, None)
    if spec.kind == "atari":
        from data_ingest.atari import play  # optional extra: imported only when asked for

        raw, actions_T, meanings = play(spec, settings, seed=seed)
    elif spec.kind == "procgen":
        from data_ingest.procgen_games import play as play_procgen

        raw, actions_T, meanings = play_procgen(spec, settings, seed=seed)
    elif spec.kind == "frames":
        raw = image_frames([Path(f) for f in spec.frames], settings)
    else:
        # With a sidecar every frame is decoded: its actions align by source index, which then never rests on
        # inferring which frames the decoder dropped.
        raw = video_frames(Path(spec.path), settings, threads=threads, skip_unshown=not spec.sidecar)
    if spec.sidecar:
        actions_T, meanings = load_sidecar(Path(spec.sidecar))
    quality = load_quality_filter(settings.quality_filter)
    # The built-in score needs only the changed-pixel fractions segment() has measured: no second look at the frames.
    scored_by_motion = quality is motion_quality
    counts: Counter = Counter()
    probe = _Probe(raw, counts)
    resampled = _counted(target_chunks(probe, settings), counts, "resampled")
    for clip in cut_segments(segment(resampled, settings, counts), settings, counts):
        score = motion_score(clip.changed, clip.indices) if scored_by_motion else _user_score(quality, clip, settings)
        if score < settings.min_quality:
            counts["low_quality_clips"] += 1
            continue
        actions = aligned_actions(actions_T, clip.indices, spec.sidecar)
        writer.add(clip.frames, actions, clip_signature(clip.frames), (clip.segment, clip.start))
    counts["kept"] = frames_in_clips(writer.positions, settings.clip_len)
    decoded = counts["decoded"]
    if spec.sidecar and len(actions_T) != max(decoded - 1, 0):  # (a game's episode may end before its actions)
        raise SourceError(f"sidecar {Path(spec.sidecar).name} has {len(actions_T)} "
                          f"actions but the video has {decoded} frames (needs {max(decoded - 1, 0)}: one between "
                          "each pair of frames)")
    record = {
        "status": "ok", "reason": "",
        "source": {"width": probe.width, "height": probe.height, "duration_s": round(float(probe.last_time), 3)},
        "frames": {"decoded": decoded, "resampled": counts["resampled"], "kept": counts["kept"]},
        "dropped_frames": {"blank": counts["blank"], "static": counts["static"],
                           "short_segment": counts["short_segment"],
                           "not_in_clip": counts["long_segment"] - counts["kept"]},
        "scene_cuts": counts["scene_cuts"],
        "clips": {"staged": writer.num_clips, "low_quality": counts["low_quality_clips"]},
        "action_meanings": list(meanings) if meanings is not None else None,
    }
    if counts["resampled"] < settings.min_frames:
        record.update(status="dropped", reason=f"too short: {decoded} frame(s), {counts['resampled']} at "
                      f"{settings.fps:g} fps; need {settings.min_frames} (see --min-seconds)")
        record["clips"]["staged"] = 0
        writer.discard_clips()
    elif writer.num_clips == 0:
        reason = "no clip left after filtering (blank, static, scene cuts, quality)"
        source_fps = (decoded - 1) / probe.last_time if probe.last_time else 0.0
        if 0 < source_fps * settings.static_seconds <= 1 + 1e-6:  # each picture held as long as a static stretch
            reason += (f"; at {source_fps:.2g} frames a second each picture is held {settings.static_seconds:g} s "
                       "or longer, which the static test (--static-seconds) reads as frozen")
        record.update(status="dropped", reason=reason)
    return record


def _user_score(quality: QualityFilter, clip: Clip, settings: IngestSettings) -> float:
    """A --quality-filter's score of ``clip``; SourceError naming the filter if it fails or scores outside [0, 1]."""
    try:
        score = float(quality(clip.frames))
    except Exception as exc:  # noqa: BLE001 (the user's code: any error is reported with the source)
        raise SourceError(f"--quality-filter {settings.quality_filter} failed: {type(exc).__name__}: {exc}") from None
    if not 0 <= score <= 1:
        raise SourceError(f"--quality-filter {settings.quality_filter} scored a clip {score}, not in [0, 1]")
    return score


class _Probe:
    """Passes raw frames through, counting the source's frames ("decoded": those the decoder skipped count too, by
    the indices) and noting the source size and duration."""

    def __init__(self, frames: Iterable[RawFrame], counts: Counter):
        self._frames, self._counts = frames, counts
        self.width = self.height = 0
        self.last_time: Any = 0

    def __iter__(self) -> Iterator[RawFrame]:
        for frame in self._frames:
            if self._counts["decoded"] == 0:
                image = frame.image
                self.height, self.width = (image.shape[:2] if isinstance(image, np.ndarray)
                                           else (image.height, image.width))
            self._counts["decoded"] = frame.index + 1
            self.last_time = frame.time
            yield frame


def _counted(chunks: Iterable[tuple[list[int], np.ndarray]], counts: Counter,
             name: str) -> Iterator[tuple[list[int], np.ndarray]]:
    for chunk in chunks:
        counts[name] += len(chunk[0])
        yield chunk


class Clip(NamedTuple):
    """One clip :func:`cut_segments` cuts, with what the filters measured on its frames."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    indices: list[int]  # [T] source frame indices
    segment: int  # which stretch between CUTs of the source
    start: int  # first frame's place within the segment
    changed: np.ndarray  # float [T-1]: fraction of pixels changed between neighbouring frames


def cut_segments(stream: Iterable[KeptFrame | None], settings: IngestSettings, counts: Counter) -> Iterator[Clip]:
    """Cuts a frame stream with CUTs (segment()'s output) into clips. Never crosses a CUT; holds only the last
    clip_len frames."""
    clip_len, stride = settings.clip_len, settings.clip_stride
    window: deque = deque(maxlen=clip_len)
    seg = pos = 0

    def close() -> None:
        counts["short_segment" if pos < clip_len else "long_segment"] += pos

    for item in stream:
        if item is CUT:
            if pos:
                close()
                seg, pos = seg + 1, 0
                window.clear()
            continue
        window.append(item)
        pos += 1
        if pos >= clip_len and (pos - clip_len) % stride == 0:
            yield Clip(np.stack([f.rgb for f in window]), [f.index for f in window], seg, pos - clip_len,
                       np.array([f.changed for f in itertools.islice(window, 1, None)]))
    close()


def frames_in_clips(positions_K2: np.ndarray, clip_len: int) -> int:
    """How many distinct frames clips at (segment, start) positions [K, 2] cover (clips may overlap)."""
    if not len(positions_K2):
        return 0
    segment, start = positions_K2[np.lexsort((positions_K2[:, 1], positions_K2[:, 0]))].T
    up_to_next = np.where(segment[1:] == segment[:-1], np.minimum(np.diff(start), clip_len), clip_len)
    return int(up_to_next.sum()) + clip_len


def aligned_actions(actions_T: np.ndarray | None, src_index: list[int], sidecar: str) -> np.ndarray:
    """Actions between consecutive clip frames, from per-source-frame actions (actions_T[i]: frame i -> i+1).

    After resampling, clip frames k and k+1 are source frames j_k <= j_{k+1}: the transition spans actions
    j_k..j_{k+1}-1 and gets their most frequent one (ties: lowest id); a repeated frame (j_k == j_{k+1}) gets -1.
    """
    n = len(src_index) - 1
    if actions_T is None:
        return np.full(n, -1, np.int32)
    out = np.empty(n, np.int32)
    for k in range(n):
        span = actions_T[src_index[k]:src_index[k + 1]]
        if src_index[k + 1] > len(actions_T):
            raise SourceError(f"sidecar {Path(sidecar).name}: has {len(actions_T)} actions, the video has more "
                              "frames")
        out[k] = -1 if span.size == 0 else int(np.bincount(span + 1).argmax()) - 1
    return out


def load_sidecar(path: Path) -> tuple[np.ndarray, list[str]]:
    """Reads ``{"actions": [...], "meanings": [...]}``: actions a flat list of integer ids in [-1, len(meanings))
    (-1: unknown), meanings a list of distinct strings. Raises SourceError naming the file and the problem; nothing
    is converted (a float id or a string meaning is a mistake to report, not to round or to split)."""
    expected = '; expected {"actions": [int, ...], "meanings": [str, ...]}'
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:  # (ValueError: bad JSON, bad UTF-8, a 5,000-digit number)
        raise SourceError(f"bad sidecar {path.name}: {exc!r:.300}{expected}") from None
    if not isinstance(data, dict) or not isinstance(data.get("actions"), list) or \
            not isinstance(data.get("meanings"), list):
        raise SourceError(f"bad sidecar {path.name}: not an object with lists \"actions\" and \"meanings\"{expected}")
    actions, meanings = data["actions"], data["meanings"]
    if not all(isinstance(m, str) for m in meanings) or len(set(meanings)) != len(meanings):
        raise SourceError(f"bad sidecar {path.name}: meanings must be distinct strings, got {meanings!r:.200}")
    bad = next((a for a in actions if isinstance(a, bool) or not isinstance(a, int) or not -1 <= a < len(meanings)),
               None)
    if bad is not None:
        raise SourceError(f"bad sidecar {path.name}: action {bad!r:.50} is not an id in [-1, {len(meanings)}) (ids "
                          "index the meanings; -1 is unknown)")
    return np.asarray(actions, np.int32), meanings


__all__ = ["Clip", "aligned_actions", "content_hash", "cut_segments", "frames_in_clips", "load_sidecar",
           "process_source", "source_key"]
