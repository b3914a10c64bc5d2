"""Telescopes under a user's own vmap: each task runs the truncation length it drew and no other
(``base.switch``), so the work done is the sum of the cost records. Host callbacks count the
executions of each branch and of each HVP; float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ablo
from ablo.estimators import AdaptiveTelescope, Telescope, parse
from ablo.estimators import telescope as telescope_module
from ablo.estimators.base import switch
from ablo.estimators.telescope import doubling

import _problems as P

R = 4
TASKS = 32
RAN = {}  # truncation length index -> executions
HVPS = []  # one entry per task per HVP executed


class CountingProblem(ablo.BilevelProblem):
    """A problem whose HVP reports each execution to the host."""

    def inner_hvp(self, theta, phi, v, task, mixed=False):
        jax.debug.callback(lambda x: HVPS.append(int(np.size(x))), task[1][0])
        return super().inner_hvp(theta, phi, v, task, mixed)


@pytest.fixture
def counted(monkeypatch):
    """Each telescope branch reports its index to the host; counters emptied."""
    sweep = telescope_module.sweep

    def counting(problem, theta, task, lengths, i, p, form):
        jax.debug.callback(lambda x: RAN.__setitem__(i, RAN.get(i, 0) + int(np.size(x))), task[1][0])
        return sweep(problem, theta, task, lengths, i, p, form)

    monkeypatch.setattr(telescope_module, "sweep", counting)
    RAN.clear()
    HVPS.clear()


def setup():
    problem = CountingProblem(P.inner_loss, P.outer_loss, P.OPTIMIZERS["momentum"](), R, init=P.init)
    tasks = jax.vmap(P.make_task)(jax.random.split(jax.random.PRNGKey(3), TASKS))
    keys = jax.random.split(jax.random.PRNGKey(5), TASKS)
    return problem, P.make_theta(), tasks, keys


def drawn(est, keys, p=None):
    """N for each key, as ``telescope.draw`` draws it."""
    p = est.distribution(R) if p is None else p
    return np.asarray(jax.vmap(lambda k: jax.random.choice(k, len(doubling(R)), p=p))(keys))


def task_at(tasks, i):
    return jax.tree_util.tree_map(lambda x: x[i], tasks)


def ran():
    jax.effects_barrier()
    return np.array([RAN.get(i, 0) for i in range(len(doubling(R)))])


ENTRIES = {"estimate": lambda problem, est, theta, t, k: est.estimate(problem, theta, t, (), k),
           "hypergradient": lambda problem, est, theta, t, k: ablo.hypergradient(problem, est, theta, t, key=k)}


@pytest.mark.parametrize("form,entry", [("single", "estimate"), ("roulette", "hypergradient")])
def test_user_vmap_runs_each_length_as_often_as_it_was_drawn(counted, form, entry):
    problem, theta, tasks, keys = setup()
    est = Telescope(form=form)
    g, _, c = jax.jit(jax.vmap(lambda t, k: ENTRIES[entry](problem, est, theta, t, k)))(tasks, keys)
    N = drawn(est, keys)
    counts = np.bincount(N, minlength=len(doubling(R)))
    assert np.count_nonzero(counts) >= 2  # several lengths drawn: a select running all of them would differ
    np.testing.assert_array_equal(ran(), counts)
    lengths = np.asarray(doubling(R))
    # the work done (HVPs executed) is the batched cost record's total, Σ_t K_{N_t}
    assert sum(HVPS) == float(c.hvps.sum()) == lengths[N].sum()
    np.testing.assert_array_equal(np.asarray(c.hvps), lengths[N])
    # the same estimates as the per-task loop
    one = jax.jit(lambda t, k: est.estimate(problem, theta, t, (), k))
    for i in range(TASKS):
        g_i, _, c_i = one(task_at(tasks, i), keys[i])
        np.testing.assert_allclose(P.flat(task_at(g, i)), P.flat(g_i), rtol=1e-12, atol=1e-14)
        assert float(c_i.hvps) == float(c.hvps[i])


def test_nested_vmap_maps_over_both_axes(counted):
    """vmap of vmap over a 4 x 8 grid of tasks and keys: a map of maps, each task runs its own length."""
    problem, theta, tasks, keys = setup()
    grid = lambda x: x.reshape(4, 8, *x.shape[1:])
    est = Telescope()
    inner = jax.vmap(lambda t, k: est.estimate(problem, theta, t, (), k)[0::2])
    g, c = jax.jit(jax.vmap(inner))(jax.tree_util.tree_map(grid, tasks), grid(keys))
    N = drawn(est, keys)
    np.testing.assert_array_equal(ran(), np.bincount(N, minlength=len(doubling(R))))
    assert sum(HVPS) == float(c.hvps.sum()) == np.asarray(doubling(R))[N].sum()
    g_9 = est.estimate(problem, theta, task_at(tasks, 9), (), keys[9])[0]
    np.testing.assert_allclose(P.flat(task_at(task_at(g, 1), 1)), P.flat(g_9), rtol=1e-12, atol=1e-14)


def test_vmap_over_keys_runs_each_drawn_length_once(counted):
    """One task, many keys (a variance measurement): every key's branch i is the same value, so each
    length drawn runs once and no other runs; per task of an outer vmap, likewise."""
    problem, theta, tasks, keys = setup()
    est = Telescope(form="roulette", probs=(0.5, 0.4, 0.1))  # r is rarely drawn: some batches never run it
    lengths = np.asarray(doubling(R))
    task = task_at(tasks, 0)
    keys = jax.random.split(jax.random.PRNGKey(8), 6)
    g, _, c = jax.jit(jax.vmap(lambda k: est.estimate(problem, theta, task, (), k)))(keys)
    N = drawn(est, keys)
    assert 2 <= len(set(N.tolist())) < len(lengths)  # some lengths drawn several times, one never
    np.testing.assert_array_equal(ran(), np.isin(np.arange(len(lengths)), N))
    assert sum(HVPS) == lengths[np.unique(N)].sum()
    np.testing.assert_array_equal(np.asarray(c.hvps), lengths[N])  # each key's record: its own draw
    for j in (0, 5):
        g_j = est.estimate(problem, theta, task, (), keys[j])[0]
        np.testing.assert_allclose(P.flat(task_at(g, j)), P.flat(g_j), rtol=1e-12, atol=1e-14)
    # an outer vmap over tasks: the inner rule's "drawn by some key" is batched, so it maps over tasks
    RAN.clear()
    HVPS.clear()
    per_task = jax.random.split(jax.random.PRNGKey(4), (4, 6))
    inner = jax.vmap(lambda t, k: est.estimate(problem, theta, t, (), k)[0], in_axes=(None, 0))
    g = jax.jit(jax.vmap(inner))(jax.tree_util.tree_map(lambda x: x[:4], tasks), per_task)
    N = drawn(est, per_task.reshape(-1, *per_task.shape[2:])).reshape(4, 6)
    once = np.array([np.isin(np.arange(len(lengths)), row) for row in N])
    np.testing.assert_array_equal(ran(), once.sum(0))
    assert sum(HVPS) == sum(lengths[np.unique(row)].sum() for row in N)
    g_23 = est.estimate(problem, theta, task_at(tasks, 2), (), per_task[2, 3])[0]
    np.testing.assert_allclose(P.flat(task_at(task_at(g, 2), 3)), P.flat(g_23), rtol=1e-12, atol=1e-14)


def test_one_key_for_all_tasks_keeps_one_switch(counted):
    """An unbatched draw (the same key for every task): one branch, run batched over the tasks."""
    problem, theta, tasks, keys = setup()
    est = Telescope()
    g, _, c = jax.jit(jax.vmap(lambda t: est.estimate(problem, theta, t, (), keys[0])))(tasks)
    (N,) = drawn(est, keys[:1])
    K = doubling(R)[N]
    assert sum(HVPS) == float(c.hvps.sum()) == TASKS * K
    assert ran()[N] == TASKS and ran().sum() == TASKS
    g_3 = est.estimate(problem, theta, task_at(tasks, 3), (), keys[0])[0]
    np.testing.assert_allclose(P.flat(task_at(g, 3)), P.flat(g_3), rtol=1e-12, atol=1e-14)


def test_estimate_batch_pays_what_it_reports(counted):
    problem, theta, tasks, _ = setup()
    est, key = Telescope(form="roulette"), jax.random.PRNGKey(11)
    g, _, c = jax.jit(lambda: est.estimate_batch(problem, theta, tasks, (), key))()
    N = drawn(est, jax.random.split(key, TASKS))
    np.testing.assert_array_equal(ran(), np.bincount(N, minlength=len(doubling(R))))
    assert sum(HVPS) == float(c.hvps) == np.asarray(doubling(R))[N].sum()


def test_adaptive_under_vmap_with_a_shared_state(counted):
    """The adaptive form's p comes from the state: shared over the batch, each task still runs its draw."""
    problem, theta, tasks, keys = setup()
    est = AdaptiveTelescope()
    state = est.init(problem, theta, task_at(tasks, 0))
    state = jax.jit(lambda s: est.estimate(problem, theta, task_at(tasks, 0), s, keys[0])[1])(state)
    p = est.probs_of(state, R)
    jax.effects_barrier()
    RAN.clear()
    HVPS.clear()
    g, _, c = jax.jit(jax.vmap(lambda t, k: est.estimate(problem, theta, t, state, k)))(tasks, keys)
    N = drawn(est, keys, p)
    np.testing.assert_array_equal(ran(), np.bincount(N, minlength=len(doubling(R))))
    assert sum(HVPS) == float(c.hvps.sum()) == np.asarray(doubling(R))[N].sum()
    g_5 = est.estimate(problem, theta, task_at(tasks, 5), state, keys[5])[0]
    np.testing.assert_allclose(P.flat(task_at(g, 5)), P.flat(g_5), rtol=1e-12, atol=1e-14)


def test_adaptive_refuses_the_roulette_form():
    with pytest.raises(ValueError, match="form must be 'single' for adaptive-telescope.*form='roulette'"):
        AdaptiveTelescope(form="roulette")
    with pytest.raises(ValueError, match="form must be 'single'"):
        parse("adaptive-telescope:form=roulette")
    assert parse("adaptive-telescope:form=single").form == "single"


def test_forward_mode_is_the_drawn_branch_s_jvp():
    """jvp through the switch (its custom_jvp), alone and under vmap over keys, equals the jvp of
    the drawn branch's own sweep."""
    problem = P.problem("gd", R)
    theta, task = P.make_theta(), P.make_task(jax.random.PRNGKey(0))
    tangent = jax.tree_util.tree_map(lambda x: jnp.full_like(x, 0.7), theta)
    est = Telescope(form="roulette")
    p, lengths = est.distribution(R), doubling(R)
    keys = jax.random.split(jax.random.PRNGKey(2), 6)
    jvp = lambda k: jax.jvp(lambda th: est.estimate(problem, th, task, (), k)[0], (theta,), (tangent,))
    batched = jax.jit(jax.vmap(jvp))(keys)
    alone = jax.jit(jvp)(keys[0])
    N = drawn(est, keys)
    assert len(set(N.tolist())) >= 2
    branch_jvp = jax.jit(lambda n: jax.jvp(lambda th: telescope_module.sweep(problem, th, task, lengths, n, p,
                                                                             "roulette")[0], (theta,), (tangent,)),
                         static_argnums=0)
    for a, b in zip(alone, branch_jvp(int(N[0]))):
        np.testing.assert_allclose(P.flat(a), P.flat(b), rtol=1e-12, atol=1e-14)
    for j, n in enumerate(N):
        for a, b in zip(batched, branch_jvp(int(n))):
            np.testing.assert_allclose(P.flat(task_at(a, j)), P.flat(b), rtol=1e-12, atol=1e-14)


def test_switch_on_plain_functions():
    """Unbatched, switch is lax.switch; under vmap each element gets its own branch's value, whether
    the index, the operand or both are batched."""
    branches = [lambda x: x + 1.0, lambda x: 2.0 * x, lambda x: x ** 2]
    x = jnp.arange(4.0)
    for i in range(3):
        np.testing.assert_array_equal(switch(i, branches, x[1]), branches[i](x[1]))
        np.testing.assert_array_equal(jax.vmap(lambda v: switch(i, branches, v))(x), branches[i](x))
    idx = jnp.array([2, 0, 1, 2])
    np.testing.assert_array_equal(jax.vmap(lambda j, v: switch(j, branches, v))(idx, x),
                                  [branches[int(j)](v) for j, v in zip(idx, x)])
    np.testing.assert_array_equal(jax.vmap(lambda j: switch(j, branches, x))(idx),
                                  [branches[int(j)](x) for j in idx])
    np.testing.assert_array_equal(jax.jit(jax.vmap(lambda j: switch(j, branches, x[2])))(idx),
                                  [branches[int(j)](x[2]) for j in idx])
