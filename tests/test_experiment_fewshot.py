"""The few-shot experiment (Likhosherstov et al. 2021 §5.3): task sampler, model, Reptile, equal budgets."""

import dataclasses
import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo import estimators

from ablo import cli
from ablo.experiments import _paper
from ablo.experiments import fewshot as fs
from ablo.config import ConfigError, build
from ablo.models import convnet_init


def fake_images(classes=6, examples=4, size=8):
    """Class c's images are filled with the value c (so a task's labels can be read off its pixels)."""
    return np.broadcast_to(np.arange(classes, dtype=np.uint8)[:, None, None, None] * 10,
                           (classes, examples, size, size)).copy()


def test_sampler_draws_distinct_classes_with_consistent_labels_and_is_pure():
    imgs = fake_images()
    imgs[:, :, 0, 0] = np.arange(4, dtype=np.uint8)[None, :]  # example id in one pixel
    sample = fs.make_sampler(imgs, ways=3, shots=2)
    task = sample(jax.random.PRNGKey(4))
    (x_tr, y_tr), (x_te, y_te) = task["support"], task["query"]
    assert x_tr.shape == (6, 8, 8, 1) and x_te.shape == (3, 8, 8, 1)
    cls_tr = np.round(np.asarray(x_tr[:, 1, 1, 0]) * 255 / 10).astype(int)
    cls_te = np.round(np.asarray(x_te[:, 1, 1, 0]) * 255 / 10).astype(int)
    assert len(set(cls_te)) == 3
    for label in range(3):  # one class per label, in train and test
        assert len(set(cls_tr[np.asarray(y_tr) == label])) == 1
        assert set(cls_tr[np.asarray(y_tr) == label]) == {cls_te[int(np.flatnonzero(np.asarray(y_te) == label)[0])]}
    ex_tr = np.round(np.asarray(x_tr[:, 0, 0, 0]) * 255).astype(int) % 10
    ex_te = np.round(np.asarray(x_te[:, 0, 0, 0]) * 255).astype(int) % 10
    for label in range(3):  # the test drawing is none of the training drawings
        assert ex_te[label] not in set(ex_tr[np.asarray(y_tr) == label])
    again = sample(jax.random.PRNGKey(4))
    for a, b in zip(jax.tree_util.tree_leaves(task), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)


def test_sampler_rejects_more_ways_than_classes():
    with pytest.raises(ValueError, match="ways"):
        fs.make_sampler(fake_images(classes=3), ways=5, shots=1)


def test_reptile_runs_nichols_protocol():
    """Reptile (Nichol et al. 2018, their 1-shot 20-way code settings): training tasks of
    train_shots drawings per class in a shuffled order, r inner Adam steps (β1 = 0) on one pass of
    consecutive mini-batches, direction θ − φ_r, outer SGD annealed linearly from 1 to 0 over the
    outer steps the budget allows, and its own test-time adaptation."""
    imgs = fake_images(classes=6, examples=12)
    cfg = build(fs.Config, {"ways": "3", "steps": "3", "reptile_train_shots": "4", "budget_calls": "150",
                            "meta_batch": "2", "reptile_eval_steps": "7"}, fs.TINY).resolved()
    setup = fs.reptile_setup(cfg, imgs, imgs)
    task = setup["sampler"](jax.random.PRNGKey(0))
    x, y = task["support"]
    assert x.shape[0] == 12 and sorted(np.bincount(np.asarray(y)).tolist()) == [4, 4, 4]
    assert not np.array_equal(np.asarray(y), np.sort(np.asarray(y)))  # shuffled, not class-major
    problem = setup["problem"]
    assert problem.batch == 4 and problem.steps == 3  # 3 steps x 4 = one pass over 12 examples
    theta = convnet_init(jax.random.PRNGKey(1), 3, 8, filters=2)
    g, _, c = estimators.parse("reptile").estimate(problem, theta, task, (), jax.random.PRNGKey(2))
    assert float(c.function_calls) == 3
    phi, m, v = theta, *(jax.tree_util.tree_map(jnp.zeros_like, theta),) * 2  # Adam(β1 = 0) by hand
    for t in range(3):
        batch = {**task, "support": (x[4 * t:4 * t + 4], y[4 * t:4 * t + 4])}
        grad = jax.grad(lambda p: problem.inner_loss(theta, p, batch))(phi)
        v = jax.tree_util.tree_map(lambda vi, gi: 0.999 * vi + 0.001 * gi ** 2, v, grad)
        phi = jax.tree_util.tree_map(lambda p, gi, vi: p - 5e-4 * gi / (jnp.sqrt(vi / (1 - 0.999 ** (t + 1)) + 1e-16)
                                                                         + 1e-8), phi, grad, v)
    for a, b, p in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(theta), jax.tree_util.tree_leaves(phi)):
        np.testing.assert_allclose(a, b - p, rtol=1e-6, atol=1e-9)
    tx, z = setup["tx"], jnp.zeros(())
    opt, steps = tx.init(z), []
    for _ in range(26):
        u, opt = tx.update(jnp.ones(()), opt, z)
        steps.append(-float(u))
    assert steps[24] > 0 and steps[25] == 0  # annealed over 25 outer steps = 150 calls / (2 tasks x 3 steps)
    np.testing.assert_allclose(steps, np.maximum(1 - np.arange(26) / 25, 0), atol=1e-6)
    assert setup["test_problem"].steps == 7 and setup["test_problem"].batch == 1  # m·K/2 = 1 at 3-way 1-shot
    assert problem.optimizer.name == "adam"
    sgd = fs.reptile_setup(build(fs.Config, {"reptile_inner_optimizer": "sgd", "reptile_eval_batch": "3"},
                                 fs.TINY).resolved(), imgs, imgs)
    assert sgd["problem"].optimizer.name == "gd" and sgd["test_problem"].batch == 3


def test_eval_interval_is_the_normal_95_percent_half_width():
    imgs = fake_images(classes=4, examples=3)
    problem = fs.make_problem(steps=1, inner_lr=0.1)
    theta = convnet_init(jax.random.PRNGKey(0), 2, 8, filters=2)
    m = fs.make_eval(problem, fs.make_sampler(imgs, 2, 1), chunk=20)(theta, 40, jax.random.PRNGKey(0))
    p = m["test_acc"] / 100  # per-task accuracy is 0, 1/2 or 1: the sd is at most 1/2
    assert 0 <= p <= 1 and 0 <= m["test_acc_ci95"] <= 100 * 1.96 * 0.5 / np.sqrt(39) + 1e-9


def test_eval_takes_any_chunk_size_and_task_count():
    """Chunks that are not a multiple of the 25-task vmap batch (30 once failed to reshape), and a task
    count that is not a multiple of the chunk; fixed keys give the same result twice."""
    imgs = fake_images(classes=4, examples=3)
    problem = fs.make_problem(steps=1, inner_lr=0.1)
    theta = convnet_init(jax.random.PRNGKey(0), 2, 8, filters=2)
    sample = fs.make_sampler(imgs, 2, 1)
    evaluate = fs.make_eval(problem, sample, chunk=30)  # compiled once for both calls
    a, b = (evaluate(theta, 30, jax.random.PRNGKey(3)) for _ in range(2))
    c = fs.make_eval(problem, sample, chunk=7)(theta, 13, jax.random.PRNGKey(3))
    assert a == b and 0 <= a["test_acc"] <= 100 and 0 <= c["test_acc"] <= 100


def test_tiny_run_gives_every_method_the_same_budget_and_curve_points_by_calls(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ABLO_DATA_DIR", raising=False)
    try:
        cli.main(["run", "fewshot", "--tiny", "--out", str(tmp_path)])
    except SystemExit as e:
        assert not e.code, capsys.readouterr().err
    doc = json.loads((tmp_path / "summary.json").read_text())
    cfg = doc["config"]
    assert doc["experiment"] == "fewshot" and cfg["dataset"]["name"] == "scikit-learn digits" and cfg["ways"] == 3
    assert [r["method"] for r in doc["results"]] == cfg["methods"] == ["fom", "reptile"]
    n, r, budget, every = cfg["meta_batch"], cfg["steps"], cfg["budget_calls"], cfg["eval_calls"]
    per_step = {"fom": n * (r + 2), "reptile": n * r}
    for row in doc["results"]:
        assert budget <= row["function_calls"] < budget + per_step[row["method"]]
        assert 0 <= row["test_acc"] <= 100 and row["test_acc_ci95"] > 0
    for method, cost in per_step.items():  # a curve point at the first step past each multiple of eval_calls
        calls = [float(p["function_calls"]) for p in csv.DictReader(open(tmp_path / "curves.csv"))
                 if p["method"] == method]
        assert [int(c // every) for c in calls] == list(range(1, len(calls) + 1)) and len(calls) >= 2
        assert all(c - cost < every * int(c // every) for c in calls)
    assert (tmp_path / "curves.png").stat().st_size > 0
    md = (tmp_path / "results.md").read_text()
    assert "Smoke run" in md and "prove nothing" in md
    assert "Table 2" in md and "is not shown: the protocol differs" in md and "paper_test_acc" not in md


@pytest.mark.parametrize("bad, match", [({"ways": "5"}, "ways: 5 is more than the 3 classes"),
                                        ({"size": "28"}, "size is not used"),
                                        ({"budget_calls": "none"}, "budget_calls and outer_steps"),
                                        ({"methods": "fom,fom"}, "methods"), ({"meta_batch": "0"}, "meta_batch"),
                                        ({"q": "0.2"}, "unknown config key 'q'")])
def test_bad_config_names_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        build(fs.Config, bad, fs.TINY)


def test_paper_figures_only_for_omniglot_1_shot_30_or_40_way_at_28x28():
    cfg = {"ways": 30, "shots": 1, "size": 28, "dataset": {"name": "Omniglot"}}
    assert _paper.reference("fewshot", cfg, {"method": "recompute", "estimator": "recompute"}) == {
        "paper_test_acc": 91.6}
    for change, why in [({"ways": 20}, "ways = 20"), ({"size": 14}, "size = 14"),
                        ({"dataset": {"name": "scikit-learn digits"}}, "data scikit-learn digits")]:
        assert why in _paper.fewshot_figures_withheld({**cfg, **change})
        assert _paper.reference("fewshot", {**cfg, **change}, {"method": "fom", "estimator": "fom"}) == {}


def test_results_md_says_what_ran():
    """The notes name the settings of the methods that ran: no MAML-form inner loop or outer Adam for a
    Reptile-only run, and Reptile called Nichol et al.'s protocol only with their settings, else the
    settings that differ (as the committed Reptile variants are described)."""
    cfg = dataclasses.asdict(build(fs.Config, {}, fs.TINY).resolved())
    cfg["dataset"] = {"name": "digits"}
    row = lambda m: {"method": m, "estimator": m, "seed": 0, "test_acc": 50.0, "test_acc_ci95": 1.0,
                     "function_calls": 60.0, "seconds": 1.0}
    _, both = fs._table(cfg, [row("fom"), row("reptile")])
    assert "outer Adam lr" in both and "Reptile runs Nichol et al.'s protocol (" in both
    sgd = dict(cfg, methods=["reptile"], reptile_inner_optimizer="sgd", reptile_inner_lr=0.4)
    _, alone = fs._table(sgd, [row("reptile")])
    assert "outer Adam lr" not in alone and "inner SGD steps (lr" not in alone
    assert "with reptile_inner_lr = 0.4, reptile_inner_optimizer = sgd instead of theirs" in alone
    assert "inner SGD steps of 0.4" in alone and "Adam" not in alone
