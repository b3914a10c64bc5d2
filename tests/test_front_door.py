"""The JAX front door keeps its promises: keys required where they are drawn from, closures and
Equinox modules through ablo.solve, one cost record for solve and hypergradient, programs
compiled once per problem definition and freed with the problem, the exact branch paid only
when drawn under vmap, errors in ablo's words."""

import gc
import weakref

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo import estimators
from _problems import central_fd, flat, make_task, make_theta, problem

R = 4
THETA, TASK = make_theta(), make_task(jax.random.PRNGKey(0))
KEY = jax.random.PRNGKey(7)


# --- keys -------------------------------------------------------------------------------------

@pytest.mark.parametrize("est", [ablo.UFOM(q=0.3), ablo.Debiased(q=0.5), ablo.StocBiO()], ids=lambda e: e.name)
def test_random_estimators_need_a_key(est):
    with pytest.raises(ValueError, match=r"key: estimator .* is random and needs a key.*jax\.random\.key"):
        ablo.hypergradient(problem("gd", R), est, THETA, TASK)
    with pytest.raises(ValueError, match=r"key: estimator .* is random and needs a key"):
        ablo.hypergradient_batch(problem("gd", R), est, THETA, jax.tree_util.tree_map(lambda x: x[None], TASK))
    if est.name == "ufom":
        with pytest.raises(ValueError, match=r"key: estimator 'ufom' is random and needs a key"):
            ablo.solve(problem("gd", R), est)(THETA, TASK)


def test_deterministic_estimators_need_no_key():
    g, _, _ = ablo.hypergradient(problem("gd", R), ablo.Reverse(), THETA, TASK)
    assert np.all(np.isfinite(flat(g)))
    assert np.all(np.isfinite(flat(jax.grad(lambda th: jnp.sum(ablo.solve(problem("gd", R), ablo.FOM())(th, TASK)["w"]))(
        THETA))))


@pytest.mark.parametrize("key", [5, "seed", np.zeros(3, np.uint32), jnp.zeros((4, 2), jnp.uint32)], ids=str)
def test_a_bad_key_is_named_with_how_to_make_one(key):
    with pytest.raises(ValueError, match=r"key must be a (single )?PRNG key.*jax\.random\.key\(seed\)"):
        ablo.hypergradient(problem("gd", R), ablo.UFOM(q=0.3), THETA, TASK, key=key)
    with pytest.raises(ValueError, match=r"key must be a (single )?PRNG key"):
        ablo.solve(problem("gd", R), ablo.UFOM(q=0.3))(THETA, TASK, key)


# --- input checks ------------------------------------------------------------------------------

def test_an_unstacked_task_is_not_a_meta_batch():
    p = problem("gd", R)
    x, y = TASK  # (8, 3) and (8,): one task, not stacked
    with pytest.raises(ValueError, match="tasks must be a meta-batch.*leading"):
        ablo.hypergradient_batch(p, ablo.Reverse(), THETA, (x, y[0]))
    with pytest.raises(ValueError, match="tasks must be a meta-batch"):
        ablo.hypergradient_batch(p, ablo.Reverse(), THETA, (x[:3], y))


def test_numpy_integers_are_integers():
    p = ablo.BilevelProblem(problem().inner_loss, problem().outer_loss, ablo.gd(0.1), np.int64(5), init=problem().init)
    assert p.steps == 5 and type(p.steps) is int
    g, _, _ = ablo.hypergradient(p, ablo.Truncated(K=np.int64(2)), THETA, TASK)
    assert np.all(np.isfinite(flat(g)))


def test_solve_validates_its_inputs_like_hypergradient():
    bad_theta = {"log_reg": jnp.zeros(5), "shift": jnp.zeros(5)}
    with pytest.raises(ValueError, match="theta"):
        ablo.solve(problem("gd", R), ablo.Reverse())(bad_theta, TASK)


def test_products_are_rewritten_by_default_only_on_cpu(monkeypatch):
    base = problem("gd", R)
    assert base.rewrite_products is (jax.default_backend() == "cpu")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    p = ablo.BilevelProblem(base.inner_loss, base.outer_loss, base.optimizer, R, init=base.init)
    assert p.rewrite_products is False
    assert ablo.BilevelProblem(base.inner_loss, base.outer_loss, base.optimizer, R, init=base.init,
                               rewrite_products=True).rewrite_products is True


# --- what solve differentiates -----------------------------------------------------------------

def quadratic(lr, X, y):
    inner = lambda th, ph, t: 0.5 * jnp.mean((X @ ph - y) ** 2) + 0.5 * jnp.sum(jnp.exp(th) * ph ** 2)
    return ablo.BilevelProblem(inner, lambda th, ph, t: 0.0, ablo.gd(lr), 6, init=lambda th, t: jnp.zeros(3))


X = jax.random.normal(jax.random.PRNGKey(1), (10, 3))
Y = jnp.sin(jnp.arange(10.0))
TH = jnp.array([0.1, -0.3, 0.2])


def plain(lr, X=X, th=TH):
    p = quadratic(lr, X, Y)
    return jnp.sum(jnp.sin(p.optimizer.params(p.run(th, None))))


@pytest.mark.parametrize("est", [ablo.Reverse(), ablo.Recompute(), ablo.Checkpointed(M=2)], ids=lambda e: e.name)
def test_a_problem_built_inside_grad_with_a_traced_step_size(est):
    through_solve = lambda lr: jnp.sum(jnp.sin(ablo.solve(quadratic(lr, X, Y), est)(TH, None)))
    g = jax.grad(through_solve)(0.2)
    fd = (plain(0.2 + 1e-6) - plain(0.2 - 1e-6)) / 2e-6
    assert abs(float(g)) > 1e-2
    np.testing.assert_allclose(float(g), float(fd), rtol=1e-7)
    np.testing.assert_allclose(float(jax.jit(jax.grad(through_solve))(0.2)), float(g), rtol=1e-12)


def test_closed_over_data_is_differentiated_like_theta():
    through_solve = lambda X: jnp.sum(jnp.sin(ablo.solve(quadratic(0.2, X, Y), ablo.Reverse())(TH, None)))
    g = jax.grad(through_solve)(X)
    assert float(jnp.max(jnp.abs(g))) > 1e-3
    np.testing.assert_allclose(g, jax.grad(lambda X: plain(0.2, X))(X), rtol=0, atol=1e-12)
    # θ's gradient beside it, under jit, with the data closed over as a traced value
    g_th = jax.jit(jax.grad(lambda th, X: jnp.sum(jnp.sin(ablo.solve(quadratic(0.2, X, Y), ablo.Recompute())(th, None)))))(
        TH, X)
    np.testing.assert_allclose(g_th, central_fd(lambda th: plain(0.2, X, th), TH), rtol=1e-7, atol=1e-10)


class Model(eqx.Module):
    w: jax.Array
    b: jax.Array
    act: object = jnp.tanh  # a function leaf: not an array
    width: int = 3


def test_filter_grad_over_a_whole_equinox_module():
    model = Model(jnp.array([0.3, -0.2, 0.5]), jnp.asarray(0.1))
    inner = lambda m, ph, t: 0.5 * jnp.sum((ph - m.act(m.w)) ** 2) + 0.5 * jnp.exp(m.b) * jnp.sum(ph ** 2)
    p = ablo.BilevelProblem(inner, lambda m, ph, t: 0.0, ablo.gd(0.2), 5, init=lambda m, t: m.w * 0.5)
    loss = lambda m: jnp.sum(jnp.cos(ablo.solve(p, ablo.Reverse())(m, None)))
    g = eqx.filter_grad(loss)(model)
    ref = eqx.filter_grad(lambda m: jnp.sum(jnp.cos(p.optimizer.params(p.run(m, None)))))(model)
    assert float(jnp.abs(g.b)) > 1e-3
    np.testing.assert_allclose(g.w, ref.w, atol=1e-12)
    np.testing.assert_allclose(g.b, ref.b, atol=1e-12)


def test_a_traced_task_raises_instead_of_a_silent_zero():
    p = problem("gd", R)
    solver = ablo.solve(p, ablo.Reverse())
    with pytest.raises(ValueError, match="does not differentiate with respect to task"):
        jax.grad(lambda x: jnp.sum(solver(THETA, (x, TASK[1]))["w"]))(TASK[0])


def test_forward_mode_and_reverse_over_reverse_name_what_works():
    p = problem("gd", R)
    f = lambda est: (lambda th: ablo.solve(p, est)(th, TASK)["w"].sum())
    with pytest.raises(TypeError, match=r"ablo\.objective.*Forward"):
        jax.jvp(f(ablo.Reverse()), (THETA,), (THETA,))
    for est in (ablo.Recompute(), ablo.Checkpointed(M=2), ablo.Binomial(), ablo.UFOM(q=0.5)):
        g = lambda th: jax.tree_util.tree_reduce(jnp.add, jax.tree_util.tree_map(
            jnp.sum, jax.grad(lambda t: ablo.solve(p, est)(t, TASK, KEY)["w"].sum())(th)))
        with pytest.raises(ValueError, match=r"reverse over reverse.*jax\.hessian"):
            jax.grad(g)(THETA)
    # Reverse's passes are scans: reverse over reverse works and is exact
    total = lambda f: (lambda th: jax.tree_util.tree_reduce(jnp.add, jax.tree_util.tree_map(jnp.sum, jax.grad(f)(th))))
    # jitted: one compile each instead of a dispatch and a compile per primitive of the eager trace
    gg = jax.jit(jax.grad(total(lambda t: ablo.solve(p, ablo.Reverse())(t, TASK)["w"].sum())))(THETA)
    gg_ref = jax.jit(jax.grad(total(lambda t: p.optimizer.params(p.run(t, TASK))["w"].sum())))(THETA)
    np.testing.assert_allclose(flat(gg), flat(gg_ref), atol=1e-10)
    h = jax.jit(jax.hessian(lambda th: ablo.solve(p, ablo.Recompute())(th, TASK)["w"].sum()))(THETA)
    h_ref = jax.jit(jax.hessian(lambda th: p.optimizer.params(p.run(th, TASK))["w"].sum()))(THETA)
    np.testing.assert_allclose(flat(h), flat(h_ref), atol=1e-10)


# --- one cost record ------------------------------------------------------------------------------

def dataset_problem():
    """A task of two datasets (what stocBiO samples from) that every estimator can run on."""
    def loss(th, ph, data):
        x, y = data
        return 0.5 * jnp.mean((jnp.tanh(x @ ph["w"] + ph["b"]) - y) ** 2)

    inner = lambda th, ph, t: loss(th, ph, t["train"]) + 0.5 * jnp.sum(jnp.exp(th["log_reg"]) * ph["w"] ** 2)
    outer = lambda th, ph, t: loss(th, ph, t["val"])
    init = lambda th, t: {"w": 0.3 * th["shift"], "b": jnp.asarray(0.1)}
    return ablo.BilevelProblem(inner, outer, ablo.gd(0.3), R, init=init)


DATA_TASK = {"train": make_task(jax.random.PRNGKey(2)), "val": make_task(jax.random.PRNGKey(3))}
DATA_THETA = {"log_reg": jnp.linspace(-1.0, 0.5, 3), "shift": jnp.linspace(0.2, -0.4, 3)}


@pytest.mark.parametrize("name", sorted(estimators.REGISTRY))
def test_solve_and_hypergradient_report_the_same_cost(name):
    est = estimators.get(name, **({"batch": 4} if name in ("stocbio", "bsa", "ttsa") else {}))
    p = dataset_problem()
    if est.not_in_solve:
        with pytest.raises(ValueError, match="cannot run inside ablo.solve"):
            ablo.solve(p, est)
        return
    solver = ablo.solve(p, est, with_cost=True)
    loss = lambda th, m: p.outer_loss(th, solver(th, DATA_TASK, KEY, m), DATA_TASK)
    g, c = jax.jit(jax.grad(loss, argnums=(0, 1)))(DATA_THETA, ablo.cost_meter())
    g_ref, _, c_ref = ablo.hypergradient(p, est, DATA_THETA, DATA_TASK, key=KEY)
    assert c._asdict().keys() == c_ref._asdict().keys()
    for field in c._fields:
        assert float(getattr(c, field)) == float(getattr(c_ref, field)), field
    if name != "stocbio":  # stocBiO samples its outer gradient (D_F); through solve it is the loss's own, JAX's
        np.testing.assert_allclose(flat(g), flat(g_ref), rtol=1e-9, atol=1e-12)


# --- compiled programs -------------------------------------------------------------------------------

def test_an_identical_problem_compiles_once_and_a_dropped_one_is_freed():
    compiles = []
    listener = lambda event, duration, **kw: compiles.append(event) if event.endswith("backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        def build():
            data = jnp.linspace(0.0, 1.0, 3)
            inner = lambda th, ph, t: jnp.sum((ph - data * th) ** 2)
            return ablo.BilevelProblem(inner, lambda th, ph, t: jnp.sum(ph ** 2), ablo.gd(0.1), 3,
                                       init=lambda th, t: jnp.zeros(3))

        theta = jnp.ones(3)
        first = build()
        ablo.hypergradient(first, ablo.Reverse(), theta)
        n_first = len(compiles)
        assert n_first >= 1
        second = build()  # same definition, new objects
        g2, _, _ = ablo.hypergradient(second, ablo.Reverse(), theta)
        assert len(compiles) == n_first
        ablo.hypergradient(first, ablo.Reverse(), theta)
        assert len(compiles) == n_first
        ref = weakref.ref(first)
        del first, second
        gc.collect()
        assert ref() is None  # no cache keeps the problem (and its data) alive
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


# --- the exact branch under vmap --------------------------------------------------------------------

EXECUTED = []


class CountingRecompute(ablo.Recompute):
    """Recompute whose backward half reports each execution to the host."""

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        jax.debug.callback(lambda x: EXECUTED.append(int(np.size(x))), task[1][0])
        return super().backward(problem, theta, task, aux, b_theta, b_s)


def test_ufom_under_vmap_runs_the_exact_branch_only_for_the_tasks_that_drew_it():
    p = problem("gd", R)
    tasks = jax.vmap(make_task)(jax.random.split(jax.random.PRNGKey(4), 32))
    keys = jax.random.split(jax.random.PRNGKey(0), 32)  # 4 of 32 draw the exact branch
    solver = ablo.solve(p, ablo.UFOM(q=0.1, exact=CountingRecompute()), with_cost=True)
    per_task = lambda th, t, k: jax.grad(lambda m: p.outer_loss(th, solver(th, t, k, m), t))(ablo.cost_meter())
    EXECUTED.clear()
    costs = jax.jit(jax.vmap(per_task, in_axes=(None, 0, 0)))(THETA, tasks, keys)
    jax.effects_barrier()
    drawn = int(np.sum(np.asarray(costs.hvps) > 0))
    assert 0 < drawn < 32
    assert sum(EXECUTED) == drawn
    # the explicit batch entry point too
    EXECUTED.clear()
    _, _, c = ablo.hypergradient_batch(p, ablo.UFOM(q=0.1, exact=CountingRecompute()), THETA, tasks, key=KEY)
    jax.effects_barrier()
    assert sum(EXECUTED) == float(c.hvps) / R > 0


# --- estimators carry their own behaviour ----------------------------------------------------------

def test_a_linear_solver_reports_its_own_matvec_cap():
    from dataclasses import dataclass

    from ablo.estimators.implicit import AID
    from ablo.linear_solvers import CG, SolveInfo

    class LongCG(CG):
        """A CG subclass: the cost model asks the value, not a table of types."""

    @dataclass(frozen=True)
    class Richardson:
        """A user's solver: x ← x + 0.1 (b − A x), three times."""

        def __call__(self, matvec, b, x0=None):
            x = jax.tree_util.tree_map(jnp.zeros_like, b) if x0 is None else x0
            for _ in range(3):
                x = jax.tree_util.tree_map(lambda xi, bi, ai: xi + 0.1 * (bi - ai), x, b, matvec(x))
            return x, SolveInfo(jnp.asarray(3, jnp.int32), jnp.asarray(0.0))

        def max_matvecs(self, warm_start):
            return 3

    assert float(AID(LongCG(maxiter=7), warm_start=True).expected_cost(5).hvps) == 7 + 1 + 1
    assert float(AID(Richardson(), warm_start=False).expected_cost(5).hvps) == 3 + 1
    _, _, c = ablo.hypergradient(problem("gd", R), AID(Richardson(), warm_start=False), THETA, TASK)
    assert float(c.hvps) == 4
    with pytest.raises(ValueError, match="max_matvecs"):
        AID(lambda matvec, b, x0=None: (b, None))
