"""How well discrete latent codes line up with known labels (host side, NumPy/SciPy).

Used to score latent actions against ground-truth actions when those are known,
and to check codebook health (usage, perplexity, dead codes). Labels can be any
hashable values NumPy can ``np.unique`` (ints, strings); inputs are flattened.
Entropies and mutual information are in nats.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


def _as_labels(labels_a: Any, labels_b: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(labels_a).reshape(-1)
    b = np.asarray(labels_b).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"label arrays differ in length: {a.size} vs {b.size}")
    return a, b


def _contingency_with_classes(
    labels_a: Any, labels_b: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = _as_labels(labels_a, labels_b)
    classes_a, idx_a = np.unique(a, return_inverse=True)
    classes_b, idx_b = np.unique(b, return_inverse=True)
    table = np.zeros((classes_a.size, classes_b.size), dtype=np.int64)
    np.add.at(table, (idx_a.reshape(-1), idx_b.reshape(-1)), 1)
    return table, classes_a, classes_b


def contingency(labels_a: Any, labels_b: Any) -> np.ndarray:
    """Counts table_AB[i, j] = #samples with the i-th distinct value of labels_a and
    the j-th distinct value of labels_b (distinct values in sorted order)."""
    return _contingency_with_classes(labels_a, labels_b)[0]


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    if counts.size == 0:
        return 0.0
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def _mutual_info_from_table(table: np.ndarray) -> float:
    n = table.sum()
    if n == 0:
        return 0.0
    p_ab = table.astype(np.float64) / n
    p_a = p_ab.sum(axis=1, keepdims=True)
    p_b = p_ab.sum(axis=0, keepdims=True)
    nz = p_ab > 0
    mi = (p_ab[nz] * np.log(p_ab[nz] / (p_a * p_b)[nz])).sum()
    return max(float(mi), 0.0)  # clip -1e-17-style rounding


def mutual_information(labels_a: Any, labels_b: Any) -> float:
    """I(A; B) in nats between two labelings of the same samples."""
    return _mutual_info_from_table(contingency(labels_a, labels_b))


def normalized_mutual_info(true: Any, pred: Any) -> float:
    """NMI = I(T; P) / mean(H(T), H(P)) (arithmetic mean, sklearn's default).

    1.0 for labelings that are identical up to renaming. Degenerate cases (where
    the formula is 0/0): both labelings constant (or empty) -> 1.0; exactly one
    constant -> 0.0 (it carries no information about the other).
    """
    table = contingency(true, pred)
    n_true, n_pred = table.shape
    if (n_true <= 1 and n_pred <= 1):
        return 1.0
    mi = _mutual_info_from_table(table)
    if mi == 0.0:  # includes the one-constant case
        return 0.0
    h_true = _entropy(table.sum(axis=1))
    h_pred = _entropy(table.sum(axis=0))
    return float(min(mi / (0.5 * (h_true + h_pred)), 1.0))


def adjusted_rand_index(true: Any, pred: Any) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985): 1.0 for identical partitions,
    ~0.0 in expectation for independent random labelings, can be negative.

    Computed from the pair-confusion counts (as sklearn does), which gives 1.0 in
    the degenerate cases where both partitions agree on every pair (e.g. both
    constant, or both all-singletons).
    """
    table = contingency(true, pred).astype(np.float64)
    n = table.sum()
    sum_sq = (table**2).sum()
    rows = table.sum(axis=1)
    cols = table.sum(axis=0)
    # Ordered-pair counts: same cluster in both / only in pred / only in true / neither.
    tp = sum_sq - n
    fp = (table @ cols).sum() - sum_sq  # together in pred, apart in true
    fn = (table.T @ rows).sum() - sum_sq  # together in true, apart in pred
    tn = n * n - fp - fn - sum_sq
    if fn == 0 and fp == 0:
        return 1.0
    return float(2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)))


def best_one_to_one_mapping(true: Any, pred: Any) -> tuple[dict[Any, Any], float]:
    """Best one-to-one assignment of predicted labels to true labels (Hungarian).

    Returns:
      mapping: {pred_label: true_label} maximising the number of matched samples.
        When there are more predicted labels than true ones, the extra predicted
        labels are left out of the mapping (their samples count as wrong).
      accuracy: fraction of samples whose pred label maps to their true label.
    """
    table, classes_true, classes_pred = _contingency_with_classes(true, pred)
    if table.sum() == 0:
        return {}, 0.0
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = {classes_pred[c].item(): classes_true[r].item() for r, c in zip(rows, cols)}
    accuracy = float(table[rows, cols].sum() / table.sum())
    return mapping, accuracy


def code_usage(codes: Any, num_codes: int) -> dict[str, Any]:
    """Codebook usage statistics for integer codes in [0, num_codes).

    Returns a dict with
      frequency: list[float] of length num_codes, fraction of samples per code;
      perplexity: exp(entropy of frequency) -- the effective number of codes in use,
        num_codes for uniform usage, 1.0 when a single code is used (0.0 if empty);
      dead_codes: number of codes never used.
    """
    codes = np.asarray(codes).reshape(-1)
    if codes.size and (codes.min() < 0 or codes.max() >= num_codes):
        raise ValueError(f"codes must lie in [0, {num_codes}), got [{codes.min()}, {codes.max()}]")
    counts = np.bincount(codes.astype(np.int64), minlength=num_codes)
    total = counts.sum()
    frequency = counts / total if total else np.zeros(num_codes, dtype=np.float64)
    perplexity = float(np.exp(_entropy(counts))) if total else 0.0
    return {
        "frequency": frequency.tolist(),
        "perplexity": perplexity,
        "dead_codes": int((counts == 0).sum()),
    }
