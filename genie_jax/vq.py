"""Vector quantisation: codebook lookup, straight-through gradients, commitment, dead-code reset, usage."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx


class CodeUsage(nnx.Variable):
    """Steps since each code was last chosen. Not a Param: the optimizer never touches it."""


class VQOutput(NamedTuple):
    quantized: jax.Array  # (..., D) straight-through: forward = code vector, backward = identity to the input
    codes: jax.Array  # (...) int32
    codebook_loss: jax.Array  # scalar: pulls codes towards (stopped) encoder outputs
    commitment_loss: jax.Array  # scalar, unweighted: pulls encoder outputs towards (stopped) codes


def l2_normalize(x: jax.Array, eps: float = 1e-6) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True) + eps)


class VectorQuantizer(nnx.Module):
    """A codebook of ``num_codes`` vectors of size ``code_dim`` with cosine (L2-normalised) lookup.

    Cosine lookup keeps codes and inputs on the unit sphere, so no code can drift far from the data and die
    for that reason alone; codes unused for ``reset_after`` steps are re-seeded from encoder outputs.
    """

    def __init__(self, num_codes: int, code_dim: int, *, reset_after: int, rngs: nnx.Rngs):
        init = nnx.with_partitioning(nnx.initializers.normal(1.0), ("vocab", None))
        self.codebook = nnx.Param(init(rngs.params(), (num_codes, code_dim), jnp.float32))
        self.unused_steps = CodeUsage(jnp.zeros((num_codes,), jnp.int32))
        self.num_codes = num_codes
        self.reset_after = reset_after

    def normalized_codebook(self) -> jax.Array:
        return l2_normalize(self.codebook[...])

    def __call__(self, z: jax.Array) -> VQOutput:
        z = l2_normalize(z.astype(jnp.float32))
        codebook = self.normalized_codebook()
        similarity = jnp.einsum("...d,kd->...k", z, codebook)
        codes = jnp.argmax(similarity, axis=-1).astype(jnp.int32)
        q = codebook[codes]
        codebook_loss = jnp.mean(jnp.square(jax.lax.stop_gradient(z) - q))
        commitment_loss = jnp.mean(jnp.square(z - jax.lax.stop_gradient(q)))
        return VQOutput(z + jax.lax.stop_gradient(q - z), codes, codebook_loss, commitment_loss)

    def lookup(self, codes: jax.Array) -> jax.Array:
        """Code ids (...) -> normalised code vectors (..., D)."""
        return self.normalized_codebook()[codes]

    def update_usage_and_reset(self, codes: jax.Array, inputs_MD: jax.Array, key: jax.Array) -> jax.Array:
        """Counts unused steps and re-seeds codes dead for ``reset_after`` steps from random rows of ``inputs_MD``.

        Returns the number of codes reset. Call once per training step, after the optimizer update.
        """
        used = jnp.zeros((self.num_codes,), jnp.bool_).at[codes.reshape(-1)].set(True)
        unused = jnp.where(used, 0, self.unused_steps[...] + 1)
        dead = unused >= self.reset_after
        rows = jax.random.randint(key, (self.num_codes,), 0, inputs_MD.shape[0])
        fresh = l2_normalize(jax.lax.stop_gradient(inputs_MD[rows]).astype(jnp.float32))
        self.codebook[...] = jnp.where(dead[:, None], fresh, self.codebook[...])
        self.unused_steps[...] = jnp.where(dead, 0, unused)
        return jnp.sum(dead)


def perplexity(codes: jax.Array, num_codes: int) -> jax.Array:
    """exp(entropy) of the code histogram: num_codes when all are used equally, 1 when one code is used."""
    counts = jnp.bincount(codes.reshape(-1), length=num_codes).astype(jnp.float32)
    p = counts / jnp.maximum(counts.sum(), 1.0)
    return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12)), 0.0)))
