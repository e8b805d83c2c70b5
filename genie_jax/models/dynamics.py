"""Dynamics: a MaskGIT transformer over tokenizer tokens, conditioned on latent actions.

Frame t is predicted from frames < t (causal temporal attention) and the action a_{t-1} that led into it.
Actions enter either ADDED to every token of frame t (Genie) or as one extra token PREPENDED to frame t
(Jasmine); ``DynamicsConfig.action_conditioning`` picks.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from genie_jax.config import DynamicsConfig
from genie_jax.nn import KVCache, STTransformer, dense

CONDITIONINGS = ("additive", "prepend")


class DynamicsModel(nnx.Module):
    def __init__(self, cfg: DynamicsConfig, *, vocab_size: int, num_tokens: int, num_actions: int,
                 max_frames: int, dtype, rngs: nnx.Rngs, grid: tuple[int, int] | None = None):
        if cfg.action_conditioning not in CONDITIONINGS:
            raise ValueError(f"action_conditioning {cfg.action_conditioning!r}: choose one of {CONDITIONINGS}")
        self.cfg, self.vocab_size, self.num_actions, self.num_tokens = cfg, vocab_size, num_actions, num_tokens
        self.mask_id = vocab_size  # one extra embedding row stands for "not yet generated"
        self.no_action_id = num_actions  # frame 0 has no action leading into it
        width = cfg.transformer.width
        embed_init = nnx.with_partitioning(nnx.initializers.normal(0.02), ("vocab", "embed"))
        self.token_embed = nnx.Embed(vocab_size + 1, width, embedding_init=embed_init, rngs=rngs)
        self.action_embed = nnx.Embed(num_actions + 1, width, embedding_init=embed_init, rngs=rngs)
        self.prepend = cfg.action_conditioning == "prepend"
        self.transformer = STTransformer(cfg.transformer, num_tokens=num_tokens + int(self.prepend),
                                         max_frames=max_frames, dtype=dtype, rngs=rngs, grid=grid)
        self.head = dense(width, vocab_size, ("embed", "vocab"), dtype=dtype, rngs=rngs)

    def __call__(self, tokens_BTN: jax.Array, actions_BT: jax.Array,
                 action_probs_BTA: jax.Array | None = None, first_position: int | jax.Array = 0) -> jax.Array:
        """Token ids (mask id where unknown) and the action INTO each frame -> logits (B, T, N, vocab) float32.

        ``actions_BT[:, t]`` is the latent action of the transition t-1 -> t; use :meth:`align_actions` to build
        it from the LAM's (B, T-1) transition actions. ``action_probs_BTA`` (training only, from
        :meth:`align_action_probs`) makes the action input straight-through: its value is still the embedding of
        ``actions_BT``, its gradient flows into the probabilities, so the model that made them learns from this loss.
        ``first_position``: the number of the first frame (rotary time positions only, see nn.STTransformer).
        """
        return self._logits(self.transformer(self._embed(tokens_BTN, actions_BT, action_probs_BTA), first_position))

    def prefill(self, tokens_BTN: jax.Array, actions_BT: jax.Array, first_position: int | jax.Array = 0,
                next_slot: int | jax.Array | None = None) -> list[KVCache]:
        """The generation cache of T known frames (their tokens and the actions into them); see
        nn.STTransformer.prefill for ``next_slot``."""
        return self.transformer.prefill(self._embed(tokens_BTN, actions_BT), first_position, next_slot)[1]

    def step(self, tokens_BN: jax.Array, action_B: jax.Array, caches: list[KVCache], t: jax.Array,
             position: jax.Array | None = None) -> tuple[jax.Array, list[KVCache]]:
        """Logits (B, N, vocab) of the frame in cache slot ``t`` from its (partly masked) tokens, the action into it
        and the cache of frames < t; equal to ``self(window, actions)[:, t]``. Also returns the caches with slot t
        filled. ``position``: the frame's number (rotary time positions; default t)."""
        x = self._embed(tokens_BN[:, None], action_B[:, None])[:, 0]
        h_DR, caches = self.transformer.step_columns(x, caches, t, position)
        h_DBN = rearrange(h_DR, "d (b n) -> d b n", b=x.shape[0])
        if self.prepend:
            h_DBN = h_DBN[:, :, 1:]
        # The head as columns too: XLA:CPU ran this (vocab, D) product about twice as fast that way round.
        logits_VR = self.head.columns(rearrange(h_DBN, "d b n -> d (b n)"))
        return rearrange(logits_VR, "v (b n) -> b n v", b=x.shape[0]).astype(jnp.float32), caches

    def _embed(self, tokens_BTN: jax.Array, actions_BT: jax.Array,
               action_probs_BTA: jax.Array | None = None) -> jax.Array:
        x = self.token_embed(tokens_BTN)
        a = self.action_embed(actions_BT)
        if action_probs_BTA is not None:  # straight-through softmax: value of the hard ids, gradient of the soft mix
            soft = action_probs_BTA @ jax.lax.stop_gradient(self.action_embed.embedding[...])
            a = a + (soft - jax.lax.stop_gradient(soft))
        a = a[:, :, None]
        return jnp.concatenate([a, x], axis=2) if self.prepend else x + a

    def _logits(self, h_BTND: jax.Array) -> jax.Array:
        if self.prepend:
            h_BTND = h_BTND[:, :, 1:]
        return self.head(h_BTND).astype(jnp.float32)

    def align_actions(self, transition_actions_BT: jax.Array) -> jax.Array:
        """(B, T-1) actions of transitions t -> t+1 -> (B, T) actions into each frame (frame 0: no action)."""
        first = jnp.full(transition_actions_BT.shape[:1] + (1,), self.no_action_id, jnp.int32)
        return jnp.concatenate([first, transition_actions_BT.astype(jnp.int32)], axis=1)

    def align_action_probs(self, transition_probs_BTA: jax.Array) -> jax.Array:
        """(B, T-1, |A|) probabilities of transition actions -> (B, T, |A|+1) over the ids into each frame, frame 0
        certain of "no action" (the ids of :meth:`align_actions`)."""
        b = transition_probs_BTA.shape[0]
        first = jax.nn.one_hot(jnp.full((b, 1), self.no_action_id), self.num_actions + 1, dtype=jnp.float32)
        rest = jnp.pad(transition_probs_BTA.astype(jnp.float32), ((0, 0), (0, 0), (0, 1)))
        return jnp.concatenate([first, rest], axis=1)
