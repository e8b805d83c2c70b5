"""Held-out measures of what was learned: latent-action alignment and Delta_t PSNR controllability."""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from genie_jax.data import ClipDataset
from genie_jax.metrics.alignment import code_usage, normalized_mutual_info
from genie_jax.metrics.image import psnr
from genie_jax.metrics.probe import majority_mapping
from genie_jax.simulator import WorldSimulator


def validation_clips(dataset: ClipDataset, split: str, max_clips: int) -> dict[str, np.ndarray]:
    """``max_clips`` clips of a split, stacked: frames (B, T, H, W, 3), actions (B, T-1).

    They are a fixed random draw (the same every call), in drawn order: records are stored source after source, so
    the first clips would all show one source, while any prefix of these samples the whole split.
    """
    source = dataset.split(split)
    records = [source[int(i)] for i in np.random.default_rng(0).permutation(len(source))[:max_clips]]
    if not records:
        raise ValueError(f"split {split!r} of {dataset.info.path} has no clips")
    return {key: np.stack([r[key] for r in records]) for key in ("frames", "actions")}


def infer_codes(lam, frames_BTHWC: np.ndarray) -> np.ndarray:
    """The LAM's latent action ids (B, T-1) for every transition of clips longer than its window too."""
    window = lam.encoder.max_frames
    codes = []
    infer = jax.jit(lambda f: lam.infer_actions(f))
    for start in range(0, frames_BTHWC.shape[1] - 1, window - 1):  # windows overlap by one frame
        chunk = frames_BTHWC[:, start:start + window]
        if chunk.shape[1] >= 2:
            codes.append(np.asarray(infer(jnp.asarray(chunk))))
    return np.concatenate(codes, axis=1)


@dataclass(frozen=True)
class AlignmentReport:
    nmi: float
    transitions: int
    usage: dict
    majority_true_action: dict[int, int]  # latent code -> the true action it most often co-occurs with


def action_alignment(lam, frames_BTHWC: np.ndarray, true_actions_BT: np.ndarray) -> AlignmentReport:
    """NMI between the LAM's codes and the true actions over every transition with a known true action."""
    codes_BT = infer_codes(lam, frames_BTHWC)
    known = true_actions_BT >= 0
    true, codes = true_actions_BT[known], codes_BT[known]
    return AlignmentReport(
        nmi=float(normalized_mutual_info(true, codes)) if known.any() else float("nan"),
        transitions=int(known.sum()), usage=code_usage(codes_BT.reshape(-1), lam.cfg.num_actions),
        majority_true_action=majority_mapping(true, codes))


@dataclass(frozen=True)
class ControllabilityReport:
    delta_t_psnr: float  # mean over clips, dB
    psnr_inferred: float
    psnr_random: float
    stderr: float  # standard error of the per-clip differences
    clips: int
    t: int
    context_frames: int
    per_clip: tuple[float, ...] = ()  # the B per-clip differences, for intervals pooled over seeds


def delta_t_psnr(sim: WorldSimulator, frames_BTHWC: np.ndarray, *, t: int = 4, context_frames: int = 1,
                 seed: int = 0) -> ControllabilityReport:
    """Genie's controllability: PSNR(x_t, x^_t) - PSNR(x_t, x^'_t), where x^ is generated with the LAM's actions
    inferred from the real clip and x^' with actions drawn uniformly at random from the |A| latent actions.

    Both generations start from the same ``context_frames`` real frames with the same sampling key; t counts
    generated frames after the context. Clips are processed ``sim.batch_size`` at a time (B must be a multiple).
    """
    b = frames_BTHWC.shape[0]
    needed = context_frames + t
    if frames_BTHWC.shape[1] < needed:
        raise ValueError(f"clips of {frames_BTHWC.shape[1]} frames are too short for t={t} after "
                         f"{context_frames} context frames")
    if b % sim.batch_size:
        raise ValueError(f"{b} clips are not a multiple of the simulator's {sim.batch_size} worlds")
    rng = np.random.default_rng(seed)
    diffs, inferred_scores, random_scores = [], [], []
    for start in range(0, b, sim.batch_size):
        clip = frames_BTHWC[start:start + sim.batch_size, :needed]
        inferred = sim.infer_actions(clip)[:, context_frames - 1:]
        random_actions = rng.integers(0, sim.num_actions, size=inferred.shape)
        target = jnp.asarray(clip[:, needed - 1], jnp.float32) / 255.0
        scores = []
        for actions in (inferred, random_actions):
            sim.reset(clip[:, :context_frames])
            for i in range(t):
                frame = sim.step_batch(actions[:, i])
            scores.append(np.asarray(psnr(jnp.asarray(frame, jnp.float32) / 255.0, target)))
        inferred_scores.append(scores[0])
        random_scores.append(scores[1])
        diffs.append(scores[0] - scores[1])
    diff, inferred_psnr, random_psnr = (np.concatenate(x) for x in (diffs, inferred_scores, random_scores))
    return ControllabilityReport(float(diff.mean()), float(inferred_psnr.mean()), float(random_psnr.mean()),
                                 float(diff.std(ddof=1) / np.sqrt(b)) if b > 1 else float("nan"), b, t,
                                 context_frames, tuple(float(d) for d in diff))
