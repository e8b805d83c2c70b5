"""Deciding what to keep: blank frames, static stretches, scene cuts, clip quality and near-duplicate clips.

All tests work on the resized uint8 frames (64x64 is 12 KB), so they cost little next to decoding.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from data_ingest.settings import IngestSettings

CUT = None  # marker in a frame stream: the frames before and after it must not share a clip
QualityFilter = Callable[[np.ndarray], float]  # clip uint8 [T, H, W, 3] -> score in [0, 1]
_CHANGED_LEVEL = 12  # a pixel "changed" if a channel moved more than this (above codec noise)
_CHANNEL_OFFSETS = np.array([0, 16, 32], np.uint8)


def is_blank(rgb_HWC: np.ndarray, settings: IngestSettings) -> bool:
    """Nearly one colour (black/white screens, fades): grey-level std below ``settings.blank_std``."""
    # Every other pixel is plenty for a uniformity test, and integer grey (sum of channels) avoids float copies.
    half = rgb_HWC[::2, ::2].astype(np.uint16)
    grey3 = half[..., 0] + half[..., 1] + half[..., 2]  # not .sum(axis=2): numpy is slow on a length-3 axis
    return float(grey3.std()) < 3 * settings.blank_std


def colour_histogram(rgb_HWC: np.ndarray) -> np.ndarray:
    """Normalised 16-bin histogram per channel, float [3, 16]."""
    bins = (rgb_HWC >> 4).reshape(-1, 3) + _CHANNEL_OFFSETS  # one bincount for all three channels
    counts = np.bincount(bins.ravel(), minlength=48).reshape(3, 16).astype(np.float32)
    return counts / bins.shape[0]


def histogram_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance, averaged over channels: 0 = same colours, 1 = disjoint."""
    return float(np.abs(a - b).sum() / (2 * a.shape[0]))


def changed_fraction(a_HWC: np.ndarray, b_HWC: np.ndarray) -> float:
    """Fraction of pixels where some channel moved more than codec noise."""
    diff = np.maximum(a_HWC, b_HWC) - np.minimum(a_HWC, b_HWC)  # |a - b| in uint8, no widening copy
    most = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    return np.count_nonzero(most > _CHANGED_LEVEL) / most.size


def segment(frames: Iterable[tuple[int, np.ndarray]], settings: IngestSettings,
            counts: Counter) -> Iterator[tuple[int, np.ndarray] | None]:
    """Yields the frames worth keeping, with CUT between stretches that must not share a clip.

    Blank frames and static stretches (``settings.static_frames`` frames showing the same picture; the first is
    kept) are dropped and counted in ``counts`` ("blank", "static" frames); scene changes (colour histogram jump)
    become cuts ("scene_cuts"). Holds at most
    ``static_frames`` frames back, so memory stays bounded.
    """
    run: list[tuple[int, np.ndarray]] = []  # frames showing the same picture as run[0], not yet yielded
    static = False
    prev_hist = None
    for index, rgb in frames:
        if is_blank(rgb, settings):
            if not static:
                yield from run
            run, static, prev_hist = [], False, None
            counts["blank"] += 1
            yield CUT
            continue
        hist = colour_histogram(rgb)
        if prev_hist is not None and histogram_distance(prev_hist, hist) > settings.scene_threshold:
            if not static:
                yield from run
            run, static = [], False
            counts["scene_cuts"] += 1
            yield CUT
        prev_hist = hist
        if run and changed_fraction(run[0][1], rgb) <= settings.static_pixels:
            if static:
                counts["static"] += 1
                continue
            run.append((index, rgb))
            if len(run) >= settings.static_frames:
                static = True
                yield run[0]
                yield CUT
                counts["static"] += len(run) - 1
                run = [run[0]]  # the anchor stays as the reference picture
            continue
        if not static:
            yield from run
        run, static = [(index, rgb)], False
    if not static:
        yield from run


def motion_quality(frames_THWC: np.ndarray) -> float:
    """The built-in quality score: the fraction of consecutive frame pairs that visibly differ.

    Cheap stand-in for Genie's learned classifier: it drops clips that are mostly frozen (loading screens,
    paused games shorter than the static stretch). Plug in a better one with ``--quality-filter module:function``.
    """
    moving = [changed_fraction(a, b) > 0.002 for a, b in itertools.pairwise(frames_THWC)]
    return float(np.mean(moving)) if moving else 0.0


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
    _, h, w, _ = frames_THWC.shape
    edges_h, edges_w = np.linspace(0, h, 17, dtype=int), np.linspace(0, w, 17, dtype=int)
    grey = frames_THWC.astype(np.float32).sum(axis=3)
    sums = np.add.reduceat(np.add.reduceat(grey, edges_h[:-1], axis=1), edges_w[:-1], axis=2)
    means = sums / (3 * np.outer(np.diff(edges_h), np.diff(edges_w)))
    return hashlib.sha1((means / 16).astype(np.uint8).tobytes()).hexdigest()[:20]


__all__ = ["CUT", "QualityFilter", "changed_fraction", "clip_signature", "colour_histogram", "histogram_distance",
           "is_blank", "load_quality_filter", "motion_quality", "segment"]
