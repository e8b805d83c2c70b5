"""Generation speed: milliseconds per generated frame (all MaskGIT steps + tokenizer decode), with and without the
key/value cache, per preset and context length; prints a table.

Randomly initialised models (speed does not depend on the weights), one world (batch 1) unless --batch says
otherwise, the preset's MaskGIT steps (25 for CoinRun). For a context of c frames the models are built with a
window of c + 1 frames and timed in the steady state: every timed frame is generated from exactly c context frames
and slides the window, so the cached path pays its rebuild every frame (its worst case), and the recomputing path
runs no frame it does not need (its best case).

    python benchmarks/generation.py                                          # demo + Jasmine-sized CoinRun, CPU
    python benchmarks/generation.py --presets coinrun_jasmine --dtype bfloat16 --contexts 1,4,16,64   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
from flax import nnx

from genie_jax.config import load_preset, preset_path
from genie_jax.sampling import SamplingConfig
from genie_jax.simulator import WorldSimulator
from genie_jax.stages import ModelShape, build_dynamics, build_lam, build_tokenizer


def time_per_frame(sim: WorldSimulator, start: np.ndarray, frames: int) -> tuple[float, float]:
    """(seconds per frame in the steady state, seconds of the first step, which compiles)."""
    sim.reset(start)
    t0 = time.perf_counter()
    sim.step_batch([0] * sim.batch_size)  # compiles, and fills the window: every later step slides
    first = time.perf_counter() - t0
    sim.step_batch([1 % sim.num_actions] * sim.batch_size)  # a slide: compiles the rebuild variant
    t0 = time.perf_counter()
    for i in range(frames):
        sim.step_batch([i % sim.num_actions] * sim.batch_size)
    return (time.perf_counter() - t0) / frames, first


def measure(preset: str, context: int, batch: int, dtype: str, frames: int) -> dict:
    config = load_preset(preset_path(preset))
    size = 32 if preset == "demo" else 64
    shape = ModelShape(size, size, context + 1)
    rngs = nnx.Rngs(0)
    models = [build(config, shape, dtype, rngs) for build in (build_tokenizer, build_lam, build_dynamics)]
    sampling = SamplingConfig(config.dynamics.maskgit_steps, config.dynamics.temperature, config.dynamics.schedule)
    start = np.random.default_rng(0).integers(0, 256, (batch, context, size, size, 3), np.uint8)
    row = {"preset": preset, "context": context, "batch": batch, "maskgit_steps": sampling.steps,
           "params_M": sum(x.size for m in models for x in jax.tree.leaves(nnx.state(m, nnx.Param))) / 1e6,
           "device": jax.devices()[0].device_kind}
    for name, use_cache in (("recompute", False), ("cached", True)):
        sim = WorldSimulator(*models, sampling=sampling, batch_size=batch, use_cache=use_cache)
        per_frame, first = time_per_frame(sim, start, frames)
        row[f"{name}_ms"] = per_frame * 1e3
        row[f"{name}_first_s"] = first
    row["speedup"] = row["recompute_ms"] / row["cached_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,coinrun_jasmine")
    parser.add_argument("--contexts", default="1,4,16,64", help="context lengths (frames) to time")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--frames", type=int, default=3, help="timed frames per case, after two untimed ones")
    args = parser.parse_args()
    print(f"{'preset':>16} {'params_M':>9} {'context':>8} {'batch':>6} {'steps':>6} {'recompute ms':>13} "
          f"{'cached ms':>10} {'speedup':>8}  device", flush=True)
    for preset in args.presets.split(","):
        for context in (int(c) for c in args.contexts.split(",")):
            r = measure(preset, context, args.batch, args.dtype, args.frames)
            print(f"{r['preset']:>16} {r['params_M']:>9.2f} {r['context']:>8} {r['batch']:>6} "
                  f"{r['maskgit_steps']:>6} {r['recompute_ms']:>13.1f} {r['cached_ms']:>10.1f} "
                  f"{r['speedup']:>7.1f}x  {r['device']}", flush=True)


if __name__ == "__main__":
    main()
