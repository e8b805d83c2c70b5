"""The pieces `genie eval` and `genie inspect-actions` are built from: intervals, the code probe, the action reports
and the charts, against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from genie_jax.charts import bar_chart, count_matrix, signed_change
from genie_jax.eval_actions import alignment_report, usage_report
from genie_jax.metrics.probe import CodeProbe, majority_mapping
from genie_jax.metrics.stats import bootstrap_ci, mean_ci


def test_mean_ci_matches_the_t_formula():
    out = mean_ci([1.0, 2.0, 3.0, 4.0])
    half = 3.182446305284263 * np.std([1, 2, 3, 4], ddof=1) / 2  # t_{0.975, 3} * s / sqrt(4)
    assert out["mean"] == 2.5 and out["n"] == 4
    np.testing.assert_allclose(out["ci"], [2.5 - half, 2.5 + half], rtol=1e-9)
    assert mean_ci([7.0]) == {"mean": 7.0, "ci": None, "std": None, "n": 1}


def test_bootstrap_ci_over_groups():
    values = np.random.default_rng(0).normal(10.0, 1.0, size=40)
    out = bootstrap_ci(40, lambda rows: values[rows].mean(), resamples=300)
    lo, hi = out["ci"]
    assert lo < values.mean() < hi and out["n"] == 40
    # about the normal-theory width 2 * 1.96 * s / sqrt(n)
    assert 0.6 < (hi - lo) / (2 * 1.96 * values.std(ddof=1) / np.sqrt(40)) < 1.4
    assert bootstrap_ci(5, lambda rows: 3.0)["ci"] == [3.0, 3.0]
    assert bootstrap_ci(1, lambda rows: 3.0)["ci"] is None
    # A statistic that duplicates inflate (like FVD): the normal interval stays centred on the value.
    distinct = bootstrap_ci(40, lambda rows: len(set(rows.tolist())), resamples=100, method="normal")
    assert distinct["mean"] == 40 and distinct["ci"][0] < 40 < distinct["ci"][1]
    assert np.mean(distinct["ci"]) == pytest.approx(40)
    assert bootstrap_ci(40, lambda rows: len(set(rows.tolist())), resamples=100)["ci"][1] < 40  # percentile


def test_code_probe_by_hand():
    probe = CodeProbe.fit(np.array([0, 0, 1, 1, 2, 1]), np.array([5, 5, 6, 6, 6, 6]))
    assert probe.table == {5: 0, 6: 1} and probe.fallback == 1
    # code 7 was never seen: the most frequent label (1) is predicted
    np.testing.assert_array_equal(probe.predict([5, 6, 7]), [0, 1, 1])
    assert probe.accuracy(np.array([0, 2, 1]), np.array([5, 6, 7])) == pytest.approx(2 / 3)
    assert probe.chance(np.array([0, 2, 1])) == pytest.approx(1 / 3)
    assert majority_mapping([3, 3, 4, 4], [0, 0, 0, 1]) == {0: 3, 1: 4}
    with pytest.raises(ValueError, match="zero transitions"):
        CodeProbe.fit(np.array([], np.int64), np.array([], np.int64))


def test_action_reports_for_perfectly_aligned_codes():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 3, size=(10, 6))
    codes = np.array([2, 0, 3])[true]  # codes are a renaming of the true actions; code 1 is never used
    true_with_unknown = true.copy()
    true_with_unknown[:, -1] = -1  # unknown true actions are left out of the alignment
    report = alignment_report(codes, true_with_unknown, codes, true, ("a", "b", "c"), resamples=20)
    for key in ("nmi", "ari"):
        assert report[key]["mean"] == pytest.approx(1.0) and report[key]["n"] == 10
    assert report["best_one_to_one"]["accuracy"]["mean"] == 1.0
    assert report["best_one_to_one"]["mapping"] == {"2": "a", "0": "b", "3": "c"}
    assert report["probe"]["accuracy"]["mean"] == 1.0
    known = true_with_unknown[true_with_unknown >= 0]
    assert report["probe"]["chance"]["mean"] == pytest.approx(np.mean(known == np.bincount(true.ravel()).argmax()))
    assert report["transitions"] == 50
    usage = usage_report(codes, 4, resamples=20)
    assert usage["dead_codes"] == 1 and usage["dead_code_ids"] == [1] and usage["transitions"] == 60
    assert 1.0 < usage["perplexity"]["mean"] <= 3.0
    assert alignment_report(codes, np.full_like(true, -1), codes, true, ("a", "b", "c")) is None


def test_charts_are_images_of_the_right_shape():
    bars = bar_chart([0.5, 0.25, 0.25, 0.0], ["0", "1", "2", "3"], "usage of four latent actions on held-out clips")
    assert bars.dtype == np.uint8 and bars.ndim == 3 and bars.shape[2] == 3
    assert bars.shape[1] >= 4 * 44
    matrix = count_matrix(np.array([[3, 1], [0, 4], [2, 2]]), ["0", "1", "2"], ["left", "right"], "t",
                          row_title="latent", col_title="true")
    assert matrix.shape[0] > 3 * 34 and matrix.shape[2] == 3
    colours = signed_change(np.array([[0.0, 10.0, -10.0, 5.0]]), limit=10.0)
    np.testing.assert_array_equal(colours[0, :3], [[255, 255, 255], [255, 0, 0], [0, 0, 255]])
    np.testing.assert_array_equal(colours[0, 3], [255, 128, 128])
