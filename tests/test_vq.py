"""Vector quantiser: straight-through gradients, losses, dead-code reset, perplexity."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from genie_jax.vq import VectorQuantizer, l2_normalize, perplexity


def test_quantize_picks_nearest_code_and_passes_gradient_straight_through():
    vq = VectorQuantizer(4, 3, reset_after=10, rngs=nnx.Rngs(0))
    z = jax.random.normal(jax.random.key(1), (5, 3))
    out = vq(z)
    codebook = np.asarray(vq.normalized_codebook())
    expected = np.argmax(np.asarray(l2_normalize(z)) @ codebook.T, axis=-1)
    np.testing.assert_array_equal(np.asarray(out.codes), expected)
    np.testing.assert_allclose(np.asarray(out.quantized), codebook[expected], atol=1e-6)
    # Straight-through: d(sum(quantized * w))/dz equals d(sum(normalize(z) * w))/dz.
    w = jax.random.normal(jax.random.key(2), (5, 3))
    g = jax.grad(lambda z: jnp.sum(vq(z).quantized * w))(z)
    g_ref = jax.grad(lambda z: jnp.sum(l2_normalize(z) * w))(z)
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), atol=1e-5)
    assert float(out.commitment_loss) > 0 and np.isclose(float(out.codebook_loss), float(out.commitment_loss))


def test_dead_codes_are_reset_from_inputs():
    vq = VectorQuantizer(4, 3, reset_after=2, rngs=nnx.Rngs(0))
    inputs = jax.random.normal(jax.random.key(3), (16, 3))
    only_code_0 = jnp.zeros((16,), jnp.int32)
    before = np.asarray(vq.codebook[...]).copy()
    assert int(vq.update_usage_and_reset(only_code_0, inputs, jax.random.key(0))) == 0
    assert int(vq.update_usage_and_reset(only_code_0, inputs, jax.random.key(1))) == 3  # codes 1..3 unused twice
    after = np.asarray(vq.codebook[...])
    np.testing.assert_array_equal(after[0], before[0])
    normalized_inputs = np.asarray(l2_normalize(inputs))
    for code in (1, 2, 3):
        assert not np.allclose(after[code], before[code])
        assert np.min(np.abs(normalized_inputs - after[code]).max(axis=1)) < 1e-6  # a (normalised) input row
    np.testing.assert_array_equal(np.asarray(vq.unused_steps[...]), [0, 0, 0, 0])


def test_perplexity():
    assert np.isclose(float(perplexity(jnp.arange(8) % 4, 4)), 4.0)
    assert np.isclose(float(perplexity(jnp.zeros(8, jnp.int32), 4)), 1.0)
