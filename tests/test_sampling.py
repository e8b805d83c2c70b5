"""MaskGIT decoding and the WorldSimulator API."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tiny_config
from flax import nnx
from test_models import randomized

from genie_jax.sampling import SamplingConfig, maskgit_fill_frame, masked_after_step, unmasking_steps
from genie_jax.simulator import WorldSimulator
from genie_jax.stages import ModelShape, build_dynamics, build_lam, build_tokenizer

SHAPE = ModelShape(16, 16, 8)


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedule_is_monotone_and_ends_unmasked(schedule):
    counts = masked_after_step(8, 64, schedule)
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0 and counts[0] < 64


def test_only_steps_that_unmask_a_token_are_run():
    counts = masked_after_step(25, 16, "cosine")
    kept = unmasking_steps(25, 16, "cosine")
    assert len(kept) == 16 and [m for _, m in kept] == list(range(15, -1, -1))
    skipped = [i for i in range(25) if i not in dict(kept)]
    assert skipped and all(counts[i] == counts[i - 1] for i in skipped)
    assert unmasking_steps(8, 64, "cosine") == list(enumerate(masked_after_step(8, 64, "cosine")))


def dynamics_and_window(seed: int):
    """A randomized tiny dynamics model and a random window: tokens (2, 8, 16), actions (2, 8)."""
    config = tiny_config()
    dyn = randomized(build_dynamics(config, SHAPE, "float32", nnx.Rngs(0)))
    rng = np.random.default_rng(seed)
    tokens = jnp.asarray(rng.integers(0, config.tokenizer.codebook_size, (2, 8, 16)), jnp.int32)
    return config, dyn, tokens, dyn.align_actions(jnp.asarray(rng.integers(0, 4, (2, 7))))


def test_skipped_steps_would_change_nothing():
    """Greedy decoding through all 25 scheduled steps (a plain loop) gives the frame the skipping decoder gives."""
    _, dyn, tokens, actions = dynamics_and_window(1)
    t = 3
    cfg = SamplingConfig(steps=25, temperature=0.0)
    fast = np.asarray(maskgit_fill_frame(dyn, tokens, actions, jnp.int32(t), jax.random.key(0), cfg))[:, t]

    window = np.asarray(tokens).copy()
    window[:, t:] = dyn.mask_id
    for masked in masked_after_step(cfg.steps, 16, cfg.schedule):
        log_probs = np.asarray(jax.nn.log_softmax(dyn(jnp.asarray(window), actions)[:, t]))
        sampled = log_probs.argmax(-1)
        unknown = window[:, t] == dyn.mask_id
        confidence = np.where(unknown, np.take_along_axis(log_probs, sampled[..., None], -1)[..., 0], np.inf)
        rank = np.argsort(np.argsort(confidence, axis=-1, kind="stable"), axis=-1, kind="stable")
        window[:, t] = np.where(rank < masked, dyn.mask_id, np.where(unknown, sampled, window[:, t]))
    np.testing.assert_array_equal(fast, window[:, t])


def test_maskgit_fills_every_token_of_frame_t_and_keeps_the_past():
    config, dyn, tokens, actions = dynamics_and_window(0)
    for steps in (1, 3):
        out = maskgit_fill_frame(dyn, tokens, actions, jnp.int32(3), jax.random.key(0),
                                 SamplingConfig(steps=steps, temperature=1.0))
        out = np.asarray(out)
        assert (out[:, 3] != dyn.mask_id).all() and (out[:, 3] < config.tokenizer.codebook_size).all()
        np.testing.assert_array_equal(out[:, :3], np.asarray(tokens)[:, :3])
        np.testing.assert_array_equal(out[:, 4:], np.asarray(tokens)[:, 4:])  # later slots as given, as cached
    greedy = [np.asarray(maskgit_fill_frame(dyn, tokens, actions, jnp.int32(3), jax.random.key(k),
                                            SamplingConfig(steps=1, temperature=0.0)))[:, 3] for k in (0, 1)]
    np.testing.assert_array_equal(greedy[0], greedy[1])  # temperature 0 is argmax: no randomness


@pytest.fixture(scope="module")
def simulator() -> WorldSimulator:
    config = tiny_config()
    rngs = nnx.Rngs(0)
    return WorldSimulator(build_tokenizer(config, SHAPE, "float32", rngs), build_lam(config, SHAPE, "float32", rngs),
                          randomized(build_dynamics(config, SHAPE, "float32", rngs)),
                          sampling=SamplingConfig(steps=2), batch_size=1)


def test_simulator_steps_beyond_the_window_and_branches(simulator, frames):
    simulator.reset(frames[0, :3])
    generated = [simulator.step(a % 4) for a in range(10)]  # 3 + 10 frames > the 8-frame window
    assert all(f.shape == (16, 16, 3) and f.dtype == np.uint8 for f in generated)
    saved = simulator.state()
    first = simulator.step(1)
    simulator.restore(saved)
    np.testing.assert_array_equal(simulator.step(1), first)  # same state, same key: same frame


def test_simulator_rejects_bad_input(simulator, frames):
    simulator.reset(frames[0, :2])
    with pytest.raises(ValueError, match="out of range: this world has 4 latent actions, 0..3"):
        simulator.step(4)
    with pytest.raises(ValueError, match="out of range"):
        simulator.step(-1)
    with pytest.raises(ValueError, match="do not fit this world"):
        simulator.reset(np.zeros((2, 20, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        simulator.reset(np.zeros((2, 16, 16, 3), np.float32))


@pytest.mark.parametrize("conditioning,rope", [("additive", False), ("prepend", True)])
def test_cached_generation_equals_recomputing(frames, conditioning, rope):
    """Same key, same frames: with the cache, past the window (slides rebuild it) and after a restore."""
    import dataclasses

    config = tiny_config()
    transformer = dataclasses.replace(config.dynamics.transformer, spatial_rope=rope)
    config = dataclasses.replace(config, dynamics=dataclasses.replace(
        config.dynamics, action_conditioning=conditioning, transformer=transformer))
    rngs = nnx.Rngs(0)
    models = (randomized(build_tokenizer(config, SHAPE, "float32", rngs)), build_lam(config, SHAPE, "float32", rngs),
              randomized(build_dynamics(config, SHAPE, "float32", rngs)))
    outputs = []
    for use_cache in (False, True):
        sim = WorldSimulator(*models, sampling=SamplingConfig(steps=3, temperature=1.0), use_cache=use_cache)
        sim.reset(frames[0, :3])
        rollout = [sim.step(a % 4) for a in range(7)]  # 3 + 7 frames > the 8-frame window
        saved = sim.state()
        rollout += [sim.step(2) for _ in range(2)]
        sim.restore(saved)
        rollout += [sim.step(2) for _ in range(2)]
        outputs.append(np.stack(rollout))
    assert len({f.tobytes() for f in outputs[0]}) > 3  # the frames differ, so equality below means something
    np.testing.assert_array_equal(outputs[0][-2:], outputs[0][-4:-2])
    np.testing.assert_array_equal(outputs[1], outputs[0])


def test_streaming_generation_keeps_its_cache_past_the_window_and_equals_recomputing(frames):
    """Rotary time positions: past the window the cache drops its oldest frame and keeps the rest. The reference
    recomputes every frame that can still reach the next one (depth x (W - 1) of them) at every MaskGIT step."""
    from test_models import rope_in_time

    config = rope_in_time(tiny_config(), depth=2)
    rngs = nnx.Rngs(0)
    models = (randomized(build_tokenizer(config, SHAPE, "float32", rngs)), build_lam(config, SHAPE, "float32", rngs),
              randomized(build_dynamics(config, SHAPE, "float32", rngs)))
    outputs, tokens = [], []
    for use_cache in (False, True):
        sim = WorldSimulator(*models, sampling=SamplingConfig(steps=3, temperature=1.0), use_cache=use_cache)
        assert sim.streaming and sim.history == 2 * 7 + 1
        sim.reset(frames[0, :3])
        rollout = [sim.step(a % 4) for a in range(20)]  # 23 frames: past the window and the 15 frames held
        saved = sim.state()
        assert saved.first_position == 23 - 15 and saved.length == 15
        rollout += [sim.step(2) for _ in range(2)]
        sim.restore(saved.without_caches())  # rebuilt from the frames held: the same continuation
        rollout += [sim.step(2) for _ in range(2)]
        outputs.append(np.stack(rollout))
        tokens.append(np.asarray(sim.state().tokens_BWN))
    assert len({f.tobytes() for f in outputs[0]}) > 10
    np.testing.assert_array_equal(outputs[0][-2:], outputs[0][-4:-2])
    np.testing.assert_array_equal(tokens[1], tokens[0])  # the same world was generated
    # The decoders attend over 8 cached frames or a 15-frame sequence: a pixel may round the other way.
    assert np.abs(outputs[1].astype(int) - outputs[0]).max() <= 1 and (outputs[1] == outputs[0]).mean() > 0.999


SHARDED_GENERATION = """
import sys; sys.path.insert(0, {tests!r})
import jax, numpy as np
from flax import nnx
from conftest import tiny_config
from test_models import randomized
from genie_jax.metrics.fvd import I3DFeatures
from genie_jax.sampling import SamplingConfig
from genie_jax.sharding import make_mesh
from genie_jax.simulator import WorldSimulator
from genie_jax.stages import ModelShape, build_dynamics, build_lam, build_tokenizer

assert jax.device_count() == 8, jax.devices()
config, shape, rngs = tiny_config(), ModelShape(16, 16, 8), nnx.Rngs(0)
models = (randomized(build_tokenizer(config, shape, "float32", rngs)), build_lam(config, shape, "float32", rngs),
          randomized(build_dynamics(config, shape, "float32", rngs)))
start = np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16, 3), np.uint8)
rollouts, tokens = [], []
for mesh in (None, make_mesh()):
    sim = WorldSimulator(*models, sampling=SamplingConfig(steps=3), batch_size=8, mesh=mesh)
    sim.reset(start)
    rollouts.append(np.stack([sim.step_batch([a % 4] * 8) for a in range(7)], axis=1))  # slides past the window
    tokens.append(np.asarray(sim.state().tokens_BWN))
    if mesh is not None:  # one world per device, the caches too
        for array in (sim.state().tokens_BWN, sim.state().caches[0][0].keys):
            assert [s.data.shape[0] for s in array.addressable_shards] == [1] * 8, array.sharding
assert len({{f.tobytes() for f in rollouts[0].reshape(-1, 16, 16, 3)}}) > 8  # the worlds differ and move
np.testing.assert_array_equal(tokens[1], tokens[0])  # the same worlds were generated
# Decoded on 8 devices, a pixel may round the other way.
assert np.abs(rollouts[1].astype(int) - rollouts[0]).max() <= 1 and (rollouts[1] == rollouts[0]).mean() > 0.999
clips = np.random.default_rng(1).integers(0, 256, (8, 9, 16, 16, 3), np.uint8)
one, split = I3DFeatures(8)(clips), I3DFeatures(8, make_mesh())(clips)
np.testing.assert_allclose(split, one, rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_generation_and_i3d_split_worlds_over_eight_devices():
    """Evaluation's generation and I3D features, split over 8 fake CPU devices, equal one device's."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).resolve().parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
    result = subprocess.run([sys.executable, "-c", SHARDED_GENERATION.format(tests=str(tests))], cwd=tests.parent,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_sample_categorical_draws_from_the_softmax():
    from genie_jax.sampling import sample_categorical

    probs = np.array([0.1, 0.0, 0.5, 0.4, 0.0])
    logits = jnp.log(jnp.asarray(probs, jnp.float32))[None, None]  # zero-probability entries are -inf
    draws = jax.vmap(lambda k: sample_categorical(k, logits))(jax.random.split(jax.random.key(0), 20000))
    freq = np.bincount(np.asarray(draws).ravel(), minlength=5) / draws.size
    np.testing.assert_allclose(freq, probs, atol=0.015)  # 3 sigma of a 20,000-draw frequency is < 0.011
    assert freq[1] == freq[4] == 0  # impossible tokens never come, the last one included
