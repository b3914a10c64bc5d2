"""Theory of q (Likhosherstov et al. 2021 eq. 15, 19-21) against hand-computed values."""

import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from ablo import theory

sys.path.insert(0, str(Path(__file__).parent))
import _problems  # noqa: E402


def eq21_root(D2, V2, C_det, C_rnd, eps):
    """The positive root of eq. 21 with its coefficients as printed, by the quadratic formula."""
    a = C_rnd * (V2 - D2)
    b = (2 * eps + 1) / (2 * eps - 1) * D2 * C_rnd
    c = 2 / (2 * eps - 1) * D2 * C_det
    return (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)


@pytest.mark.parametrize("D2,V2,eps", [(1.0, 11.0, 0.0), (1.0, 23.0, 0.25)])
def test_q_star_hand_solved_half(D2, V2, eps):
    # eps = 0:    (11 − 1) q² − q − 2 = 0 has root q = 1/2 (C_det = C_rnd = 1).
    # eps = 1/4:  (23 − 1) q² − 3q − 4 = 0 has root q = 1/2.
    assert theory.q_star(D2, V2, 1.0, 1.0, eps) == pytest.approx(0.5, rel=1e-12)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.25, 0.4])
@pytest.mark.parametrize("D2,V2,C_det,C_rnd", [(53.0, 2232.0, 11.0, 55.0), (0.3, 40.0, 2.0, 7.0), (2.0, 9.0, 1.0, 5.0)])
def test_q_star_is_root_of_eq21_and_minimises_eq19(D2, V2, C_det, C_rnd, eps):
    holds = theory.condition_20(D2, V2, C_det, C_rnd, eps)
    q = theory.q_star(D2, V2, C_det, C_rnd, eps)
    if not holds:
        assert q == 1.0
        return
    assert 0 < q < 1
    assert q == pytest.approx(eq21_root(D2, V2, C_det, C_rnd, eps), rel=1e-10)
    grid = np.linspace(1e-3, 1.0, 20000)
    t = theory.expected_time(grid, D2, V2, C_det, C_rnd, eps)
    assert abs(grid[np.argmin(t)] - q) < 2e-3


def test_condition_20_boundary_and_failure():
    # eq. 20 at eps = 0, C_det = C_rnd = 1: q* < 1 iff D² < V²/4.
    assert theory.condition_20(0.99, 4.0, 1.0, 1.0)
    assert not theory.condition_20(1.01, 4.0, 1.0, 1.0)
    assert theory.q_star(1.01, 4.0, 1.0, 1.0) == 1.0
    assert theory.q_star(0.99, 4.0, 1.0, 1.0) == pytest.approx(eq21_root(0.99, 4.0, 1.0, 1.0, 0.0))
    assert theory.q_star(0.0, 4.0, 1.0, 1.0) == 0.0  # FOM unbiased: no exact branch needed


def test_q_star_array_matches_and_jits():
    f = jax.jit(theory.q_star_array)
    for args in [(53.0, 2232.0, 11.0, 55.0, 0.0), (3.0, 4.0, 11.0, 55.0, 0.0), (0.3, 40.0, 2.0, 7.0, 0.25)]:
        assert float(f(*args)) == pytest.approx(theory.q_star(*args), rel=1e-9)


def test_d_bound_by_hand():
    # (1 + M1) L1 L2 Σ_j α_j Π_{j'≥j}(1 + α_j' L2) with M1 = 1, L1 = 2, L2 = 1, α = (1/2, 1/4):
    # j = 1: 0.5·1.5·1.25 = 0.9375; j = 2: 0.25·1.25 = 0.3125; total 2·2·1·1.25 = 5.
    assert theory.d_bound(1.0, 2.0, 1.0, [0.5, 0.25]) == pytest.approx(5.0)
    assert theory.d_bound(0.0, 1.0, 2.0, [0.1]) == pytest.approx(1 * 1 * 2 * 0.1 * 1.2)
    # constant α = 0.5, r = 2, M1 = 0, L1 = L2 = 1: 0.5·1.5² + 0.5·1.5 = 1.875
    assert theory.d_bound(0.0, 1.0, 1.0, 0.5, r=2) == pytest.approx(1.875)


def test_cost_model_and_expected_time():
    assert theory.cost_model(10) == (11.0, 55.0)
    assert theory.cost_model(4, C1=2.0, C2=3.0) == (10.0, 24.0)
    # eq. 19 at q = 1 is V^(2/(1−2ε)) (C_det + C_rnd)
    assert theory.expected_time(1.0, 5.0, 3.0, 2.0, 4.0, eps=0.25) == pytest.approx(3.0 ** 4 * 6.0)
    assert theory.expected_time(0.5, 1.0, 3.0, 2.0, 4.0) == pytest.approx(4.0 ** 2 * 4.0)


def test_bias_variance_by_hand():
    g_fo = np.array([[1.0, 0.0], [0.0, 2.0]])
    g_ex = np.array([[0.0, 0.0], [0.0, 1.0]])
    assert theory.bias_variance(g_fo, g_ex) == pytest.approx((1.0, 0.5))
    d2, v2 = theory.bias_variance({"a": g_fo, "b": g_fo[:, :1]}, {"a": g_ex, "b": g_ex[:, :1]})
    assert (d2, v2) == pytest.approx((1.5, 0.5))


def test_measure_unit_costs_positive():
    prob = _problems.problem("gd", 3)
    c1, c2 = theory.measure_unit_costs(prob, _problems.make_theta(), _problems.make_task(jax.random.PRNGKey(0)),
                                       repeats=3)
    assert c1 > 0 and c2 > 0


@pytest.mark.parametrize("call,name", [
    (lambda: theory.q_star(1.0, 2.0, 1.0, 1.0, eps=0.5), "eps"),
    (lambda: theory.q_star(-1.0, 2.0, 1.0, 1.0), "D2"),
    (lambda: theory.q_star(1.0, 2.0, 0.0, 1.0), "C_det"),
    (lambda: theory.expected_time(0.0, 1.0, 2.0, 1.0, 1.0), "q"),
    (lambda: theory.d_bound(1.0, 1.0, 1.0, [0.1, -0.1]), "alphas"),
    (lambda: theory.cost_model(0), "r"),
    (lambda: theory.cost_model(3, C1=-1.0), "C1"),
    (lambda: theory.bias_variance(np.ones((2, 2)), np.ones((2, 3))), "g_fo"),
])
def test_bad_input_names_parameter(call, name):
    with pytest.raises(ValueError, match=name):
        call()
