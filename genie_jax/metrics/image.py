"""Per-image quality metrics (PSNR, SSIM) in JAX.

Both functions are pure jnp code with static shapes, so they can be called inside
``jax.jit`` / ``jax.vmap``. Images are channels-last: ``images_BHWC`` where ``B...``
is any number of leading batch dims (often ``(B, T)`` for videos).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

# PSNR of identical images is +inf; we report this cap instead so that means over a
# batch (some of whose frames may be reconstructed exactly) stay finite.
PSNR_CAP_DB = 100.0

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(
    a: jnp.ndarray,
    b: jnp.ndarray,
    max_value: float = 1.0,
    axis: int | Sequence[int] = (-3, -2, -1),
) -> jnp.ndarray:
    """Peak signal-to-noise ratio in dB, reduced over ``axis``.

    Args:
      a, b: images_BHWC (same shape), floats in [0, max_value] (uint8 works with
        ``max_value=255``; it is cast to float32 first so differences don't wrap).
      max_value: the peak value (1.0 for [0, 1] floats, 255 for uint8); a Python
        number, static under jit.
      axis: axes averaged into the MSE; the default gives one value per image.

    Returns:
      psnr_B: ``10 * log10(max_value**2 / MSE)``; capped at ``PSNR_CAP_DB`` (100 dB),
      which is also what identical images (MSE = 0) get.
    """
    axis = tuple(axis) if isinstance(axis, Sequence) else (axis,)
    return _psnr(a, b, float(max_value), axis)


# jit at definition: eager mode would compile every primitive separately (slow on
# first call); nested inside a caller's jit this is just inlined.
@functools.partial(jax.jit, static_argnames=("max_value", "axis"))
def _psnr(a: jnp.ndarray, b: jnp.ndarray, max_value: float, axis: tuple[int, ...]) -> jnp.ndarray:
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    mse = jnp.mean(jnp.square(a - b), axis=axis)
    # Guard the log against mse == 0, then apply the cap (also catches mse == 0).
    safe_mse = jnp.where(mse > 0, mse, 1.0)
    value = 10.0 * jnp.log10(jnp.float32(max_value) ** 2 / safe_mse)
    return jnp.where(mse > 0, jnp.minimum(value, PSNR_CAP_DB), PSNR_CAP_DB)


def _ssim_window(height: int, width: int) -> tuple[int, float]:
    """Window size and sigma for an image of the given size.

    The standard window is 11 px with sigma 1.5. Images smaller than that in either
    dimension get a window equal to the smaller dimension, with sigma scaled by the
    same factor (so the window still covers about +-3.5 sigma). A 1-px image gets a
    1-px window, i.e. SSIM computed from single pixels.
    """
    win = min(SSIM_WINDOW, height, width)
    sigma = SSIM_SIGMA * win / SSIM_WINDOW
    return win, sigma


def _gaussian_1d(win: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian taps, centred on the window (odd or even length)."""
    x = np.arange(win, dtype=np.float64) - (win - 1) / 2.0
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).astype(np.float32)


def _filter_valid(x_BHWC: jnp.ndarray, taps: np.ndarray) -> jnp.ndarray:
    """Separable 'valid' Gaussian filter over H and W (no padding, like tf.image.ssim).

    Implemented as a weighted sum of shifted slices: the window is at most 11 taps,
    so this is cheap, works for any number of batch dims, and jit-compiles to fused
    elementwise ops.
    """
    win = len(taps)
    h_out = x_BHWC.shape[-3] - win + 1
    w_out = x_BHWC.shape[-2] - win + 1
    y = sum(float(t) * x_BHWC[..., k : k + h_out, :, :] for k, t in enumerate(taps))
    return sum(float(t) * y[..., :, k : k + w_out, :] for k, t in enumerate(taps))


def ssim(a: jnp.ndarray, b: jnp.ndarray, max_value: float = 1.0) -> jnp.ndarray:
    """Structural similarity (Wang et al. 2004), one value per image.

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03, evaluated at every
    position where the window fits inside the image ('valid', no padding), per
    channel, then averaged over positions and channels. This matches
    ``tf.image.ssim``. For images smaller than 11 px see ``_ssim_window``.

    Args:
      a, b: images_BHWC with the same shape; floats in [0, max_value] (or uint8
        with max_value=255).
      max_value: dynamic range L of the pixel values; a Python number, static
        under jit.

    Returns:
      ssim_B: shape ``a.shape[:-3]``, 1.0 for identical images.
    """
    return _ssim(a, b, float(max_value))


@functools.partial(jax.jit, static_argnames=("max_value",))
def _ssim(a: jnp.ndarray, b: jnp.ndarray, max_value: float) -> jnp.ndarray:
    a = jnp.asarray(a, jnp.float32)
    b = jnp.asarray(b, jnp.float32)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    if a.ndim < 3:
        raise ValueError(f"expected (..., H, W, C) images, got shape {a.shape}")
    win, sigma = _ssim_window(a.shape[-3], a.shape[-2])
    taps = _gaussian_1d(win, sigma)
    c1 = (SSIM_K1 * max_value) ** 2
    c2 = (SSIM_K2 * max_value) ** 2

    mu_a = _filter_valid(a, taps)
    mu_b = _filter_valid(b, taps)
    # Local (co)variances as E[xy] - E[x]E[y] under the Gaussian weights.
    var_a = _filter_valid(a * a, taps) - mu_a * mu_a
    var_b = _filter_valid(b * b, taps) - mu_b * mu_b
    cov_ab = _filter_valid(a * b, taps) - mu_a * mu_b

    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov_ab + c2)
    den = (mu_a * mu_a + mu_b * mu_b + c1) * (var_a + var_b + c2)
    return jnp.mean(num / den, axis=(-3, -2, -1))
