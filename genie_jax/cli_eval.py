"""`genie eval` and `genie inspect-actions`: their arguments and the calls they make (registered by cli.py)."""

from __future__ import annotations

from pathlib import Path


def add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="measure a run on held-out clips: reconstruction, dynamics vs horizon, "
                                    "Delta_t PSNR, FVD, latent-action usage and alignment")
    p.add_argument("--run", required=True, help="run directory with a trained tokenizer, LAM and dynamics model")
    p.add_argument("--data", required=True, help="dataset directory (clips of the run's frame size)")
    p.add_argument("--split", default="validation", help="held-out split to evaluate")
    p.add_argument("--out", help="JSON report path (default: RUN/eval/report_<split>.json)")
    p.add_argument("--clips", type=int, default=64, help="clips evaluated (the first N of the split)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds; several give a spread")
    p.add_argument("--batch-size", type=int, default=8, help="worlds generated at once / clips per model pass")
    p.add_argument("--context-frames", type=int, default=1, help="real frames before generation starts")
    p.add_argument("--delta-t", type=int, default=4, help="t of Delta_t PSNR (generated frames)")
    p.add_argument("--no-fvd", action="store_true", help="skip FVD (I3D is slow on a CPU)")
    p.add_argument("--fvd-clips", type=int, help="clips used for FVD (default: all generated clips)")
    p.add_argument("--probe-split", default="train", help="split the latent -> true action probe is fitted on")
    p.add_argument("--resamples", type=int, default=200, help="bootstrap resamples for intervals")


def add_inspect_parser(sub) -> None:
    p = sub.add_parser("inspect-actions", help="pictures of what each latent action does (atlas, change maps, "
                                               "confusion matrix, usage) with an index.html")
    p.add_argument("--run", required=True, help="run directory with a trained tokenizer, LAM and dynamics model")
    p.add_argument("--data", required=True, help="dataset directory to take start contexts and clips from")
    p.add_argument("--out", required=True, help="output folder (index.html and the pictures)")
    p.add_argument("--split", default="validation")
    p.add_argument("--contexts", type=int, default=4, help="atlas rows: start contexts from the split")
    p.add_argument("--frames", type=int, default=8, help="generated frames per action")
    p.add_argument("--context-frames", type=int, default=1, help="real frames each world starts from")
    p.add_argument("--clips", type=int, default=64, help="held-out clips for usage and the confusion matrix")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=int, default=3, help="pixel upscale of the pictures")


def cmd_eval(args) -> int:
    from genie_jax.eval_report import EvalOptions, evaluate_run, format_table
    from genie_jax.io_utils import atomic_write_json

    options = EvalOptions(split=args.split, clips=args.clips, seeds=tuple(args.seeds), batch_size=args.batch_size,
                          context_frames=args.context_frames, delta_t=args.delta_t, fvd=not args.no_fvd,
                          fvd_clips=args.fvd_clips, probe_split=args.probe_split, resamples=args.resamples)
    report = evaluate_run(args.run, args.data, options)
    out = Path(args.out) if args.out else Path(args.run) / "eval" / f"report_{args.split}.json"
    atomic_write_json(out, report)
    print(format_table(report))
    print(f"report: {out}")
    return 0


def cmd_inspect_actions(args) -> int:
    from genie_jax.inspect_actions import InspectOptions, inspect_actions

    options = InspectOptions(split=args.split, contexts=args.contexts, frames=args.frames,
                             context_frames=args.context_frames, clips=args.clips, seed=args.seed, scale=args.scale)
    summary = inspect_actions(args.run, args.data, args.out, options)
    for action in summary["actions"]:
        print(f"  action {action['label']:<16} usage {action['usage']:.3f}  mean |change| "
              f"{action['mean_abs_change']:.1f}")
    print(f"open {Path(args.out) / 'index.html'}")
    return 0
