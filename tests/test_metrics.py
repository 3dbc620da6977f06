"""Metrics against hand-computed cases (docs/METHOD.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training import metrics


def test_alignment_recovers_exact_scale_and_shift():
    d = np.array([[1.0, 2.0], [3.0, 4.0]])
    gt = 2.0 * d + 3.0
    s, t = metrics.fit_scale_shift(d, gt)
    assert (s, t) == pytest.approx((2.0, 3.0))
    np.testing.assert_allclose(metrics.align_scale_shift(d, gt), gt)


def test_alignment_least_squares_by_hand():
    # points (0,0), (1,1), (2,1): normal equations [[5,3],[3,3]] [s,t] = [3,2] -> s=0.5, t=1/6
    d = np.array([[0.0, 1.0, 2.0]])
    gt = np.array([[0.0, 1.0, 1.0]])
    s, t = metrics.fit_scale_shift(d, gt)
    assert s == pytest.approx(0.5) and t == pytest.approx(1 / 6)


def test_alignment_ignores_masked_pixels():
    d = np.array([[1.0, 2.0, 3.0, 100.0]])
    gt = np.array([[1.0, 2.0, 3.0, -50.0]])
    mask = np.array([[True, True, True, False]])
    assert metrics.fit_scale_shift(d, gt, mask) == pytest.approx((1.0, 0.0))


@pytest.mark.parametrize(
    "prediction, mask, expected",
    [
        pytest.param(np.full((2, 2), 5.0), None, (0.0, 2.5), id="constant-prediction->mean"),
        pytest.param(np.arange(4.0).reshape(2, 2), np.zeros((2, 2), bool), (1.0, 0.0), id="empty-mask->identity"),
        pytest.param(
            np.arange(4.0).reshape(2, 2),
            np.eye(2, dtype=bool) & [[True, False], [False, False]],
            (0.0, 1.0),
            id="one-pixel",
        ),
    ],
)
def test_alignment_singular_cases_are_guarded(prediction, mask, expected):
    gt = np.array([[1.0, 2.0], [3.0, 4.0]])
    s, t = metrics.fit_scale_shift(prediction, gt, mask)
    assert (s, t) == pytest.approx(expected)
    assert np.isfinite(metrics.align_scale_shift(prediction, gt, mask)).all()


def test_torch_tensors_are_accepted():
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert metrics.fit_scale_shift(d, d * 3) == pytest.approx((3.0, 0.0))


def test_abs_rel_by_hand():
    z = np.array([[1.0, 3.0]])
    gt = np.array([[2.0, 2.0]])
    assert metrics.abs_rel(z, gt) == pytest.approx(0.5)  # (1/2 + 1/2) / 2


def test_delta_is_the_error_rate_in_percent():
    gt = np.ones((1, 4))
    z = np.array([[1.0, 1.2, 1.3, 0.5]])  # ratios 1, 1.2, 1.3, 2 -> two beyond 1.25
    assert metrics.delta_accuracy(z, gt) == pytest.approx(50.0)
    assert metrics.delta_accuracy(z, gt, threshold=1.25**2) == pytest.approx(25.0)


def test_rmse_disparity_by_hand():
    assert metrics.rmse_disparity(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0]])) == pytest.approx(math.sqrt(12.5))


def test_empty_mask_gives_nan():
    a = np.ones((2, 2))
    assert math.isnan(metrics.abs_rel(a, a, np.zeros((2, 2), bool)))


def test_disparity_to_depth_caps_after_alignment():
    z = metrics.disparity_to_depth(np.array([[0.5, 0.01, -1.0]]), cap=10.0)
    np.testing.assert_allclose(z, [[2.0, 10.0, 10.0]])


def test_evaluate_depth_perfect_up_to_scale_and_shift():
    gt_depth = np.array([[1.0, 2.0], [4.0, 8.0]])
    pred = 7.0 / gt_depth + 0.25  # disparity up to scale and shift
    out = metrics.evaluate_depth(pred, gt_depth, depth_cap=10.0)
    assert out["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    assert out["delta_1.25"] == 0.0
    assert out["rmse_disparity"] == pytest.approx(0.0, abs=1e-9)


def test_evaluate_depth_cap_limits_far_predictions():
    # gt at 1 m and 20 m; prediction aligned exactly but the cap is 10 m -> the far pixel reads 10 m
    gt_depth = np.array([[1.0, 20.0]])
    out = metrics.evaluate_depth(1.0 / gt_depth, gt_depth, depth_cap=10.0)
    assert out["abs_rel"] == pytest.approx((0 + 0.5) / 2)
    assert out["delta_1.25"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    "relation, expected",
    [pytest.param("<", 0.0, id="A-closer-agrees"), pytest.param(">", 100.0, id="A-farther-disagrees")],
)
def test_whdr_sign_convention(relation, expected):
    disparity = np.array([[5.0, 1.0]])  # (0,0) is near, (0,1) is far
    assert metrics.whdr(disparity, [(0, 0, 0, 1, relation)]) == expected


def test_whdr_counts_ties_and_depth_predictions():
    pairs = [(0, 0, 0, 1, "<"), (0, 0, 0, 1, ">"), (0, 0, 0, 0, "<"), (0, 0, 0, 1, "=")]
    assert metrics.whdr(np.array([[5.0, 1.0]]), pairs) == pytest.approx(200 / 3)
    depth = np.array([[1.0, 5.0]])
    assert metrics.whdr(depth, [(0, 0, 0, 1, "<")], prediction_is_depth=True) == 0.0


def test_evaluate_disparity_handles_negative_movie_disparity():
    gt = np.linspace(-5, 20, 64).reshape(8, 8)  # behind and in front of the screen
    out = metrics.evaluate_disparity(0.1 * gt + 3.0, gt)
    assert out["rmse_disparity"] == pytest.approx(0.0, abs=1e-9)
    assert out["ordinal_error"] == 0.0
    scrambled = metrics.evaluate_disparity(np.random.default_rng(1).permutation(gt.ravel()).reshape(8, 8), gt)
    assert scrambled["rmse_disparity"] > 1.0 and scrambled["ordinal_error"] > 20.0


def test_evaluate_depth_equals_the_composed_public_functions():
    rng = np.random.default_rng(3)
    depth = rng.uniform(0.5, 30.0, (16, 24)).astype(np.float32)
    mask = rng.random((16, 24)) > 0.2
    pred = (1.0 / depth + rng.normal(0, 0.2, depth.shape)).astype(np.float32)  # some go negative
    aligned = metrics.align_scale_shift(pred, metrics.depth_to_disparity(depth, mask), mask)
    z = metrics.disparity_to_depth(aligned, cap=20.0)
    expected = {
        "abs_rel": metrics.abs_rel(z, depth, mask),
        "delta_1.25": metrics.delta_accuracy(z, depth, mask),
        "rmse_disparity": metrics.rmse_disparity(aligned, metrics.depth_to_disparity(depth, mask), mask),
    }
    assert metrics.evaluate_depth(pred, depth, mask, depth_cap=20.0) == pytest.approx(expected, rel=1e-9)
