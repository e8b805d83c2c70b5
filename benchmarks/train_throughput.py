"""Training throughput (frames/s) and peak memory per stage and preset; prints a table.

Each (preset, stage) runs in a fresh process, so peak memory (max RSS on CPU, peak bytes in use on GPU) is its
own. Models are randomly initialised and fed random frames: throughput does not depend on the data.

    python benchmarks/train_throughput.py                                     # demo + CoinRun presets, batch 8
    python benchmarks/train_throughput.py --presets coinrun_jasmine --dtype bfloat16 --batch 36 --tokens cache  # GPU

The dynamics stage is measured three ways: with the LAM co-trained as Genie does (the LAM's own reconstruction loss,
its decoder included), co-trained as Jasmine does (no LAM decoder; the LAM's encoder learns through the dynamics'
loss: the like-for-like case for Jasmine's "dynamics with LAM co-trained"), and with a frozen LAM; each with the
frozen tokenizer run in the step and with its tokens read from the token cache (genie_jax/token_cache.py). Like the
`genie` command, the benchmark runs with glibc's transparent huge pages for XLA's buffers (genie_jax/huge_pages.py;
GENIE_HUGE_PAGES=0 to measure without).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (stage, what a co-trained LAM learns from (None: no co-trained LAM), dynamics tokens from the token cache)
CASES = [("tokenizer", None, False), ("lam", None, False), ("dynamics", "reconstruction", False),
         ("dynamics", "reconstruction", True), ("dynamics", "dynamics", False), ("dynamics", "dynamics", True),
         ("dynamics", None, False), ("dynamics", None, True)]
STAGE_LABELS = {("dynamics", "reconstruction"): "dynamics + LAM (Genie co-train)",
                ("dynamics", "dynamics"): "dynamics + LAM enc (Jasmine co-train)",
                ("dynamics", None): "dynamics (frozen LAM)"}


def measure(preset: str, stage: str, co_train: str | None, cached_tokens: bool, batch: int, frames: int, dtype: str,
            steps: int, grad_accum: int = 1) -> dict:
    """Runs in the child process."""
    import dataclasses
    import resource

    import jax
    import numpy as np
    from flax import nnx

    from genie_jax.config import apply_overrides, load_preset, preset_path
    from genie_jax.sharding import batch_sharding, make_mesh
    from genie_jax.stages import ModelShape, build_lam, build_tokenizer
    from genie_jax.train import compile_steps, init_train_state

    config = load_preset(preset_path(preset))
    config = apply_overrides(config, [f"train.dynamics.co_train_lam={co_train is not None}",
                                      f"train.dynamics.co_train_lam_loss={co_train or 'reconstruction'}"])
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, **{
        stage: dataclasses.replace(config.stage_train(stage), batch_size=batch, num_frames=frames, dtype=dtype,
                                   grad_accum=grad_accum)}))
    size = 32 if preset == "demo" else 64
    shape = ModelShape(size, size, frames)
    frozen = {}
    if stage == "dynamics":
        frozen["tokenizer"] = build_tokenizer(config, shape, dtype, nnx.Rngs(1))
        if co_train is None:
            frozen["lam"] = build_lam(config, shape, dtype, nnx.Rngs(2))
    mesh = make_mesh()
    setup = init_train_state(stage, config, shape, frozen, mesh)
    step_fn, _ = compile_steps(setup)
    rng = np.random.default_rng(0)
    data = {"frames": rng.integers(0, 256, (batch, frames, size, size, 3), dtype=np.uint8)}
    if cached_tokens:
        num_tokens = frozen["tokenizer"].num_tokens
        data["tokens"] = rng.integers(0, config.tokenizer.codebook_size, (batch, frames, num_tokens), dtype=np.int16)
    data = jax.device_put(data, batch_sharding(mesh))
    args = (setup.state, setup.frozen_state, data, jax.random.key(0))
    t0 = time.perf_counter()
    compiled = step_fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
    state, metrics = step_fn(*args)  # warm-up call (reuses the compiled executable)
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for i in range(steps):
        state, metrics = step_fn(state, setup.frozen_state, data, jax.random.key(i))
    jax.block_until_ready(metrics)
    step_s = (time.perf_counter() - t0) / steps
    params = sum(x.size for x in jax.tree.leaves(nnx.state(nnx.merge(setup.graphdef, state)[0], nnx.Param)))
    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    peak = stats["peak_bytes_in_use"] if stats else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"preset": preset, "stage": STAGE_LABELS.get((stage, co_train), stage),
            "tokens": ("cache" if cached_tokens else "in step") if stage == "dynamics" else "-",
            "params_M": params / 1e6, "batch": batch, "grad_accum": grad_accum, "dtype": dtype,
            "frames_per_s": batch * frames / step_s,
            "step_ms": step_s * 1e3,
            "compile_s": compile_s, "peak_mem_GB": peak / 1e9, "GFLOP_per_step": flops / 1e9,
            "achieved_GFLOP_s": flops / step_s / 1e9, "device": device.device_kind}


def main() -> None:
    # As `genie train` runs: with glibc's huge pages for XLA's buffers (the children inherit the setting).
    from genie_jax.huge_pages import reexec_with_huge_pages

    reexec_with_huge_pages()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,coinrun_jasmine,coinrun")
    parser.add_argument("--stages", default="tokenizer,lam,dynamics")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the compile step")
    parser.add_argument("--tokens", choices=("both", "step", "cache"), default="both",
                        help="dynamics rows: tokens from the tokenizer in the step, from the token cache, or both")
    parser.add_argument("--grad-accum", type=int, default=1,
                        help="micro-batches per step (train.grad_accum): the same batch in less memory")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(**json.loads(args.child))))
        return
    rows = []
    stages = args.stages.split(",")
    for preset in args.presets.split(","):
        for stage, co_train, cached_tokens in CASES:
            if stage not in stages or (stage == "dynamics" and args.tokens != "both"
                                       and cached_tokens != (args.tokens == "cache")):
                continue
            spec = dict(preset=preset, stage=stage, co_train=co_train, cached_tokens=cached_tokens, batch=args.batch,
                        frames=args.frames, dtype=args.dtype, steps=args.steps, grad_accum=args.grad_accum)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT,
                                 capture_output=True, text=True)
            if out.returncode:
                print(f"{preset}/{stage}: failed\n{out.stderr[-1500:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print_row(rows[-1], header=len(rows) == 1)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


def print_row(row: dict, header: bool) -> None:
    cols = [("preset", 16, "s"), ("stage", 38, "s"), ("tokens", 8, "s"), ("params_M", 9, ".2f"), ("batch", 6, "d"),
            ("dtype", 9, "s"), ("frames_per_s", 13, ".1f"), ("step_ms", 10, ".0f"), ("peak_mem_GB", 12, ".2f"),
            ("achieved_GFLOP_s", 17, ".1f"), ("compile_s", 10, ".1f")]
    if header:
        print(" ".join(f"{name:>{width}}" for name, width, _ in cols) + "  device")
    print(" ".join(f"{row[name]:>{width}{fmt}}" for name, width, fmt in cols) + f"  {row['device']}", flush=True)


if __name__ == "__main__":
    main()
