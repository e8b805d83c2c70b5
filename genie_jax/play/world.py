"""What every `genie play` session shares: the loaded models (one compiled simulator), the start clips, the
suggested key mapping and the action labels. Sessions each get their own simulator state (``new_simulator``)."""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genie_jax.data import ClipDataset, ClipSplit
from genie_jax.evaluate import infer_codes, validation_clips
from genie_jax.play.mapping import action_labels, empty_mapping, load_mapping, suggest_mapping
from genie_jax.run import RunDir
from genie_jax.simulator import WorldSimulator

ALIGNMENT_CLIPS = 64  # held-out clips whose true actions suggest the key mapping (LAM inference only: cheap)


@dataclass
class PlayWorld:
    sim: WorldSimulator  # the template: never stepped itself; sessions step shallow copies of it
    clips: ClipSplit | None  # start clips; None: uploads only
    mapping: dict[str, int | None] = field(default_factory=empty_mapping)
    labels: list[str] = field(default_factory=list)  # per latent action: its majority true action, or ''
    context_frames: int = 1  # real frames a clip start gives the model
    data_note: str = ""  # why there are no clips / where the mapping came from, for the startup message

    @classmethod
    def load(cls, run_dir: str | Path, data_dir: str | Path | None = None, *, steps: int | None = None,
             temperature: float | None = None, mapping_file: str | Path | None = None, context_frames: int = 1,
             split: str = "validation") -> "PlayWorld":
        """Loads the run; ``data_dir`` None: the dataset the dynamics model was trained on, if it still exists."""
        if context_frames < 1:
            raise ValueError(f"--context-frames must be >= 1, got {context_frames}")
        sim = WorldSimulator.from_run(run_dir, steps=steps, temperature=temperature)
        world = cls(sim, None, labels=[""] * sim.num_actions, context_frames=context_frames)
        dataset = _open_dataset(run_dir, data_dir)
        if dataset is None:
            world.data_note = "no dataset found: start from an uploaded image (or pass --data DIR)"
        else:
            world.clips = _check_split(dataset, split, sim, context_frames)
            world.labels, world.mapping = _suggestions(sim, dataset, split)
            world.data_note = f"start clips: {len(world.clips)} from {dataset.info.path} ({split})"
        if mapping_file is not None:
            world.mapping = load_mapping(mapping_file, sim.num_actions)
        return world

    def new_simulator(self, seed: int) -> WorldSimulator:
        """An independent world sharing the models and compiled functions: a shallow copy, because reset(),
        step() and restore() replace the simulator's state attributes rather than mutate them."""
        sim = copy.copy(self.sim)
        sim.reseed(seed)
        return sim

    def clip_start(self, index: int | None, rng: random.Random) -> tuple[np.ndarray, int]:
        """Context frames (T, H, W, 3) of clip ``index`` (None: a random one) and the index used."""
        if self.clips is None:
            raise ValueError("this server has no dataset to take start clips from: upload an image instead")
        if index is None:
            index = rng.randrange(len(self.clips))
        if not 0 <= index < len(self.clips):
            raise ValueError(f"clip {index} is out of range: the split has {len(self.clips)} clips")
        return self.clips[index]["frames"][:self.context_frames], index

    def warm_up(self) -> None:
        """Compiles reset and both step variants (first step after a reset, then cached), so the first key a
        player presses does not wait for XLA."""
        sim = self.new_simulator(0)
        sim.reset(np.zeros((self.sim.height, self.sim.width, 3), np.uint8))
        sim.step(0)
        sim.step(0)


def _open_dataset(run_dir: str | Path, data_dir: str | Path | None) -> ClipDataset | None:
    if data_dir is not None:
        return ClipDataset(data_dir)  # named by the user: any problem is an error
    try:
        path = RunDir(run_dir).stage_record("dynamics")["data"]["path"]
    except (OSError, KeyError, ValueError):
        return None
    return ClipDataset(path) if Path(path, "genie_dataset.json").is_file() else None


def _check_split(dataset: ClipDataset, split: str, sim: WorldSimulator, context_frames: int) -> ClipSplit:
    info = dataset.info
    if (info.height, info.width) != (sim.height, sim.width):
        raise ValueError(f"dataset {info.path} has {info.height}x{info.width} frames but the run's models take "
                         f"{sim.height}x{sim.width}: pass --data with the dataset the run was trained on")
    if context_frames > info.clip_len:
        raise ValueError(f"--context-frames {context_frames} exceeds the dataset's {info.clip_len}-frame clips")
    clips = dataset.split(split)
    if not len(clips):
        raise ValueError(f"split {split!r} of {info.path} has no clips to start from")
    return clips


def _suggestions(sim: WorldSimulator, dataset: ClipDataset, split: str) -> tuple[list[str], dict[str, int | None]]:
    """Action labels and the arrow-key mapping from the LAM's codes on held-out clips with true actions."""
    clips = validation_clips(dataset, split, ALIGNMENT_CLIPS)
    true_BT = clips["actions"]
    if not (true_BT >= 0).any() or not dataset.info.action_meanings:
        return [""] * sim.num_actions, empty_mapping()
    codes_BT = infer_codes(sim.lam, clips["frames"])
    meanings = dataset.info.action_meanings
    return (action_labels(codes_BT, true_BT, meanings, sim.num_actions),
            suggest_mapping(codes_BT, true_BT, meanings, sim.num_actions))
