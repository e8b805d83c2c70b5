"""Shapes, dtypes and causality of the three models."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from genie_jax.stages import ModelShape, build_dynamics, build_lam, build_tokenizer

SHAPE = ModelShape(height=16, width=16, max_frames=8)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tokenizer_shapes_and_dtypes(config, frames, dtype):
    tok = build_tokenizer(config, SHAPE, dtype, nnx.Rngs(0))
    out = tok(jnp.asarray(frames))
    assert out.recon_BTHWC.shape == frames.shape
    assert out.vq.codes.shape == (2, 8, 16) and out.vq.codes.dtype == jnp.int32
    assert int(out.vq.codes.max()) < config.tokenizer.codebook_size
    assert tok.embed.kernel[...].dtype == jnp.float32  # parameters stay float32 under bf16 compute
    assert out.recon_BTHWC.dtype == jnp.float32  # losses are computed in float32
    hidden = tok.encoder(tok.embed(jnp.zeros((1, 2, 16, 48))))
    assert hidden.dtype == (jnp.bfloat16 if dtype == "bfloat16" else jnp.float32)
    assert tok.detokenize(out.vq.codes).shape == frames.shape


def test_lam_shapes(config, frames):
    lam = build_lam(config, SHAPE, "float32", nnx.Rngs(0))
    out = lam(jnp.asarray(frames))
    assert out.next_frames_BTHWC.shape == (2, 7, 16, 16, 3)
    assert out.vq.codes.shape == (2, 7)
    assert lam.infer_actions(jnp.asarray(frames)).max() < config.lam.num_actions


@pytest.mark.parametrize("conditioning", ["additive", "prepend"])
def test_dynamics_shapes(config, conditioning):
    import dataclasses

    config = dataclasses.replace(config, dynamics=dataclasses.replace(config.dynamics,
                                                                      action_conditioning=conditioning))
    dyn = build_dynamics(config, SHAPE, "float32", nnx.Rngs(0))
    tokens = jnp.zeros((2, 8, 16), jnp.int32)
    logits = dyn(tokens, dyn.align_actions(jnp.zeros((2, 7), jnp.int32)))
    assert logits.shape == (2, 8, 16, config.tokenizer.codebook_size) and logits.dtype == jnp.float32


def randomized(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """Random weights everywhere: zero-initialised output layers would otherwise hide dependencies at init."""
    params = nnx.state(model, nnx.Param)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [0.3 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves)]
    nnx.update(model, jax.tree.unflatten(treedef, noisy))
    return model


def _changed_after(fn, x: np.ndarray, t: int, axis_len: int) -> np.ndarray:
    """Which time steps of fn's output change when input frame t is perturbed."""
    y0 = np.asarray(fn(jnp.asarray(x)), np.float32)
    x2 = x.copy()
    x2[:, t] = 255 - x2[:, t]
    y1 = np.asarray(fn(jnp.asarray(x2)), np.float32)
    diff = np.abs(y1 - y0).reshape(y0.shape[0], axis_len, -1).max(axis=(0, 2))
    return diff > 1e-6


def test_tokenizer_is_causal(config, frames):
    tok = randomized(build_tokenizer(config, SHAPE, "float32", nnx.Rngs(0)))
    changed = _changed_after(lambda f: tok.encode(f)[1], frames, t=5, axis_len=8)  # pre-quantisation latents
    assert not changed[:5].any() and changed[5]
    changed = _changed_after(lambda f: tok(f).recon_BTHWC, frames, t=5, axis_len=8)
    assert not changed[:5].any() and changed[5]


def test_lam_action_depends_only_on_frames_up_to_t_plus_1(config, frames):
    lam = randomized(build_lam(config, SHAPE, "float32", nnx.Rngs(0)))
    # a_t names the transition t -> t+1: perturbing frame 5 may change a_4 (4 -> 5) and later, never a_0..a_3.
    changed = _changed_after(lambda f: lam.encode(f)[1], frames, t=5, axis_len=7)
    assert not changed[:4].any() and changed[4]


def test_dynamics_is_causal(config):
    dyn = randomized(build_dynamics(config, SHAPE, "float32", nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.tokenizer.codebook_size, (2, 8, 16)).astype(np.int32)
    actions = dyn.align_actions(jnp.asarray(rng.integers(0, 4, (2, 7))))
    base = np.asarray(dyn(jnp.asarray(tokens), actions))
    changed_tokens = tokens.copy()
    changed_tokens[:, 5] = (changed_tokens[:, 5] + 1) % config.tokenizer.codebook_size
    after = np.asarray(dyn(jnp.asarray(changed_tokens), actions))
    diff = np.abs(after - base).max(axis=(0, 2, 3))
    assert (diff[:5] < 1e-6).all() and diff[5] > 0
    # and the action into frame 6 only affects frames >= 6
    other = actions.at[:, 6].set((actions[:, 6] + 1) % 4)
    diff = np.abs(np.asarray(dyn(jnp.asarray(tokens), other)) - base).max(axis=(0, 2, 3))
    assert (diff[:6] < 1e-6).all() and diff[6] > 0


def test_per_patch_tokenizer_codes_depend_only_on_patch_content(config):
    import dataclasses

    from genie_jax.config import TransformerConfig

    per_patch = dataclasses.replace(config, tokenizer=dataclasses.replace(
        config.tokenizer, encoder=TransformerConfig(width=32, depth=0, heads=2, ffn_dim=64)))
    tok = randomized(build_tokenizer(per_patch, SHAPE, "float32", nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    scrolled = np.roll(frame, -4, axis=1)  # the camera moved one patch (4 px) to the right
    codes = np.asarray(tok.tokenize(jnp.asarray(np.stack([frame, scrolled])[None])))[0].reshape(2, 4, 4)
    # Token columns shift with the content: a camera scroll is an exact shift of the token grid.
    np.testing.assert_array_equal(codes[1][:, :3], codes[0][:, 1:])


def test_lam_global_motion_term_starts_as_no_motion(config, frames):
    import dataclasses

    from genie_jax.models.lam import global_motion_shifts, shifted_copies

    assert global_motion_shifts(0, 2) == [] and len(global_motion_shifts(4, 2)) == 25
    x = jnp.arange(2 * 1 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 1, 4, 4, 1)
    moved = np.asarray(shifted_copies(x, [(0, 1), (1, 0)]))
    np.testing.assert_array_equal(moved[:, :, 0, :, 1:], np.asarray(x)[:, :, :, :-1])  # content moved right
    np.testing.assert_array_equal(moved[:, :, 1, 1:], np.asarray(x)[:, :, :-1])  # content moved down
    cfg = dataclasses.replace(config, lam=dataclasses.replace(config.lam, global_motion_radius=4,
                                                              decoder_history=False))
    lam = build_lam(cfg, SHAPE, "float32", nnx.Rngs(0))
    out = lam(jnp.asarray(frames))
    assert out.next_frames_BTHWC.shape == (2, 7, 16, 16, 3)
    # At initialisation the zero shift carries nearly all the weight: the prediction is close to x_t.
    copy_error = np.abs(np.asarray(out.next_frames_BTHWC) - frames[:, :-1] / 255.0).mean()
    assert copy_error < 0.02


def test_motion_cost_volume_finds_the_shift_and_keeps_the_lam_causal(config, frames):
    import dataclasses

    cfg = dataclasses.replace(config, lam=dataclasses.replace(config.lam, patch=4, cost_volume_radius=4,
                                                              global_motion_radius=4, local_motion=True,
                                                              decoder_history=False))
    lam = randomized(build_lam(cfg, SHAPE, "float32", nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    first = rng.integers(0, 256, (16, 16, 3)).astype(np.float32) / 255.0
    second = np.roll(first, 2, axis=1)  # content moved right by 2
    clip = np.stack([first, second, np.roll(second, (2, -2), axis=(0, 1))])[None]  # then down 2 and left 2
    cost = np.asarray(lam.motion_cost_volume(jnp.asarray(clip)))  # (1, 3, N, K)
    shifts = lam.cost_shifts
    interior = [5, 6, 9, 10]  # patches away from the edges, where np.roll's wrap-around does not reach
    assert (cost[0, 0] == 0).all()  # frame 0 has no predecessor
    assert all(shifts[k] == (0, 2) for k in cost[0, 1, interior].argmin(-1))
    assert all(shifts[k] == (2, -2) for k in cost[0, 2, interior].argmin(-1))
    # still causal with the cost volume and per-patch motion, and the decoder's output has the right shape
    changed = _changed_after(lambda f: lam.encode(f)[1], frames, t=5, axis_len=7)
    assert not changed[:4].any() and changed[4]
    assert lam(jnp.asarray(frames)).next_frames_BTHWC.shape == (2, 7, 16, 16, 3)


def test_spatial_rope_scores_depend_on_the_offset_only_and_dynamics_stay_causal(config):
    import dataclasses

    from genie_jax.nn import apply_rope, rope_2d_tables

    cos, sin = rope_2d_tables(4, 4, 8, leading=1)  # a prepended token with no position, then a 4x4 grid
    q, k = (jnp.broadcast_to(jax.random.normal(jax.random.key(i), (8,)), (1, 17, 1, 8)) for i in (0, 1))
    scores = np.asarray(jnp.einsum("blhd,bmhd->lm", apply_rope(q, cos, sin), apply_rope(k, cos, sin)))
    # grid token (r, c) is index 1 + 4r + c: the same (+1 row, +1 column) offset from three places
    np.testing.assert_allclose(scores[1, 6], scores[6, 11], rtol=1e-5)
    np.testing.assert_allclose(scores[1, 6], scores[2, 7], rtol=1e-5)
    assert abs(scores[1, 6] - scores[1, 2]) > 1e-3  # a different offset scores differently
    np.testing.assert_allclose(scores[0, 0], float(q[0, 0, 0] @ k[0, 0, 0]), rtol=1e-5)  # unrotated token

    rope_config = dataclasses.replace(config, dynamics=dataclasses.replace(
        config.dynamics, transformer=dataclasses.replace(config.dynamics.transformer, spatial_rope=True)))
    dyn = randomized(build_dynamics(rope_config, SHAPE, "float32", nnx.Rngs(0)))
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.tokenizer.codebook_size, (2, 8, 16)).astype(np.int32)
    actions = dyn.align_actions(jnp.asarray(rng.integers(0, 4, (2, 7))))
    base = np.asarray(dyn(jnp.asarray(tokens), actions))
    tokens[:, 5] = (tokens[:, 5] + 1) % config.tokenizer.codebook_size
    diff = np.abs(np.asarray(dyn(jnp.asarray(tokens), actions)) - base).max(axis=(0, 2, 3))
    assert (diff[:5] < 1e-6).all() and diff[5] > 0


def rope_in_time(config, depth: int | None = None):
    """``config`` with rotary time positions in the dynamics model and the tokenizer decoder."""
    import dataclasses

    rope = dataclasses.replace(config.dynamics.transformer, temporal_positions="rope",
                               depth=depth or config.dynamics.transformer.depth)
    return dataclasses.replace(config, dynamics=dataclasses.replace(config.dynamics, transformer=rope),
                               tokenizer=dataclasses.replace(config.tokenizer, decoder=rope))


def test_temporal_rope_depends_on_frame_distances_and_attends_within_the_window(config):
    from genie_jax.nn import ROPE_PERIOD

    dyn = randomized(build_dynamics(rope_in_time(config), SHAPE, "float32", nnx.Rngs(0)))
    assert not hasattr(dyn.transformer, "pos_temporal")  # no table of window slots to outgrow
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, config.tokenizer.codebook_size, (2, 12, 16)), jnp.int32)
    actions = dyn.align_actions(jnp.asarray(rng.integers(0, 4, (2, 11))))
    base = np.asarray(dyn(tokens, actions))  # 12 frames, past the 8-frame window
    # Numbered from anywhere, across the table's period too, the frames score alike: only distances count.
    for first in (5, ROPE_PERIOD - 6, 3 * ROPE_PERIOD + 1):
        np.testing.assert_allclose(np.asarray(dyn(tokens, actions, first_position=first)), base, atol=2e-4)
    # Each frame attends to the 8 frames up to itself: one layer, so frame 0 reaches frames 0..7 and no further.
    changed = tokens.at[:, 0].set((tokens[:, 0] + 1) % config.tokenizer.codebook_size)
    diff = np.abs(np.asarray(dyn(changed, actions)) - base).max(axis=(0, 2, 3))
    assert (diff[:8] > 0).all() and (diff[8:] == 0).all(), diff
    # Learned time positions have one row per window slot: a longer clip is an error, not a silent wrap.
    learned = randomized(build_dynamics(config, SHAPE, "float32", nnx.Rngs(0)))
    with pytest.raises(ValueError, match="exceed this model's 8-frame window"):
        learned(tokens, actions)


def test_unknown_temporal_positions_are_rejected(config):
    import dataclasses

    bad = dataclasses.replace(config.dynamics.transformer, temporal_positions="sinusoid")
    with pytest.raises(ValueError, match="temporal_positions 'sinusoid': choose one of"):
        build_dynamics(dataclasses.replace(config, dynamics=dataclasses.replace(config.dynamics, transformer=bad)),
                       SHAPE, "float32", nnx.Rngs(0))
