"""The outer loop (Likhosherstov et al. 2021 Alg. 1): it optimizes, stops at its budgets, counts calls, logs."""

import math

import numpy as np

import jax
import jax.numpy as jnp
import optax
import pytest

import ablo
from ablo import outer
from ablo.outer import Budget, Checkpointing, Evaluation, Options, Progress, run

R = 4


def meta_problem():
    """MAML-style: φ_0 = θ, tasks are quadratics centred at c ~ N(3, 1); the best θ is near 3."""
    inner = lambda th, phi, c: 0.5 * jnp.sum((phi - c) ** 2)
    outer = lambda th, phi, c: 0.5 * jnp.sum((phi - c) ** 2) + 0.5 * jnp.sum((phi - th) ** 2)
    return ablo.BilevelProblem(inner, outer, ablo.gd(0.1), steps=R)


def sampler(key):
    return 3.0 + jax.random.normal(key, (2,))


OPT = optax.sgd(0.5)
PROBLEM = meta_problem()
KEY = jax.random.PRNGKey(0)


def test_outer_loop_decreases_the_objective():
    eval_tasks = jax.vmap(sampler)(jax.random.split(jax.random.PRNGKey(9), 64))
    objective = lambda th: float(jnp.mean(jax.vmap(PROBLEM.objective, (None, 0))(th, eval_tasks)))
    theta0 = jnp.zeros(2)
    res = run(PROBLEM, ablo.Reverse(), OPT, theta0, sampler, key=KEY, budget=Budget(steps=30),
              options=Options(4, Evaluation(lambda th: {"objective": objective(th)}, every=10), progress=Progress(10)))
    assert objective(res.theta) < 0.2 * objective(theta0)
    assert [e["step"] for e in res.log] == [10, 20, 30]
    assert all(e["objective"] < 0.2 * objective(theta0) for e in res.log)
    assert res.log[-1]["objective"] == objective(res.theta)  # eval_fn sees the final θ at the last step
    assert res.steps == 30 and res.skipped == 0


def test_one_compilation_for_the_whole_run():
    traces = {}

    def counting(name):
        def s(key):
            traces[name] = traces.get(name, 0) + 1
            return sampler(key)
        return s

    for name, steps in (("short", 1), ("long", 25)):
        run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), counting(name), key=KEY, budget=Budget(steps=steps))
    assert traces["short"] == traces["long"]


def test_step_budget_and_call_count():
    m = 3
    res = run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, key=KEY, budget=Budget(steps=7), options=Options(m))
    per_step = m * (R + 2)  # FOM: r + 1 gradient evaluations and one JVP of V per task
    assert res.steps == 7 and len(res.log) == 7
    assert res.function_calls == 7 * per_step
    assert [e["function_calls"] for e in res.log] == [per_step * (k + 1) for k in range(7)]
    # the whole Cost record, summed over the run (states: the most held at once)
    assert res.cost == {"grad_evals": 7 * m * (R + 1), "hvps": 0, "jvps": 7 * m, "states": m, "samples": 0,
                        "function_calls": 7 * per_step}
    assert res.stopped == ""


def test_a_run_whose_hypergradient_stays_exactly_zero_stops_and_says_so():
    """V and L_out independent of θ: FOM's estimate is exactly 0, θ never moves; the run stops after
    SATURATED_STEPS such steps with the reason, instead of spending its whole budget."""
    blind = ablo.BilevelProblem(lambda th, phi, c: 0.5 * jnp.sum(th * (phi - c) ** 2),
                                lambda th, phi, c: 0.5 * jnp.sum((phi - c) ** 2), ablo.gd(0.1), steps=R,
                                init=lambda th, c: jnp.zeros(2))
    res = run(blind, ablo.FOM(), OPT, jnp.ones(2), sampler, key=KEY, budget=Budget(steps=50))
    assert res.steps == outer.SATURATED_STEPS and "exactly 0" in res.stopped and "fom" in res.stopped
    assert np.array_equal(res.theta, jnp.ones(2))
    moving = run(blind, ablo.Reverse(), OPT, jnp.ones(2), sampler, key=KEY, budget=Budget(steps=8))
    assert moving.steps == 8 and moving.stopped == ""
    # UFOM draws FOM's 0 on most steps of this problem (the exact branch with probability q): a zero
    # draw is an estimate, not saturation, so the run goes on and θ moves when the branch is drawn
    ufom = run(blind, ablo.UFOM(q=0.2), OPT, jnp.ones(2), sampler, key=KEY, budget=Budget(steps=40))
    zeros = [e["grad_norm"] == 0 for e in ufom.log]
    assert ufom.steps == 40 and ufom.stopped == "" and any(zeros[:outer.SATURATED_STEPS * 2])
    assert not np.array_equal(ufom.theta, jnp.ones(2))


@pytest.mark.parametrize("q", [0.3, 1.0])
def test_call_budget_stops_at_the_first_step_reaching_it(q):
    budget = 500.0
    res = run(PROBLEM, ablo.UFOM(q=q), OPT, jnp.zeros(2), sampler, key=KEY, budget=Budget(function_calls=budget),
              options=Options(2))
    calls = [e["function_calls"] for e in res.log]
    diffs = [b - a for a, b in zip([0.0] + calls, calls)]
    assert res.function_calls == calls[-1] == math.fsum(diffs)
    assert calls[-1] >= budget > calls[-2]
    # each task costs what UFOM reports for ξ = 0 (FOM's share) or ξ = 1 (the exact branch too)
    one = lambda est: float(ablo.hypergradient(PROBLEM, est, jnp.zeros(2), sampler(KEY), key=KEY)[2].function_calls)
    lo, hi = one(ablo.FOM()), one(ablo.UFOM(q=1.0))
    assert lo < hi
    assert set(diffs) <= ({2 * hi} if q == 1.0 else {2 * lo, lo + hi, 2 * hi})
    assert all(e["q"] == q for e in res.log)


def test_seconds_budget_stops_after_one_step():
    res = run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, key=KEY, budget=Budget(seconds=1e-9, steps=50))
    assert res.steps == 1 and res.seconds >= 1e-9


def test_same_key_same_run_other_key_other_run():
    go = lambda key: run(PROBLEM, ablo.UFOM(q=0.5), OPT, jnp.zeros(2), sampler, key=key, budget=Budget(steps=5),
                         options=Options(2))
    a, b, c = go(KEY), go(KEY), go(jax.random.PRNGKey(1))
    assert jnp.array_equal(a.theta, b.theta) and not jnp.array_equal(a.theta, c.theta)


def test_progress_is_advanced_once_per_step():
    import contextlib
    seen = []

    @contextlib.contextmanager
    def progress(description, total):
        seen.append((description, total))
        yield lambda n=1: seen.append(n)

    run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, key=KEY, budget=Budget(steps=3),
        options=Options(progress=Progress(bar=progress)))
    assert seen == [("fom", 3), 0, 1, 1, 1]
    seen.clear()
    run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, key=KEY, budget=Budget(steps=1),
        options=Options(progress=Progress(bar=progress, label="fom seed 3")))
    assert seen == [("fom seed 3", 1), 0, 1]


@pytest.mark.parametrize("kwargs, match", [
    (dict(budget=Budget()), "unbounded"),
    (dict(budget=dict(steps=3)), "budget must be an ablo.Budget"),
    (dict(key=0), "key"),
    (dict(key=jnp.zeros(3)), "key"),
    (dict(options=dict(meta_batch=2)), "options must be an ablo.outer.Options"),
])
def test_bad_arguments_are_value_errors(kwargs, match):
    args = dict(key=KEY, budget=Budget(steps=1)) | kwargs
    with pytest.raises(ValueError, match=match):
        run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, **args)


@pytest.mark.parametrize("build, match", [
    (lambda: Options(meta_batch=0), "Options.meta_batch"),
    (lambda: Options(on_nonfinite="ignore"), "Options.on_nonfinite"),
    (lambda: Options(devices=64), "devices"),
    (lambda: Options(evaluation=dict(every=2)), "Options.evaluation"),
    (lambda: Options(checkpoint="x"), "Options.checkpoint"),
    (lambda: Progress(log_every=2.5), "Progress.log_every"),
    (lambda: Progress(losses="no"), "Progress.losses"),
    (lambda: Progress(bar=3), "Progress.bar"),
    (lambda: Evaluation(3), "Evaluation.fn"),
    (lambda: Evaluation(every=0), "Evaluation.every"),
    (lambda: Evaluation(every=2, every_calls=10.0), "not both"),
    (lambda: Checkpointing(3), "Checkpointing.directory"),
    (lambda: Checkpointing("x", resume="yes"), "Checkpointing.resume"),
    (lambda: Checkpointing("x", every=-1), "Checkpointing.every"),
])
def test_option_values_check_themselves_when_built(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_run_takes_at_most_eight_parameters():
    import inspect
    assert len(inspect.signature(run).parameters) <= 8


def test_bad_positional_arguments_are_value_errors():
    for args, match in [((None, ablo.FOM(), OPT, jnp.zeros(2), sampler), "problem"),
                        ((PROBLEM, "fom", OPT, jnp.zeros(2), sampler), "estimator"),
                        ((PROBLEM, ablo.FOM(), 0.1, jnp.zeros(2), sampler), "optax"),
                        ((PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), None), "sampler")]:
        with pytest.raises(ValueError, match=match):
            run(*args, key=KEY, budget=Budget(steps=1))


def test_losses_can_be_left_out_of_the_log_and_seconds_exclude_evaluation(monkeypatch):
    import optax

    import ablo
    import ablo.outer as outer

    clock = {"t": 0.0}

    def perf_counter():  # a fake clock: each reading advances 1 s
        clock["t"] += 1.0
        return clock["t"]

    monkeypatch.setattr(outer.time, "perf_counter", perf_counter)

    def eval_fn(theta):  # an evaluation that "takes" 100 s of the fake clock
        clock["t"] += 100.0
        return {"m": 1.0}

    quad = lambda th, ph, t: 0.5 * jnp.sum(jnp.exp(th) * (ph - t) ** 2)
    p = ablo.BilevelProblem(quad, lambda th, ph, t: jnp.sum(ph ** 2), ablo.gd(0.1), 3,
                            init=lambda th, t: jnp.zeros(2))
    res = outer.run(p, ablo.FOM(), optax.sgd(0.1), jnp.zeros(2), lambda k: jnp.ones(2), key=jax.random.PRNGKey(0),
                    budget=outer.Budget(steps=4),
                    options=outer.Options(evaluation=outer.Evaluation(eval_fn, every=1),
                                          progress=outer.Progress(losses=False)))
    assert all(e["outer_loss"] is None and e["inner_loss"] is None for e in res.log)
    assert [e["seconds"] for e in res.log] == [1.0, 2.0, 3.0, 4.0]  # one clock tick per step, evals excluded
    assert res.seconds == 4.0


def test_ctrl_c_checkpoints_the_last_completed_step_and_resume_continues_exactly(tmp_path):
    from ablo import checkpoint as ckpt
    from ablo.outer import Interrupted

    def interrupting(theta, state):  # Ctrl-C arrives while step 3 is being evaluated
        if int(state.step) == 3:
            raise KeyboardInterrupt
        return {"m": 1.0}

    kw = dict(key=KEY, budget=Budget(steps=6))
    with pytest.raises(Interrupted) as info:
        run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, **kw,
            options=Options(evaluation=Evaluation(interrupting, every=1), checkpoint=Checkpointing(tmp_path)))
    assert info.value.step == 3 and ckpt.info(tmp_path)["step"] == 3
    started = []
    metric = Evaluation(lambda th: {"m": 1.0}, every=1)
    resumed = run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, **kw,
                  options=Options(evaluation=metric, checkpoint=Checkpointing(tmp_path, resume=True,
                                                                                on_resume=started.append)))
    whole = run(PROBLEM, ablo.FOM(), OPT, jnp.zeros(2), sampler, **kw, options=Options(evaluation=metric))
    assert started == [3]
    np.testing.assert_array_equal(resumed.theta, whole.theta)


def test_pure_step_under_vmap_runs_many_seeds_at_once():
    """outer.make_step is pure: vmapped over θ_0 it equals separate runs."""
    from ablo import outer

    step = outer.make_step(PROBLEM, ablo.FOM(), OPT, sampler)
    thetas = jnp.stack([jnp.zeros(2), jnp.ones(2), -jnp.ones(2)])
    states = jax.vmap(lambda th: outer.init(PROBLEM, ablo.FOM(), OPT, th, sampler(KEY)))(thetas)
    final, m = jax.jit(jax.vmap(lambda s: outer.scan(step, s, KEY, 4)))(states)
    for i in range(3):
        one, _ = jax.jit(lambda s: outer.scan(step, s, KEY, 4))(outer.init(PROBLEM, ablo.FOM(), OPT, thetas[i],
                                                                            sampler(KEY)))
        np.testing.assert_allclose(final.theta[i], one.theta, rtol=1e-12)
    assert m["theta"].shape == (3, 4, 2) and not bool(m["nonfinite"].any())


def test_the_run_total_is_exact_past_float32_integers():
    """The one call counter is a compensated float32 sum: 2^24 + 1000 unit steps is 2^24 + 1000,
    where a plain float32 running sum stays at 2^24 (2^24 + 1 rounds back to it)."""
    from ablo import cost
    step = cost.cost(grad_evals=1.0, hvps=0.1, states=3.0)

    @jax.jit
    def total_after(n_start):
        def body(carry, _):
            return cost.accumulate(*carry, step), None
        (total, _), _ = jax.lax.scan(body, (cost.cost(grad_evals=n_start), cost.zero()), None, length=1000)
        plain = jax.lax.fori_loop(0, 1000, lambda i, t: t + jnp.float32(1.0), jnp.float32(n_start))
        return total, plain

    total, plain = total_after(2.0 ** 24)
    assert float(total.grad_evals) == 2.0 ** 24 + 1000 and float(plain) == 2.0 ** 24
    assert float(total.hvps) == pytest.approx(100.0, rel=1e-6) and float(total.states) == 3.0


def test_the_whole_cost_record_is_carried_and_reported():
    """RunResult.cost sums every Cost field of the steps (states: the most held at once), read from
    the outer state: equal to the per-task costs that ablo.hypergradient reports."""
    res = run(PROBLEM, ablo.Reverse(), OPT, jnp.zeros(2), sampler, key=KEY, budget=Budget(steps=3),
              options=Options(2))
    one = ablo.hypergradient(PROBLEM, ablo.Reverse(), jnp.zeros(2), sampler(KEY))[2]
    assert res.cost == {"grad_evals": 6 * float(one.grad_evals), "hvps": 6 * float(one.hvps),
                        "jvps": 6 * float(one.jvps), "states": 2 * float(one.states), "samples": 0.0,
                        "function_calls": 6 * float(one.function_calls)}
    assert res.function_calls == res.cost["function_calls"] == res.log[-1]["function_calls"]
    assert set(res.record()) >= {"steps", "grad_evals", "hvps", "jvps", "states", "samples", "function_calls",
                                 "seconds", "compile_seconds", "skipped", "stopped"}
