"""Video tokenizer: an ST-ViViT VQ-VAE. Frames -> discrete tokens (B, T, N) -> frames.

Both encoder and decoder are ST-transformers with causal temporal attention, so the tokens of frame t carry
information about frames <= t only. ``encoder.depth = 0`` swaps the encoder for a per-patch MLP.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
from flax import nnx

from genie_jax.config import TokenizerConfig
from genie_jax.nn import FeedForward, KVCache, STTransformer, dense, patchify, to_float_frames, unpatchify
from genie_jax.vq import VectorQuantizer, VQOutput


class TokenizerOutput(NamedTuple):
    recon_BTHWC: jax.Array  # float, [0, 1] up to reconstruction error
    vq: VQOutput  # codes (B, T, N)
    latents_BTND: jax.Array  # pre-quantisation encoder outputs, used to re-seed dead codes


class VideoTokenizer(nnx.Module):
    def __init__(self, cfg: TokenizerConfig, *, height: int, width: int, max_frames: int, dtype,
                 rngs: nnx.Rngs):
        self.cfg, self.height, self.width = cfg, height, width
        self.num_tokens = (height // cfg.patch) * (width // cfg.patch)
        patch_dim = cfg.patch * cfg.patch * 3
        self.embed = dense(patch_dim, cfg.encoder.width, (None, "embed"), dtype=dtype, rngs=rngs)
        # encoder.depth == 0: a per-patch residual MLP, so a token depends only on its patch's pixels. Then the
        # same content gets the same token wherever it is, and a camera scroll of one patch is an exact shift
        # of the token grid, which a small dynamics model learns far sooner than arbitrary re-coding.
        self.per_patch = cfg.encoder.depth == 0
        self.encoder = (FeedForward(cfg.encoder.width, cfg.encoder.ffn_dim, dtype=dtype, rngs=rngs) if self.per_patch
                        else STTransformer(cfg.encoder, num_tokens=self.num_tokens, max_frames=max_frames,
                                           dtype=dtype, rngs=rngs))
        self.to_code = dense(cfg.encoder.width, cfg.code_dim, ("embed", None), dtype=dtype, rngs=rngs)
        self.vq = VectorQuantizer(cfg.codebook_size, cfg.code_dim, reset_after=cfg.reset_dead_after, rngs=rngs)
        self.from_code = dense(cfg.code_dim, cfg.decoder.width, (None, "embed"), dtype=dtype, rngs=rngs)
        self.decoder = STTransformer(cfg.decoder, num_tokens=self.num_tokens, max_frames=max_frames,
                                     dtype=dtype, rngs=rngs)
        self.to_pixels = dense(cfg.decoder.width, patch_dim, ("embed", None), dtype=dtype, rngs=rngs)

    def encode(self, frames_BTHWC: jax.Array) -> tuple[VQOutput, jax.Array]:
        x = patchify(to_float_frames(frames_BTHWC), self.cfg.patch)
        h = self.embed(x)
        h = h + self.encoder(h) if self.per_patch else self.encoder(h)
        latents_BTND = self.to_code(h)
        return self.vq(latents_BTND), latents_BTND

    def decode(self, quantized_BTND: jax.Array, first_position: int | jax.Array = 0) -> jax.Array:
        """Code vectors (B, T, N, code_dim) -> frames (B, T, H, W, 3) float. ``first_position``: the number of the
        first frame (rotary time positions only)."""
        patches = self.to_pixels(self.decoder(self.from_code(quantized_BTND), first_position))
        return unpatchify(patches.astype(quantized_BTND.dtype), self.cfg.patch, self.height, self.width)

    def tokenize(self, frames_BTHWC: jax.Array) -> jax.Array:
        """Frames (uint8 or float) -> token ids (B, T, N) int32."""
        return self.encode(frames_BTHWC)[0].codes

    def detokenize(self, tokens_BTN: jax.Array, first_position: int | jax.Array = 0) -> jax.Array:
        """Token ids (B, T, N) -> frames (B, T, H, W, 3) float, clipped to [0, 1]."""
        return jax.numpy.clip(self.decode(self.vq.lookup(tokens_BTN), first_position), 0.0, 1.0)

    def decode_prefill(self, tokens_BTN: jax.Array, first_position: int | jax.Array = 0,
                       next_slot: int | jax.Array | None = None) -> list[KVCache]:
        """The decoder's generation cache for T known frames of tokens (see nn.STTransformer.prefill)."""
        return self.decoder.prefill(self.from_code(self.vq.lookup(tokens_BTN)), first_position, next_slot)[1]

    def detokenize_step(self, tokens_BN: jax.Array, caches: list[KVCache], t: jax.Array,
                        position: jax.Array | None = None) -> tuple[jax.Array, list[KVCache]]:
        """The tokens (B, N) of the frame in cache slot ``t`` and the cache of frames < t -> the frame (B, H, W, 3)
        float in [0, 1], equal to ``detokenize(window)[:, t]``, and the caches with slot t filled."""
        h, caches = self.decoder.step(self.from_code(self.vq.lookup(tokens_BN)), caches, t, position)
        patches = self.to_pixels(h[:, None])
        frame = unpatchify(patches.astype(jax.numpy.float32), self.cfg.patch, self.height, self.width)[:, 0]
        return jax.numpy.clip(frame, 0.0, 1.0), caches

    def __call__(self, frames_BTHWC: jax.Array) -> TokenizerOutput:
        vq, latents = self.encode(frames_BTHWC)
        return TokenizerOutput(self.decode(vq.quantized), vq, latents)
