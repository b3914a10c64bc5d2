"""ablo.solve: jax.grad through the inner loop is the estimator's hypergradient (float64), under jit,
vmap and with a cost record; hyperparameters traced without recompiling; the batched entry point."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from _problems import flat, make_task, make_theta, problem

R = 4
DETERMINISTIC = {
    "reverse": ablo.Reverse(), "recompute": ablo.Recompute(), "checkpointed": ablo.Checkpointed(M=2),
    "truncated": ablo.Truncated(K=2), "forward": ablo.Forward(), "fom": ablo.FOM(), "aid-cg": ablo.aid_cg(),
    "aid-neumann": ablo.aid_neumann(eta=0.1), "aid-fp": ablo.aid_fp(eta=0.1), "hoag": ablo.HOAG(),
    "debiased-q1": ablo.Debiased(cheap=ablo.Truncated(K=1), q=1.0),
}
THETA, TASK = make_theta(), make_task(jax.random.PRNGKey(0))
TASKS = jax.vmap(make_task)(jax.random.split(jax.random.PRNGKey(1), 8))


KEY = jax.random.PRNGKey(0)


def grad_through_solve(p, est, theta, task, key=KEY):
    """The user's view: the outer loss is plain JAX code of θ and φ_r."""
    solver = ablo.solve(p, est)
    return jax.grad(lambda th: p.outer_loss(th, solver(th, task, key), task))(theta)


OPTIMIZERS = ("gd", "momentum", "adam")


#: Each estimator with one optimizer (in turn) in the default run, every pair with ``-m slow``.
@pytest.mark.parametrize("name, optimizer", [
    (n, o) if o == OPTIMIZERS[i % 3] else pytest.param(n, o, marks=pytest.mark.slow)
    for i, n in enumerate(sorted(DETERMINISTIC)) for o in OPTIMIZERS])
def test_grad_through_solve_is_the_estimators_hypergradient(name, optimizer):
    p, est = problem(optimizer, R), DETERMINISTIC[name]
    expected = flat(ablo.hypergradient(p, est, THETA, TASK, key=KEY)[0])
    got = flat(jax.jit(lambda th: grad_through_solve(p, est, th, TASK))(THETA))
    assert float(jnp.max(jnp.abs(expected))) > 1e-3  # not trivially zero
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ["reverse", "truncated", "aid-cg"])
def test_vmap_over_tasks_equals_the_per_task_loop(name):
    p, est = problem("momentum", R), DETERMINISTIC[name]
    solver = ablo.solve(p, est)
    mean_loss = lambda th: jnp.mean(jax.vmap(lambda t: p.outer_loss(th, solver(th, t), t))(TASKS))
    batched = flat(jax.jit(jax.grad(mean_loss))(THETA))
    per_task = jax.jit(lambda th, t: flat(grad_through_solve(p, est, th, t)))
    loop = np.mean([per_task(THETA, jax.tree_util.tree_map(lambda x: x[i], TASKS)) for i in range(8)], axis=0)
    np.testing.assert_allclose(batched, loop, rtol=0, atol=1e-10)
    g_batch, _, c = ablo.hypergradient_batch(p, est, THETA, TASKS, key=KEY)
    np.testing.assert_allclose(flat(g_batch), loop, rtol=0, atol=1e-10)


def test_ufom_through_solve_is_unbiased():
    p = problem("gd", R)
    exact = flat(ablo.hypergradient(p, ablo.Reverse(), THETA, TASK)[0])
    fom = flat(ablo.hypergradient(p, ablo.FOM(), THETA, TASK)[0])
    n = 2000
    draw = lambda k: flat(grad_through_solve(p, ablo.UFOM(q=0.3), THETA, TASK, k))
    draws = np.asarray(jax.jit(jax.vmap(draw))(jax.random.split(jax.random.PRNGKey(5), n)))
    mean, sem = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(mean - exact) <= 4 * sem + 1e-12), (mean - exact) / sem
    assert np.max(np.abs(fom - exact) / np.maximum(sem, 1e-12)) > 20  # FOM's bias is far outside the band
    took_exact = np.mean(np.any(np.abs(draws - fom) > 1e-12, axis=1))
    assert abs(took_exact - 0.3) < 0.04


def test_cost_record_through_the_meter():
    p = problem("gd", R)
    solver = ablo.solve(p, ablo.Reverse(), with_cost=True)
    loss = lambda th, m, t: p.outer_loss(th, solver(th, t, None, m), t)
    g, c = jax.grad(loss, argnums=(0, 1))(THETA, ablo.cost_meter(), TASK)
    # r + 1 gradient evaluations (the outer one JAX computes included), r HVPs, one V-JVP, r states
    assert [float(x) for x in c[:5]] == [R + 1, R, 1, R, 0] and float(c.nonfinite) == 0
    _, c8 = jax.jit(jax.grad(lambda th, m: jnp.mean(jax.vmap(lambda t: loss(th, m, t))(TASKS)), argnums=(0, 1)))(
        THETA, ablo.cost_meter())
    assert float(c8.function_calls) == 8 * float(c.function_calls)
    ufom = ablo.solve(p, ablo.UFOM(q=0.5), with_cost=True)
    hvps = jax.jit(jax.vmap(lambda k: jax.grad(lambda m: p.outer_loss(THETA, ufom(THETA, TASK, k, m), TASK))(
        ablo.cost_meter()).hvps))(jax.random.split(jax.random.PRNGKey(0), 12))
    seen = set(np.asarray(hvps).tolist())
    assert seen == {0.0, float(R)}  # the drawn branch's HVPs


def test_a_sweep_over_q_compiles_once():
    p = problem("gd", R)
    key = jax.random.PRNGKey(3)
    f = jax.jit(lambda est: flat(grad_through_solve(p, est, THETA, TASK, key)))
    qs = [0.1, 0.3, 0.5, 0.7, 0.9]
    separate = [f(ablo.UFOM(q=q)) for q in qs]
    assert f._cache_size() == 1
    swept = jax.jit(jax.vmap(lambda q: flat(grad_through_solve(p, ablo.UFOM(q=q), THETA, TASK, key))))(jnp.asarray(qs))
    np.testing.assert_allclose(swept, np.stack(separate), rtol=0, atol=1e-12)
    # different q really change the estimate with this key (ξ = 1 for the larger q)
    assert len({tuple(np.round(np.asarray(s), 12)) for s in separate}) > 1
    for q, g in zip(qs, separate):  # and each equals the explicit API's draw with the same key
        np.testing.assert_allclose(g, flat(ablo.hypergradient(p, ablo.UFOM(q=q), THETA, TASK, key=key)[0]), atol=1e-10)


def test_a_sweep_over_inner_step_sizes_compiles_once():
    from _problems import init, inner_loss, outer_loss
    build = lambda lr: ablo.BilevelProblem(inner_loss, outer_loss, ablo.momentum(lr, beta=0.8), R, init=init)
    f = jax.jit(lambda lr: flat(grad_through_solve(build(lr), ablo.Reverse(), THETA, TASK)))
    lrs = [0.02, 0.05, 0.1, 0.2, 0.3]
    separate = [f(lr) for lr in lrs]
    assert f._cache_size() == 1
    swept = jax.jit(jax.vmap(lambda lr: flat(grad_through_solve(build(lr), ablo.Reverse(), THETA, TASK))))(
        jnp.asarray(lrs))
    np.testing.assert_allclose(swept, np.stack(separate), rtol=0, atol=1e-12)
    for lr, g in zip(lrs[:2], separate):  # a Python-float step size gives the same numbers
        np.testing.assert_allclose(g, flat(ablo.hypergradient(build(lr), ablo.Reverse(), THETA, TASK)[0]), atol=1e-12)


def test_traced_adam_betas_and_adaptive_settings():
    from _problems import init, inner_loss, outer_loss
    build = lambda b1, b2: ablo.BilevelProblem(inner_loss, outer_loss, ablo.adam(0.05, b1=b1, b2=b2), R, init=init)
    f = jax.jit(lambda b1, b2: flat(ablo.hypergradient_batch(build(b1, b2), ablo.Reverse(), THETA, TASKS)[0]))
    a, b = f(0.9, 0.999), f(0.5, 0.9)
    assert f._cache_size() == 1 and not np.allclose(a, b)
    est = ablo.AdaptiveUFOM(beta=0.9)
    step = jax.jit(lambda e, s: ablo.hypergradient_batch(problem("gd", R), e, THETA, TASKS, s, key=KEY)[1])
    s0 = est.init(problem("gd", R), THETA, TASK)
    step(est, s0), step(ablo.AdaptiveUFOM(beta=0.5, q_min=0.2), s0)
    assert step._cache_size() == 1


def test_estimators_are_pytrees_with_static_structure():
    leaves, treedef = jax.tree_util.tree_flatten(ablo.UFOM(q=0.3, exact=ablo.Checkpointed(M=2)))
    assert leaves == [0.3]
    rebuilt = jax.tree_util.tree_unflatten(treedef, [0.7])
    assert isinstance(rebuilt, ablo.UFOM) and rebuilt.q == 0.7 and rebuilt.exact == ablo.Checkpointed(M=2)
    assert jax.tree_util.tree_leaves(ablo.Truncated(K=3)) == []  # K is structure
    assert jax.tree_util.tree_leaves(ablo.Debiased(cheap=ablo.UFOM(q=0.2), q=0.5)) == [0.2, 0.5]
    batch = jax.vmap(lambda e: e.q * 2)(ablo.UFOM(q=jnp.asarray([0.1, 0.4])))
    np.testing.assert_allclose(batch, [0.2, 0.8])


@pytest.mark.parametrize("make", [lambda: ablo.UFOM(q=jnp.asarray([0.5, 1.5])), lambda: ablo.UFOM(q=jnp.asarray(0.0)),
                                  lambda: ablo.Debiased(q=np.float64(-1)), lambda: ablo.gd(jnp.asarray(-0.1)),
                                  lambda: ablo.momentum(0.1, beta=jnp.asarray(1.0)), lambda: ablo.adam(0.1, b1=2.0),
                                  lambda: ablo.AdaptiveUFOM(q_min=jnp.asarray(0.0))])
def test_concrete_bad_values_still_raise(make):
    with pytest.raises(ValueError, match=r"(q|lr|beta|b1|q_min) .*must be|must be a number"):
        make()


@pytest.mark.parametrize("est", [ablo.AdaptiveUFOM(), ablo.BSA(), ablo.TTSA(), ablo.Reptile()], ids=lambda e: e.name)
def test_state_carrying_estimators_point_to_the_explicit_api(est):
    with pytest.raises(ValueError, match=f"{est.name}.*cannot run inside ablo.solve.*"):
        ablo.solve(problem("gd", R), est)


def test_batch_entry_point_is_traceable_and_syncs_only_on_request():
    p = problem("gd", R)
    keys = jax.random.split(jax.random.PRNGKey(0), 6)
    g, _, c = jax.jit(jax.vmap(lambda k: ablo.hypergradient_batch(p, ablo.UFOM(q=0.5), THETA, TASKS, key=k)))(keys)
    assert c.hvps.shape == (6,) and not bool(c.nonfinite.any())
    with pytest.raises(ValueError, match="on_nonfinite='raise'.*cannot run under jit"):
        jax.jit(lambda th: ablo.hypergradient_batch(p, ablo.FOM(), th, TASKS, on_nonfinite="raise"))(THETA)
    diverging = ablo.BilevelProblem(lambda th, ph, t: 0.5 * jnp.sum(jnp.exp(th) * ph ** 2),
                                    lambda th, ph, t: jnp.sum(ph ** 2), ablo.gd(50.0), 400,
                                    init=lambda th, t: jnp.ones(3))
    _, _, c = ablo.hypergradient_batch(diverging, ablo.Reverse(), jnp.zeros(3), jnp.zeros((2, 1)))
    assert bool(c.nonfinite)
    with pytest.raises(ablo.NonFiniteHypergradient):
        ablo.hypergradient_batch(diverging, ablo.Reverse(), jnp.zeros(3), jnp.zeros((2, 1)), on_nonfinite="raise")


def test_objective_is_M_and_its_gradient_the_exact_one():
    p = problem("adam", R)
    M = ablo.objective(p)
    assert float(M(THETA, TASK)) == float(p.outer_loss(THETA, p.optimizer.params(p.run(THETA, TASK)), TASK))
    np.testing.assert_allclose(flat(jax.grad(M)(THETA, TASK)), flat(ablo.hypergradient(p, ablo.Reverse(), THETA, TASK)[0]),
                               atol=1e-10)
