"""Frechet distance between Gaussians fitted to features (the math behind FID/FVD).

FVD = frechet_distance of I3D features of real vs generated clips; the feature
extractor lives elsewhere. Everything here is float64 NumPy on the host.
"""

from __future__ import annotations

import numpy as np


def feature_statistics(features_NF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean mu_F and covariance sigma_FF (unbiased, N-1) of N feature vectors."""
    x = np.asarray(features_NF, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"need features of shape (N >= 2, F), got {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    Tr((sigma1 sigma2)^(1/2)) is computed as the sum of the square roots of the eigenvalues of the symmetric
    sigma1^(1/2) sigma2 sigma1^(1/2), which are those of sigma1 sigma2 and real. The reference FID code takes
    scipy's sqrtm of the product instead, which on near-singular covariances (fewer clips than feature dimensions,
    the usual case for FVD at small scale) returns large spurious imaginary parts. The result is clipped at 0
    (tiny negatives are rounding).
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError("mean vectors / covariances have different shapes")
    if sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"covariance shape {sigma1.shape} does not match mean {mu1.shape}")

    diff = mu1 - mu2
    dist = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * _trace_sqrt_product(sigma1, sigma2)
    return max(float(dist), 0.0)


def _trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^(1/2)) for symmetric positive semi-definite sigmas (rounding negatives clipped)."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    inner = root1 @ sigma2 @ root1
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum())
