"""Building blocks shared by the three models: attention, the ST block, patches and positions.

Parameters carry logical axis names (``embed``, ``mlp``, ``heads``, ``vocab``); ``sharding.py`` maps them to mesh
axes, so nothing here knows about devices. Shapes: B batch, T frames, N tokens per frame, D width.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
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

    # Both products accumulate in float32 and round to ``dtype`` after: what GPUs do for bfloat16 anyway, and on a
    # CPU a bfloat16 product that outputs bfloat16 ran ~6x slower than one that outputs float32 (16 against 103
    # GFLOP/s for 16 rows at Jasmine's width, AVX-512 with bf16).
    def __call__(self, x: jax.Array) -> jax.Array:
        y = jnp.einsum("...i,oi->...o", x.astype(self.dtype), self.kernel[...].astype(self.dtype),
                       preferred_element_type=jnp.float32).astype(self.dtype)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)

    def columns(self, x_IR: jax.Array) -> jax.Array:
        """The same map for R tokens held as columns: (in, R) -> (out, R).

        A generation step runs a few tokens; XLA:CPU multiplies (out, in) by (in, 16) about 1.6x faster than
        (16, in) by (in, out) (65 against 35-41 GFLOP/s for a 12-layer chain at Jasmine's width, measured here)."""
        y = jnp.dot(self.kernel[...].astype(self.dtype), x_IR.astype(self.dtype),
                    preferred_element_type=jnp.float32).astype(self.dtype)
        return y if self.bias is None else y + self.bias[...].astype(self.dtype)[:, None]


def dense(in_dim: int, out_dim: int, names: tuple[str | None, str | None], *, dtype, rngs: nnx.Rngs,
          use_bias: bool = True, zero_init: bool = False) -> Dense:
    """A :class:`Dense` layer with logical axis names (in, out) on its kernel."""
    return Dense(in_dim, out_dim, names, dtype=dtype, rngs=rngs, use_bias=use_bias, zero_init=zero_init)


def rms_norm(dim: int, *, dtype, rngs: nnx.Rngs) -> nnx.RMSNorm:
    return nnx.RMSNorm(dim, dtype=dtype, param_dtype=jnp.float32,
                       scale_init=nnx.with_partitioning(nnx.initializers.ones_init(), ("embed",)), rngs=rngs)


def rms_norm_columns(norm: nnx.RMSNorm, x: jax.Array, axis: int = 0) -> jax.Array:
    """``norm`` applied over ``axis`` instead of the last one (features held as columns); nnx.RMSNorm's formula."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    mean_square = jnp.mean(jnp.square(x.astype(jnp.float32)), axis=axis, keepdims=True)
    scale = norm.scale[...].astype(jnp.float32).reshape(shape)
    return (x * (jax.lax.rsqrt(mean_square + norm.epsilon) * scale)).astype(norm.dtype or x.dtype)


RopeTables = tuple[jax.Array, jax.Array]  # cos, sin (L, head_dim) from rope_2d_tables


CACHE_SLOT_AXIS = 3


class KVCache(NamedTuple):
    """One block's temporal keys and values of the frames in a generation window (a model keeps a list of them).

    keys, values: (B, N, heads, W, head_dim), slots along CACHE_SLOT_AXIS; slots at and after the next frame's are
    ignored. Heads come before slots so that a step's attention reads the cache as the batched matrices it multiplies
    (with slots before heads, XLA copied both caches of every layer at every step).
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

    def heads_qkv_columns(self, x_DR: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """:meth:`heads_qkv` for R tokens held as columns: (D, R) -> q, k, v each (heads, head_dim, R)."""
        qkv = self.qkv.columns(x_DR)
        q, k, v = qkv.reshape(3, self.heads, -1, qkv.shape[-1])  # rows of qkv: (q | k | v), then (h d)
        return rms_norm_columns(self.q_norm, q, 1), rms_norm_columns(self.k_norm, k, 1), v.astype(q.dtype)

    def spatial_columns(self, x_DR: jax.Array, worlds: int, rope: RopeTables | None = None) -> jax.Array:
        """Non-causal attention among each world's tokens, held as columns (D, B*N) -> (D, B*N)."""
        q, k, v = (rearrange(a, "h e (b n) -> h e b n", b=worlds) for a in self.heads_qkv_columns(x_DR))
        if rope is not None:
            q, k = apply_rope_columns(q, *rope), apply_rope_columns(k, *rope)
        scores = jnp.einsum("hebn,hebm->bhnm", q, k).astype(jnp.float32) * q.shape[1] ** -0.5
        y = jnp.einsum("bhnm,hebm->hebn", jax.nn.softmax(scores, axis=-1).astype(v.dtype), v)
        return self.out.columns(rearrange(y, "h e b n -> (h e) (b n)"))

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


TEMPORAL_POSITIONS = ("learned", "rope")
ROPE_PERIOD = 1024  # frames after which the temporal rotary angles repeat exactly


@lru_cache(maxsize=None)
def _temporal_rope_table(head_dim: int, base: float) -> tuple[np.ndarray, np.ndarray]:
    quarter = head_dim // 4
    wanted = base ** (-np.arange(2 * quarter) / (2 * quarter))  # radians per frame, 1 down to 1/base
    turns = np.maximum(np.round(wanted * ROPE_PERIOD / (2 * np.pi)), 1)  # whole turns per period
    angles = 2 * np.pi * np.outer(np.arange(ROPE_PERIOD), turns) / ROPE_PERIOD  # float64 (P, head_dim / 2)
    first, second = angles[:, :quarter], angles[:, quarter:]
    table = np.concatenate([first, first, second, second], axis=-1)  # apply_rope's rotate-half layout per half
    return np.cos(table).astype(np.float32), np.sin(table).astype(np.float32)


def temporal_rope_tables(positions_T: jax.Array, head_dim: int, base: float = 100.0) -> RopeTables:
    """cos, sin tables (T, head_dim) of a rotary embedding at the frame numbers ``positions_T`` (int, >= 0).

    Every frequency makes a whole number of turns in ROPE_PERIOD frames, so frame p takes row p mod ROPE_PERIOD
    and scores still depend only on the frames' distance, however long a world runs. The rows come from one
    constant computed in float64, so a frame's rotation is bitwise the same whether one frame or a whole window
    computes it (the cached and recomputing generation paths stay equal)."""
    if head_dim % 4:
        raise ValueError(f"temporal rotary embedding needs a head dimension divisible by 4, got {head_dim}")
    cos, sin = _temporal_rope_table(head_dim, base)
    rows = jnp.asarray(positions_T, jnp.int32) % ROPE_PERIOD
    return jnp.asarray(cos)[rows], jnp.asarray(sin)[rows]


def _rotate_halves(x: jax.Array, cos: jax.Array, sin: jax.Array, axis: int) -> jax.Array:
    """Rotary rotation in rotate-half form within each half of the head dimension ``axis``; ``cos``/``sin``
    already broadcast against ``x``."""
    def rotate_half(part):
        a, b = jnp.split(part, 2, axis=axis)
        return jnp.concatenate([-b, a], axis=axis)

    first, second = jnp.split(x, 2, axis=axis)
    return x * cos + jnp.concatenate([rotate_half(first), rotate_half(second)], axis=axis) * sin


def apply_rope(x_BLHD: jax.Array, cos_LD: jax.Array, sin_LD: jax.Array) -> jax.Array:
    """Rotates each half of the head dimension (rows | columns) by its angles (rotate-half form)."""
    cos, sin = (table[None, :, None].astype(x_BLHD.dtype) for table in (cos_LD, sin_LD))
    return _rotate_halves(x_BLHD, cos, sin, axis=-1)


def apply_rope_columns(x_HEBL: jax.Array, cos_LD: jax.Array, sin_LD: jax.Array) -> jax.Array:
    """:func:`apply_rope` for heads held as columns (heads, head_dim, B, L)."""
    cos, sin = (table.T[None, :, None, :].astype(x_HEBL.dtype) for table in (cos_LD, sin_LD))
    return _rotate_halves(x_HEBL, cos, sin, axis=1)


class FeedForward(nnx.Module):
    def __init__(self, width: int, ffn_dim: int, *, dtype, rngs: nnx.Rngs):
        self.up = dense(width, ffn_dim, ("embed", "mlp"), dtype=dtype, rngs=rngs)
        self.down = dense(ffn_dim, width, ("mlp", "embed"), dtype=dtype, rngs=rngs, zero_init=True)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down(jax.nn.gelu(self.up(x)))

    def columns(self, x_DR: jax.Array) -> jax.Array:
        return self.down.columns(jax.nn.gelu(self.up.columns(x_DR)))


class STBlock(nnx.Module):
    """Genie's ST block: spatial attention within a frame, causal temporal attention per position, one FFN."""

    def __init__(self, cfg: TransformerConfig, *, dtype, rngs: nnx.Rngs):
        self.norm_s = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.spatial = Attention(cfg.width, cfg.heads, dtype=dtype, rngs=rngs)
        self.norm_t = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.temporal = Attention(cfg.width, cfg.heads, dtype=dtype, rngs=rngs)
        self.norm_f = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.ffn = FeedForward(cfg.width, cfg.ffn_dim, dtype=dtype, rngs=rngs)

    def __call__(self, x_BTND: jax.Array, *, return_kv: bool = False, rope: RopeTables | None = None,
                 time_rope: RopeTables | None = None, band: int | None = None):
        """(B, T, N, D) -> (B, T, N, D); with ``return_kv`` also the temporal keys and values (B, N, H, T, hd),
        which is what generation caches: the past frames' own keys and values never change.

        ``time_rope``: rotary tables (T, hd) of the frames' numbers for the temporal queries and keys (the cached
        keys are the rotated ones). ``band``: each frame attends to at most this many frames, itself included."""
        b, t, n, d = x_BTND.shape
        h = rearrange(self.norm_s(x_BTND), "b t n d -> (b t) n d")
        x_BTND = x_BTND + rearrange(self.spatial(h, causal=False, rope=rope), "(b t) n d -> b t n d", b=b)
        # Causal over time: the output at frame t never sees frames > t.
        q, k, v = self.temporal.heads_qkv(rearrange(self.norm_t(x_BTND), "b t n d -> (b n) t d"))
        if time_rope is not None:
            q, k = apply_rope(q, *time_rope), apply_rope(k, *time_rope)
        window = (band - 1, 0) if band is not None and t > band else None
        y = self.temporal.merge_heads(jax.nn.dot_product_attention(q, k, v, is_causal=True, local_window_size=window))
        x_BTND = x_BTND + rearrange(y, "(b n) t d -> b t n d", b=b)
        x_BTND = x_BTND + self.ffn(self.norm_f(x_BTND))
        if not return_kv:
            return x_BTND
        return x_BTND, tuple(rearrange(a, "(b n) t h e -> b n h t e", b=b) for a in (k, v))

    def step(self, x_DR: jax.Array, cache: KVCache, t: jax.Array, rope: RopeTables | None = None,
             time_rope: RopeTables | None = None) -> tuple[jax.Array, KVCache]:
        """One frame at cache slot ``t``, attending in time to the cache's slots < t and to itself.

        The frame's B*N tokens are held as columns, ``x_DR`` (D, B*N), which XLA:CPU multiplies faster at a
        few tokens (Dense.columns); the result equals :meth:`__call__` at frame t. ``cache`` holds this block's
        keys and values (B, N, H, W, hd); the returned cache has slot t filled with this frame's, so committing a
        finished frame is keeping the returned cache. The attention reads the cache as it is rather than the
        filled copy, so a caller that drops the returned cache (every MaskGIT step but the last) never pays for
        copying it.
        """
        b = cache.keys.shape[0]
        x_DR = x_DR + self.spatial.spatial_columns(rms_norm_columns(self.norm_s, x_DR), b, rope)
        q, k, v = (rearrange(a, "h e (b n) -> h e b n", b=b)
                   for a in self.temporal.heads_qkv_columns(rms_norm_columns(self.norm_t, x_DR)))
        if time_rope is not None:  # tables (1, hd): this frame's number
            q, k = apply_rope_columns(q, *time_rope), apply_rope_columns(k, *time_rope)
        y = attend_past_and_self(q, k, v, cache, t)
        x_DR = x_DR + self.temporal.out.columns(rearrange(y, "h e b n -> (h e) (b n)"))
        keys, values = (jax.lax.dynamic_update_slice_in_dim(
            c, rearrange(new, "h e b n -> b n h 1 e").astype(c.dtype), t, axis=CACHE_SLOT_AXIS)
            for c, new in ((cache.keys, k), (cache.values, v)))
        return x_DR + self.ffn.columns(rms_norm_columns(self.norm_f, x_DR)), KVCache(keys, values)


def attend_past_and_self(q_HEBN: jax.Array, k_HEBN: jax.Array, v_HEBN: jax.Array, cache: KVCache,
                         t: jax.Array) -> jax.Array:
    """Causal temporal attention of one frame (heads held as columns, (H, hd, B, N)): each token's query attends
    to the same position's cached keys of slots < t and to its own key. Equal to attention over the cache with
    slot t filled. -> (H, hd, B, N)."""
    scale = q_HEBN.shape[1] ** -0.5
    q_BNHE = rearrange(q_HEBN, "h e b n -> b n h e")  # a few tokens: cheap, unlike moving the cache
    past = jnp.einsum("bnhe,bnhwe->bnhw", q_BNHE, cache.keys.astype(q_HEBN.dtype)).astype(jnp.float32) * scale
    past = jnp.where(jnp.arange(past.shape[-1]) < t, past, -jnp.inf)
    # Summed over the minor axis: as an einsum, or summed over the head_dim axis of (H, hd, B, N), XLA:CPU took
    # 0.1-0.2 ms a block for it (~6% of a CoinRun step); this way ~0.02 ms.
    k_BNHE = rearrange(k_HEBN, "h e b n -> b n h e")
    own = jnp.sum(q_BNHE.astype(jnp.float32) * k_BNHE.astype(jnp.float32), axis=-1)[..., None] * scale
    weights = jax.nn.softmax(jnp.concatenate([past, own], axis=-1), axis=-1).astype(v_HEBN.dtype)
    y = rearrange(jnp.einsum("bnhw,bnhwe->bnhe", weights[..., :-1], cache.values.astype(v_HEBN.dtype)),
                  "b n h e -> h e b n")
    return y + rearrange(weights[..., -1], "b n h -> h 1 b n") * v_HEBN


class STTransformer(nnx.Module):
    """A stack of ST blocks with learned spatial positions, time positions (``temporal_positions``: a learned table
    or a rotary embedding of frame numbers) and a final norm.

    With learned time positions a sequence holds at most ``max_frames`` frames (window slots). With rotary ones a
    sequence may be longer: each frame then attends to the last ``max_frames`` frames, as in training, and
    ``first_position`` numbers its first frame, so a caller can keep the keys of frames that left its window.
    """

    def __init__(self, cfg: TransformerConfig, *, num_tokens: int, max_frames: int, dtype, rngs: nnx.Rngs,
                 grid: tuple[int, int] | None = None):
        """``grid`` = (rows, cols) of the spatial tokens (any extra tokens come first); needed for spatial_rope."""
        if cfg.temporal_positions not in TEMPORAL_POSITIONS:
            raise ValueError(f"temporal_positions {cfg.temporal_positions!r}: choose one of {TEMPORAL_POSITIONS}")
        self.max_frames = max_frames
        self.rope_grid = None  # plain ints: the tables are rebuilt (constant-folded) inside each traced call
        if cfg.spatial_rope:
            if grid is None or grid[0] * grid[1] > num_tokens:
                raise ValueError(f"spatial_rope needs the token grid of the {num_tokens} tokens, got {grid}")
            self.rope_grid = (grid[0], grid[1], cfg.width // cfg.heads, num_tokens - grid[0] * grid[1])
        self.temporal_rope = cfg.temporal_positions == "rope"
        self.head_dim = cfg.width // cfg.heads
        init = nnx.with_partitioning(nnx.initializers.normal(0.02), (None, "embed"))
        self.pos_spatial = nnx.Param(init(rngs.params(), (num_tokens, cfg.width), jnp.float32))
        if not self.temporal_rope:
            self.pos_temporal = nnx.Param(init(rngs.params(), (max_frames, cfg.width), jnp.float32))
        self.blocks = nnx.List([STBlock(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.depth)])
        self.norm = rms_norm(cfg.width, dtype=dtype, rngs=rngs)
        self.dtype = dtype

    def _rope(self) -> RopeTables | None:
        if self.rope_grid is None:
            return None
        rows, cols, head_dim, leading = self.rope_grid
        return rope_2d_tables(rows, cols, head_dim, leading=leading)

    def _time_rope(self, positions_T: jax.Array) -> RopeTables | None:
        return temporal_rope_tables(positions_T, self.head_dim) if self.temporal_rope else None

    def _embed(self, x_BTND: jax.Array, first_slot: int | jax.Array = 0) -> jax.Array:
        t = x_BTND.shape[1]
        x_BTND = x_BTND + self.pos_spatial[None, None]
        if not self.temporal_rope:
            if t > self.max_frames:
                raise ValueError(f"{t} frames exceed this model's {self.max_frames}-frame window")
            pos_t = jax.lax.dynamic_slice_in_dim(self.pos_temporal[...], first_slot, t, axis=0)
            x_BTND = x_BTND + pos_t[None, :, None]
        return x_BTND.astype(self.dtype)

    def _blocks(self, x_BTND: jax.Array, first_position: int | jax.Array, return_kv: bool):
        time_rope = self._time_rope(first_position + jnp.arange(x_BTND.shape[1]))
        band = self.max_frames if self.temporal_rope else None
        kvs = []
        for block in self.blocks:
            out = block(x_BTND, return_kv=return_kv, rope=self._rope(), time_rope=time_rope, band=band)
            x_BTND, kv = out if return_kv else (out, None)
            kvs.append(kv)
        return self.norm(x_BTND), kvs

    def __call__(self, x_BTND: jax.Array, first_position: int | jax.Array = 0) -> jax.Array:
        """(B, T, N, D) -> (B, T, N, D). ``first_position``: the first frame's number (rotary time positions
        only; learned ones number the window's slots)."""
        return self._blocks(self._embed(x_BTND), first_position, return_kv=False)[0]

    def prefill(self, x_BTND: jax.Array, first_position: int | jax.Array = 0,
                next_slot: int | jax.Array | None = None) -> tuple[jax.Array, list[KVCache]]:
        """Runs T context frames once and returns the outputs and a per-block cache of ``max_frames`` slots for
        :meth:`step`.

        With T <= max_frames the cache holds frames 0..T-1 (later slots zero). A longer sequence (rotary time
        positions) keeps the frames before ``next_slot`` (default T) that the next frame attends to: the cache
        then starts at frame max(next_slot - max_frames + 1, 0), and the next frame goes in slot
        min(next_slot, max_frames - 1).
        """
        b, t, n, _ = x_BTND.shape
        out, kvs = self._blocks(self._embed(x_BTND), first_position, return_kv=True)
        w = self.max_frames
        if t <= w:
            pad = ((0, 0), (0, 0), (0, 0), (0, w - t), (0, 0))
            return out, [KVCache(jnp.pad(k, pad), jnp.pad(v, pad)) for k, v in kvs]
        start = jnp.clip((t if next_slot is None else next_slot) - (w - 1), 0, t - w)
        return out, [KVCache(*(jax.lax.dynamic_slice_in_dim(a, start, w, axis=CACHE_SLOT_AXIS) for a in kv))
                     for kv in kvs]

    def step(self, x_BND: jax.Array, caches: list[KVCache], t: jax.Array,
             position: jax.Array | None = None) -> tuple[jax.Array, list[KVCache]]:
        """One frame (B, N, D) at cache slot ``t`` with the past in ``caches`` -> its outputs (B, N, D) and the
        caches with slot t filled. Equal to ``self(x)[:, t]`` for a window whose frames < t produced the caches.
        ``position``: the frame's number for rotary time positions (default t)."""
        y_DR, caches = self.step_columns(x_BND, caches, t, position)
        return rearrange(y_DR, "d (b n) -> b n d", b=x_BND.shape[0]), caches

    def step_columns(self, x_BND: jax.Array, caches: list[KVCache], t: jax.Array,
                     position: jax.Array | None = None) -> tuple[jax.Array, list[KVCache]]:
        """:meth:`step` with the outputs held as columns, (D, B*N), for a head that multiplies them as columns."""
        x_DR = rearrange(self._embed(x_BND[:, None], t)[:, 0], "b n d -> d (b n)")
        time_rope = self._time_rope(jnp.reshape(t if position is None else position, (1,)))
        new = []
        for block, cache in zip(self.blocks, caches):
            x_DR, cache = block.step(x_DR, cache, t, rope=self._rope(), time_rope=time_rope)
            new.append(cache)
        return rms_norm_columns(self.norm, x_DR), new


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
