"""Deciding what to keep: blank frames, static stretches, scene cuts, clip quality and near-duplicate clips.

All tests work on the resized uint8 frames (64x64 is 12 KB), so they cost little next to decoding.
"""

from __future__ import annotations

import hashlib
import importlib
import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

import numpy as np

from data_ingest.settings import IngestSettings

CUT = None  # marker in a frame stream: the frames before and after it must not share a clip
QualityFilter = Callable[[np.ndarray], float]  # clip uint8 [T, H, W, 3] -> score in [0, 1]
_CHANGED_LEVEL = 12  # a pixel "changed" if a channel moved more than this (above codec noise)
_CHANNEL_OFFSETS = np.array([0, 16, 32], np.uint16)
_MOVING_PIXELS = 0.002  # motion_quality: a frame pair "moves" if more than this fraction of pixels changed


class KeptFrame(NamedTuple):
    """A frame :func:`segment` keeps: source index, picture uint8 [H, W, 3], and the fraction of pixels changed
    since the frame before it in the stream (meaningless after a CUT)."""

    index: int
    rgb: np.ndarray
    changed: float


def blank_flags(frames_KHWC: np.ndarray, settings: IngestSettings) -> np.ndarray:
    """Per frame, nearly one colour (black/white screens, fades): grey-level std below ``settings.blank_std``.

    -> bool [K]. Grey is the sum of the channels; the variance is computed exactly, in integers.
    """
    grey3 = frames_KHWC[..., 0].astype(np.int32)  # not .sum(axis=3): slow on length 3
    grey3 += frames_KHWC[..., 1]
    grey3 += frames_KHWC[..., 2]
    grey3 = grey3.reshape(len(grey3), -1)
    n = grey3.shape[1]
    sums = grey3.sum(axis=1, dtype=np.int64)
    squares = np.einsum("kp,kp->k", grey3, grey3, dtype=np.int64)
    return squares * n - sums * sums < (3 * settings.blank_std * n) ** 2  # n^2 var < (3 std n)^2


def colour_histograms(frames_KHWC: np.ndarray) -> np.ndarray:
    """Normalised 16-bin histogram per channel of every frame, float [K, 3, 16]."""
    k = len(frames_KHWC)
    keys = np.uint16 if 48 * k <= 1 << 16 else np.uint32  # 16 bits: a quarter of intp's memory traffic
    bins = (frames_KHWC >> 4).astype(keys)
    bins += _CHANNEL_OFFSETS
    bins += (48 * np.arange(k, dtype=keys))[:, None, None, None]  # one bincount for every channel and frame
    counts = np.bincount(bins.ravel(), minlength=48 * k).reshape(k, 3, 16).astype(np.float32)
    return counts / (bins[0].size // 3)


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance, averaged over channels: 0 = same colours, 1 = disjoint."""
    return float(np.abs(a - b).sum() / (2 * a.shape[0]))


def changed_fractions(a_KHWC: np.ndarray, b_KHWC: np.ndarray) -> np.ndarray:
    """Per frame pair, the fraction of pixels where some channel moved more than codec noise. -> float [K]."""
    diff = np.maximum(a_KHWC, b_KHWC) - np.minimum(a_KHWC, b_KHWC)  # |a - b| in uint8, no widening copy
    most = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    changed = most.reshape(len(most), -1) > _CHANGED_LEVEL
    return np.count_nonzero(changed, axis=1) / changed.shape[1]


def changed_fraction(a_HWC: np.ndarray, b_HWC: np.ndarray) -> float:
    """Fraction of pixels where some channel moved more than codec noise."""
    return float(changed_fractions(a_HWC[None], b_HWC[None])[0])


def segment(chunks: Iterable[tuple[Sequence[int], np.ndarray]], settings: IngestSettings,
            counts: Counter) -> Iterator[KeptFrame | None]:
    """Yields the frames worth keeping (:class:`KeptFrame`), with CUT between stretches that must not share a clip.
    Within a stretch, kept frames follow each other in the stream, so their ``changed`` compares clip neighbours.
    Takes the frames a few at a time, as (indices [K], uint8 [K, H, W, 3]) (see decode.target_chunks).

    Blank frames and static stretches (``settings.static_frames`` frames showing the same picture; the first is
    kept) are dropped and counted in ``counts`` ("blank", "static" frames); scene changes (colour histogram jump)
    become cuts ("scene_cuts"). Holds at most ``static_frames`` frames back, so memory stays bounded.
    """
    run: list[KeptFrame] = []  # frames showing the same picture as run[0], not yet yielded
    static = False
    after_picture = False  # the previous frame exists and is not blank
    previous = None
    for index, rgb, blank, scene_change, changed_from_previous in _with_features(chunks, settings):
        if blank:
            if not static:
                yield from run
            run, static, after_picture = [], False, False
            counts["blank"] += 1
            yield CUT
            continue
        if after_picture and scene_change > settings.scene_threshold:
            if not static:
                yield from run
            run, static = [], False
            counts["scene_cuts"] += 1
            yield CUT
        after_picture = True
        # Same picture as the run's first? Outside static stretches that is the previous frame, already compared.
        same_picture = bool(run) and (changed_from_previous if run[0].rgb is previous
                                      else changed_fraction(run[0].rgb, rgb)) <= settings.static_pixels
        previous = rgb
        if same_picture:
            if static:
                counts["static"] += 1
                continue
            run.append(KeptFrame(index, rgb, changed_from_previous))
            if len(run) >= settings.static_frames:
                static = True
                yield run[0]
                yield CUT
                counts["static"] += len(run) - 1
                run = [run[0]]  # the anchor stays as the reference picture
            continue
        if not static:
            yield from run
        run, static = [KeptFrame(index, rgb, changed_from_previous)], False
    if not static:
        yield from run


def _with_features(chunks: Iterable[tuple[Sequence[int], np.ndarray]],
                   settings: IngestSettings) -> Iterator[tuple[int, np.ndarray, bool, float, float]]:
    """Per frame: (index, rgb, blank, scene change, changed pixels), the last two against the previous frame
    (histogram distance, changed fraction; meaningless for the first frame).

    Computed a chunk at a time, because numpy's cost per call dwarfs its cost per pixel at 64x64. The blank test
    and the histograms look at every other pixel: plenty for them, and a quarter of the work.
    """
    last_rgb = last_hist = None
    for indices, stack in chunks:
        if not len(stack):
            continue
        half = _every_other_pixel(stack)
        hists = colour_histograms(half)
        before = np.concatenate([stack[:1] if last_rgb is None else last_rgb[None], stack[:-1]])
        hists_before = np.concatenate([hists[:1] if last_hist is None else last_hist[None], hists[:-1]])
        scene_change = np.abs(hists - hists_before).sum(axis=(1, 2)) / (2 * hists.shape[1])
        changed = changed_fractions(before, stack)
        last_rgb, last_hist = stack[-1], hists[-1]
        for index, rgb, blank, change, moved in zip(indices, stack, blank_flags(half, settings).tolist(),
                                                    scene_change.tolist(), changed.tolist(), strict=True):
            yield index, rgb, blank, change, moved


def _every_other_pixel(frames_KHWC: np.ndarray) -> np.ndarray:
    """A contiguous copy of every other row and column -> uint8 [K, H/2, W/2, 3]: one strided copy per channel,
    ~4x faster than copying the 3-wide pixels in one go."""
    view = frames_KHWC[:, ::2, ::2]
    out = np.empty(view.shape, np.uint8)
    out[..., 0], out[..., 1], out[..., 2] = view[..., 0], view[..., 1], view[..., 2]
    return out


def motion_quality(frames_THWC: np.ndarray) -> float:
    """The built-in quality score: the fraction of consecutive frame pairs that visibly differ.

    Cheap stand-in for Genie's learned classifier: it drops clips that are mostly frozen (loading screens,
    paused games shorter than the static stretch). Plug in a better one with ``--quality-filter module:function``.
    """
    return motion_score(changed_fractions(frames_THWC[:-1], frames_THWC[1:]))


def motion_score(changed_T1: np.ndarray, indices_T: Sequence[int] | None = None) -> float:
    """:func:`motion_quality` from the clip's changed-pixel fractions between neighbours (float [T-1]), which
    :func:`segment` has already measured: ingest scores clips this way, without comparing their frames again.

    With the clip's source frame indices, a pair showing the same source frame twice (a source slower than the
    target rate, repeated by resampling) is left out: it says nothing about whether the game moved."""
    changed = np.asarray(changed_T1)
    if indices_T is not None:
        changed = changed[np.diff(np.asarray(indices_T)) != 0]
    if len(changed) == 0:
        return 0.0
    return float(np.mean(changed > _MOVING_PIXELS))


def load_quality_filter(spec: str) -> QualityFilter:
    """``""`` -> motion_quality; ``"module:function"`` -> that function. Raises ValueError naming the problem."""
    if not spec:
        return motion_quality
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--quality-filter must look like module:function, got {spec!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--quality-filter {spec!r} cannot be loaded: {exc}") from None
    if not callable(fn):
        raise ValueError(f"--quality-filter {spec!r} is not callable")  # noqa: TRY004 (a bad argument)
    return fn


def clip_signature(frames_THWC: np.ndarray) -> str:
    """A near-duplicate key: every frame as 16x16 block means of grey, quantised to 16 levels, hashed.

    Re-encodings and loops of the same footage mostly share it; footage that differs anywhere by a sprite's worth
    of pixels practically never does (coarser keys merged, e.g., the first seconds of different Pong episodes).
    """
    t, h, w, _ = frames_THWC.shape
    rows, columns, block_sizes = _block_sums(h, w)
    # Block sums of grey (the sum of the channels) as two products with 0/1 matrices, the channels summed by the
    # first: exact (integer sums far below 2**24), and ~10x faster than np.add.reduceat over the middle axes.
    sums = rows @ (frames_THWC.reshape(t, h, w * 3).astype(np.float32) @ columns)
    means = sums / block_sizes
    return hashlib.sha1((means / 16).astype(np.uint8).tobytes()).hexdigest()[:20]


@functools.lru_cache(maxsize=8)
def _block_sums(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For :func:`clip_signature`: 0/1 matrices that sum 16 row blocks [16, h] and 16 column blocks of every
    channel [w * 3, 16], and 3x the pixels per block [16, 16] (grey is three channels)."""
    edges_h, edges_w = np.linspace(0, h, 17, dtype=int), np.linspace(0, w, 17, dtype=int)
    rows = (np.arange(h) >= edges_h[:-1, None]) & (np.arange(h) < edges_h[1:, None])
    columns = (np.arange(w) >= edges_w[:-1, None]) & (np.arange(w) < edges_w[1:, None])
    block_sizes = 3 * np.outer(np.diff(edges_h), np.diff(edges_w))
    return rows.astype(np.float32), np.repeat(columns, 3, axis=1).T.astype(np.float32), block_sizes


__all__ = ["CUT", "KeptFrame", "QualityFilter", "blank_flags", "changed_fraction", "changed_fractions",
           "clip_signature", "colour_histograms", "histogram_distance", "load_quality_filter", "motion_quality",
           "motion_score", "segment"]
