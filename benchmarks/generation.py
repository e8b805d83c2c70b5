"""Generation speed: milliseconds per generated frame (all MaskGIT steps + tokenizer decode), per preset; a table.

Randomly initialised models (speed does not depend on the weights), one world (batch 1) unless --batch says
otherwise, the preset's MaskGIT steps (25 for CoinRun). The window is the preset's 16 frames; the timed frames
are generated with a full window, the slowest case.

    python benchmarks/generation.py
    python benchmarks/generation.py --presets coinrun_jasmine --dtype bfloat16   # on a GPU
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


def measure(preset: str, batch: int, dtype: str, frames: int) -> dict:
    config = load_preset(preset_path(preset))
    size = 32 if preset == "demo" else 64
    shape = ModelShape(size, size, config.stage_train("dynamics").num_frames)
    rngs = nnx.Rngs(0)
    models = [build(config, shape, dtype, rngs) for build in (build_tokenizer, build_lam, build_dynamics)]
    sampling = SamplingConfig(config.dynamics.maskgit_steps, config.dynamics.temperature, config.dynamics.schedule)
    sim = WorldSimulator(*models, sampling=sampling, batch_size=batch)
    start = np.random.default_rng(0).integers(0, 256, (batch, shape.max_frames - 1, size, size, 3), np.uint8)
    sim.reset(start)
    t0 = time.perf_counter()
    sim.step_batch([0] * batch)  # compile
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(frames):
        sim.step_batch([i % sim.num_actions] * batch)
    per_frame = (time.perf_counter() - t0) / frames
    params = sum(x.size for m in models for x in jax.tree.leaves(nnx.state(m, nnx.Param)))
    return {"preset": preset, "params_M": params / 1e6, "batch": batch, "maskgit_steps": sampling.steps,
            "window": shape.max_frames, "ms_per_frame": per_frame * 1e3, "compile_s": compile_s,
            "device": jax.devices()[0].device_kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,coinrun_jasmine")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--frames", type=int, default=3, help="timed frames after the compile")
    args = parser.parse_args()
    print(f"{'preset':>16} {'params_M':>9} {'batch':>6} {'steps':>6} {'window':>7} {'ms/frame':>10} "
          f"{'compile_s':>10}  device")
    for preset in args.presets.split(","):
        r = measure(preset, args.batch, args.dtype, args.frames)
        print(f"{r['preset']:>16} {r['params_M']:>9.2f} {r['batch']:>6} {r['maskgit_steps']:>6} {r['window']:>7} "
              f"{r['ms_per_frame']:>10.1f} {r['compile_s']:>10.1f}  {r['device']}", flush=True)


if __name__ == "__main__":
    main()
