"""Evaluation metrics: image quality (JAX), label alignment and Frechet distance (host)."""

from genie_jax.metrics.alignment import (
    adjusted_rand_index,
    best_one_to_one_mapping,
    code_usage,
    contingency,
    mutual_information,
    normalized_mutual_info,
)
from genie_jax.metrics.fid import feature_statistics, frechet_distance
from genie_jax.metrics.image import PSNR_CAP_DB, psnr, ssim

__all__ = [
    "PSNR_CAP_DB",
    "adjusted_rand_index",
    "best_one_to_one_mapping",
    "code_usage",
    "contingency",
    "feature_statistics",
    "frechet_distance",
    "mutual_information",
    "normalized_mutual_info",
    "psnr",
    "ssim",
]
