"""The hypercleaning experiment (Shaban et al. 2019 §4.2.1, Likhosherstov et al. 2021 §5.2): data, config, the step-size
check, divergence and the result files, mostly through ``ablo run`` as a user calls it."""

import csv
import dataclasses
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ablo import FOM, Reverse
from ablo import checkpoint as ckpt
from ablo import outer
from ablo.experiments import _paper, get
from ablo.experiments import hypercleaning as hc
from ablo.config import ConfigError, build
from ablo.models import linear_init
from ablo.problems.hypercleaning import f1_corrupted, make_problem

sys.path.insert(0, str(Path(__file__).parent))
import test_cli  # noqa: E402


def small_cfg(**kw):
    return build(hc.Config, kw, hc.TINY).resolved()


def call(args, capsys):
    """(exit code, stdout, stderr lines but progress bars) of ``ablo ARGS``."""
    code, out, err = test_cli.call(args, capsys)
    return code, out, [line for line in err.splitlines() if line.strip() and "━" not in line]


#: The shared real data (as tests/test_data.py), or ABLO_DATA_DIR as set when the tests start.
SHARED = Path(os.environ.get("ABLO_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def idx_bytes(a: np.ndarray) -> bytes:
    return b"\0\0\x08" + bytes([a.ndim]) + np.array(a.shape, ">u4").tobytes() + a.astype(np.uint8).tobytes()


@pytest.fixture(scope="module")
def bright_mnist(tmp_path_factory):
    """MNIST-shaped IDX files (28x28 uint8, labels 0-9, 300 training / 100 test images) whose
    pixels are all in [128, 255]: much more ink than MNIST, so the linear model's inner loss is
    about ten times as curved (L ≈ 22 against ≈ 2 on MNIST) and α = 1 diverges."""
    d = tmp_path_factory.mktemp("bright_mnist")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 300), ("t10k", 100)):
        (d / f"{prefix}-images-idx3-ubyte").write_bytes(idx_bytes(rng.integers(128, 256, (n, 28, 28))))
        (d / f"{prefix}-labels-idx1-ubyte").write_bytes(idx_bytes(np.arange(n) % 10))
    return d


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch):
    monkeypatch.delenv("ABLO_DATA_DIR", raising=False)


# --- data and problem ----------------------------------------------------------------------------
def test_wrong_corruption_is_exactly_the_requested_fraction_and_each_split_is_class_balanced():
    d = hc.make_data(small_cfg(n_train=300, n_val=200, corrupt=0.5, corruption="wrong"), seed=3)
    t = d["task"]
    changed = np.asarray(t["y"] != d["clean_y"])
    assert changed.sum() == 150
    np.testing.assert_array_equal(changed, np.asarray(d["corrupted"]))
    for labels, n in ((d["clean_y"], 300), (t["y_val"], 200)):
        np.testing.assert_array_equal(np.bincount(np.asarray(labels), minlength=10), [n // 10] * 10)
    assert t["x"].shape == (300, 64) and t["x_val"].shape == (200, 64)
    assert d["dataset"]["name"] == "scikit-learn digits" and d["dataset"]["n_train"] == 300


def test_uniform_corruption_replaces_with_probability_p_and_may_keep_the_true_label():
    """Shaban et al. 2019, App. G.1: with probability 1/2 a uniformly random label, so about
    p·9/10 of the labels end up wrong; 'corrupted' marks exactly those."""
    d = hc.make_data(small_cfg(n_train=600, n_val=100, corrupt=0.5, corruption="uniform"), seed=1)
    changed = np.asarray(d["task"]["y"] != d["clean_y"])
    np.testing.assert_array_equal(changed, np.asarray(d["corrupted"]))
    assert abs(changed.mean() - 0.45) < 4 * np.sqrt(0.45 * 0.55 / 600)
    assert d["dataset"]["corrupted"] == changed.sum()


def test_test_set_rest_is_every_image_not_drawn_for_train_or_val():
    cfg = small_cfg(n_train=300, n_val=200)
    rest, held = hc.make_data(cfg, seed=0), hc.make_data(dataclasses.replace(cfg, test_set="test"), seed=0)
    n_images = 1797  # scikit-learn digits
    assert rest["dataset"]["n_test"] == n_images - 500 and held["dataset"]["n_test"] == n_images // 4
    rows = lambda x: {r.tobytes() for r in np.asarray(x)}
    x_test, x_train = rows(rest["test"][0]), rows(rest["task"]["x"]) | rows(rest["task"]["x_val"])
    assert len(x_test & x_train) <= 5  # digits has a few duplicate images; drawn indices are disjoint
    assert rows(held["test"][0]) <= x_test


def test_first_step_norm_sets_eta0_per_method_so_the_first_update_has_that_norm():
    """Shaban et al. 2019 App. G.1: η_0 adjusted per K so the first update's norm is the same."""
    cfg = small_cfg(n_train=200, n_val=200, first_step_norm=3.0, schedule="constant")
    data = hc.make_data(cfg, seed=0)
    problem = make_problem(steps=5, phi0=linear_init(64, 10), l2=cfg.l2, decay_bias=True)
    theta0, key = jnp.zeros(200), jax.random.PRNGKey(0)
    import optax
    from ablo import Truncated

    etas = []
    for est in (Truncated(K=1), Reverse()):
        opt, eta0 = hc.outer_optimizer(cfg, problem, est, theta0, data["task"], key)
        g = est.estimate(problem, theta0, data["task"], (), key)[0]
        u = opt.update(g, opt.init(theta0), theta0)[0]
        assert float(optax.tree.norm(u)) == pytest.approx(3.0, rel=1e-4)
        etas.append(eta0)
    assert len(etas) == 2
    # FOM's estimate is 0 here: no η_0 gives it that norm, it takes Adam's √n for a gradient without zeros
    assert hc.outer_optimizer(cfg, problem, FOM(), theta0, data["task"], key)[1] == pytest.approx(3.0 / np.sqrt(200))
    explicit = dataclasses.replace(cfg, outer_lr=0.25, first_step_norm=None)
    assert hc.outer_optimizer(explicit, problem, Reverse(), theta0, data["task"], key)[1] == 0.25


def test_descent_ratio_uses_the_runs_estimator_state_and_a_key_per_evaluation():
    """An exact estimator's h is d (ratio 1); UFOM's ξ is drawn afresh per evaluation (both branches
    appear over steps, not one draw repeated); the estimator state passed in is the one used."""
    from types import SimpleNamespace

    from ablo import UFOM, Truncated

    cfg = small_cfg(n_train=100, n_val=100)
    data = hc.make_data(cfg, seed=0)
    problem = make_problem(steps=4, phi0=linear_init(64, 10))
    theta, key = jnp.zeros(100) + 0.3, jax.random.PRNGKey(1)
    at = lambda step, st=None: SimpleNamespace(step=step, estimator_state=st)
    assert hc.make_eval(problem, data, Truncated(K=4), key)(theta, at(0))["descent_ratio"] == pytest.approx(1.0)
    ufom = UFOM(q=0.5)
    ev = hc.make_eval(problem, data, ufom, key)
    state = ufom.init(problem, theta, data["task"])
    ratios = {round(ev(theta, at(step, state))["descent_ratio"], 6) for step in range(12)}
    assert len(ratios) == 2  # FOM's branch (0: its h is 0 here) and the debiased one, across evaluations
    assert "descent_ratio" not in hc.make_eval(problem, data)(theta, at(0))


def test_f1_of_the_threshold_rule_matches_a_hand_count():
    theta = jnp.array([-5.0, -4.0, -2.9, 0.0, -3.5, 1.0])
    corrupted = jnp.array([True, True, True, False, False, False])
    # predicted corrupted: 0, 1, 4 -> tp 2, fp 1, fn 1 -> F1 = 2·2 / (3 + 3)
    assert float(f1_corrupted(theta, corrupted)) == pytest.approx(4 / 6)
    assert np.isnan(float(f1_corrupted(theta, jnp.zeros(6, bool))))  # nothing corrupted: F1 undefined, not 0


def test_fom_is_blind_here_but_the_exact_hypergradient_downweights_corrupted_examples():
    d = hc.make_data(small_cfg(n_train=300, n_val=300), seed=0)
    problem = make_problem(steps=30, phi0=linear_init(64, 10, jnp.float64))
    theta, key = jnp.zeros(300), jax.random.PRNGKey(0)
    g_fom, _, _ = FOM().estimate(problem, theta, d["task"], (), key)
    g, _, _ = Reverse().estimate(problem, theta, d["task"], (), key)
    assert float(jnp.max(jnp.abs(g_fom))) == 0.0
    bad = d["corrupted"]
    # raising the weight of a corrupted example raises the validation loss: larger hypergradient
    assert float(g[bad].mean()) > 0 > float(g[~bad].mean())


# --- config --------------------------------------------------------------------------------------
def test_model_defaults_are_resolved_in_one_place():
    lin = build(hc.Config, {"data_dir": "/mnist"}).resolved()
    assert lin.methods == ("truncated-1", "truncated-5", "truncated-25", "truncated-50", "reverse")
    assert (lin.n_train, lin.steps, lin.pool, lin.hidden, lin.outer_steps, lin.budget_calls) == (5000, 100, 1, None,
                                                                                                  1000, None)
    # Shaban et al. 2019, App. G.1: uniform corruption, test on the rest, 0.001 on the summed loss
    assert (lin.corruption, lin.test_set, lin.decay_bias, lin.schedule) == ("uniform", "rest", True, "inv-sqrt")
    assert lin.l2 == pytest.approx(0.001 / 5000) and lin.first_step_norm == pytest.approx(np.sqrt(5000))
    assert lin.outer_lr is None
    assert build(hc.Config, {"data_dir": "/mnist", "outer_lr": "0.1"}).resolved().first_step_norm is None
    mlp = build(hc.Config, {"model": "mlp"}).resolved()
    assert mlp.methods == ("recompute", "fom", "adaptive-ufom") and mlp.seeds == (3, 4, 5)
    assert mlp.tuned_seeds == (0, 1, 2) and lin.seeds == (3,)  # pre-registered: reported seeds are fresh
    assert (mlp.n_train, mlp.steps, mlp.pool, mlp.hidden, mlp.budget_calls) == (600, 20, None, 32, 10_000)
    assert (mlp.corruption, mlp.test_set, mlp.decay_bias, mlp.l2, mlp.outer_lr) == ("wrong", "test", False, 1e-3, 0.3)
    assert build(hc.Config, {"model": "mlp", "first_step_norm": "5"}).resolved().outer_lr is None
    assert build(hc.Config, {}).inner_lr is None  # auto (1/L) by default: the defaults are never refused
    with pytest.raises(ConfigError, match="tuned_seeds"):  # pre-registration: no reporting on the tuning seeds
        build(hc.Config, {"seeds": "0,3"})
    assert build(hc.Config, {"inner_lr": "paper"}).inner_lr == hc.PAPER_INNER_LR == 1.0
    assert build(get("demo").config, {}).resolved().methods == ("recompute", "fom", "ufom", "adaptive-ufom")


@pytest.mark.parametrize("bad, match", [
    ({"model": "cnn"}, "model"), ({"Ks": "1,5"}, "unknown config key 'Ks'"), ({"corrupt": "1.5"}, "corrupt"),
    ({"n_train": "0"}, "n_train"), ({"methods": "truncated-99"}, "methods: truncated-99"),
    ({"methods": "truncated-5.5"}, "truncated-5.5"), ({"hidden": "16"}, "hidden is not used"),
    ({"pool": "2"}, "pool is not used"), ({"seeds": "4,4"}, "seeds"), ({"inner_lr": "0"}, "inner_lr"),
    ({"inner_lr": "[1, 2]"}, "inner_lr"), ({"model": "mlp", "hidden": "0"}, "hidden"),
    ({"corruption": "flip"}, "corruption"), ({"test_set": "val"}, "test_set"),
    ({"outer_lr": "0.1", "first_step_norm": "3"}, "first_step_norm"), ({"first_step_norm": "0"}, "first_step_norm")])
def test_bad_config_names_the_key(bad, match):
    with pytest.raises(ConfigError, match=match):
        build(hc.Config, bad, hc.TINY)


# --- runs through the CLI -------------------------------------------------------------------------
def test_tiny_linear_run_writes_summary_curves_table_and_plot(tmp_path, capsys):
    code, _, err = call(["run", "hypercleaning", "--tiny", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert doc["experiment"] == "hypercleaning" and doc["config"]["dataset"]["name"] == "scikit-learn digits"
    assert doc["config"]["hidden"] is None  # --tiny's MLP width is not reported for the linear model
    assert [(r["method"], r["estimator"], r["K"]) for r in doc["results"]] == [("truncated-1", "truncated", 1),
                                                                              ("reverse", "reverse", None)]
    tiny = get("hypercleaning").tiny
    for r in doc["results"]:
        assert set(hc.ROW_KEYS) <= set(r)
        assert r["steps"] == tiny["outer_steps"] and 0 <= r["test_acc"] <= 100 and 0 <= r["f1"] <= 1
        assert r["inner_lr"] == pytest.approx(1 / r["L"])  # auto by default
    # K-RMD costs r + 1 gradients + K HVPs per step (the start W_0 = 0 does not depend on θ: no JVP)
    r = tiny["steps"]
    assert [row["function_calls"] for row in doc["results"]] == [3 * (r + 1 + K) for K in (1, r)]
    rows = list(csv.DictReader(open(tmp_path / "curves.csv")))
    assert {row["method"] for row in rows} == {"truncated-1", "reverse"} and all(row["test_acc"] for row in rows)
    assert (tmp_path / "curves.png").stat().st_size > 0
    md = (tmp_path / "results.md").read_text()
    assert "Smoke run" in md and "prove nothing" in md
    # Shaban et al. 2019, Fig. 5: the exact hypergradient's norm along the run; the ratio is 1 for exact
    assert all(float(row["true_grad_norm"]) > 0 for row in rows)
    assert all(float(row["descent_ratio"]) == 1.0 for row in rows if row["method"] == "reverse")  # h is d itself
    assert (tmp_path / "true_gradient.png").stat().st_size > 0
    assert "scikit-learn digits" in md and "MNIST from" not in md
    assert "Shaban et al. 2019, Table 2" in md and "are not shown" in md and "paper_" not in md
    assert (tmp_path / "checkpoints" / "reverse seed 0").is_dir()
    assert doc["config"]["inner_lr"] == pytest.approx(doc["results"][0]["inner_lr"])  # resolved, with how
    assert doc["config"]["inner_lr_resolved"].startswith("auto: α = 1/L")
    assert "Seeds: [0] (a smoke run reports nothing" in md


def test_tiny_mlp_run_spends_equal_budgets(tmp_path, capsys):
    code, _, err = call(["run", "hypercleaning", "--tiny", "--model", "mlp", "-m", "fom", "-m", "recompute",
                         "--set", "outer_steps=1000", "--budget-calls", "200", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "summary.json").read_text())
    r = get("hypercleaning").tiny["steps"]
    fom, exact = doc["results"]
    assert 200 <= exact["function_calls"] < 200 + r + 1 + r * (r - 1) // 2 + r + 1 and exact["stopped"] is None
    # FOM's hypergradient is exactly 0 here (V, L_out do not depend on θ): θ never moves, the run says so and stops
    assert fom["steps"] == outer.SATURATED_STEPS and "exactly 0" in fom["stopped"]
    assert fom["grad_evals"] == outer.SATURATED_STEPS * (r + 1)  # r inner steps and the outer gradient per step
    assert fom["function_calls"] == fom["grad_evals"] + fom["hvps"] + fom["jvps"]
    assert exact["states"] == 1 and exact["hvps"] > 0  # the whole Cost record reaches summary.json
    assert "Likhosherstov et al. 2021, Table 1" in (tmp_path / "results.md").read_text()


@pytest.mark.slow  # four estimators compiled on the MLP: about 40 s of CPU
def test_every_tiny_run_of_demo_works(tmp_path, capsys):
    code, _, err = call(["run", "demo", "--tiny", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert [r["method"] for r in rows] == ["recompute", "fom", "ufom", "adaptive-ufom"]
    assert "Smoke run" in (tmp_path / "results.md").read_text()


def test_step_size_at_or_above_two_over_L_is_refused_with_L(bright_mnist, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = call(["run", "hypercleaning", "--tiny", "--data-dir", str(bright_mnist), "--n-train", "100",
                         "--n-val", "100", "--inner-lr", "paper", "--out", str(out)], capsys)
    assert code == 2 and len(err) == 1, err
    assert "inner_lr = 1 is at or above 2/L" in err[0] and "L = " in err[0] and "1/L" in err[0]
    L = float(err[0].split("(L = ")[1].split(",")[0])
    assert 10 < L < 40  # ten times MNIST's ≈ 2
    assert not (out / "summary.json").exists() and not (out / "checkpoints").exists()


def test_auto_step_size_is_one_over_L_and_the_results_name_the_data(bright_mnist, tmp_path, capsys):
    code, _, err = call(["run", "hypercleaning", "--tiny", "--data-dir", str(bright_mnist), "--n-train", "100",
                         "--n-val", "100", "--inner-lr", "auto", "--pool", "2", "-m", "fom", "--out", str(tmp_path)],
                        capsys)
    assert code == 0, err
    doc = json.loads((tmp_path / "summary.json").read_text())
    (row,) = doc["results"]
    assert row["inner_lr"] == pytest.approx(1 / row["L"]) == pytest.approx(doc["config"]["inner_lr"])
    d = doc["config"]["dataset"]
    assert (d["name"], d["train_images"], d["test_images"], d["image_size"]) == ("unknown", 300, 100, 14)  # generated IDX files: not MNIST by digest
    md = (tmp_path / "results.md").read_text()
    assert str(bright_mnist) not in md and "unknown (300 training / 100 test images" in md  # no machine path
    assert "α = 1/L (inner_lr = auto" in md
    assert "are not shown: they are for 28x28 MNIST with 60000/10000 images" in md


def test_a_run_that_saturates_theta_stops_with_a_line_that_says_so(tmp_path, capsys):
    """An outer Adam step of 1e38 throws θ far out, where σ(θ_i) is 0 or 1 in float32 and the
    hypergradient exactly 0: the run stops after outer.SATURATED_STEPS such steps instead of
    spending its budget, says so in one line (exit 0), and the row records why."""
    code, _, err = call(["run", "hypercleaning", "--tiny", "--outer-lr", "1e38", "--set", "schedule=constant",
                         "--steps", "20", "-m", "truncated-1", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    assert "truncated-1 seed 0: the hypergradient was exactly 0" in " ".join(err) and "Traceback" not in "".join(err)
    (row,) = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert row["steps"] < 20 and "exactly 0" in row["stopped"]
    with np.load(ckpt.path(tmp_path / "checkpoints" / "truncated-1 seed 0")) as z:
        theta = z["theta/0"]
    assert np.all(np.isfinite(theta)) and np.abs(theta).max() > 1e37


# --- the papers' figures ---------------------------------------------------------------------------
def paper_config(**kw):
    cfg = {"model": "linear", "n_train": 5000, "n_val": 5000, "corrupt": 0.5, "steps": 100, "corruption": "uniform",
           "test_set": "rest", "outer_steps": 1000, "budget_calls": None, "schedule": "inv-sqrt", "decay_bias": True,
           "l2": 0.001 / 5000, "dataset": {"name": "MNIST", "train_images": 60000, "test_images": 10000, "image_size": 28}}
    return {**cfg, **kw}


def test_papers_figures_only_on_their_data_and_protocol():
    row = {"method": "truncated-5", "estimator": "truncated", "K": 5}
    assert _paper.hypercleaning_figures_withheld(paper_config()) == ""
    assert _paper.reference("hypercleaning", paper_config(), row) == {
        "paper_test_acc": 88.05, "paper_val_acc": 89.90, "paper_val_ce": 0.383, "paper_f1": 0.89}
    assert _paper.reference("hypercleaning", paper_config(model="mlp", corruption="wrong"),
                            {"method": "recompute"})["paper_test_acc"] == 90.82
    for cfg, why in [(paper_config(steps=20), "steps = 20 (paper: 100)"),
                     (paper_config(corruption="wrong"), "corruption = wrong (paper: uniform)"),
                     (paper_config(outer_steps=60), "outer_steps = 60 (paper: 1000)"),
                     (paper_config(schedule="constant"), "schedule = constant (paper: inv-sqrt)"),
                     (paper_config(l2=0.01), "l2 = 0.01"), (paper_config(budget_calls=5e4), "budget_calls = 50000"),
                     (paper_config(decay_bias=False), "decay_bias = False (paper: True)"),
                     (paper_config(model="mlp"), "corruption = uniform (paper: wrong)"),
                     (paper_config(n_train=1000), "n_train = 1000"),
                     (paper_config(dataset={"name": "MNIST", "train_images": 300, "test_images": 100,
                                            "image_size": 28}), "300/100 images"),
                     (paper_config(dataset={"name": "MNIST", "train_images": 60000, "test_images": 10000,
                                            "image_size": 14}), "14x14"),
                     (paper_config(dataset={"name": "scikit-learn digits"}), "read scikit-learn digits")]:
        assert why in _paper.hypercleaning_figures_withheld(cfg)
        assert _paper.reference("hypercleaning", cfg, row) == {}


@pytest.mark.slow
def test_real_mnist_curvature_lets_alpha_one_pass():
    """On MNIST (5000 examples, linear) L ≈ 2, so the papers' α = 1 is just below 2/L."""
    data = SHARED / "mnist"
    if not data.is_dir():
        pytest.skip(f"MNIST not found at {data} (set ABLO_DATA_DIR to the shared data folder)")
    cfg = build(hc.Config, {"data_dir": str(data), "inner_lr": "paper"}).resolved()
    d = hc.make_data(cfg, 0)
    alpha, L = hc.step_size(cfg, d["task"], hc.init_model(cfg, 784, 0), jnp.zeros(5000))
    assert alpha == 1.0 and 1.5 < L < 2.0


def test_paired_note_states_the_difference_with_its_95_percent_interval():
    from scipy import stats

    rows = [{"method": m, "seed": s, "test_acc": a} for m, accs in (("exact", (80, 81, 79)), ("aufom", (81, 81.5, 80)))
            for s, a in enumerate(accs)]
    note = hc.paired_note(rows, "test_acc")
    half = stats.t.ppf(0.975, 2) * np.std([1, 0.5, 1], ddof=1) / np.sqrt(3)
    assert f"aufom − exact: +0.833, 95% interval [{0.8333 - half:+.3g}, {0.8333 + half:+.3g}] over 3 seeds" in note
    assert "(better)" in note and "of 3" not in note  # the interval excludes 0; never "N of N" alone
    noisy = [dict(r, test_acc=r["test_acc"] + (3 if r["seed"] == 0 and r["method"] == "exact" else 0)) for r in rows]
    assert "not distinguishable from 0" in hc.paired_note(noisy, "test_acc")
    assert hc.paired_note([r for r in rows if r["method"] == "exact"], "test_acc") == ""  # nothing to pair
