"""Tests for genie_jax.metrics: PSNR/SSIM (JAX), label alignment, Frechet distance."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from genie_jax.metrics import (
    PSNR_CAP_DB,
    adjusted_rand_index,
    best_one_to_one_mapping,
    code_usage,
    contingency,
    feature_statistics,
    frechet_distance,
    mutual_information,
    normalized_mutual_info,
    psnr,
    ssim,
)

# ---------------------------------------------------------------- PSNR


def test_psnr_identical_is_cap() -> None:
    x = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    out = np.asarray(psnr(x, x))
    assert out.shape == (3,)
    np.testing.assert_array_equal(out, PSNR_CAP_DB)
    assert PSNR_CAP_DB == 100.0


def test_psnr_uniform_noise_matches_formula() -> None:
    rng = np.random.default_rng(1)
    a = rng.random((4, 16, 16, 3))
    b = a + rng.uniform(-0.1, 0.1, size=a.shape)
    mse = ((a - b) ** 2).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(psnr(a, b)), 10 * np.log10(1.0 / mse), rtol=1e-5)
    # Uniform noise on [-d, d] has MSE d^2/3: here ~ 10*log10(300) = 24.77 dB.
    assert abs(float(psnr(a, b).mean()) - 10 * math.log10(3 / 0.1**2)) < 0.3


def test_psnr_uint8_axis_and_jit() -> None:
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)
    ref = np.asarray(psnr(a / 255.0, b / 255.0))
    out = np.asarray(jax.jit(lambda x, y: psnr(x, y, max_value=255.0))(a, b))
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out, ref, rtol=1e-5)  # uint8 does not wrap around
    whole = np.asarray(psnr(a / 255.0, b / 255.0, axis=(-4, -3, -2, -1)))
    assert whole.shape == (2,)


# ---------------------------------------------------------------- SSIM


def _ssim_reference(a_HWC: np.ndarray, b_HWC: np.ndarray, max_value: float = 1.0) -> float:
    """Direct Wang et al. formula: weighted stats under an 11x11 Gaussian window
    (sigma 1.5) at every position where it fits, averaged over positions/channels."""
    win, sigma = 11, 1.5
    ax = np.arange(win) - (win - 1) / 2
    w = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * sigma**2))
    w /= w.sum()
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    vals = []
    for c in range(a_HWC.shape[-1]):
        pa = sliding_window_view(a_HWC[..., c].astype(np.float64), (win, win))  # (H', W', 11, 11)
        pb = sliding_window_view(b_HWC[..., c].astype(np.float64), (win, win))
        mu_a = (w * pa).sum(axis=(-2, -1))
        mu_b = (w * pb).sum(axis=(-2, -1))
        da = pa - mu_a[..., None, None]
        db = pb - mu_b[..., None, None]
        var_a = (w * da * da).sum(axis=(-2, -1))
        var_b = (w * db * db).sum(axis=(-2, -1))
        cov = (w * da * db).sum(axis=(-2, -1))
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
            (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
        )
        vals.append(s)
    return float(np.mean(vals))


def test_ssim_identical_is_one() -> None:
    x = np.random.default_rng(3).random((2, 3, 16, 20, 3), dtype=np.float32)
    out = np.asarray(ssim(x, x))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_ssim_matches_numpy_reference() -> None:
    rng = np.random.default_rng(4)
    a = rng.random((3, 20, 24, 3))
    # Correlated second image so SSIM is well away from 0 and 1.
    b = np.clip(0.7 * a + 0.3 * rng.random(a.shape), 0, 1)
    b[2] = rng.random(b[2].shape)  # and one unrelated pair
    out = np.asarray(jax.jit(ssim)(a.astype(np.float32), b.astype(np.float32)))
    ref = np.array([_ssim_reference(a[i], b[i]) for i in range(3)])
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert ref[0] < 0.95 and abs(ref[2]) < 0.2


def test_ssim_uint8_and_tiny_images() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    b = rng.integers(0, 256, (2, 16, 16, 1), dtype=np.uint8)
    np.testing.assert_allclose(
        np.asarray(ssim(a, b, max_value=255.0)),
        np.asarray(ssim(a / 255.0, b / 255.0)),
        atol=1e-5,
    )
    tiny = rng.random((2, 5, 7, 3), dtype=np.float32)  # window shrinks to 5
    np.testing.assert_allclose(np.asarray(ssim(tiny, tiny)), 1.0, atol=1e-6)
    assert np.all(np.isfinite(np.asarray(ssim(tiny, tiny[::-1]))))
    assert np.asarray(ssim(tiny[:, :1, :1], tiny[::-1, :1, :1])).shape == (2,)


# ---------------------------------------------------------------- alignment


def test_contingency_and_mi() -> None:
    table = contingency([0, 0, 1, 1], ["b", "b", "b", "a"])
    # columns are sorted distinct values of the second labeling: "a", "b"
    np.testing.assert_array_equal(table, [[0, 2], [1, 1]])
    assert mutual_information([0, 1, 0, 1], [5, 7, 5, 7]) == pytest.approx(math.log(2))


def test_nmi_permutation_and_degenerate_cases() -> None:
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([7, 7, 3, 3, 9, 9, 9])  # same partition, renamed
    assert normalized_mutual_info(true, pred) == pytest.approx(1.0)
    assert normalized_mutual_info([1, 1, 1], [4, 4, 4]) == 1.0  # both constant
    assert normalized_mutual_info([1, 1, 1], [0, 1, 2]) == 0.0  # one constant
    assert normalized_mutual_info([0, 1, 0, 1], [3, 3, 3, 3]) == 0.0
    assert normalized_mutual_info([0, 1, 0, 1], [0, 0, 1, 1]) == pytest.approx(0.0, abs=1e-12)


def test_nmi_hand_computed_2x2() -> None:
    # true = [0,0,1,1], pred = [0,0,0,1] -> contingency [[2,0],[1,1]] / 4:
    #   p(t,p) = [[.5, 0], [.25, .25]],  p(t) = [.5, .5],  p(p) = [.75, .25]
    #   I = .5 ln(.5/.375) + .25 ln(.25/.375) + .25 ln(.25/.125)
    #     = .5 ln(4/3) + .25 ln(2/3) + .25 ln 2                  = 0.215762
    #   H(t) = ln 2 = 0.693147;  H(p) = -.75 ln .75 - .25 ln .25 = 0.562335
    #   NMI = I / ((H(t) + H(p)) / 2) = 0.215762 / 0.627741      = 0.343712
    mi = 0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * math.log(2)
    h_p = -0.75 * math.log(0.75) - 0.25 * math.log(0.25)
    expected = mi / ((math.log(2) + h_p) / 2)
    assert expected == pytest.approx(0.343712, abs=1e-6)
    assert mutual_information([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(mi)
    assert normalized_mutual_info([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(expected)


def test_ari_hand_computed() -> None:
    assert adjusted_rand_index([0, 0, 1, 1, 2], [2, 2, 0, 0, 1]) == pytest.approx(1.0)
    # true=[0,0,1,1], pred=[0,0,0,1]: contingency [[2,0],[1,1]]
    #   sum C(n_ij,2) = 1;  rows [2,2] -> 1+1 = 2;  cols [3,1] -> 3+0 = 3;  C(4,2) = 6
    #   expected = 2*3/6 = 1,  max = (2+3)/2 = 2.5  ->  ARI = (1-1)/(2.5-1) = 0
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 0, 1]) == pytest.approx(0.0, abs=1e-12)
    # true=[0,0,1,1,2,2], pred=[0,0,1,2,2,2]: sum C(n_ij,2) = 1+1 = 2
    #   rows [2,2,2] -> 3;  cols [2,1,3] -> 1+0+3 = 4;  C(6,2) = 15
    #   expected = 3*4/15 = 0.8,  max = 3.5  ->  ARI = 1.2/2.7 = 4/9
    assert adjusted_rand_index([0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 2]) == pytest.approx(4 / 9)
    assert adjusted_rand_index([1, 1, 1], [2, 2, 2]) == 1.0


def test_ari_matches_pair_counting_formula_on_random_labels() -> None:
    rng = np.random.default_rng(6)
    true = rng.integers(0, 4, 200)
    pred = np.where(rng.random(200) < 0.6, true, rng.integers(0, 5, 200))
    table = contingency(true, pred)
    comb2 = lambda x: x * (x - 1) / 2  # noqa: E731
    index = comb2(table).sum()
    a, b = comb2(table.sum(1)).sum(), comb2(table.sum(0)).sum()
    expected_index = a * b / comb2(200)
    ref = (index - expected_index) / ((a + b) / 2 - expected_index)
    assert adjusted_rand_index(true, pred) == pytest.approx(ref)
    assert 0.2 < ref < 0.9


def test_best_one_to_one_mapping() -> None:
    rng = np.random.default_rng(7)
    true = rng.integers(0, 4, 50)
    perm = np.array([2, 0, 3, 1])
    mapping, acc = best_one_to_one_mapping(true, perm[true])
    assert acc == 1.0
    assert mapping == {int(perm[t]): t for t in range(4)}
    # Noisy case: compare with brute force over all permutations.
    pred = perm[true].copy()
    pred[:15] = rng.integers(0, 4, 15)
    best = max(np.mean(np.array(p)[pred] == true) for p in itertools.permutations(range(4)))
    mapping, acc = best_one_to_one_mapping(true, pred)
    assert acc == pytest.approx(best)
    assert np.mean([mapping[p] == t for p, t in zip(pred, true)]) == pytest.approx(acc)


def test_best_mapping_more_clusters_than_classes() -> None:
    mapping, acc = best_one_to_one_mapping([0, 0, 1, 1], [5, 5, 6, 7])
    assert mapping[5] == 0 and len(mapping) == 2
    assert acc == pytest.approx(0.75)


def test_code_usage() -> None:
    uniform = code_usage(np.tile(np.arange(8), 10), num_codes=8)
    assert uniform["perplexity"] == pytest.approx(8.0)
    assert uniform["dead_codes"] == 0
    assert uniform["frequency"] == pytest.approx([1 / 8] * 8)
    one = code_usage(jnp.full((3, 4), 2), num_codes=16)
    assert one["perplexity"] == pytest.approx(1.0)
    assert one["dead_codes"] == 15
    half = code_usage([0, 1, 0, 1], num_codes=4)
    assert half["perplexity"] == pytest.approx(2.0) and half["dead_codes"] == 2
    with pytest.raises(ValueError):
        code_usage([0, 4], num_codes=4)


# ---------------------------------------------------------------- Frechet distance


def _frechet_reference(mu1, s1, mu2, s2) -> float:
    """Symmetric form: Tr((S1^1/2 S2 S1^1/2)^1/2) = Tr((S1 S2)^1/2), via eigh."""

    def psd_sqrt(m):
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r1 = psd_sqrt(s1)
    cross = psd_sqrt(r1 @ s2 @ r1)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(cross))


def test_frechet_distance_matches_reference() -> None:
    rng = np.random.default_rng(8)
    f = 12
    x = rng.normal(size=(500, f)) @ rng.normal(size=(f, f))
    y = rng.normal(loc=0.3, size=(400, f)) @ rng.normal(size=(f, f))
    mu1, s1 = feature_statistics(x)
    mu2, s2 = feature_statistics(y)
    np.testing.assert_allclose(mu1, x.mean(0))
    np.testing.assert_allclose(s1, np.cov(x.T))
    got = frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float)
    assert got == pytest.approx(_frechet_reference(mu1, s1, mu2, s2), rel=1e-6)
    from scipy import linalg  # the reference FID code's way, fine on well-conditioned covariances

    scipy_way = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real)
    assert got == pytest.approx(scipy_way, rel=1e-6)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_1d_closed_form_and_singular() -> None:
    # For 1-D Gaussians: (m1 - m2)^2 + (sd1 - sd2)^2.
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4 + 1)
    # Fewer samples than dims -> singular covariances; must still be finite.
    rng = np.random.default_rng(9)
    mu1, s1 = feature_statistics(rng.normal(size=(5, 20)))
    mu2, s2 = feature_statistics(rng.normal(size=(5, 20)))
    d = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(d) and d > 0
    # 4 clips of 400-d features (FVD at small scale): scipy's sqrtm of the product gave imaginary parts near 1.
    x, y = rng.normal(size=(4, 400)), rng.normal(size=(4, 400))
    (m1, c1), (m2, c2) = feature_statistics(x), feature_statistics(y)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-6)
    assert np.isfinite(frechet_distance(m1, c1, m2, c2)) and frechet_distance(m1, c1, m2, c2) > 0
