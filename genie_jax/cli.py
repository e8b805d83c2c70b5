"""The `genie` command: parses arguments, then calls library functions. A dataset directory (--data) and a run
directory (--run) are the only things passed between commands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one stage into a run directory (resumes from its last checkpoint)")
    p.add_argument("stage", choices=("tokenizer", "lam", "dynamics"))
    p.add_argument("--config", required=True, help="preset file, e.g. configs/demo.py")
    p.add_argument("--data", required=True, help="dataset directory written by `genie ingest`")
    p.add_argument("--run", required=True, help="run directory (created if missing)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.steps=3 (train.X means train.<stage>.X)")
    p.add_argument("--distributed", action="store_true",
                   help="call jax.distributed.initialize() (multi-host; also automatic under JAX_COORDINATOR_ADDRESS)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (metrics still go to metrics.jsonl)")


def _add_rollout(sub) -> None:
    p = sub.add_parser("rollout", help="generate frames from a start, steered by a list of latent action ids")
    p.add_argument("--run", required=True, help="run directory with a trained tokenizer, LAM and dynamics model")
    p.add_argument("--actions", required=True, help="comma-separated latent action ids, e.g. 0,3,3,5")
    p.add_argument("--out", required=True, help="output .gif (or .mp4)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--data", help="dataset directory to take the start clip from (default: the run's dataset)")
    start.add_argument("--image", help="start from an image file instead of a dataset clip")
    p.add_argument("--split", default="validation")
    p.add_argument("--clip", type=int, default=0, help="index of the start clip in the split")
    p.add_argument("--context-frames", type=int, default=1, help="real frames given before generation starts")
    p.add_argument("--steps", type=int, help="MaskGIT steps per frame (default: the run's config)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: the run's config)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=4, help="pixel upscale for viewing")
    p.add_argument("--fps", type=int, default=10)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genie", description="Genie in JAX: learn a playable world from video.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="make platformer video, train all three models, write rollouts to look at")
    demo.add_argument("--out", default="demo_out", help="output folder (holds data/, run/, GIFs, summary.json)")
    demo.add_argument("--quick", action="store_true", help="a few steps of everything, to check the pipeline")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    demo.add_argument("--no-progress", action="store_true")

    from data_ingest.cli import add_ingest_arguments

    add_ingest_arguments(sub.add_parser("ingest", help="turn video sources into a clip dataset"))
    _add_train(sub)
    _add_rollout(sub)
    from genie_jax.cli_eval import add_eval_parser, add_inspect_parser

    add_eval_parser(sub)
    add_inspect_parser(sub)
    from genie_jax.play.command import add_play_parser

    add_play_parser(sub)
    return parser


def parse_actions(text: str) -> list[int]:
    try:
        actions = [int(a) for a in text.replace(" ", "").split(",") if a]
    except ValueError:
        raise ValueError(f"--actions must be comma-separated integers, got {text!r}") from None
    if not actions:
        raise ValueError("--actions is empty: give at least one latent action id, e.g. --actions 0,1,1")
    return actions


def cmd_train(args) -> int:
    from genie_jax.config import apply_overrides, load_preset
    from genie_jax.sharding import maybe_initialize_distributed
    from genie_jax.train import describe, train

    maybe_initialize_distributed(force=args.distributed)
    config = apply_overrides(load_preset(args.config), args.overrides, stage=args.stage)
    result = train(args.stage, config, args.data, args.run, progress=not args.no_progress)
    print(describe(result))
    return 0


def cmd_rollout(args) -> int:
    from genie_jax.data import ClipDataset
    from genie_jax.media import save_gif, save_mp4
    from genie_jax.run import RunDir
    from genie_jax.simulator import WorldSimulator

    actions = parse_actions(args.actions)
    sim = WorldSimulator.from_run(args.run, steps=args.steps, temperature=args.temperature, seed=args.seed)
    if args.image:
        start = sim.reset(args.image)
        frames = [start]
    else:
        data_dir = args.data or RunDir(args.run).stage_record("dynamics")["data"]["path"]
        split = ClipDataset(data_dir).split(args.split)
        if not 0 <= args.clip < len(split):
            raise ValueError(f"--clip {args.clip} is out of range: split {args.split!r} has {len(split)} clips")
        context = split[args.clip]["frames"][: max(args.context_frames, 1)]
        sim.reset(context)
        frames = list(context)
    for action in actions:
        frames.append(sim.step(action))
    out = Path(args.out)
    video = np.stack(frames)
    if out.suffix.lower() == ".mp4":
        save_mp4(video, out, fps=args.fps, scale=args.scale)
    else:
        save_gif(video, out, fps=args.fps, scale=args.scale)
    print(f"wrote {len(actions)} generated frames (after {len(frames) - len(actions)} context) to {out}")
    return 0


def cmd_demo(args) -> int:
    from genie_jax.demo import run_demo

    run_demo(args.out, quick=args.quick, progress=not args.no_progress, overrides=args.overrides)
    return 0


def _user_errors(command: str) -> tuple[type[Exception], ...]:
    """Errors reported as one line (GENIE_DEBUG=1: a traceback). `ingest` never loads the model code, whose own
    error types live in modules that import JAX and Grain (seconds of start-up)."""
    common = (ValueError, FileNotFoundError, RuntimeError)
    if command == "ingest":
        return common
    from genie_jax.config import ConfigError
    from genie_jax.data import DataError
    from genie_jax.run import RunError

    return (*common, ConfigError, DataError, RunError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = _user_errors(args.command)
    try:
        if args.command == "ingest":
            from data_ingest.cli import run_ingest

            return run_ingest(args)
        if args.command == "play":
            from genie_jax.play.command import cmd_play

            return cmd_play(args)
        from genie_jax.cli_eval import cmd_eval, cmd_inspect_actions

        return {"train": cmd_train, "rollout": cmd_rollout, "demo": cmd_demo, "eval": cmd_eval,
                "inspect-actions": cmd_inspect_actions}[args.command](args)
    except errors as error:
        if os.environ.get("GENIE_DEBUG"):
            raise
        print(f"genie {args.command}: error: {error}", file=sys.stderr)
        return 2


def entry() -> int:
    """The `genie` console script: ``main`` in a process whose malloc uses huge pages (see ``huge_pages``; ingest
    runs no XLA and skips it). Tests call ``main`` in-process, which never re-executes."""
    if sys.argv[1:2] != ["ingest"]:
        from genie_jax.huge_pages import reexec_with_huge_pages

        reexec_with_huge_pages()
    return main()


if __name__ == "__main__":
    sys.exit(entry())
