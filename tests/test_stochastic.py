"""stocBiO, BSA and TTSA on a stochastic quadratic bilevel problem (per-example losses).

Every loss is quadratic in (θ, φ), so each estimator is multilinear in independent batches and
its mean over keys equals a deterministic AID-Neumann estimate on the full data with the same
inner steps and truncation (Ji et al. 2021 eq. 5-6; Ghadimi & Wang's random truncation for BSA/TTSA)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ablo
from ablo.estimators import get
from ablo.estimators.implicit import AID
from ablo.estimators.stochastic import BSA, TTSA, StocBiO, decaying_sizes, draw
from ablo.linear_solvers import Neumann

D_PHI, D_THETA, N_TRAIN, N_VAL = 5, 3, 200, 100


@functools.lru_cache(maxsize=None)
def make_task(seed=0):
    k = jax.random.split(jax.random.PRNGKey(seed), 5)
    a = jax.random.normal(k[0], (N_TRAIN, D_PHI))
    c = 2.0 * a[:, :D_THETA] + jax.random.normal(k[1], (N_TRAIN, D_THETA))  # mixed term mean(a cᵀ) far from 0
    return {"train": {"a": a, "c": c, "b": jax.random.normal(k[2], (N_TRAIN,))},
            "val": {"e": jax.random.normal(k[3], (N_VAL, D_PHI)), "z": jax.random.normal(k[4], (N_VAL,))}}


def inner_loss(theta, phi, t):
    """mean_i ½(a_i·φ)² − (a_i·φ)(c_i·θ + b_i) + ½‖φ‖²: random Hessian a aᵀ + I and mixed term."""
    d = t["train"]
    u = d["a"] @ phi
    return jnp.mean(0.5 * u ** 2 - u * (d["c"] @ theta + d["b"])) + 0.5 * jnp.sum(phi ** 2)


def outer_loss(theta, phi, t):
    d = t["val"]
    return jnp.mean(0.5 * (d["e"] @ phi - d["z"]) ** 2) + 0.005 * jnp.sum(theta ** 2)


@functools.lru_cache(maxsize=None)  # one problem per r, so compiled estimates are reused across tests
def problem(steps):
    return ablo.BilevelProblem(inner_loss, outer_loss, ablo.gd(0.2), steps, init=ablo.constant_init(jnp.zeros(D_PHI)))


THETA = jnp.linspace(-1.0, 1.0, D_THETA)
ETA = 0.1  # the full-data Hessian has eigenvalues in about [1.8, 2.2]: η < 1/L, truncation visible at Q = 4


def deterministic(steps, Q, task):
    return ablo.hypergradient(problem(steps), AID(Neumann(ETA, Q), warm_start=False), THETA, task)[0]


def draws(est, prob, task, n, seed=1):
    state = est.init(prob, THETA, task)
    f = jax.jit(jax.vmap(lambda key: est.estimate(prob, THETA, task, state, key)[0]))
    return np.asarray(f(jax.random.split(jax.random.PRNGKey(seed), n)))


def z_scores(samples, ref):
    return (samples.mean(0) - np.asarray(ref)) / (samples.std(0) / np.sqrt(len(samples)))


@pytest.mark.parametrize("est", [StocBiO(eta=ETA, Q=4, batch=4, warm_start=False),
                                 pytest.param(StocBiO(eta=ETA, Q=4, batch=4, hess_batch=16, hess_decay=0.5,
                                                      warm_start=False), marks=pytest.mark.slow)])
def test_stocbio_mean_matches_deterministic_neumann(est):
    """Unbiased up to the truncation: E[stocBiO] = AID-Neumann(η, Q) at the same T, and the test
    resolves one more or one fewer Neumann term (each many standard errors away)."""
    task = make_task()
    g = draws(est, problem(10), task, 20000)
    ref = deterministic(10, 4, task)
    assert np.all(np.abs(z_scores(g, ref)) < 4.5), z_scores(g, ref)
    for other in (3, 5):
        assert np.max(np.abs(z_scores(g, deterministic(10, other, task)))) > 5


@pytest.mark.parametrize("est", [BSA(eta=ETA, N=5), pytest.param(TTSA(eta=ETA, N=5), marks=pytest.mark.slow)])
def test_single_sample_means_match_neumann(est):
    """BSA at k = 0 (T_0 = 1 inner step) and TTSA (one step) average to AID-Neumann with
    Q = N − 1 and one inner step."""
    task = make_task()
    g = draws(est, problem(10), task, 20000)
    assert np.all(np.abs(z_scores(g, deterministic(1, 4, task))) < 4.5), z_scores(g, deterministic(1, 4, task))


def test_costs_and_samples():
    task = make_task()
    prob = problem(7)
    est = StocBiO(eta=ETA, Q=10, batch=8, outer_batch=5, hess_batch=32, hess_decay=0.5, jvp_batch=3)
    _, _, c = jax.jit(functools.partial(est.estimate, prob))(THETA, task, est.init(prob, THETA, task),
                                                            jax.random.PRNGKey(0))
    hess = sum(size * (j1 - j0) for size, j0, j1 in decaying_sizes(32, 0.5, 10))
    assert hess == 32 + 16 + 8 + 4 + 2 + 1 * 5
    assert (float(c.grad_evals), float(c.hvps), float(c.samples)) == (8, 11, 7 * 8 + 5 + hess + 3)
    bsa = BSA(eta=ETA, N=5)
    state, step = bsa.init(prob, THETA, task), jax.jit(functools.partial(bsa.estimate, prob))
    for k in range(4):
        _, state, c = step(THETA, task, state, jax.random.PRNGKey(k))
        T_k = int(np.floor(np.sqrt(k + 1)))
        assert float(c.grad_evals) == T_k + 1 and 1 <= float(c.hvps) <= 5
        assert float(c.samples) == T_k + float(c.hvps) + 1
    tt = TTSA(eta=ETA, N=5)
    state = tt.init(prob, THETA, task)
    _, state, c = tt.estimate(prob, THETA, task, state, jax.random.PRNGKey(0))
    assert float(c.grad_evals) == 2 and int(state.step) == 1


def test_ttsa_two_time_scales():
    """Inner step β_k = β_0 (k+1)^(-2/5) (checked on data whose single samples all give the same
    gradient) and outer step α_k = α_0 (k+1)^(-3/5) through optax.sgd, so α_k/β_k falls."""
    full = make_task()
    same = {**full, "train": jax.tree_util.tree_map(lambda x: jnp.repeat(x[:1], N_TRAIN, 0), full["train"])}
    prob, est = problem(1), TTSA(eta=ETA, N=3)
    state = est.init(prob, THETA, same)
    step = jax.jit(functools.partial(est.estimate, prob))
    grad = jax.grad(inner_loss, argnums=1)
    betas = []
    for k in range(5):
        y = state.inner
        _, state, _ = step(THETA, same, state, jax.random.PRNGKey(k))
        h = grad(THETA, y, same)
        betas.append(float(jnp.vdot(y - state.inner, h) / jnp.vdot(h, h)))
        np.testing.assert_allclose(state.inner, y - betas[-1] * h, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(betas, 0.2 * (np.arange(5) + 1.0) ** -0.4, rtol=1e-10)
    adam = ablo.BilevelProblem(inner_loss, outer_loss, ablo.adam(0.2), 1, init=ablo.constant_init(jnp.zeros(D_PHI)))
    with pytest.raises(ValueError, match="needs the inner optimizer ablo.gd"):  # Adam would undo β_k's decay
        est.init(adam, THETA, same)
    alpha = est.outer_schedule(0.5)
    tx = optax.sgd(alpha)
    x, opt = jnp.zeros(()), tx.init(jnp.zeros(()))
    alphas = []
    for k in range(5):
        u, opt = tx.update(jnp.ones(()), opt, x)
        alphas.append(-float(u))
    np.testing.assert_allclose(alphas, 0.5 * (np.arange(5) + 1.0) ** -0.6, rtol=1e-6)
    ratio = np.array(alphas) / np.array(betas)
    assert np.all(np.diff(ratio) < 0)
    const = TTSA(eta=ETA, N=3, inner_decay=0.0, outer_decay=0.0)
    assert float(const.inner_scale(7)) == 1.0 and float(const.outer_schedule(0.5)(7)) == 0.5


def test_decaying_sizes():
    assert decaying_sizes(100, 1.0, 10) == [(100, 0, 10)]
    segs = decaying_sizes(1000, 0.9, 1000)
    sizes = [s for s, _, _ in segs]
    assert segs[0][1] == 0 and segs[-1][2] == 1000 and sizes[-1] == 1
    assert all(a[2] == b[1] for a, b in zip(segs, segs[1:]))  # contiguous cover of j = 0..Q-1
    assert len(segs) <= int(np.ceil(np.log2(1000))) + 1
    for size, j0, j1 in segs:  # within a factor 2 of B·decay^j (and >= 1)
        for j in (j0, j1 - 1):
            assert max(1.0, 1000 * 0.9 ** j) <= size < max(2.0, 2 * 1000 * 0.9 ** j) + 1


def test_draw_keeps_other_parts_and_indices():
    task = {"train": {"x": jnp.arange(10.0)[:, None], "idx": jnp.arange(10)}, "val": jnp.ones(3)}
    b = draw(task, "train", jax.random.PRNGKey(0), 6)
    assert b["train"]["x"].shape == (6, 1) and b["val"] is task["val"]
    np.testing.assert_array_equal(b["train"]["x"][:, 0], b["train"]["idx"].astype(float))
    t = draw((jnp.arange(4.0), jnp.zeros(2)), 0, jax.random.PRNGKey(0), 3)
    assert t[0].shape == (3,) and t[1].shape == (2,)


@pytest.mark.slow
def test_stocbio_warm_start_carries_the_inner_iterate():
    """y_k^0 = y_{k-1}^T: with T = 1 inner step per call and large batches, repeated calls at a
    fixed θ approach the converged AID-Neumann estimate; without the warm start they stay far."""
    task = make_task()
    prob = problem(1)
    ref = deterministic(300, 30, task)
    errs = {}
    for warm in (True, False):
        est = StocBiO(eta=ETA, Q=30, batch=4000, warm_start=warm)
        state = est.init(prob, THETA, task)
        step = jax.jit(functools.partial(est.estimate, prob))
        for k in range(20):
            g, state, _ = step(THETA, task, state, jax.random.PRNGKey(k))
        errs[warm] = float(jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref))
    assert errs[True] < 0.1 < 0.3 < errs[False], errs


def temp_bytes(est, prob, task):
    state = est.init(prob, THETA, task)
    compiled = jax.jit(functools.partial(est.estimate, prob)).lower(THETA, task, state, jax.random.PRNGKey(0)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("make, saturated", [
    (lambda n: StocBiO(eta=ETA, Q=n, batch=8), 10),
    pytest.param(lambda n: StocBiO(eta=ETA, Q=n, batch=64, hess_decay=0.9), 100, marks=pytest.mark.slow),
    pytest.param(lambda n: BSA(eta=ETA, N=n), 10, marks=pytest.mark.slow),
    pytest.param(lambda n: TTSA(eta=ETA, N=n), 10, marks=pytest.mark.slow)])
def test_temp_memory_independent_of_T_and_Q(make, saturated):
    """T = r and Q (N) from 10 to 1000 together. With decaying Hessian batches each halving
    is one more static batch shape, so memory is bounded by ⌈log2 B⌉ + 1 segments rather than
    constant: it is compared from a Q (100) at which all halvings of B = 64 are reached."""
    task = make_task()
    small = temp_bytes(make(saturated), problem(10), task)
    assert abs(temp_bytes(make(1000), problem(1000), task) - small) <= 0.05 * small + 1


def test_registered_names():
    assert get("stocbio", Q=3, batch=7) == StocBiO(Q=3, batch=7)
    assert get("bsa", N=4) == BSA(N=4)
    assert get("ttsa", eta=0.1) == TTSA(eta=0.1)


@pytest.mark.parametrize("build, param", [
    (lambda: StocBiO(eta=0.0), "eta"), (lambda: StocBiO(Q=-1), "Q"), (lambda: StocBiO(batch=0), "batch"),
    (lambda: StocBiO(inner_batch=0), "inner_batch"), (lambda: StocBiO(outer_batch=-3), "outer_batch"),
    (lambda: StocBiO(hess_batch=1.5), "hess_batch"), (lambda: StocBiO(jvp_batch=0), "jvp_batch"),
    (lambda: StocBiO(hess_decay=0.0), "hess_decay"), (lambda: StocBiO(hess_decay=1.2), "hess_decay"),
    (lambda: StocBiO(warm_start=None), "warm_start"),
    (lambda: BSA(eta=-1.0), "eta"), (lambda: BSA(N=0), "N"), (lambda: BSA(batch=0), "batch"),
    (lambda: BSA(t0=0.0), "t0"), (lambda: BSA(power=-1.0), "power"), (lambda: TTSA(N=0), "N"),
    (lambda: TTSA(inner_decay=-0.1), "inner_decay"), (lambda: TTSA(outer_decay=2.0), "outer_decay"),
    (lambda: TTSA().outer_schedule(0.0), "lr"),
    (lambda: get("stocbio", Q=-2), "Q"),
])
def test_bad_inputs_name_the_parameter(build, param):
    with pytest.raises(ValueError, match=param):
        build()


def test_bad_task_parts_name_the_option():
    prob = problem(3)
    task = make_task()
    with pytest.raises(ValueError, match="inner_part"):
        est = StocBiO(inner_part="training")
        est.estimate(prob, THETA, task, est.init(prob, THETA, task), jax.random.PRNGKey(0))
    bad = {**task, "val": {"e": jnp.ones((4, D_PHI)), "z": jnp.ones(5)}}
    with pytest.raises(ValueError, match="outer_part"):
        est = StocBiO()
        est.estimate(prob, THETA, bad, est.init(prob, THETA, task), jax.random.PRNGKey(0))
