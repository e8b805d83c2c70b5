"""A held-out probe from discrete latent codes to true labels, with its chance level (host side, NumPy).

The input is one of |A| codes, so the best probe any model (an MLP on a one-hot code included) can learn is the
lookup table code -> most frequent true label on the fitting data. It is fitted on one set of transitions and scored
on another; chance is always predicting the fitting data's most frequent label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def majority_mapping(true_N: np.ndarray, codes_N: np.ndarray) -> dict[int, int]:
    """{code: the true label it co-occurs with most often} over the codes present (ties: smallest label)."""
    true_N, codes_N = np.asarray(true_N).reshape(-1), np.asarray(codes_N).reshape(-1)
    return {int(c): int(np.bincount(true_N[codes_N == c]).argmax()) for c in np.unique(codes_N)}


@dataclass(frozen=True)
class CodeProbe:
    table: dict[int, int]  # code -> predicted true label
    fallback: int  # prediction for codes never seen while fitting: the most frequent label

    @classmethod
    def fit(cls, true_N: np.ndarray, codes_N: np.ndarray) -> CodeProbe:
        true_N = np.asarray(true_N).reshape(-1)
        if true_N.size == 0:
            raise ValueError("cannot fit a probe on zero transitions with known true actions")
        return cls(majority_mapping(true_N, codes_N), int(np.bincount(true_N).argmax()))

    def predict(self, codes_N: np.ndarray) -> np.ndarray:
        codes_N = np.asarray(codes_N).reshape(-1)
        return np.array([self.table.get(int(c), self.fallback) for c in codes_N], np.int64)

    def accuracy(self, true_N: np.ndarray, codes_N: np.ndarray) -> float:
        true_N = np.asarray(true_N).reshape(-1)
        return float((self.predict(codes_N) == true_N).mean()) if true_N.size else float("nan")

    def chance(self, true_N: np.ndarray) -> float:
        """Accuracy of always answering the fitting data's most frequent label."""
        true_N = np.asarray(true_N).reshape(-1)
        return float((true_N == self.fallback).mean()) if true_N.size else float("nan")
