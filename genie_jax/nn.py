"""Building blocks shared by the three models: attention, the ST block, patches and positions.

Parameters carry logical axis names (``embed``, ``mlp``, ``heads``, ``vocab``); ``sharding.py`` maps them to mesh
axes, so nothing here knows about devices. Shapes: B batch, T frames, N tokens per frame, D width.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from einops import rearrange
from flax import nnx

from genie_jax.config import TransformerConfig

# Parameters are created unsharded and carry logical axis names as metadata; sharding.py places them on a mesh
# afterwards. (Flax's eager sharding would need a mesh at construction time and physical axis names.)
nnx.use_eager_sharding(False)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str) -> jnp.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}: choose one of {', '.join(DTYPES)}")
    return DTYPES[name]


def _init(names: tuple[str | None, ...], init=nnx.initializers.lecun_normal()):
    return nnx.with_partitioning(init, names)


class Dense(nnx.Module):
    """y = x W^T + b with the kernel stored (out, in), float32 parameters and ``dtype`` compute.

    Why not nnx.Linear's (in, out) kernel: XLA:CPU multiplies a few rows (a generation step at batch 1) by an
    (out, in) kernel about 1.7x faster, and Jasmine-sized training steps run 7-15% faster too (README, measured
    with benchmarks/generation.py and benchmarks/train_throughput.py).
    """

    def __init__(self, in_dim: int, out_dim: int, names: tuple[str | None, str | None], *, dtype,
                 rngs: nnx.Rngs, use_bias: bool = True, zero_init: bool = False):
        init = (nnx.initializers.zeros_init() if zero_init
                else nnx.initializers.lecun_normal(in_axis=-1, out_axis=-2))
        # names are given as (in, out), like the matrix it multiplies by; the kernel is stored transposed.
        self.kernel = nnx.Param(_init((names[1], names[0]), init)(rngs.params(), (out_dim, in_dim), jnp.float32))
        self.bias = (nnx.Param(nnx.with_partitioning(nnx.initializers.zeros_init(), (names[1],))(
            rngs.params(), (out_dim,), jnp.float32)) if use_bias else None)
        self.dtype = dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...i,oi->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype))
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)


def dense(in_dim: int, out_dim: int, names: tuple[str | None, str | None], *, dtype, rngs: nnx.Rngs,
          use_bias: bool = True, zero_init: bool = False) -> Dense:
    """A :class:`Dense` layer with logical axis names (in, out) on its kernel."""
    return Dense(in_dim, out_dim, names, dtype=dtype, rngs=rngs, use_bias=use_bias, zero_init=zero_init)


def rms_norm(dim: int, *, dtype, rngs: nnx.Rngs) -> nnx.RMSNorm:
    return nnx.RMSNorm(dim, dtype=dtype, param_dtype=jnp.float32,
                       scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)), rngs=rngs)


RopeTables = tuple[jax.Array, jax.Array]  # cos, sin (L, head_dim) from rope_2d_tables


class KVCache(NamedTuple):
    """One block's temporal keys and values of the frames in a generation window (a model keeps a list of them).

    keys, values: (B, N, W, heads, head_dim); slots at and after the next frame's are ignored.
    """

    keys: jax.Array
    values: jax.Array


class Attention(nnx.Module):
    """Multi-head self-attention with QK-norm over the second-to-last axis of ``x_BLD``."""

    def __init__(self, width: int, heads: int, *, dtype, rngs: nnx.Rngs):
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = dense(width, 3 * width, ("embed", "heads"), dtype=dtype, rngs=rngs, use_bias=False)
        self.out = dense(width, width, ("heads", "embed"), dtype=dtype, rngs=rngs, zero_init=True)
        head_dim = width // heads
        # QK-norm keeps attention logits bounded, which Genie relies on for stable bf16 training.
        self.q_norm = nnx.RMSNorm(head_dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
        self.k_norm = nnx.RMSNorm(head_dim, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)

    def heads_qkv(self, x_BLD: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(B, L, D) -> q, k, v each (B, L, heads, head_dim), q and k normalised."""
        q, k, v = jnp.split(self.qkv(x_BLD), 3, axis=-1)
        q, k, v = (rearrange(t, "b l (h d) -> b l h d", h=self.heads) for t in (q, k, v))
        return self.q_norm(q), self.k_norm(k), v.astype(q.dtype)

    def merge_heads(self, y_BLHD: jax.Array) -> jax.Array:
        return self.out(rearrange(y_BLHD, "b l h d -> b l (h d)"))

    def __call__(self, x_BLD: jax.Array, *, causal: bool, rope: RopeTables | None = None) -> jax.Array:
        q, k, v = self.heads_qkv(x_BLD)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return self.merge_heads(jax.nn.dot_product_attention(q, k, v, is_causal=causal))


def rope_2d_tables(rows: int, cols: int, head_dim: int, leading: int = 0,
                   base: float = 100.0) -> RopeTables:
    """cos, sin tables (L, head_dim) of a 2D rotary embedding for a rows x cols grid of tokens in row-major order,
    after ``leading`` tokens with no position (identity rotation, e.g. a prepended action token). The first half
    of each head rotates with the row index, the second half with the column index."""
    if head_dim % 4:
        raise ValueError(f"2D rotary embedding needs a head dimension divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = base ** (-jnp.arange(quarter, dtype=jnp.float32) / quarter)
    r, c = jnp.meshgrid(jnp.arange(rows, dtype=jnp.float32), jnp.arange(cols, dtype=jnp.float32), indexing="ij")
    angle_r, angle_c = r.reshape(-1, 1) * freqs, c.reshape(-1, 1) * freqs  # (L, quarter)
    angles = jnp.concatenate([angle_r, angle_r, angle_c, angle_c], axis=-1)  # rotate-half layout per half
    angles = jnp.concatenate([jnp.zeros((leading, head_dim)), angles], axis=0)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BLHD: jax.Array, cos_LD: jax.Array, sin_LD: jax.Array) -> jax.Array:
    """Rotates each half of the head dimension (rows | columns) by its angles (rotate-half form)."""
    h = x_BLHD.shape[-1] // 2

    def rotate_half(part):
        a, b = jnp.split(part, 2, axis=-1)
        return jnp.concatenate([-b, a], axis=-1)

    rotated = jnp.concatenate([rotate_half(x_BLHD[..., :h]), rotate_half(x_BLHD[..., h:])], axis=-1)
    cos, sin = cos_LD[None, :, None].astype(x_BLHD.dtype), sin_LD[None, :, None].astype(x_BLHD.dtype)
    return x_BLHD * cos + rotated * sin


class FeedForward(nnx.Module):
    def __init__(self, width: int, ffn_dim: int, *, dtype, rngs: nnx.Rngs):
        self.up = dense(width, ffn_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.down = dense(ffn_dim, width, ("mlp", "embed"), dtype=dtype, rngs=rngs, zero_init=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))


class STBlock(nnx.Module):
    """Genie's ST block: spatial attention within a frame, causal temporal attention per position, one FFN."""

    def __init__(self, cfg: TransformerConfig, *, dtype, rngs: nnx.Rngs):
        self.norm_s = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.spatial = Attention(cfg.width, cfg.heads, dtype=dtype, rngs=rngs)
        self.norm_t = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.temporal = Attention(cfg.width, cfg.heads, dtype=dtype, rngs=rngs)
        self.norm_f = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.ffn = FeedForward(cfg.width, cfg.ffn_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x_BTND: jax.Array, *, return_kv: bool = False, rope: RopeTables | None = None):
        """(B, T, N, D) -> (B, T, N, D); with ``return_kv`` also the temporal keys and values (B, N, T, H, hd),
        which is what generation caches: the past frames' own keys and values never change."""
        b, t, n, d = x_BTND.shape
        h = rearrange(self.norm_s(x_BTND), "b t n d -> (b t) n d")
        x_BTND = x_BTND + rearrange(self.spatial(h, causal=False, rope=rope), "(b t) n d -> b t n d", b=b)
        # Causal over time: the output at frame t never sees frames > t.
        q, k, v = self.temporal.heads_qkv(rearrange(self.norm_t(x_BTND), "b t n d -> (b n) t d"))
        y = self.temporal.merge_heads(jax.nn.dot_product_attention(q, k, v, is_causal=True))
        x_BTND = x_BTND + rearrange(y, "(b n) t d -> b t n d", b=b)
        x_BTND = x_BTND + self.ffn(self.norm_f(x_BTND))
        if not return_kv:
            return x_BTND
        return x_BTND, tuple(rearrange(a, "(b n) t h e -> b n t h e", b=b) for a in (k, v))

    def step(self, x_BND: jax.Array, cache: KVCache, t: jax.Array,
             rope: RopeTables | None = None) -> tuple[jax.Array, KVCache]:
        """One frame at window slot ``t``, attending in time to the cache's slots < t and to itself.

        ``cache`` holds this block's keys and values (B, N, W, H, hd); the returned cache has slot t filled with
        this frame's, so committing a finished frame is keeping the returned cache. The attention reads the
        cache as it is rather than the filled copy, so a caller that drops the returned cache (every MaskGIT step
        but the last) never pays for copying it.
        """
        b, n, _ = x_BND.shape
        x_BND = x_BND + self.spatial(self.norm_s(x_BND), causal=False, rope=rope)
        q, k, v = self.temporal.heads_qkv(self.norm_t(x_BND))  # (B, N, H, hd): N plays the role of length
        y = attend_past_and_self(q, k, v, cache, t)
        x_BND = x_BND + self.temporal.merge_heads(y)
        keys, values = (jax.lax.dynamic_update_slice_in_dim(c, new[:, :, None].astype(c.dtype), t, axis=2)
                        for c, new in ((cache.keys, k), (cache.values, v)))
        return x_BND + self.ffn(self.norm_f(x_BND)), KVCache(keys, values)


def attend_past_and_self(q_BNHE: jax.Array, k_BNHE: jax.Array, v_BNHE: jax.Array, cache: KVCache,
                         t: jax.Array) -> jax.Array:
    """Causal temporal attention of one frame: each token's query attends to the same position's cached keys of
    slots < t and to its own key. Equal to attention over the cache with slot t filled. -> (B, N, H, hd)."""
    scale = q_BNHE.shape[-1] ** -0.5
    past = jnp.einsum("bnhe,bnwhe->bnhw", q_BNHE, cache.keys.astype(q_BNHE.dtype)).astype(jnp.float32) * scale
    past = jnp.where(jnp.arange(past.shape[-1]) < t, past, -jnp.inf)
    own = jnp.einsum("bnhe,bnhe->bnh", q_BNHE, k_BNHE).astype(jnp.float32)[..., None] * scale
    weights = jax.nn.softmax(jnp.concatenate([past, own], axis=-1), axis=-1)
    y = jnp.einsum("bnhw,bnwhe->bnhe", weights[..., :-1].astype(v_BNHE.dtype), cache.values.astype(v_BNHE.dtype))
    return y + weights[..., -1:].astype(v_BNHE.dtype) * v_BNHE


class STTransformer(nnx.Module):
    """A stack of ST blocks with learned spatial and temporal position embeddings and a final norm."""

    def __init__(self, cfg: TransformerConfig, *, num_tokens: int, max_frames: int, dtype, rngs: nnx.Rngs,
                 grid: tuple[int, int] | None = None):
        """``grid`` = (rows, cols) of the spatial tokens (any extra tokens come first); needed for spatial_rope."""
        self.max_frames = max_frames
        self.rope_grid = None  # plain ints: the tables are rebuilt (constant-folded) inside each traced call
        if cfg.spatial_rope:
            if grid is None or grid[0] * grid[1] > num_tokens:
                raise ValueError(f"spatial_rope needs the token grid of the {num_tokens} tokens, got {grid}")
            self.rope_grid = (grid[0], grid[1], cfg.width // cfg.heads, num_tokens - grid[0] * grid[1])
        init = nnx.with_partitioning(nnx.initializers.normal(0.02), (None, "embed"))
        self.pos_spatial = nnx.Param(init(rngs.params(), (num_tokens, cfg.width), jnp.float32))
        self.pos_temporal = nnx.Param(init(rngs.params(), (max_frames, cfg.width), jnp.float32))
        self.blocks = nnx.List([STBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])
        self.norm = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.dtype = dtype

    def _rope(self) -> RopeTables | None:
        if self.rope_grid is None:
            return None
        rows, cols, head_dim, leading = self.rope_grid
        return rope_2d_tables(rows, cols, head_dim, leading=leading)

    def _embed(self, x_BTND: jax.Array, first_slot: int | jax.Array = 0) -> jax.Array:
        t = x_BTND.shape[1]
        if t > self.max_frames:
            raise ValueError(f"{t} frames exceed this model's {self.max_frames}-frame window")
        pos_t = jax.lax.dynamic_slice_in_dim(self.pos_temporal[...], first_slot, t, axis=0)
        return (x_BTND + self.pos_spatial[None, None] + pos_t[None, :, None]).astype(self.dtype)

    def __call__(self, x_BTND: jax.Array) -> jax.Array:
        x_BTND = self._embed(x_BTND)
        for block in self.blocks:
            x_BTND = block(x_BTND, rope=self._rope())
        return self.norm(x_BTND)

    def prefill(self, x_BTND: jax.Array) -> tuple[jax.Array, list[KVCache]]:
        """Runs T context frames once and returns the outputs and a per-block cache of ``max_frames`` slots
        (slots >= T zero) for :meth:`step`."""
        b, t, n, _ = x_BTND.shape
        x_BTND = self._embed(x_BTND)
        caches = []
        for block in self.blocks:
            x_BTND, (k, v) = block(x_BTND, return_kv=True, rope=self._rope())
            pad = ((0, 0), (0, 0), (0, self.max_frames - t), (0, 0), (0, 0))
            caches.append(KVCache(jnp.pad(k, pad), jnp.pad(v, pad)))
        return self.norm(x_BTND), caches

    def step(self, x_BND: jax.Array, caches: list[KVCache], t: jax.Array) -> tuple[jax.Array, list[KVCache]]:
        """One frame (B, N, D) at slot ``t`` with the past in ``caches`` -> its outputs (B, N, D) and the caches
        with slot t filled. Equal to ``self(x)[:, t]`` for a window whose frames < t produced the caches."""
        x_BND = self._embed(x_BND[:, None], t)[:, 0]
        new = []
        for block, cache in zip(self.blocks, caches):
            x_BND, cache = block.step(x_BND, cache, t, rope=self._rope())
            new.append(cache)
        return self.norm(x_BND), new


def patchify(frames_BTHWC: jax.Array, patch: int) -> jax.Array:
    """(B, T, H, W, C) -> (B, T, N, patch*patch*C) with N = (H/patch)*(W/patch), row-major patches."""
    _, _, h, w, _ = frames_BTHWC.shape
    if h % patch or w % patch:
        raise ValueError(f"frame size {h}x{w} is not divisible by patch {patch}")
    return rearrange(frames_BTHWC, "b t (hn p) (wn q) c -> b t (hn wn) (p q c)", p=patch, q=patch)


def unpatchify(patches_BTNP: jax.Array, patch: int, height: int, width: int) -> jax.Array:
    """Inverse of :func:`patchify`."""
    return rearrange(patches_BTNP, "b t (hn wn) (p q c) -> b t (hn p) (wn q) c",
                     hn=height // patch, wn=width // patch, p=patch, q=patch)


def to_float_frames(frames: jax.Array) -> jax.Array:
    """uint8 [0, 255] at rest -> float32 [0, 1] inside models (float input is passed through)."""
    if frames.dtype == jnp.uint8:
        return frames.astype(jnp.float32) / 255.0
    return frames.astype(jnp.float32)
