"""AID (CG, Neumann, fixed point), warm starts and HOAG on a strongly convex quadratic inner
problem with closed-form y*(x) and ∇Φ(x) (Ji et al. 2021 Proposition 1), in float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.estimators import get
from ablo.estimators.implicit import AID, HOAG
from ablo.linear_solvers import CG, FixedPoint, Neumann


def make_task(eigs, d_theta=4, seed=0):
    """g = ½ yᵀHy − yᵀ(Bx + c), f = ½‖y − d‖² + 0.05‖x‖², H with the given eigenvalues."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    n = len(eigs)
    U, _ = jnp.linalg.qr(jax.random.normal(k[0], (n, n)))
    return {"H": U @ jnp.diag(jnp.asarray(eigs)) @ U.T, "B": jax.random.normal(k[1], (n, d_theta)),
            "c": jax.random.normal(k[2], (n,)), "d": jax.random.normal(k[3], (n,))}


def inner_loss(theta, phi, t):
    return 0.5 * phi @ t["H"] @ phi - phi @ (t["B"] @ theta + t["c"])


def outer_loss(theta, phi, t):
    return 0.5 * jnp.sum((phi - t["d"]) ** 2) + 0.05 * jnp.sum(theta ** 2)


def true_hypergradient(theta, t):
    """Proposition 1: ∇Φ = ∇_x f − ∇_x∇_y g H⁻¹∇_y f with ∇_x∇_y g = −Bᵀ, y* = H⁻¹(Bx + c)."""
    y = jnp.linalg.solve(t["H"], t["B"] @ theta + t["c"])
    return 0.1 * theta + t["B"].T @ jnp.linalg.solve(t["H"], y - t["d"])


@functools.lru_cache(maxsize=None)  # reuse compiled estimates across tests (api caches per problem)
def problem(n, lr, steps):
    return ablo.BilevelProblem(inner_loss, outer_loss, ablo.gd(lr), steps, init=ablo.constant_init(jnp.zeros(n)))


EIGS = np.linspace(1.0, 4.0, 6)  # μ = 1, L = 4; GD with lr 1/4 contracts by 3/4 per step
THETA = jnp.linspace(-1.0, 1.0, 4)


def rel_err(g, ref):
    return float(jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref))


def run(est, prob, theta, task, state=None):
    return ablo.hypergradient(prob, est, theta, task, key=jax.random.PRNGKey(0), state=state)


def test_aid_cg_reaches_true_hypergradient():
    task = make_task(EIGS)
    g, state, c = run(AID(CG(tol=1e-12, maxiter=50), warm_start=False), problem(6, 0.25, 200), THETA, task)
    assert rel_err(g, true_hypergradient(THETA, task)) <= 1e-8
    assert 1 <= int(state.matvecs) <= 6 + 1  # CG is exact in n = 6 steps (up to rounding)
    assert float(c.grad_evals) == 201 and float(c.hvps) == int(state.matvecs) + 1 and float(c.states) == 1


@pytest.mark.parametrize("name, make, eta", [("neumann", lambda eta, n: Neumann(eta, n), 0.25),
                                             ("fp", lambda eta, n: FixedPoint(eta, n), 0.3)])
def test_linear_rate_matches_contraction_factor(name, make, eta):
    """log ‖∇̂Φ − ∇Φ‖ against the number of matvecs has slope log ρ, ρ = max_i |1 − ηλ_i|."""
    task = make_task(EIGS)
    prob = problem(6, 0.25, 300)
    ref = true_hypergradient(THETA, task)
    ns = np.array([30, 45, 60])
    errs = [rel_err(run(AID(make(eta, int(n)), warm_start=False), prob, THETA, task)[0], ref) for n in ns]
    slope = np.polyfit(ns, np.log(errs), 1)[0]
    rho = np.max(np.abs(1 - eta * EIGS))
    assert abs(slope - np.log(rho)) <= 0.02 * abs(np.log(rho)), (slope, np.log(rho))


def test_neumann_equals_fixed_point_from_zero():
    task = make_task(EIGS)
    prob = problem(6, 0.25, 100)
    g1, s1, _ = run(AID(Neumann(0.2, 7), warm_start=False), prob, THETA, task)
    g2, s2, _ = run(AID(FixedPoint(0.2, 8), warm_start=False), prob, THETA, task)
    np.testing.assert_allclose(g1, g2, rtol=1e-12)
    assert int(s1.matvecs) == int(s2.matvecs) == 7


def test_solvers_on_pytrees_and_warm_start_residual():
    A = jnp.diag(jnp.arange(1.0, 6.0))
    matvec = lambda v: {"a": A[:2, :2] @ v["a"], "b": A[2:, 2:] @ v["b"]}
    b = {"a": jnp.ones(2), "b": jnp.arange(3.0)}
    exact = {"a": b["a"] / jnp.arange(1.0, 3.0), "b": b["b"] / jnp.arange(3.0, 6.0)}
    for solve in (CG(tol=1e-12, maxiter=20), Neumann(0.2, 200), FixedPoint(0.2, 200)):
        x, info = jax.jit(lambda rhs: solve(matvec, rhs))(b)
        np.testing.assert_allclose(np.concatenate([x["a"], x["b"]]), np.concatenate([exact["a"], exact["b"]]),
                                   rtol=1e-9)
        x2, info2 = solve(matvec, b, exact)  # warm start at the solution: one matvec to see it
        assert float(info2.residual) <= 1e-12
    _, info = CG(tol=1e-12, maxiter=20)(matvec, b, exact)
    assert int(info.matvecs) == 1


def test_warm_starts_cut_cg_iterations():
    """A sequence of nearby x (an outer trajectory): warm-started v needs fewer CG steps for
    the same tolerance than v_0 = 0, and both meet the tolerance."""
    eigs = np.geomspace(1.0, 100.0, 40)
    task = make_task(eigs, seed=1)
    prob = problem(40, 0.01, 300)
    direction = jax.random.normal(jax.random.PRNGKey(3), (4,))
    thetas = [THETA + 0.002 * k * direction for k in range(6)]
    totals = {}
    for warm in (True, False):
        est = AID(CG(tol=1e-6, maxiter=200), warm_start=warm)
        step = jax.jit(functools.partial(est.estimate, prob))
        state = est.init(prob, THETA, task)
        used = []
        for th in thetas:
            g, state, c = step(th, task, state, jax.random.PRNGKey(0))
            used.append(int(state.matvecs))
        totals[warm] = sum(used[1:])  # the first call starts from v = 0 either way
    assert totals[True] <= 0.75 * totals[False], totals


def test_warm_start_inner_iterate_carried():
    """With warm starts y_k^0 = y_{k−1}^T: repeated calls at a fixed x converge to the true
    hypergradient even with T = 3 inner steps; without, the error stays."""
    task = make_task(EIGS)
    prob = problem(6, 0.25, 3)
    ref = true_hypergradient(THETA, task)
    for warm, expect_small in ((True, True), (False, False)):
        est = AID(CG(tol=1e-12, maxiter=20), warm_start=warm)
        state = est.init(prob, THETA, task)
        for _ in range(40):
            g, state, _ = run(est, prob, THETA, task, state)
        assert (rel_err(g, ref) < 1e-8) == expect_small


def test_hoag_tolerance_decreases():
    task = make_task(np.geomspace(1.0, 50.0, 20), seed=2)
    prob = problem(20, 0.02, 300)
    est = HOAG(tol=0.1, decay=0.5, maxiter=100)
    state = est.init(prob, THETA, task)
    b_norm = float(jnp.linalg.norm(jnp.linalg.solve(task["H"], task["B"] @ THETA + task["c"]) - task["d"]))
    errs = []
    for k in range(6):
        tol = est.describe_state(state)["tol"]
        assert tol == pytest.approx(0.1 * 0.5 ** k)
        g, state, _ = run(est, prob, THETA, task, state)
        assert float(state.residual) <= tol * b_norm * 1.001
        errs.append(rel_err(g, true_hypergradient(THETA, task)))
    assert errs[-1] < 0.1 * errs[0]
    assert int(state.cap_hits) == 0


def test_hoag_defaults_are_pedregosas_schedule():
    """ε_0 = 1e-3 decreasing by 0.9 per outer step (fabianp/hoag defaults), the other summable
    sequences, the floor, and a safety cap far above the iterations a solve needs."""
    est = HOAG()
    assert est.tolerance(0) == pytest.approx(1e-3) and est.maxiter >= 1000
    eps = np.array([float(est.tolerance(k)) for k in range(50)])
    np.testing.assert_allclose(eps, 1e-3 * 0.9 ** np.arange(50), rtol=1e-12)
    assert float(HOAG(schedule="quadratic").tolerance(3)) == pytest.approx(1e-3 / 16)
    assert float(HOAG(schedule="cubic").tolerance(1)) == pytest.approx(1e-3 / 8)
    assert float(HOAG(floor=1e-5).tolerance(1000)) == pytest.approx(1e-5)
    assert float(HOAG().tolerance(10_000, jnp.float32)) == pytest.approx(10 * np.finfo(np.float32).eps)


def test_hoag_cg_iterations_rise_as_tolerance_tightens():
    """The tolerance is traced state: one jitted step serves every k, and the CG work per outer
    step grows as ε_k shrinks (cold v, so each solve starts from the same residual)."""
    task = make_task(np.geomspace(1.0, 1e3, 40), seed=3)
    prob = problem(40, 1e-3, 50)
    est = HOAG(tol=1e-1, decay=0.1, warm_start=False)
    step = jax.jit(functools.partial(est.estimate, prob))
    state = est.init(prob, THETA, task)
    tols, iters = [], []
    for k in range(6):
        tols.append(est.describe_state(state)["tol"])
        _, state, c = step(THETA, task, state, jax.random.PRNGKey(k))
        iters.append(int(state.matvecs))
        assert float(c.hvps) == iters[-1] + 1
    assert all(b < a for a, b in zip(tols, tols[1:]))
    assert all(b >= a for a, b in zip(iters, iters[1:])) and iters[-1] >= iters[0] + 10
    assert int(state.step) == 6 and int(state.cap_hits) == 0


def test_hoag_counts_safety_cap_hits():
    task = make_task(np.geomspace(1.0, 1e3, 40), seed=3)
    prob = problem(40, 1e-3, 50)
    est = HOAG(tol=1e-8, maxiter=3, warm_start=False)
    state = est.init(prob, THETA, task)
    for k in range(2):
        _, state, _ = run(est, prob, THETA, task, state)
    assert int(state.cap_hits) == 2 and est.describe_state(state)["cg_cap_hits"] == 2.0


def temp_bytes(est, prob, task):
    state = est.init(prob, THETA, task)
    compiled = jax.jit(functools.partial(est.estimate, prob)).lower(THETA, task, state, jax.random.PRNGKey(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("make", [lambda n: AID(CG(1e-12, n)), lambda n: AID(Neumann(0.2, n)),
                                  pytest.param(lambda n: AID(FixedPoint(0.2, n)), marks=pytest.mark.slow),
                                  pytest.param(lambda n: HOAG(maxiter=n), marks=pytest.mark.slow)])
def test_temp_memory_independent_of_T_and_solver_iterations(make):
    """T = r and the solver's iterations from 10 to 1000 together (growth in either would show)."""
    task = make_task(EIGS)
    small = temp_bytes(make(10), problem(6, 0.25, 10), task)
    assert abs(temp_bytes(make(1000), problem(6, 0.25, 1000), task) - small) <= 0.05 * small + 1


def test_registered_names_and_batch():
    task = make_task(EIGS)
    prob = problem(6, 0.25, 100)
    assert get("aid-cg", tol=1e-9, maxiter=30) == AID(CG(1e-9, 30), True)
    assert get("aid-neumann", eta=0.2, Q=5, warm_start=False) == AID(Neumann(0.2, 5), False)
    assert get("aid-fp", eta=0.2, N=5) == AID(FixedPoint(0.2, 5), True)
    assert isinstance(get("hoag", tol=0.5), HOAG)
    tasks = jax.tree_util.tree_map(lambda x: jnp.stack([x, x]), task)
    est = get("aid-cg", tol=1e-12, maxiter=20)
    g, _, c = est.estimate_batch(prob, THETA, tasks, est.init(prob, THETA, task), jax.random.PRNGKey(0))
    assert rel_err(g, true_hypergradient(THETA, task)) < 1e-8
    assert float(c.grad_evals) == 2 * 101


@pytest.mark.parametrize("build, param", [
    (lambda: CG(tol=0.0), "tol"), (lambda: CG(tol=-1.0), "tol"), (lambda: CG(maxiter=0), "maxiter"),
    (lambda: Neumann(eta=0.0), "eta"), (lambda: Neumann(eta=-0.1), "eta"), (lambda: Neumann(Q=-1), "Q"),
    (lambda: Neumann(Q=2.5), "Q"), (lambda: FixedPoint(eta=0.0), "eta"), (lambda: FixedPoint(N=0), "N"),
    (lambda: AID(solver=3), "solver"), (lambda: AID(warm_start="yes"), "warm_start"),
    (lambda: HOAG(tol=0.0), "tol"), (lambda: HOAG(decay=1.5), "decay"), (lambda: HOAG(maxiter=0), "maxiter"),
    (lambda: HOAG(decay=1.0), "decay"), (lambda: HOAG(schedule="linear"), "schedule"), (lambda: HOAG(floor=0.0), "floor"),
    (lambda: get("aid-cg", tol=-1.0), "tol"), (lambda: get("aid-neumann", Q=-2), "Q"),
])
def test_bad_inputs_name_the_parameter(build, param):
    with pytest.raises(ValueError, match=param):
        build()
