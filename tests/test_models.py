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
