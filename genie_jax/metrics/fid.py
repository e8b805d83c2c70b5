"""Frechet distance between Gaussians fitted to features (the math behind FID/FVD).

FVD = frechet_distance of I3D features of real vs generated clips; the feature
extractor lives elsewhere. Everything here is float64 NumPy/SciPy on the host.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


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
    eps: float = 1e-6,
) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

    Follows the reference FID code (Heusel et al. / pytorch-fid): if the matrix
    square root is not finite (near-singular covariances, e.g. fewer samples than
    feature dims), retry with eps * I added to both covariances; a small imaginary
    part from rounding is dropped, a large one is an error. The result is clipped
    at 0 (tiny negatives are rounding).
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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # singular-matrix chatter
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real

    dist = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return max(float(dist), 0.0)
