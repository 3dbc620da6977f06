"""Min-norm solver on closed-form cases; naive and Pareto mixers."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import ConfigError
from training.losses import ScaleAndShiftInvariantLoss
from training.mixing import MixingConfig, create_mixer, min_norm_2, min_norm_weights


def _t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


@pytest.mark.parametrize("n", [2, 3, 5], ids=lambda n: f"L={n}")
def test_orthogonal_unit_vectors_get_equal_weights(n):
    w = min_norm_weights(torch.eye(n, dtype=torch.float64))
    assert w.tolist() == pytest.approx([1.0 / n] * n, abs=1e-4)


def test_orthogonal_vectors_weights_inverse_to_squared_norms():
    # min |sum w_i n_i e_i|^2 s.t. sum w = 1  ->  w_i proportional to 1 / n_i^2
    norms = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    w = min_norm_weights(torch.diag(norms))
    expected = (1 / norms**2) / (1 / norms**2).sum()
    assert w.tolist() == pytest.approx(expected.tolist(), abs=1e-4)


def test_two_vectors_known_min_norm_point():
    a, b = torch.tensor([3.0, 1.0], dtype=torch.float64), torch.tensor([-1.0, 2.0], dtype=torch.float64)
    w = min_norm_weights(torch.stack([a, b]))
    c = float(((b - a) @ b) / ((a - b) @ (a - b)))  # argmin |c a + (1-c) b|
    assert w.tolist() == pytest.approx([c, 1 - c], abs=1e-12)
    point = w[0] * a + w[1] * b
    assert float(point @ (a - b)) == pytest.approx(0.0, abs=1e-9)  # orthogonal to the segment


@pytest.mark.parametrize(
    "grads,expected",
    [
        (_t([1.0, 0.0], [2.0, 0.0]), [1.0, 0.0]),  # one vector dominates: pick the shorter
        (_t([1.0, 0.0], [-1.0, 0.0]), [0.5, 0.5]),  # opposed: the origin is reachable
        (_t([1.0, 1.0], [1.0, 1.0]), None),  # identical: any convex weights, norm |g|
    ],
    ids=["dominated", "opposed", "identical"],
)
def test_degenerate_cases(grads, expected):
    w = min_norm_weights(grads)
    assert float(w.sum()) == pytest.approx(1.0) and bool((w >= 0).all())
    if expected is not None:
        assert w.tolist() == pytest.approx(expected, abs=1e-9)
    else:
        assert float((w @ grads).norm()) == pytest.approx(2**0.5)


def test_frank_wolfe_matches_brute_force_on_random_three_vectors():
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(3, 4, generator=g, dtype=torch.float64)
    w = min_norm_weights(grads, max_iter=2000)
    best = min(
        float(((a / 200) * grads[0] + (b / 200) * grads[1] + (1 - a / 200 - b / 200) * grads[2]).norm())
        for a in range(201)
        for b in range(201 - a)
    )
    assert float((w @ grads).norm()) <= best + 1e-3


def test_min_norm_2_closed_form():
    c, cost = min_norm_2(1.0, 0.0, 1.0)
    assert (c, cost) == pytest.approx((0.5, 0.5))


def _parts(seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
    parts = []
    for _ in range(2):
        x = torch.rand(2, 8, 8, generator=g, dtype=torch.float64)
        target = torch.rand(2, 8, 8, generator=g, dtype=torch.float64)
        parts.append((w * x + x**2 * w**2, target, torch.ones(2, 8, 8, dtype=torch.bool)))
    return w, parts


def test_naive_mixer_is_loss_over_whole_batch():
    loss_fn = ScaleAndShiftInvariantLoss("mae", alpha=0.0)
    w, parts = _parts(1)
    loss, info = create_mixer(MixingConfig("naive")).combine(parts, loss_fn, [w])
    whole = loss_fn(
        torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])
    )
    assert loss.item() == pytest.approx(whole.item())
    assert len(info["losses"]) == 2


def test_pareto_mixer_weights_are_the_min_norm_solution():
    loss_fn = ScaleAndShiftInvariantLoss("mse", alpha=0.5)
    w, parts = _parts(2)
    loss, info = create_mixer(MixingConfig("pareto")).combine(parts, loss_fn, [w])
    grads = torch.stack([torch.autograd.grad(loss_fn(*p), [w], retain_graph=True)[0].reshape(1) for p in parts])
    expected = min_norm_weights(grads)
    assert info["weights"] == pytest.approx(expected.tolist())
    assert sum(info["weights"]) == pytest.approx(1.0)
    loss.backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_unknown_strategy_lists_valid():
    with pytest.raises(ConfigError, match="pareto"):
        create_mixer(MixingConfig("ensemble"))
