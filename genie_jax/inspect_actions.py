"""`genie inspect-actions`: pictures of what each latent action does, in one folder with an index.html.

- atlas.gif / atlas.png: rows are start contexts from the data, columns are latent actions, each held for several
  frames (PNG: the last frame); column labels name the action and the true action it most often matches.
- effects.png: the change each action causes (last frame minus start frame, luminance; red brighter, blue darker)
  per context and averaged over contexts (bottom row).
- confusion.png (where the dataset has true actions): latent action x true action counts on held-out clips.
- usage.png: how often the LAM uses each latent action on held-out clips.
- inspect.json: the numbers behind the pictures. index.html: everything on one page, openable from disk.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genie_jax.charts import bar_chart, count_matrix, signed_change
from genie_jax.data import ClipDataset
from genie_jax.evaluate import infer_codes, validation_clips
from genie_jax.io_utils import atomic_write_json, atomic_write_text
from genie_jax.media import label_strip, save_gif, save_png, video_grid
from genie_jax.metrics.alignment import code_usage
from genie_jax.metrics.probe import majority_mapping
from genie_jax.sharding import make_mesh
from genie_jax.simulator import WorldSimulator

PAD = 2
LABEL_HEIGHT = 14


@dataclass(frozen=True)
class InspectOptions:
    split: str = "validation"
    contexts: int = 4  # rows of the atlas: start contexts taken from the first clips of the split
    frames: int = 8  # generated frames per action
    context_frames: int = 1  # real frames each world starts from
    clips: int = 64  # clips whose transitions feed the usage chart and the confusion matrix
    seed: int = 0
    scale: int = 3  # pixel upscale of the pictures
    fps: int = 5


def inspect_actions(run_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                    options: InspectOptions = InspectOptions()) -> dict:
    """Writes the pictures, inspect.json and index.html into ``out_dir``; returns inspect.json's content."""
    if min(options.contexts, options.frames, options.context_frames, options.clips, options.scale) < 1:
        raise ValueError("--contexts, --frames, --context-frames, --clips and --scale must all be >= 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dataset = ClipDataset(data_dir)
    meanings = dataset.info.action_meanings
    clips = validation_clips(dataset, options.split, max(options.clips, options.contexts))
    frames, true_BT = clips["frames"], clips["actions"]
    if frames.shape[1] < options.context_frames:
        raise ValueError(f"--context-frames {options.context_frames} exceeds the {frames.shape[1]}-frame clips")
    loaded = WorldSimulator.from_run(run_dir, seed=options.seed)  # nothing compiles until it is used
    num_actions = loaded.num_actions
    sim = WorldSimulator(loaded.tokenizer, loaded.lam, loaded.dynamics, sampling=loaded.sampling,
                         batch_size=num_actions, seed=options.seed, mesh=make_mesh())  # a world per action

    codes_BT = infer_codes(sim.lam, frames[:options.clips])
    true_BT = true_BT[:options.clips]
    known = true_BT >= 0
    majority = majority_mapping(true_BT[known], codes_BT[known]) if known.any() else {}
    labels = [column_label(a, majority, meanings) for a in range(num_actions)]

    videos = atlas_videos(sim, frames[:options.contexts, :options.context_frames], options.frames)
    atlas = atlas_grid(videos, labels, options.scale)
    files = {"atlas_gif": save_gif(atlas, out / "atlas.gif", fps=options.fps),
             "atlas_png": save_png(atlas[-1], out / "atlas.png")}

    change = _luminance(videos[:, :, -1]) - _luminance(videos[:, :, 0])  # (K, A, H, W)
    files["effects_png"] = save_png(effects_grid(change, labels, options.scale), out / "effects.png")
    usage = code_usage(codes_BT, num_actions)
    files["usage_png"] = save_png(bar_chart(usage["frequency"], [str(a) for a in range(num_actions)],
                                            f"latent action usage on {codes_BT.size} held-out transitions"),
                                  out / "usage.png")
    confusion = None
    if known.any():
        confusion = np.zeros((num_actions, len(meanings)), np.int64)
        np.add.at(confusion, (codes_BT[known], true_BT[known]), 1)
        files["confusion_png"] = save_png(count_matrix(
            confusion, [str(a) for a in range(num_actions)], list(meanings),
            f"latent x true action ({int(known.sum())} held-out transitions)", row_title="latent",
            col_title="true action"), out / "confusion.png")

    summary = {
        "run": str(Path(run_dir).absolute()), "data": str(dataset.info.path), "split": options.split,
        "contexts": len(videos), "generated_frames": options.frames, "context_frames": options.context_frames,
        "seed": options.seed, "transitions": int(codes_BT.size), "true_actions_known": int(known.sum()),
        "actions": [{"id": a, "label": labels[a], "usage": usage["frequency"][a],
                     "majority_true_action": meanings[majority[a]] if a in majority and majority[a] < len(meanings)
                     else None,
                     "majority_share": _share(confusion, a),
                     "mean_abs_change": float(np.abs(change[:, a]).mean())} for a in range(num_actions)],
        "perplexity": usage["perplexity"], "dead_codes": usage["dead_codes"],
        "confusion": confusion.tolist() if confusion is not None else None, "true_action_names": list(meanings),
        "files": {k: Path(v).name for k, v in files.items()},
    }
    atomic_write_json(out / "inspect.json", summary)
    atomic_write_text(out / "index.html", index_html(summary))
    return summary


def column_label(action: int, majority: dict[int, int], meanings: tuple[str, ...]) -> str:
    """'3' or, where true actions are known, '3:left' (the true action it most often matches) / '3:unused'."""
    if action in majority and majority[action] < len(meanings):
        return f"{action}:{meanings[majority[action]]}"
    return f"{action}:unused" if majority else str(action)


def atlas_videos(sim: WorldSimulator, contexts_KCHWC: np.ndarray, frames: int) -> np.ndarray:
    """Every latent action held for ``frames`` steps from each context: (K, A, 1 + frames, H, W, 3) uint8, frame
    0 the last context frame. One world per action (``sim.batch_size == sim.num_actions``)."""
    out = []
    for context in contexts_KCHWC:
        start = sim.reset(context)  # broadcast to every world
        steps = [np.broadcast_to(start, (sim.num_actions,) + start.shape[-3:])]
        steps += [sim.step_batch(list(range(sim.num_actions))) for _ in range(frames)]
        out.append(np.stack(steps, axis=1))
    return np.stack(out)


def _upscale(x: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(x, scale, axis=-3), scale, axis=-2)


def _with_header(grid_THWC: np.ndarray, labels: list[str], cell_width: int) -> np.ndarray:
    strip = label_strip(labels, width_each=cell_width + PAD, height=LABEL_HEIGHT, left_pad=PAD)
    return np.concatenate([np.broadcast_to(strip, (grid_THWC.shape[0],) + strip.shape), grid_THWC], axis=1)


def atlas_grid(videos_KATHWC: np.ndarray, labels: list[str], scale: int) -> np.ndarray:
    """Rows contexts, first column the start frame, then one column per action, labelled: (T, H', W', 3)."""
    start = np.broadcast_to(videos_KATHWC[:, :1, :1], videos_KATHWC[:, :1].shape)  # the start, held still
    cells = _upscale(np.concatenate([start, videos_KATHWC], axis=1), scale)  # (K, A+1, T, H', W', 3)
    grid = video_grid(cells.reshape((-1,) + cells.shape[2:]), ncols=cells.shape[1], pad=PAD)
    return _with_header(grid, ["start"] + labels, cells.shape[4])


def effects_grid(change_KAHW: np.ndarray, labels: list[str], scale: int) -> np.ndarray:
    """Signed luminance change per context (rows) and action (columns), plus the mean over contexts (last row)."""
    rows = np.concatenate([change_KAHW, change_KAHW.mean(axis=0, keepdims=True)])
    limit = max(float(np.abs(rows).max()), 1.0)
    cells = _upscale(signed_change(rows, limit), scale)  # (K+1, A, H', W', 3)
    grid = video_grid(cells.reshape((-1, 1) + cells.shape[2:]), ncols=cells.shape[1], pad=PAD, pad_value=160)
    return _with_header(grid, labels, cells.shape[3])[0]


def _luminance(frames_HWC: np.ndarray) -> np.ndarray:
    return np.asarray(frames_HWC, np.float64) @ np.array([0.299, 0.587, 0.114])


def _share(confusion: np.ndarray | None, action: int) -> float | None:
    if confusion is None or confusion[action].sum() == 0:
        return None
    return float(confusion[action].max() / confusion[action].sum())


def index_html(summary: dict) -> str:
    """One self-contained page (inline CSS, relative links to the pictures beside it)."""
    files = summary["files"]
    esc = html.escape

    def figure(key: str, caption: str) -> str:
        if key not in files:
            return ""
        name = esc(files[key])
        return f'<figure><a href="{name}"><img src="{name}" alt="{esc(caption)}"></a><figcaption>{esc(caption)}' \
               "</figcaption></figure>"

    rows = "".join(
        f"<tr><td>{a['id']}</td><td>{esc(a['label'])}</td><td>{a['usage']:.3f}</td>"
        f"<td>{esc(a['majority_true_action'] or '-')}</td>"
        f"<td>{'-' if a['majority_share'] is None else format(a['majority_share'], '.2f')}</td>"
        f"<td>{a['mean_abs_change']:.2f}</td></tr>" for a in summary["actions"])
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Latent actions: {esc(Path(summary['run']).name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; color: #222; }}
img {{ image-rendering: pixelated; border: 1px solid #ccc; max-width: 100%; }}
figure {{ margin: 1em 0 2em 0; }} figcaption {{ color: #555; font-size: 0.9em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }}
code {{ background: #f4f4f4; }}
</style></head><body>
<h1>What the latent actions do</h1>
<p>Run <code>{esc(summary['run'])}</code>, data <code>{esc(summary['data'])}</code>, split
<code>{esc(summary['split'])}</code>. {summary['contexts']} start contexts ({summary['context_frames']} real frame(s)
each), every latent action held for {summary['generated_frames']} generated frames, sampling seed
{summary['seed']}. Usage perplexity {summary['perplexity']:.2f}, {summary['dead_codes']} dead action(s), over
{summary['transitions']} held-out transitions ({summary['true_actions_known']} with a known true action).</p>
<h2>Action atlas</h2>
{figure('atlas_gif', 'Rows: start contexts. Columns: the start frame, then each latent action (label: id and the '
        'true action it most often matches). Animated.')}
{figure('atlas_png', 'The same grid, last generated frame.')}
<h2>What each action changes</h2>
{figure('effects_png', 'Luminance of the last frame minus the start frame: red brighter, blue darker. One row per '
        'context; the bottom row is the mean over contexts.')}
<h2>Latent vs true actions</h2>
{figure('confusion_png', 'Counts of held-out transitions by latent action (rows) and true action (columns); '
        'shade is the share of the row.')}
{figure('usage_png', 'Fraction of held-out transitions the LAM assigns to each latent action.')}
<table><tr><th>action</th><th>label</th><th>usage</th><th>most frequent true action</th><th>its share</th>
<th>mean |change| (0-255)</th></tr>{rows}</table>
<p>Numbers: <a href="inspect.json">inspect.json</a></p>
</body></html>
"""
