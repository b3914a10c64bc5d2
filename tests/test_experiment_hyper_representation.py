"""hyper-representation (Shaban et al. 2019 §4.3, App. G.3; Ji et al. 2021, §5.2): the character split, the episodes,
one hypergradient against float64 finite differences, the --tiny run's files, and Ji et al. 2021's setting
(adapted=1, learn_rho=false: a strongly convex inner problem, where AID-BiO agrees with reverse mode; maml)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo.estimators import Reverse, Truncated, parse
from ablo.experiments import execute, get
from ablo.experiments import hyper_representation as hr
from ablo.problems.hyper_representation import synthetic_omniglot
from ablo.problems.hyper_representation import episode_sampler
from ablo.config import ConfigError, build
from _shared_data import SHARED_DATA

REAL = SHARED_DATA / "omniglot" if (SHARED_DATA / "omniglot" / "images_background.npz").is_file() else None


def check_split(parts, n):
    train, val, test = parts
    assert (len(train), len(val), len(test)) == (1200, 100, 323)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == n == 1623  # disjoint and covering every character
    assert joined.min() == 0 and joined.max() == n - 1


def test_character_split_is_disjoint_with_the_papers_sizes():
    check_split(hr.split_characters(1623, (1200, 100, 323), seed=0), 1623)
    a, b = hr.split_characters(1623, (1200, 100, 323), 0), hr.split_characters(1623, (1200, 100, 323), 1)
    assert not np.array_equal(a[2], b[2])  # the seed really draws the split
    with pytest.raises(ValueError, match="split"):
        hr.split_characters(1623, (1200, 100, 300), 0)


def test_split_of_an_omniglot_shaped_fixture(tmp_path):
    """964 background + 659 evaluation characters in Omniglot's npz layout (tiny images)."""
    rng = np.random.default_rng(0)
    for name, n in (("background", 964), ("evaluation", 659)):
        np.savez(tmp_path / f"images_{name}.npz", images=rng.random((n, 20, 10, 10)) < 0.8)
    cfg = build(hr.Config, {"data_dir": str(tmp_path), "size": 5})
    images = hr.load_characters(cfg)
    assert images.shape == (1623, 20, 5, 5) and images.dtype == np.uint8
    check_split(hr.split_characters(images.shape[0], cfg.split, cfg.split_seed), images.shape[0])


@pytest.mark.skipif(REAL is None, reason=f"real Omniglot not found in {SHARED_DATA} (set ABLO_SHARED_DATA)")
def test_split_of_the_real_omniglot():
    cfg = build(hr.Config, {"data_dir": str(REAL), "size": 7})
    images = hr.load_characters(cfg)
    assert images.shape == (1623, 20, 7, 7) and images.max() > 0  # ink present
    check_split(hr.split_characters(images.shape[0], cfg.split, cfg.split_seed), images.shape[0])


def test_episode_has_ways_shots_and_queries_from_distinct_classes():
    images = np.arange(30 * 20 * 2 * 2, dtype=np.float64).reshape(30, 20, 2, 2) / (30 * 20 * 4)
    task = episode_sampler(images, ways=5, shots=1, queries=15)(jax.random.PRNGKey(3))
    (xs, _), (xq, yq) = task["support"], task["query"]
    assert xs.shape == (5, 2, 2, 1) and xq.shape == (75, 2, 2, 1)
    np.testing.assert_array_equal(np.bincount(np.asarray(yq)), [15] * 5)
    cls = lambda x: np.rint(np.asarray(x[:, 0, 0, 0]) * (30 * 20 * 4)).astype(int) // 80  # character of each drawing
    support_cls, query_cls = cls(xs), cls(xq)
    assert len(set(support_cls)) == 5
    for label in range(5):  # every query drawing of a label is of its support character, and a new drawing
        assert set(query_cls[np.asarray(yq) == label]) == {support_cls[label]}
    assert len({tuple(np.asarray(x).ravel()) for x in np.concatenate([xs, xq])}) == 80
    with pytest.raises(ValueError, match="queries"):
        episode_sampler(images, ways=5, shots=1, queries=20)


def test_config_refuses_a_truncation_deeper_than_T_and_bad_splits():
    with pytest.raises(ConfigError, match="truncated-9"):
        build(hr.Config, {"steps": 5, "table_methods": "truncated-9"})
    with pytest.raises(ConfigError, match="split"):
        build(hr.Config, {"split": "1200,100"})
    with pytest.raises(ConfigError, match="shots \\+ queries"):
        build(hr.Config, {"queries": 19, "shots": 2})


def test_config_names_the_new_options_when_refusing_them():
    for key, value, match in (("adapted", "0", "adapted: 0 is out of range"), ("adapted", "6", "adapted: 6"),
                              ("learn_rho", "1", "learn_rho: expected true or false"),
                              ("maml", "yes", "maml: expected true or false")):
        with pytest.raises(ConfigError, match=match):
            build(hr.Config, {key: value})
    only = {"table_methods": "", "methods": "", "short_horizon": "false"}
    with pytest.raises(ConfigError, match="nothing to run.*maml"):
        build(hr.Config, {**only, "anil": "false"})
    for key, value in (("adapted", "1"), ("learn_rho", "false"), ("rho0", "1")):  # ANIL and MAML: no regulariser,
        with pytest.raises(ConfigError, match=f"{key} is not used here"):  # their own adapted layers
            build(hr.Config, {**only, "maml": "true", key: value})
    assert build(hr.Config, {**only, "anil": "false", "maml": "true"}).maml  # MAML alone is something to run


def tiny_problem():
    cfg = build(hr.Config, {"size": 6, "filters": 2, "steps": 3, "ways": 3, "queries": 2, "inner_lr": 0.05,
                            "table_methods": "truncated-1", "rho0": 0.5})
    images = synthetic_omniglot(cfg.size, n=10, drawings=4)
    task = episode_sampler(images, cfg.ways, cfg.shots, cfg.queries)(jax.random.PRNGKey(0))
    theta = hr.init_theta(jax.random.PRNGKey(1), cfg)
    return cfg, hr.make_problem(cfg), theta, task


def test_hypergradient_matches_finite_differences_in_float64():
    cfg, problem, theta, task = tiny_problem()
    leaves = jax.tree_util.tree_leaves(theta)
    assert all(x.dtype == jnp.float64 for x in leaves)
    g, _, _ = Reverse().estimate(problem, theta, task, (), jax.random.PRNGKey(0))
    tdef = jax.tree_util.tree_structure(theta)
    objective = jax.jit(problem.objective)  # one compilation for the six evaluations
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    for part in ("body", "centre", "nu"):  # each part of θ: λ, c and ν
        v = jax.tree_util.tree_unflatten(tdef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])
        v = {k: (v[k] if k == part else jax.tree_util.tree_map(jnp.zeros_like, v[k])) for k in v}
        eps = 1e-6
        shift = lambda s: jax.tree_util.tree_map(lambda a, b: a + s * b, theta, v)
        fd = (objective(shift(eps), task) - objective(shift(-eps), task)) / (2 * eps)
        dot = sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(v)))
        assert abs(float(fd)) > 1e-6, part  # the direction really moves the objective
        np.testing.assert_allclose(float(dot), float(fd), rtol=1e-5, err_msg=part)
    # K-RMD with K = T is the full reverse pass; K = 1 is not (the comparison of Table 4 is not vacuous)
    gT = Truncated(cfg.steps).estimate(problem, theta, task, (), jax.random.PRNGKey(0))[0]
    g1 = Truncated(1).estimate(problem, theta, task, (), jax.random.PRNGKey(0))[0]
    flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)])
    np.testing.assert_allclose(flat(gT), flat(g), rtol=1e-10, atol=1e-12)
    assert float(jnp.linalg.norm(flat(g1) - flat(g))) > 1e-4 * float(jnp.linalg.norm(flat(g)))


def test_plan_lists_every_method_of_both_comparisons():
    cfg = build(hr.Config, {})
    runs = hr.plan(cfg)
    table = [r.name for r in runs if r.part == "table4"]
    calls = [r.name for r in runs if r.part == "calls"]
    assert table == ["1-RMD", "5-RMD", "Full RMD", "Short horizon (T = 1)"]
    assert calls == ["ITD-BiO", "AID-BiO (CG)", "FOM", "UFOM", "Adaptive UFOM", "ANIL"]
    assert all(r.budget.steps == cfg.hyper_iterations for r in runs if r.part == "table4")
    assert all(r.budget.function_calls == cfg.budget_calls for r in runs if r.part == "calls")
    anil = runs[-1]
    assert len(anil.theta0["body"]) == hr.BLOCKS and "nu" not in anil.theta0  # only the dense layer adapted


def test_tiny_run_writes_every_file(tmp_path):
    exp = get("hyper-representation")
    out = tmp_path / "out"
    summary = execute(exp, exp.make_config(tiny=True), out)
    for name in ("summary.json", "results.csv", "results.md", "curves.csv", "curves.png", "manifest.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = json.loads((out / "summary.json").read_text())["results"]
    assert rows == summary["results"]
    assert [r["method"] for r in rows] == ["1-RMD", "FOM"]
    assert all(0 <= r["test_acc"] <= 100 and r["test_acc_ci95"] > 0 for r in rows)
    assert rows[0]["memory_mb"] > 0 and rows[0]["hyper_iterations"] == 3
    assert all(r["function_calls"] >= 100 for r in rows[1:])  # the equal-calls budget was spent
    md = (out / "results.md").read_text()
    assert "Smoke run" in md and "prove nothing" in md
    curves = (out / "curves.csv").read_text().splitlines()
    assert len(curves) > 1 + len(rows)  # a start point and evaluations for each run


def strongly_convex_config(**extra):
    """Ji et al. 2021 §5.2's setting at a tiny size: w = the dense layer, ρ fixed at 1."""
    return build(hr.Config, {"size": 6, "filters": 2, "steps": 10, "ways": 3, "queries": 2, "inner_lr": 0.1,
                             "adapted": 1, "learn_rho": False, "rho0": 1.0, "table_methods": "truncated-1", **extra})


@pytest.mark.slow  # 12-24 s on the loaded 2-core machine (jacfwd of the inner gradient compiles)
def test_dense_only_inner_problem_with_a_fixed_l2_weight_is_strongly_convex():
    """adapted=1, learn_rho=false: θ holds the four conv blocks and the centre c, no ν; the inner
    variable is the dense layer alone; its Hessian is positive definite with smallest eigenvalue 2ρ
    (float64); MAML adapts every layer, ANIL the dense layer, neither regularised."""
    cfg = strongly_convex_config(rho0=0.5, maml=True, steps=3)
    images = synthetic_omniglot(cfg.size, n=10, drawings=4)
    task = episode_sampler(images, cfg.ways, cfg.shots, cfg.queries)(jax.random.PRNGKey(0))
    theta = hr.init_theta(jax.random.PRNGKey(1), cfg)
    assert len(theta["body"]) == hr.BLOCKS and len(theta["centre"]) == 1 and "nu" not in theta
    problem = hr.make_problem(cfg)
    phi = problem.optimizer.params(problem.run(theta, task))
    flat_phi, unravel = jax.flatten_util.ravel_pytree(phi)
    hess = jax.jacfwd(lambda p: jax.flatten_util.ravel_pytree(problem.inner_grad(theta, unravel(p), task))[0])(flat_phi)
    np.testing.assert_allclose(hess, hess.T, atol=1e-10)
    eig = np.linalg.eigvalsh(np.asarray(hess))
    assert eig.min() >= 2 * 0.5 - 1e-8 and eig.max() > 2 * 0.5 + 1e-3  # the data add curvature on top of 2ρ
    learned = hr.init_theta(jax.random.PRNGKey(1), build(hr.Config, {**cfg.as_dict(), "learn_rho": True}))
    assert learned["nu"].shape == (1,)  # learn_rho=true keeps ν, one per adapted layer
    anil, maml = hr.plan(cfg)[-2:]
    assert (anil.name, maml.name) == ("ANIL", "MAML") and "nu" not in maml.theta0
    assert len(anil.theta0["body"]) == hr.BLOCKS and maml.theta0["body"] == []
    assert len(maml.theta0["centre"]) == hr.BLOCKS + 1


@pytest.mark.slow
def test_aid_bio_agrees_with_reverse_mode_only_within_its_assumptions():
    """float64, one task: at ρ = 1 with w = the dense layer, T = 10 GD steps of γ = 0.1 bring y_T close to
    y* (the NumPy diagnostic in docs/results/hyper-representation/strongly-convex/: ‖y_T − y*‖/‖c − y*‖
    0.007-0.066 at θ_0 on Omniglot, cosine 0.985-0.99998 with reverse on c), so AID-BiO's implicit
    hypergradient (CG to 1e-10 at y_T, no warm start) points where reverse mode through the 10 steps does,
    over all of θ (embedding too). In the default setup (conv blocks 3-4 adapted, ρ = 0.01 learned: not
    strongly convex) the same comparison is far from 1."""
    images = synthetic_omniglot(6, n=10, drawings=4)
    aid = parse("aid-cg:warm_start=false,tol=1e-10,maxiter=100")
    flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree_util.tree_leaves(t)])

    def cosine(cfg):
        problem, theta = hr.make_problem(cfg), hr.init_theta(jax.random.PRNGKey(1), cfg)
        task = episode_sampler(images, cfg.ways, cfg.shots, cfg.queries)(jax.random.PRNGKey(0))
        key = jax.random.PRNGKey(0)
        g_rev = flat(Reverse().estimate(problem, theta, task, (), key)[0])
        g_aid = flat(aid.estimate(problem, theta, task, aid.init(problem, theta, task), key)[0])
        return float(g_rev @ g_aid / (jnp.linalg.norm(g_rev) * jnp.linalg.norm(g_aid)))

    assert cosine(strongly_convex_config()) > 0.999
    assert cosine(strongly_convex_config(adapted=3, learn_rho=True, rho0=0.01)) < 0.9


@pytest.mark.slow
def test_tiny_run_of_ji_et_al_setting_with_aid_bio_and_maml(tmp_path):
    """--tiny with adapted=1, learn_rho=false, AID-BiO and MAML: rows for both, AID's solver residual
    recorded, the curves against seconds plotted, and results.md says the inner problem is strongly convex."""
    exp = get("hyper-representation")
    out = tmp_path / "out"
    cfg = exp.make_config({"adapted": "1", "learn_rho": "false", "rho0": "1", "maml": "true", "methods": "aid-bio",
                           "table_methods": ""}, tiny=True)
    rows = execute(exp, cfg, out)["results"]
    assert [r["method"] for r in rows] == ["AID-BiO (CG)", "MAML"]
    assert rows[0]["solver_residual"] is not None and rows[1]["solver_residual"] is None
    assert all(r["function_calls"] >= 100 and 0 <= r["test_acc"] <= 100 for r in rows)
    for name in ("curves_calls.png", "curves_seconds.png"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "curves.png").exists()  # no Table 4 run, no Table 4 figure
    md = (out / "results.md").read_text()
    assert "2-strongly convex" in md and "MAML adapts every layer" in md and "ρ fixed at 1.0" in md
    curves = [line.split(",") for line in (out / "curves.csv").read_text().splitlines()]
    seconds = curves[0].index("seconds")
    assert all(float(c[seconds]) >= 0 for c in curves[1:]) and max(float(c[seconds]) for c in curves[1:]) > 0
