"""Generation speed: milliseconds per generated frame (all MaskGIT steps + tokenizer decode), with and without the
key/value cache, per preset and context length; prints a table.

Randomly initialised models (speed does not depend on the weights), one world (batch 1) unless --batch says
otherwise, the preset's MaskGIT steps (25 for CoinRun; "run" counts those that unmask a token, the others change
nothing and are skipped). For a context of c frames the models are built with a
window of c + 1 frames, and every timed frame is generated from exactly c context frames:
- recompute: every MaskGIT step runs the whole window (it runs no frame it does not need: its best case);
- cached: the c context frames' keys and values are in the cache (a world that has not yet filled its window, or
  one restored from a state that holds its caches);
- cached, sliding: the steady state of an endless rollout, where each frame slides the window, which moves every
  frame's time position, so the cache is rebuilt from the window every frame (the cached path's worst case);
- streaming: the same steady state with rotary time positions (``temporal_positions="rope"`` in the dynamics model
  and the tokenizer decoder; otherwise the same preset): sliding drops the oldest frame's cached keys and keeps the
  rest, so every frame costs a cached frame.
It also measures the memory's read bandwidth and prints, per preset, the weights a cached frame reads ("weights
MB") and the least time that takes at that bandwidth ("floor ms"): how far generation is from the machine's limit
where the weights outgrow its caches.

    python benchmarks/generation.py                                          # demo + Jasmine-sized CoinRun, CPU
    python benchmarks/generation.py --presets coinrun_jasmine --dtype bfloat16 --contexts 1,4,16,64   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie_jax.config import apply_overrides, load_preset, preset_path
from genie_jax.sampling import SamplingConfig, unmasking_steps
from genie_jax.simulator import WorldSimulator
from genie_jax.stages import ModelShape, build_dynamics, build_lam, build_tokenizer


def time_with_context(sim: WorldSimulator, start: np.ndarray, frames: int) -> float:
    """Seconds per frame generated from the context frames ``start``, their cache already built (median)."""
    sim.reset(start)
    saved = sim.state()
    sim.step_batch([0] * sim.batch_size)  # compiles
    times = []
    for i in range(frames):
        sim.restore(saved)
        t0 = time.perf_counter()
        sim.step_batch([i % sim.num_actions] * sim.batch_size)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_sliding(sim: WorldSimulator, start: np.ndarray, frames: int) -> tuple[float, float]:
    """(median seconds per frame in the sliding steady state, seconds of the first step, which compiles)."""
    sim.reset(start)
    t0 = time.perf_counter()
    sim.step_batch([0] * sim.batch_size)  # compiles, and fills the window: every later step slides
    first = time.perf_counter() - t0
    sim.step_batch([1 % sim.num_actions] * sim.batch_size)  # a slide: compiles the rebuild variant
    times = []
    for i in range(frames):
        t0 = time.perf_counter()
        sim.step_batch([i % sim.num_actions] * sim.batch_size)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), first


ROTARY_IN_TIME = ["dynamics.transformer.temporal_positions=rope", "tokenizer.decoder.temporal_positions=rope"]


def random_models(preset: str, window: int, dtype: str,
                  overrides: list[str] = ()) -> tuple[list[nnx.Module], SamplingConfig, int]:
    """The preset's (tokenizer, LAM, dynamics), randomly initialised with a ``window``-frame window, its MaskGIT
    settings, and its frame side in pixels (32 for the demo, 64 for CoinRun)."""
    config = apply_overrides(load_preset(preset_path(preset)), list(overrides))
    size = 32 if preset == "demo" else 64
    shape = ModelShape(size, size, window)
    rngs = nnx.Rngs(0)
    models = [build(config, shape, dtype, rngs) for build in (build_tokenizer, build_lam, build_dynamics)]
    sampling = SamplingConfig(config.dynamics.maskgit_steps, config.dynamics.temperature, config.dynamics.schedule)
    return models, sampling, size


def read_bandwidth_gbs() -> float:
    """The default device's memory read bandwidth as XLA uses it (on a CPU, all its threads): summing 256 MB,
    best of 5, GB/s."""
    values = jnp.ones(64 * 2**20, jnp.float32)
    total = jax.jit(jnp.sum)
    total(values).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        total(values).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return values.nbytes / best / 1e9


def parameters(*modules: nnx.Module) -> list[jax.Array]:
    return [x for m in modules for x in jax.tree.leaves(nnx.state(m, nnx.Param))]


def weight_bytes_per_frame(tokenizer: nnx.Module, dynamics: nnx.Module, steps_run: int) -> int:
    """Bytes of weights one cached frame reads at least once each pass: the dynamics transformer and head once per
    MaskGIT step that runs and once more to put the frame in the cache, the tokenizer's decoder once. Where the
    weights outgrow the CPU's caches (CoinRun's 105 MB of dynamics weights do; the demo's do not), every pass
    streams them from memory, so the read bandwidth bounds the speed. Embedding tables are left out: a pass reads
    only their used rows."""
    def nbytes(*modules: nnx.Module) -> int:
        return sum(x.nbytes for x in parameters(*modules))
    return ((steps_run + 1) * nbytes(dynamics.transformer, dynamics.head)
            + nbytes(tokenizer.from_code, tokenizer.decoder, tokenizer.to_pixels))


def measure(preset: str, context: int, batch: int, dtype: str, frames: int) -> dict:
    models, sampling, size = random_models(preset, context + 1, dtype)
    start = np.random.default_rng(0).integers(0, 256, (batch, context, size, size, 3), np.uint8)
    row = {"preset": preset, "context": context, "batch": batch, "maskgit_steps": sampling.steps,
           "steps_run": len(unmasking_steps(sampling.steps, models[2].num_tokens, sampling.schedule)),
           "params_M": sum(x.size for x in parameters(*models)) / 1e6,
           "device": jax.devices()[0].device_kind}
    row["weights_MB"] = weight_bytes_per_frame(models[0], models[2], row["steps_run"]) / 1e6
    recompute = WorldSimulator(*models, sampling=sampling, batch_size=batch, use_cache=False)
    per_frame, row["recompute_first_s"] = time_sliding(recompute, start, frames)
    row["recompute_ms"] = per_frame * 1e3
    cached = WorldSimulator(*models, sampling=sampling, batch_size=batch, use_cache=True)
    row["cached_ms"] = time_with_context(cached, start, frames) * 1e3
    per_frame, row["cached_first_s"] = time_sliding(cached, start, frames)
    row["sliding_ms"] = per_frame * 1e3
    rotary, _, _ = random_models(preset, context + 1, dtype, ROTARY_IN_TIME)
    streaming = WorldSimulator(*rotary, sampling=sampling, batch_size=batch, use_cache=True)
    row["streaming_ms"] = time_sliding(streaming, start, frames)[0] * 1e3
    row["speedup"] = row["recompute_ms"] / row["cached_ms"]
    row["sliding_speedup"] = row["recompute_ms"] / row["sliding_ms"]
    row["streaming_speedup"] = row["recompute_ms"] / row["streaming_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="demo,coinrun_jasmine")
    parser.add_argument("--contexts", default="1,4,16,64", help="context lengths (frames) to time")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--frames", type=int, default=5,
                        help="timed frames per case, after two untimed ones; the median is reported (shared "
                             "machines have spikes)")
    args = parser.parse_args()
    bandwidth = read_bandwidth_gbs()
    print(f"memory read bandwidth: {bandwidth:.1f} GB/s. 'weights MB': weights a cached frame streams from memory "
          "(see weight_bytes_per_frame); 'floor ms': that at this bandwidth, the least a cached frame can cost here")
    print(f"{'preset':>16} {'params_M':>9} {'context':>8} {'batch':>6} {'steps':>6} {'run':>4} {'recompute ms':>13} "
          f"{'cached ms':>10} {'speedup':>8} {'sliding ms':>11} {'speedup':>8} {'streaming ms':>13} {'speedup':>8} "
          f"{'weights MB':>11} {'floor ms':>9}  device", flush=True)
    for preset in args.presets.split(","):
        for context in (int(c) for c in args.contexts.split(",")):
            r = measure(preset, context, args.batch, args.dtype, args.frames)
            print(f"{r['preset']:>16} {r['params_M']:>9.2f} {r['context']:>8} {r['batch']:>6} "
                  f"{r['maskgit_steps']:>6} {r['steps_run']:>4} {r['recompute_ms']:>13.1f} {r['cached_ms']:>10.1f} "
                  f"{r['speedup']:>7.1f}x {r['sliding_ms']:>11.1f} {r['sliding_speedup']:>7.1f}x "
                  f"{r['streaming_ms']:>13.1f} {r['streaming_speedup']:>7.1f}x {r['weights_MB']:>11.0f} "
                  f"{r['weights_MB'] / bandwidth:>9.1f}  {r['device']}",
                  flush=True)


if __name__ == "__main__":
    main()
