"""task-interaction (Shaban et al. 2019 §4.2.2, App. G.2): the coupling regulariser is the paper's double
sum, the hypergradient in (B, ν) by reverse mode matches finite differences of the unrolled
objective (float64), the --tiny run writes every file with sane rows, and bad input is refused."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo import outer
from ablo.curvature import StepSizeError
from ablo.estimators import Reverse
from ablo.experiments import execute, get
from ablo.experiments import task_interaction as ti
from ablo.problems.task_interaction import regulariser
from ablo.config import ConfigError, build

V, D, N = 4, 6, 12  # classes, features, examples per set


def small_task(key):
    kx, ky, kv, kw = jax.random.split(key, 4)
    x = lambda k: jax.random.normal(k, (N, D), jnp.float64)
    y = lambda k: jax.random.randint(k, (N,), 0, V)
    return {"train": (x(kx), y(ky)), "val": (x(kv), y(kw))}


def small_theta(key):
    kb, kn = jax.random.split(key)
    return {"B": jax.random.normal(kb, (V, V), jnp.float64) - 1.0, "nu": jnp.asarray(-1.5, jnp.float64)
            + 0.3 * jax.random.normal(kn, (), jnp.float64)}


def test_regulariser_is_the_papers_double_sum():
    theta = small_theta(jax.random.PRNGKey(1))
    W = jax.random.normal(jax.random.PRNGKey(2), (D, V), jnp.float64)
    A = np.log1p(np.exp(np.asarray(theta["B"])))
    C, rho = A + A.T, float(np.log1p(np.exp(float(theta["nu"]))))
    Wn = np.asarray(W)
    direct = sum(C[i, j] * np.sum((Wn[:, i] - Wn[:, j]) ** 2) for i in range(V) for j in range(V))
    direct += rho * np.sum(Wn ** 2)
    np.testing.assert_allclose(float(regulariser(theta, W)), direct, rtol=1e-12)
    Cj, _ = ti.coupling(theta)
    assert np.all(np.asarray(Cj) >= 0) and np.allclose(Cj, np.asarray(Cj).T)


def test_hypergradient_in_B_and_nu_by_reverse_matches_finite_differences():
    problem = ti.make_problem(12, 0.1, D, V, jnp.float64)
    task, theta = small_task(jax.random.PRNGKey(0)), small_theta(jax.random.PRNGKey(3))
    g, _, _ = jax.jit(Reverse().estimate, static_argnums=0)(problem, theta, task, (), jax.random.PRNGKey(0))
    f = jax.jit(lambda th: problem.objective(th, task))
    eps = 1e-6
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 3)]:
        e = jnp.zeros((V, V), jnp.float64).at[i, j].set(eps)
        fd = (f({**theta, "B": theta["B"] + e}) - f({**theta, "B": theta["B"] - e})) / (2 * eps)
        np.testing.assert_allclose(float(g["B"][i, j]), float(fd), rtol=1e-5, atol=1e-11)
    fd_nu = (f({**theta, "nu": theta["nu"] + eps}) - f({**theta, "nu": theta["nu"] - eps})) / (2 * eps)
    np.testing.assert_allclose(float(g["nu"]), float(fd_nu), rtol=1e-5, atol=1e-11)
    assert abs(float(g["B"][0, 1])) > 1e-6 and abs(float(g["nu"])) > 1e-6  # the check is not vacuous
    assert abs(float(g["B"][3, 3])) < 1e-12  # C_ii multiplies ‖w_i − w_i‖² = 0


def test_hierarchy_order_groups_newsgroups_by_prefix():
    names = ["alt.atheism", "comp.graphics", "comp.windows.x", "misc.forsale", "rec.autos", "sci.crypt",
             "soc.religion.christian", "talk.politics.guns", "talk.religion.misc"]
    got = [names[i] for i in ti.hierarchy_order(names)]
    assert got == ["comp.graphics", "comp.windows.x", "rec.autos", "sci.crypt", "talk.politics.guns",
                   "talk.religion.misc", "alt.atheism", "misc.forsale", "soc.religion.christian"]


def test_balanced_split_is_disjoint_and_balanced():
    y = np.repeat(np.arange(ti.CLASSES), 7)
    tr, va = ti.balanced_split(y, 3, np.random.default_rng(0))
    assert not set(tr) & set(va)
    assert np.all(np.bincount(y[tr], minlength=ti.CLASSES) == 3) and np.all(np.bincount(y[va], minlength=ti.CLASSES) == 3)
    with pytest.raises(ValueError, match="per_class: 4 needs 8 examples of every class.*per_class <= 3"):
        ti.balanced_split(y, 4, np.random.default_rng(0))


@pytest.fixture(scope="module", params=[{"trials": 1}, pytest.param({}, marks=pytest.mark.slow)],
                ids=["one-trial", "tiny"])
def tiny_run(request, tmp_path_factory):
    """The --tiny run (its two trials with ``-m slow``; one in the default run: each trial compiles
    every method's step and evaluation again)."""
    exp = get("task-interaction")
    cfg = exp.make_config(request.param, tiny=True)
    out = tmp_path_factory.mktemp("task_interaction")
    return cfg, out, execute(exp, cfg, out)


def test_tiny_run_writes_every_file(tiny_run):
    cfg, out, summary = tiny_run
    for name in ("summary.json", "results.md", "table3.csv", "curves.csv", "learned_C.csv", "fig6.png",
                 "learned_C.png"):
        assert (out / name).stat().st_size > 0, name
    assert "SMOKE RUN" in (out / "results.md").read_text() and "GENERATED" in (out / "results.md").read_text()
    rows = json.loads((out / "summary.json").read_text())["results"]
    assert [(r["method"], r["trial"]) for r in rows] == [(m, t) for t in range(cfg.trials) for m in cfg.methods]  # the driver: cases outer
    for r in rows:
        # FOM's estimate is exactly 0 here (W_0 and the validation loss do not depend on θ): it stops after
        # outer.SATURATED_STEPS steps, saying so; the others run every step
        steps = outer.SATURATED_STEPS if r["method"] == "fom" else cfg.outer_steps
        assert 0 <= r["test_acc"] <= 1 and r["hyper_iterations"] == steps and r["function_calls"] > 0
        if r["method"] == "reverse":
            assert r["cosine"] == pytest.approx(1.0, abs=1e-5)  # the exact estimate against itself
        if r["method"] == "fom":
            assert r["cosine"] == 0.0  # ∇_θ f = 0 and V is constant: FOM's hypergradient is exactly 0 here
    table = list(csv.DictReader((out / "table3.csv").open()))
    assert [t["spec"] for t in table] == list(cfg.methods)
    curves = list(csv.DictReader((out / "curves.csv").open()))
    steps = sorted({int(c["step"]) for c in curves})
    # every eval_every steps, and FOM's last step (it stops after outer.SATURATED_STEPS zero hypergradients)
    assert steps == sorted(set(range(0, cfg.outer_steps + 1, cfg.eval_every)) | {outer.SATURATED_STEPS})
    assert len(list(csv.DictReader((out / "learned_C.csv").open()))) == len(cfg.methods) * ti.CLASSES


def test_hostile_config_values_are_refused():
    with pytest.raises(ConfigError, match="eval_every: 50 is above outer_steps = 10"):
        build(ti.Config, {"outer_steps": "10", "eval_every": "50"})
    with pytest.raises(ConfigError, match=r"methods: truncated-200: K .* \[0, 100\]"):
        build(ti.Config, {"methods": "truncated-200"})
    with pytest.raises(ConfigError, match="B0: expected a finite number"):
        build(ti.Config, {"B0": "nan"})
    with pytest.raises(ConfigError, match="per_class: 0 is out of range"):
        build(ti.Config, {"per_class": "0"})
    with pytest.raises(ConfigError, match="synthetic_train is not used here"):
        build(ti.Config, {"data_dir": "/somewhere", "synthetic_train": "100"})


def test_inner_step_size_above_two_over_L_is_refused(tmp_path):
    exp = get("task-interaction")
    cfg = exp.make_config({"inner_lr": "5.0"}, tiny=True)
    with pytest.raises(StepSizeError, match="inner_lr = 5 is at or above 2/L"):
        execute(exp, cfg, tmp_path / "run")
