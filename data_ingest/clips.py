"""Clips, independent of how they are stored: sources, cutting, splits, examples and their digests.

Nothing here imports TensorFlow Datasets, so the processes that write records (see shards.py) start in
milliseconds; ``clip_dataset`` adds the TFDS side (the builder, metadata and the manifest).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Iterator, Mapping, Protocol, Sequence

import numpy as np

# A dataset directory's manifest: written last, so no manifest means no (complete) dataset. See clip_dataset.
MANIFEST_NAME = "genie_dataset.json"


@dataclasses.dataclass(frozen=True)
class ClipShape:
    """One clip: ``clip_len`` frames of ``height`` x ``width`` RGB."""

    clip_len: int
    height: int
    width: int

    @property
    def clip_bytes(self) -> int:
        return self.clip_len * self.height * self.width * 3


class ClipSource(Protocol):
    """A video or episode: ``load()`` gives frames uint8 [T, H, W, 3] and actions int [T-1] (or None: unknown).

    A source may instead (or also) offer ``iter_clips()``, yielding already-cut clips (frames uint8
    [clip_len, H, W, 3], actions int [clip_len-1]); the builder then streams them and never calls ``load()``, so a
    long video is never whole in memory.
    """

    @property
    def name(self) -> str: ...

    def load(self) -> tuple[np.ndarray, np.ndarray | None]: ...


def cut_clips(frames_THWC: np.ndarray, actions_T: np.ndarray | None, *, clip_len: int,
              stride: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cuts a long video into clips of ``clip_len`` frames starting every ``stride`` frames.

    Yields (frames uint8 [clip_len, H, W, 3], actions int32 [clip_len-1]); actions are -1 when ``actions_T`` is
    None. A tail shorter than clip_len is dropped.
    """
    if clip_len < 2 or stride < 1:
        raise ValueError(f"need clip_len >= 2 and stride >= 1, got clip_len={clip_len}, stride={stride}")
    num_frames = len(frames_THWC)
    if actions_T is None:
        actions_T = np.full(max(num_frames - 1, 0), -1, np.int32)
    actions_T = np.asarray(actions_T, np.int32)
    if len(actions_T) != max(num_frames - 1, 0):
        raise ValueError(f"{num_frames} frames need {num_frames - 1} actions, got {len(actions_T)}")
    for start in range(0, num_frames - clip_len + 1, stride):
        yield frames_THWC[start:start + clip_len], actions_T[start:start + clip_len - 1]


def assign_splits(num_sources: int, *, val_fraction: float, seed: int,
                  test_fraction: float = 0.0) -> dict[str, list[int]]:
    """Assigns whole sources to splits: {"train": [...], "validation": [...] (, "test": [...])}, sorted ids.

    Deterministic in (num_sources, fractions, seed). A non-zero fraction always gets at least one source, and
    train always keeps at least one.
    """
    check_split_options(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    held = [(name, frac) for name, frac in (("validation", val_fraction), ("test", test_fraction)) if frac > 0]
    sizes = {name: max(1, int(round(frac * num_sources))) for name, frac in held}
    if num_sources - sum(sizes.values()) < 1:
        raise ValueError(f"{num_sources} source(s) cannot fill train and {', '.join(sizes)}: each split needs a "
                         "whole source (episode/video) of its own; add sources or lower the fractions")
    order = np.random.default_rng([int(seed), 7]).permutation(num_sources).tolist()
    splits: dict[str, list[int]] = {}
    start = 0
    for name, size in sizes.items():
        splits[name] = sorted(order[start:start + size])
        start += size
    splits["train"] = sorted(order[start:])
    return {"train": splits.pop("train"), **splits}


def stable_splits(keys: Sequence[str], *, val_fraction: float, seed: int,
                  test_fraction: float = 0.0) -> dict[str, list[int]]:
    """Assigns whole sources to splits by their keys (content hashes): {"train": [...], "validation": [...]
    (, "test": [...])}, sorted ids.

    Each source draws a number in [0, 1) (:func:`split_draw`): validation below ``val_fraction``, test below
    ``val_fraction + test_fraction``, train above. The sizes follow the fractions on average, not exactly. Rules
    fill the gaps of small datasets: if every source drew a held-out split, the highest draw trains; a held-out
    split with a non-zero fraction that no draw falls into borrows the highest draw of the other held-out split
    if that has two or more, else the train source with the lowest draw. Adding sources and rebuilding so never
    moves a training source into validation or test (a model trained on the old train split is never validated
    on its own training videos), with one exception: while every source has drawn a held-out split (1 in 4 for
    two sources at 0.5), which of them trains may change with each source added. A borrowed source may go back
    to train.
    """
    check_split_options(val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
    draws = [split_draw(key, seed) for key in keys]
    held = [name for name, fraction in (("validation", val_fraction), ("test", test_fraction)) if fraction > 0]
    bounds = (("validation", val_fraction), ("test", val_fraction + test_fraction))
    split_of = [next((name for name, bound in bounds if draw < bound), "train") for draw in draws]

    def members(split: str) -> list[int]:
        return [i for i, s in enumerate(split_of) if s == split]

    if split_of and "train" not in split_of:
        split_of[max(range(len(draws)), key=draws.__getitem__)] = "train"
    for name in held:
        if name in split_of:
            continue
        other = next((split for split in held if split != name and len(members(split)) > 1), None)
        if other is not None:  # the other held-out split lends its highest draw: train is left alone
            split_of[max(members(other), key=draws.__getitem__)] = name
        elif len(members("train")) > 1:
            split_of[min(members("train"), key=draws.__getitem__)] = name
        else:
            raise ValueError(f"{len(keys)} source(s) cannot fill train and {name}: each split needs a whole "
                             "source (episode/video) of its own; add sources or lower the fractions")
    return {name: members(name) for name in ("train", *held)}


def split_draw(key: str, seed: int) -> float:
    """A source's number in [0, 1) for :func:`stable_splits`: a hash of (seed, key)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{key}".encode()).digest()[:8], "big") / 2 ** 64


def check_split_options(*, val_fraction: float, test_fraction: float, seed: int) -> None:
    """ValueError naming the option unless the fractions are in [0, 1) summing below 1 and the seed is >= 0."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"--val-fraction and --test-fraction must be in [0, 1) and sum below 1, got "
                         f"{val_fraction} and {test_fraction}")
    if not (isinstance(seed, (int, np.integer)) and seed >= 0):
        raise ValueError(f"--seed must be an integer >= 0, got {seed!r}")


def source_examples(source: ClipSource, source_id: int, config: ClipShape, *, stride: int,
                    num_actions: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """All examples of one source as (key, example): a pure function of its arguments (so Beam can run it)."""
    if hasattr(source, "iter_clips"):
        clips = source.iter_clips()
    else:
        frames_THWC, actions_T = source.load()
        frames_THWC = np.asarray(frames_THWC)
        if frames_THWC.dtype != np.uint8 or frames_THWC.ndim != 4 or frames_THWC.shape[1:] != (
                config.height, config.width, 3):
            raise ValueError(f"source {source.name!r}: frames must be uint8 [T, {config.height}, {config.width}, 3], "
                             f"got {frames_THWC.dtype} {list(frames_THWC.shape)}")
        clips = cut_clips(frames_THWC, actions_T, clip_len=config.clip_len, stride=stride)
    want = (config.clip_len, config.height, config.width, 3)
    for clip_index, (frames, actions) in enumerate(clips):
        frames = np.ascontiguousarray(frames, np.uint8)
        actions = np.ascontiguousarray(_checked_actions(source, actions, num_actions), np.int32)
        if frames.shape != want or actions.shape != (config.clip_len - 1,):
            raise ValueError(f"source {source.name!r}: clip {clip_index} has frames {list(frames.shape)} and actions "
                             f"{list(actions.shape)}, expected {list(want)} and [{config.clip_len - 1}]")
        yield (f"{source_id:07d}_{clip_index:07d}",
               {"frames": frames, "actions": actions, "source_id": np.int64(source_id)})


def _checked_actions(source: ClipSource, actions: np.ndarray | None, num_actions: int) -> np.ndarray | None:
    if actions is None:
        return None
    actions = np.asarray(actions)
    bad = actions[(actions < -1) | (actions >= num_actions)]
    if bad.size:
        raise ValueError(f"source {source.name!r}: action {int(bad[0])} outside [-1, {num_actions})")
    return actions


def clip_digest(key: str, example: Mapping[str, Any]) -> str:
    """sha256 of one record (key, frames, actions): the unit of the dataset fingerprint."""
    h = hashlib.sha256(key.encode())
    h.update(np.ascontiguousarray(example["frames"], np.uint8))  # hashed in place: no copy
    h.update(np.asarray(example["actions"]).astype("<i4").tobytes())
    return h.hexdigest()


def fingerprint_of(clip_digests: Mapping[str, Sequence[str]]) -> str:
    """Order-free dataset fingerprint: per split, its sorted per-clip digests."""
    fingerprint = hashlib.sha256()
    for name in sorted(clip_digests):
        fingerprint.update(name.encode())
        for d in sorted(clip_digests[name]):
            fingerprint.update(d.encode())
    return fingerprint.hexdigest()


__all__ = ["MANIFEST_NAME", "ClipShape", "ClipSource", "assign_splits", "check_split_options", "clip_digest",
           "cut_clips", "fingerprint_of", "source_examples", "split_draw", "stable_splits"]
