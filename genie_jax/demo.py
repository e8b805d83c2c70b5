"""`genie demo`: make platformer video, train the three models, and write things a person can look at.

Everything lands in one folder: ``data/`` (the dataset), ``run/`` (the run directory), ``actions/`` (one GIF per
latent action from the same start, and a labelled grid of all of them), ``mixed_rollout.gif``,
``reconstruction.gif`` and ``summary.json``. Re-running resumes: a finished dataset or stage is not redone.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from genie_jax.config import apply_overrides, load_preset, load_preset_module, preset_path
from genie_jax.data import ClipDataset, DataError
from genie_jax.evaluate import action_alignment, delta_t_psnr, validation_clips
from genie_jax.io_utils import atomic_write_json
from genie_jax.metrics.image import psnr
from genie_jax.media import label_strip, save_gif, to_uint8, video_grid
from genie_jax.run import RunDir, load_model
from genie_jax.simulator import WorldSimulator
from genie_jax.train import describe, train

# `--quick` shrinks everything so the whole pipeline runs in about a minute (used by the tests).
QUICK_OVERRIDES = [f"train.{s}.{k}={v}" for s in ("tokenizer", "lam", "dynamics")
                   for k, v in (("steps", 4), ("log_every", 2), ("checkpoint_every", 2), ("batch_size", 4))]
QUICK_DATA = {"episodes": 6, "frames_per_episode": 40, "size": 32, "clip_len": 16, "stride": 8,
              "val_fraction": 0.34, "seed": 0}
EVAL_CLIPS = 64  # Delta_t PSNR clips (each costs 2 x 4 generated frames)
NMI_CLIPS = 256  # action alignment clips (LAM inference only: cheap)
HOLD_FRAMES = 12
SCALE = 4


def demo_data_settings() -> dict:
    return dict(load_preset_module(preset_path("demo")).DEMO_DATA)


def ensure_dataset(data_dir: Path, settings: dict) -> ClipDataset:
    """The demo dataset, generated once (a complete one already there is reused)."""
    try:
        return ClipDataset(data_dir)
    except DataError:
        pass
    from data_ingest.synthetic import ingest_platformer

    ingest_platformer(data_dir, **settings)
    return ClipDataset(data_dir)


def run_demo(out_dir: str | Path, *, quick: bool = False, progress: bool = True, overrides: list[str] = ()) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = load_preset(preset_path("demo"))
    config = apply_overrides(config, (QUICK_OVERRIDES if quick else []) + list(overrides))
    timings: dict[str, float] = {}

    start = time.perf_counter()
    dataset = ensure_dataset(out / "data", QUICK_DATA if quick else demo_data_settings())
    timings["data_s"] = time.perf_counter() - start
    print(f"dataset: {out / 'data'} ({dataset.info.num_clips})")

    for stage in ("tokenizer", "lam", "dynamics"):
        start = time.perf_counter()
        result = train(stage, config, out / "data", out / "run", progress=progress)
        timings[f"{stage}_s"] = time.perf_counter() - start
        print(describe(result))

    start = time.perf_counter()
    summary = write_samples(out, dataset, eval_clips=8 if quick else EVAL_CLIPS, nmi_clips=8 if quick else NMI_CLIPS)
    timings["samples_and_eval_s"] = time.perf_counter() - start
    summary["timings"] = {k: round(v, 1) for k, v in timings.items()}
    summary["total_minutes"] = round(sum(timings.values()) / 60, 2)
    atomic_write_json(out / "summary.json", summary)
    print_summary(out, summary)
    return summary


def write_samples(out: Path, dataset: ClipDataset, eval_clips: int, nmi_clips: int) -> dict:
    run = RunDir(out / "run")
    clips = validation_clips(dataset, "validation", max(eval_clips, nmi_clips))
    frames = clips["frames"][:eval_clips]
    meanings = dataset.info.action_meanings
    lam = load_model(run, "lam")
    alignment = action_alignment(lam, clips["frames"], clips["actions"])

    # One simulator of |A| worlds serves everything below: one compiled generation step.
    sim = WorldSimulator.from_run(run.root, batch_size=lam.cfg.num_actions)
    num_actions = sim.num_actions
    control = delta_t_psnr(sim, frames[: len(frames) // num_actions * num_actions], t=4, context_frames=1)

    start_frame = frames[0, 0]
    sim.reset(start_frame[None])
    videos = [np.broadcast_to(start_frame, (num_actions,) + start_frame.shape)]
    for _ in range(HOLD_FRAMES):
        videos.append(sim.step_batch(list(range(num_actions))))
    videos_NTHWC = np.stack(videos, axis=1)
    labels = [action_label(a, alignment.majority_true_action, meanings) for a in range(num_actions)]
    action_dir = out / "actions"
    for a in range(num_actions):
        save_gif(videos_NTHWC[a], action_dir / f"action_{a}.gif", scale=SCALE)
    save_gif(labelled_grid(videos_NTHWC, labels), action_dir / "all_actions.gif")

    # The same mixed action sequence from |A| different starts: 32 frames, beyond the 16-frame window.
    mixed = np.repeat(np.random.default_rng(0).integers(0, num_actions, size=8), 4)
    starts = frames[np.arange(num_actions) % len(frames), 0]
    sim.reset(starts[:, None])
    rollout = [starts] + [sim.step_batch([int(a)] * num_actions) for a in mixed]
    save_gif(labelled_grid(np.stack(rollout, axis=1), [f"start {i}" for i in range(num_actions)]),
             out / "mixed_rollout.gif")

    tokenizer = sim.tokenizer
    recon = to_uint8(np.asarray(tokenizer.detokenize(tokenizer.tokenize(frames[:4]))))
    side_by_side = np.concatenate([frames[:4], recon], axis=3)  # real | reconstruction, per clip
    save_gif(video_grid(side_by_side, ncols=1, pad=2), out / "reconstruction.gif", scale=SCALE)
    recon_psnr = float(np.mean(psnr(recon.astype(np.float32) / 255, frames[:4].astype(np.float32) / 255)))

    return {
        "nmi": alignment.nmi,
        "nmi_ceiling": dataset.info.metadata.get("nmi_ceiling"),
        "nmi_transitions": alignment.transitions,
        "latent_action_usage": alignment.usage,
        "latent_to_true_action": {str(k): meanings[v] if v < len(meanings) else v
                                  for k, v in alignment.majority_true_action.items()},
        "delta_t_psnr": control.delta_t_psnr,
        "delta_t_psnr_detail": {"psnr_inferred_actions": control.psnr_inferred,
                                "psnr_random_actions": control.psnr_random, "stderr": control.stderr,
                                "clips": control.clips, "t": control.t, "context_frames": control.context_frames,
                                "random_actions": "uniform over the latent actions"},
        "tokenizer_reconstruction_psnr": recon_psnr,
        "mixed_rollout_actions": [int(a) for a in mixed],
        "split": "validation",
        "files": {"per_action_gifs": str(action_dir), "all_actions_grid": str(action_dir / "all_actions.gif"),
                  "mixed_rollout": str(out / "mixed_rollout.gif"),
                  "reconstruction": str(out / "reconstruction.gif"), "run": str(run.root),
                  "data": str(out / "data")},
    }


def labelled_grid(videos_NTHWC: np.ndarray, labels: list[str]) -> np.ndarray:
    """Videos side by side, upscaled, with a text label above each column."""
    big = np.stack([np.kron(v, np.ones((1, SCALE, SCALE, 1), np.uint8)) for v in videos_NTHWC])
    grid = video_grid(big, ncols=len(big), pad=2)
    strip = label_strip(labels, width_each=videos_NTHWC.shape[3] * SCALE + 2, height=14, left_pad=2)
    return np.concatenate([np.broadcast_to(strip, (grid.shape[0],) + strip.shape), grid], axis=1)


def action_label(action: int, majority: dict[int, int], meanings: tuple[str, ...]) -> str:
    if action in majority and majority[action] < len(meanings):
        return f"{action}:{meanings[majority[action]]}"
    return f"{action}:unused" if majority else str(action)


def print_summary(out: Path, summary: dict) -> None:
    print()
    print(f"genie demo finished in {summary['total_minutes']} min. Look at:")
    for name, path in summary["files"].items():
        print(f"  {name:<18} {path}")
    ceiling = summary["nmi_ceiling"]
    print(f"  NMI(latent, true action) = {summary['nmi']:.3f} (ceiling {ceiling:.3f} from what actions visibly do)"
          if ceiling is not None else f"  NMI = {summary['nmi']:.3f}")
    print(f"  Delta_t PSNR (t=4)       = {summary['delta_t_psnr']:.2f} dB over "
          f"{summary['delta_t_psnr_detail']['clips']} validation clips")
    print(f"  latent actions           = {summary['latent_to_true_action']}")
    print(f"  summary                  {out / 'summary.json'}")
    print(json.dumps({k: summary[k] for k in ('nmi', 'nmi_ceiling', 'delta_t_psnr')}))
