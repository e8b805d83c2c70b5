"""`genie ingest synthetic:platformer`: play the built-in platformer and write a clip dataset.

Besides the clips, the manifest records how well true actions can be recovered from video at all:
``nmi_ceiling`` = NMI(true action, visible effect) over the validation clips' transitions. A move into a wall or
a jump in mid-air looks like noop, so even a perfect latent action model cannot exceed it.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_ingest.clip_dataset import assign_splits, cut_clips, write_clip_dataset
from data_ingest.platformer import ACTION_MEANINGS, PlatformerConfig, play_episode


def normalized_mutual_info(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """NMI of two labelings of the same items, normalised by the arithmetic mean of their entropies.

    Matches sklearn's ``normalized_mutual_info_score`` default. Two constant labelings give 1.0.
    """
    a = np.asarray(labels_a).reshape(-1)
    b = np.asarray(labels_b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"labelings differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.size == 0:
        raise ValueError("need at least one item")
    _, ia = np.unique(a, return_inverse=True)
    _, ib = np.unique(b, return_inverse=True)
    table = np.zeros((ia.max() + 1, ib.max() + 1), np.float64)
    np.add.at(table, (ia, ib), 1.0)
    p = table / a.size
    pa, pb = p.sum(1), p.sum(0)
    h_a = -np.sum(pa * np.log(pa))
    h_b = -np.sum(pb * np.log(pb))
    if h_a == 0.0 and h_b == 0.0:  # both constant: identical partitions
        return 1.0
    nz = p > 0
    mi = float(np.sum(p[nz] * (np.log(p[nz]) - np.log(np.outer(pa, pb)[nz]))))
    return float(max(mi, 0.0) / ((h_a + h_b) / 2))


def episode_seed(seed: int, index: int) -> int:
    """Seed of episode ``index`` of an ingest run with ``seed``: well mixed, so runs never share levels."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class PlatformerSource:
    """One episode of the built-in platformer as a clip-dataset source (played lazily, when written)."""

    name: str
    seed: int
    num_frames: int
    config: PlatformerConfig

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        episode = play_episode(self.seed, self.num_frames, self.config)
        return episode.frames_THWC, episode.actions_T


def ingest_platformer(out_dir: str | os.PathLike, *, episodes: int, frames_per_episode: int, size: int,
                      clip_len: int = 16, stride: int | None = None, val_fraction: float = 0.1, seed: int = 0,
                      overwrite: bool = False, config: PlatformerConfig | None = None) -> Path:
    """Plays ``episodes`` random-policy episodes (episode i on level ``episode_seed(seed, i)``) and writes them.

    ``config`` overrides other game settings (its size must equal ``size``). Returns the dataset directory.
    """
    config = config or PlatformerConfig(size=size)
    if config.size != size:
        raise ValueError(f"config.size={config.size} differs from size={size}")
    if frames_per_episode < clip_len:
        raise ValueError(f"frames_per_episode={frames_per_episode} is shorter than clip_len={clip_len}")
    stride = clip_len if stride is None else stride
    sources = [PlatformerSource(name=f"platformer/{i:05d}", seed=episode_seed(seed, i),
                                num_frames=frames_per_episode, config=config) for i in range(episodes)]
    splits = assign_splits(episodes, val_fraction=val_fraction, seed=seed)
    metadata = {
        "generator": {"game": "platformer", "episodes": episodes, "frames_per_episode": frames_per_episode,
                      "seed": seed, "config": dataclasses.asdict(config)},
        **_label_statistics(sources, splits, clip_len=clip_len, stride=stride),
    }
    return write_clip_dataset(out_dir, sources, clip_len=clip_len, stride=stride, height=size, width=size,
                              action_meanings=ACTION_MEANINGS, val_fraction=val_fraction, seed=seed,
                              metadata=metadata, overwrite=overwrite)


def _label_statistics(sources: list[PlatformerSource], splits: dict[str, list[int]], *, clip_len: int,
                      stride: int) -> dict:
    """nmi_ceiling and frequency tables over exactly the transitions inside the written clips.

    Replays episodes without rendering (same actions and effects, ~100k frames/s), so nothing is held in memory.
    """
    per_split = {}
    respawns = 0
    for split, ids in splits.items():
        actions, effects = [], []
        for i in ids:
            src = sources[i]
            ep = play_episode(src.seed, src.num_frames, src.config, render=False)
            respawns += len(ep.respawn_steps)
            no_frames = np.zeros((src.num_frames, 1, 1, 3), np.uint8)  # cut_clips needs frames to count
            for (_, a), (_, e) in zip(cut_clips(no_frames, ep.actions_T, clip_len=clip_len, stride=stride),
                                      cut_clips(no_frames, ep.effects_T, clip_len=clip_len, stride=stride)):
                actions.append(a)
                effects.append(e)
        per_split[split] = (np.concatenate(actions), np.concatenate(effects))

    def freq(labels: np.ndarray) -> dict[str, float]:
        counts = np.bincount(labels, minlength=len(ACTION_MEANINGS))
        return {m: round(float(c / counts.sum()), 4) for m, c in zip(ACTION_MEANINGS, counts)}

    all_actions = np.concatenate([a for a, _ in per_split.values()])
    eval_split = "validation" if "validation" in per_split else "train"
    val_actions, val_effects = per_split[eval_split]
    return {
        "nmi_ceiling": round(normalized_mutual_info(val_actions, val_effects), 4),
        "nmi_ceiling_split": eval_split,
        "action_frequency": freq(all_actions),
        "effect_frequency": freq(val_effects),
        "effect_encoding": "index of the action whose intended effect was visible (blocked move / mid-air jump "
                           "-> noop)",
        "respawns": respawns,
    }


__all__ = ["PlatformerSource", "episode_seed", "ingest_platformer", "normalized_mutual_info"]
