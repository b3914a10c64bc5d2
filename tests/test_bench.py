"""The benchmark harness (ablo.bench): smoke sizes only, no timing assertions."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from ablo import bench
from ablo.bench import anchors, peers, references, report, suite

ROOT = Path(__file__).resolve().parents[1]


def test_make_data_shapes_and_bad_input():
    d = bench.make_data("hypercleaning", "smoke")
    n, f, c = (bench.SIZES["smoke"]["hypercleaning"][k] for k in ("n", "d", "c"))
    assert d["x_tr"].shape == d["x_val"].shape == (n, f) and d["x_tr"].dtype == np.float32
    assert d["theta"].shape == (n,) and set(np.unique(d["y_tr"])) <= set(range(c))
    assert d["w0"].shape == (f, c) and not d["w0"].any()  # the linear model starts at 0
    m = bench.make_data("mlp", "smoke")
    widths = [m[f"w{i}"].shape for i in range(3)]
    assert widths == [(16, 8), (8, 8), (8, 3)] and m["w0"].std() > 0
    with pytest.raises(ValueError, match="problem"):
        bench.make_data("newsgroups", "smoke")
    with pytest.raises(ValueError, match="size"):
        bench.run_suite("/nonexistent", size="huge")
    with pytest.raises(ValueError, match="rounds"):
        bench.run_suite("/nonexistent", rounds=0)


def smoke_problem(problem, r=4):
    """bench's smoke data of ``problem`` in float64, and its (problem, θ, task) at ``r`` inner steps."""
    data = {k: v.astype(np.float64) if v.dtype == np.float32 else v
            for k, v in bench.make_data(problem, "smoke").items()}
    return data, bench.build(problem, data, r)


#: One compilation of ablo's estimator and one of its reference per method: three in the default
#: run, every method with ``-m slow``.
DEFAULT_REFERENCES = ("fom", "checkpointed", "aid-cg")


@pytest.mark.parametrize("method", [m if m in DEFAULT_REFERENCES else pytest.param(m, marks=pytest.mark.slow)
                                    for m in bench.problems.METHODS])
def test_references_compute_the_estimators_hypergradients(method):
    """Each hand-written program computes what ablo's estimator of the same name does (float64).
    The MLP (φ a list of (W, b) pairs) for all but AID-CG: its inner Hessian is indefinite there,
    and 20 CG iterations amplify rounding (1e-13 after 5 iterations, 1e-4 after 20, in float64),
    so AID-CG is compared on the convex linear problem."""
    assert method in bench.problems.available_methods()
    r = 4
    data, (prob, theta, task) = smoke_problem("hypercleaning" if method == "aid-cg" else "mlp", r)
    est = bench.estimator(method, r)
    key = bench.problems.ufom_key() if method == "ufom" else jax.random.PRNGKey(0)
    g = jax.jit(lambda th, tk: est.estimate(prob, th, tk, est.init(prob, th, tk), key)[0])(theta, task)
    name, f = references.program(method, prob, float(data["lr"]), r, bench.AID_ITERS)
    g_ref = jax.jit(f)(theta, task)
    np.testing.assert_allclose(g, g_ref[0] if name == "fom" else g_ref, rtol=1e-8, atol=1e-12, err_msg=method)


def test_worker_times_estimator_reference_and_reverse_in_one_process(tmp_path):
    np.savez(tmp_path / "d.npz", **bench.make_data("hypercleaning", "smoke"))
    spec = {"problem": "hypercleaning", "method": "checkpointed", "r": 4, "data": str(tmp_path / "d.npz"),
            "grad_out": str(tmp_path / "g.npy"), "warmup": False, "pairs": 2}
    out = bench.worker(spec)
    assert out["ref"] == "checkpointed" and len(out["times"]["time_s"]) == len(out["times"]["ref_s"]) == 2
    assert out["time_s"] > 0 and out["ref_s"] > 0 and out["ratio"] > 0 and out["vs_reverse"] > 0
    assert out["temp_mb"] > 0 and out["ref_temp_mb"] > 0 and out["reverse_temp_mb"] > 0
    assert out["gflop"] > 0 and out["ref_gflop"] > 0
    assert out["vs_ref_cos"] > 1 - 1e-6 and out["cost"]["hvps"] == 4
    assert np.load(tmp_path / "g.npy").shape == (bench.SIZES["smoke"]["hypercleaning"]["n"],)
    compiled_only = bench.worker(dict(spec, run=False, grad_out=None))
    assert "time_s" not in compiled_only and compiled_only["ref_temp_mb"] > 0


def test_states_only_reverse_does_more_work_per_step_than_the_standard_form():
    """The measured reason reverse (states only) is not faster than jax.grad through lax.scan: XLA's
    flop count of its loop bodies is larger (each backward step recomputes the step's forward pass
    inside its VJP, where the standard form reads it from its residuals), its temp memory smaller."""
    data = bench.make_data("hypercleaning", "smoke")
    prob, theta, task = bench.build("hypercleaning", data, 4)
    est = bench.estimator("reverse", 4)
    mine = jax.jit(lambda th, tk: est.estimate(prob, th, tk, (), jax.random.PRNGKey(0))[0]).lower(theta, task).compile()
    ref = jax.jit(references.reverse(prob, float(data["lr"]), 4)).lower(theta, task).compile()
    from ablo.bench.worker import gflop, temp_mb

    assert gflop(mine) > gflop(ref) and temp_mb(mine) < temp_mb(ref)


def test_plan_times_only_affordable_configurations():
    jobs = {(s["problem"], s["method"], s["r"]): (s, rounds) for s, rounds in
            bench.plan(("hypercleaning", "mlp"), ("reverse", "recompute", "forward", "fom"), None, "full", 3)}
    assert {r for p, _, r in jobs if p == "hypercleaning"} == set(suite.SWEEP["full"])
    assert {r for p, _, r in jobs if p == "mlp"} == {bench.CHECK_R["mlp"]}
    assert jobs[("hypercleaning", "reverse", 1000)][0]["run"] and jobs[("hypercleaning", "recompute", 30)][0]["run"]
    assert not jobs[("hypercleaning", "recompute", 100)][0]["run"]  # r(r-1)/2 gradient evaluations
    assert not jobs[("hypercleaning", "forward", 10)][0]["run"]  # dim θ = 5000 tangents per step
    spec, rounds = jobs[("hypercleaning", "reverse", 100)]
    assert spec["check"] and rounds == 3 and spec["pairs"] == suite.CHECK_PAIRS
    assert jobs[("hypercleaning", "reverse", 300)][1] == 1


def test_checks_logic():
    row = lambda m, r, **kw: dict(problem="hypercleaning", method=m, r=r, check=r == 100, **kw)
    rows = [row("reverse", 100, ratio=1.04, time_s=1.04, ref_s=1.0, temp_mb=4.0, ref_temp_mb=80.0, ref="reverse",
                vs_ref_cos=1.0, vs_ref_rel_err=0.0, gflop=5.0, ref_gflop=4.0),
            row("checkpointed", 100, ratio=1.0, time_s=1.5, ref_s=1.5, vs_reverse=1.5, ref="checkpointed",
                cost={"grad_evals": 201}),
            row("fom", 100, ratio=1.2, time_s=1.2, ref_s=1.0, ref="fom"),
            row("recompute", 100, ref="recompute"), row("recompute", 30, ratio=1.05, time_s=1, ref_s=1, ref="recompute"),
            row("forward", 100, ref="forward"), row("binomial", 100, ratio=1.3, time_s=1, ref_s=1, ref="reverse")]
    text = "\n".join(report.checks(rows))
    assert "FAIL reverse time / jax.grad through lax.scan in the x @ W layout" in text
    assert "fastest plain JAX is the anchors command's) <= 1.0: hypercleaning r=100: 1.04" in text
    assert "5 vs 4 GFLOP = 1.25x" in text
    assert "PASS standard form temp / reverse temp >= 10: hypercleaning r=100: 20.0" in text
    assert "PASS checkpointed time / reverse time <= 1.6: hypercleaning r=100: 1.50" in text
    assert "FAIL time / reference <= 1.1: hypercleaning fom r=100: 1.20" in text
    assert "PASS time / reference <= 1.1: hypercleaning recompute at r=30 (not timed at r=100" in text
    assert "NOT RUN hypercleaning forward r=100" in text
    assert "INFO hypercleaning binomial r=100: no hand-written reference" in text
    assert "PASS estimate agrees with its reference" in text


def test_a_nan_hypergradient_is_a_failed_check_not_a_time(tmp_path):
    """A peer (or ablo) whose hypergradient holds NaN, or a peer whose hypergradient is zero where
    ablo's is not, gets a FAIL line and no valid time ratio in the peers' table (a NaN run once
    stood in that table as 0.68x and 0.83x ablo's time; jaxopt's implicit diff now returns zero there)."""
    from ablo.bench.worker import compare

    assert compare(np.ones(3), np.ones(3))["cos"] == pytest.approx(1.0)
    assert compare(np.zeros(3), np.ones(3)) == {"cos": 0.0, "rel_err": 1.0}  # zero is not agreement
    assert compare(np.zeros(3), np.zeros(3))["cos"] is None
    bad = compare(np.array([1.0, np.nan, 2.0]), np.ones(3))
    assert bad["cos"] is None and bad["nonfinite"] == 1
    nan, ok = tmp_path / "nan.npy", tmp_path / "ok.npy"
    np.save(nan, np.full(4, np.nan)), np.save(ok, np.ones(4))
    rows = [dict(problem="hypercleaning", method="reverse", r=100, check=True, grad_file=str(ok), time_s=1.0,
                 ref_s=1.0, ratio=1.0, ref="reverse", peak_rss_mb=100.0),
            dict(problem="hypercleaning", method="reverse", r=100, library="jaxopt", grad_file=str(nan),
                 time_s=0.5, peak_rss_mb=300.0)]
    rows = suite.analyse(rows)
    peers = suite.peer_ratios(rows)
    assert peers[0]["nonfinite"] == 4 and rows[1]["vs_ablo_same"]["cos"] is None
    text = "\n".join(report.checks(rows))
    assert "FAIL hypergradient is finite: hypercleaning jaxopt reverse r=100: 4 NaN/inf entries" in text
    summary = {"results": rows, "peer_ratios": peers, "machine": {}, "config": {"problems": ["hypercleaning"]}}
    md = report.markdown(summary)
    assert "| invalid (NaN result; 0.50) |" in md and "NaN result |" in md
    zero = tmp_path / "zero.npy"
    np.save(zero, np.zeros(4))
    rows[1]["grad_file"] = str(zero)
    rows = suite.analyse(rows)
    peers = suite.peer_ratios(rows)
    assert "FAIL peer agrees with ablo's reverse (cos >= 0.9999): hypercleaning jaxopt r=100: cos 0.000000" \
        in "\n".join(report.checks(rows))
    md = report.markdown({**summary, "results": rows, "peer_ratios": peers})
    assert "| invalid (wrong result, cos 0.00; 0.50) |" in md
    # ablo's own estimate NaN: its time check is INVALID, not PASS
    rows[0]["grad_file"] = str(nan)
    text = "\n".join(report.checks(suite.analyse(rows)))
    assert "INVALID (NaN result, not a time) reverse time / jax.grad through lax.scan" in text
    assert "PASS reverse time" not in text


@pytest.mark.parametrize("methods", [("reverse",), pytest.param(("reverse", "fom"), marks=pytest.mark.slow)],
                         ids=["reverse", "reverse-fom"])
def test_smoke_suite_with_a_peer(tmp_path, methods):
    """The whole pipeline at tiny sizes: subprocess workers, a peer, the tables, the plots (a worker
    process per method and r: reverse alone in the default run, with FOM under ``-m slow``)."""
    jobs = []
    if sys.modules.get("jaxopt") or _has("jaxopt"):
        jobs = [({"problem": "hypercleaning", "library": "jaxopt", "method": "reverse", "r": 6, "warmup": False},
                 1, [sys.executable, str(peers.HERE / "jaxopt_peer.py")])]
    s = bench.run_suite(tmp_path, problems=("hypercleaning",), methods=methods, size="smoke",
                        rounds=1, peers=jobs, log=lambda *_: None)
    rows = {(r.get("library", "ablo"), r["method"], r["r"]): r for r in s["results"]}
    assert not [r for r in s["results"] if "error" in r], [r.get("error") for r in s["results"]]
    rev = rows[("ablo", "reverse", 6)]
    assert rev["vs_exact"]["cos"] == pytest.approx(1.0) and rev["vs_ref_cos"] == pytest.approx(1.0)
    assert rev["ratio"] > 0 and rev["ref"] == "reverse" and rev["ref_temp_mb"] > 0
    assert json.loads((tmp_path / "results.json").read_text())["machine"]["nproc"] >= 1
    md = (tmp_path / "results.md").read_text()
    assert "| hypercleaning | reverse | 6 |" in md and "### Checks" in md
    table = (tmp_path / "results.csv").read_text().splitlines()
    assert len(table) == 1 + len(s["results"]) and "temp_mb" in table[0] and "gflop" in table[0]
    assert sorted(Path(p).name for p in s["plots"]) == ["hypercleaning-memory.png", "hypercleaning-time.png"]
    assert all((tmp_path / Path(p).name).stat().st_size > 0 for p in s["plots"])
    # a finished run's checks and tables redone from its files, the timings untouched
    again = suite.rerender(tmp_path)
    assert len(again["rerendered"]) == 1 and again["checks"] == s["checks"]
    assert [r.get("time_s") for r in again["results"]] == [r.get("time_s") for r in s["results"]]
    if jobs:  # jaxopt differentiates the same unrolled loop: it must agree with ablo's exact
        assert rows[("jaxopt", "reverse", 6)]["vs_exact"]["cos"] > 1 - 1e-5
        assert s["peer_ratios"][0]["peer"] == "jaxopt" and s["peer_ratios"][0]["vs_jax_ref"] > 0


def _has(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.slow  # a synthetic-q run in a subprocess: ~20 s alone
def test_ufom_exact_branch_table(tmp_path):
    """``python -m ablo.bench exact-branch`` on a tiny synthetic-q run: the row carries the branch's own
    C_rnd and q*, and UFOM's expected calls per step at that q*; the files are written."""
    from ablo import Checkpointed, UFOM, theory

    tiny = ["seeds=0,1", "outer_steps=30", "n_alpha=2", "q_grid_range=0.1,1", "q_grid_points=2", "theta_grid_points=5",
            "record_every=5"]
    code = subprocess.run([sys.executable, "-m", "ablo.bench", "exact-branch", "--out", str(tmp_path),
                           "--branches", "checkpointed", "--set", *tiny], capture_output=True, text=True)
    assert code.returncode == 0, code.stderr[-2000:]
    (row,) = json.loads((tmp_path / "ufom_exact_branch.json").read_text())
    c_det, c_rnd = theory.cost_model(10, exact=Checkpointed())
    assert row["exact"] == "checkpointed" and row["C_rnd"] == c_rnd and row["states"] == 5
    assert row["q_star"] == pytest.approx(theory.q_star(row["D2"], row["V2"], c_det, c_rnd))
    expected = UFOM(q=row["q_star"], exact=Checkpointed()).expected_cost(10)
    assert row["ufom_calls_per_step"] == pytest.approx(float(expected.function_calls))
    assert all((tmp_path / f"ufom_exact_branch.{ext}").stat().st_size > 0 for ext in ("csv", "md", "png"))
    # a second call reuses the finished run with the same settings, and refuses one with others
    again = subprocess.run([sys.executable, "-m", "ablo.bench", "exact-branch", "--out", str(tmp_path),
                            "--branches", "checkpointed", "--set", *tiny], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    other = subprocess.run([sys.executable, "-m", "ablo.bench", "exact-branch", "--out", str(tmp_path),
                            "--branches", "checkpointed", "--set", *tiny[:-1], "record_every=10"],
                           capture_output=True, text=True)
    assert other.returncode != 0 and "record_every: 5 -> 10" in other.stderr


@pytest.fixture(scope="module")
def anchor_targets():
    """ablo's reverse and FOM hypergradients on bench's smoke problems (float64, r = 4), per problem."""
    out = {}
    for problem in ("hypercleaning", "mlp"):
        data, (prob, theta, task) = smoke_problem(problem)
        want = {}
        for method, algorithm in (("reverse", "exact"), ("fom", "fom")):
            est = bench.estimator(method, 4)
            want[algorithm] = est.estimate(prob, theta, task, est.init(prob, theta, task), jax.random.PRNGKey(0))[0]
        out[problem] = data, theta, want
    return out


ANCHOR_PROGRAMS = ([("hypercleaning", lay, "exact", "none") for lay in anchors.LAYOUTS]
                   + [("hypercleaning", "x@W.T", "exact", p) for p in anchors.POLICIES[1:]]
                   + [("hypercleaning", lay, "fom", "none") for lay in anchors.LAYOUTS]
                   + [("mlp", lay, "exact", "none") for lay in anchors.LAYOUTS])
#: One program of each kind (a layout, a policy, FOM, the MLP) in the default run, all with ``-m slow``.
DEFAULT_ANCHORS = {("hypercleaning", "x@W", "exact", "none"), ("hypercleaning", "x@W.T", "exact", "dots_saveable"),
                   ("hypercleaning", "stored-T", "fom", "none"), ("mlp", "einsum", "exact", "none")}


@pytest.mark.parametrize("problem, layout, algorithm, policy", [
    c if c in DEFAULT_ANCHORS else pytest.param(*c, marks=pytest.mark.slow) for c in ANCHOR_PROGRAMS])
def test_every_plain_anchor_program_computes_ablos_hypergradient(anchor_targets, problem, layout, algorithm, policy):
    """Each layout of the plain JAX anchors computes the hypergradient of ablo's reverse (float64;
    FOM's programs ablo's FOM), on the linear and the MLP problem, and so does each
    jax.checkpoint policy (which changes what is stored, not the value: checked in one layout)."""
    data, theta, want = anchor_targets[problem]
    assert np.abs(np.asarray(want["exact"])).max() > 0
    f, phi0, ptask = anchors.plain_program(data, layout, 4, algorithm, policy)
    got = jax.jit(f)(theta, phi0, ptask)
    if algorithm == "fom":  # (∂L_out/∂θ, whether φ_r is finite)
        assert bool(got[1]), layout
        got = got[0]
    np.testing.assert_allclose(got, want[algorithm], rtol=1e-9, atol=1e-13,
                               err_msg=f"{problem} {algorithm} {layout} {policy}")


def test_anchor_programs_refuse_unknown_layouts_and_policies():
    data = bench.make_data("hypercleaning", "smoke")
    with pytest.raises(ValueError, match="layout"):
        anchors.plain_problem(data, "x@W.H")
    with pytest.raises(ValueError, match="policy"):
        anchors.plain_program(data, "x@W", 2, "exact", "everything_saveable")


def _prog(kind, algorithm, times, temp, layout=None, policy="none"):
    return {"kind": kind, "algorithm": algorithm, "layout": layout, "policy": policy, "temp_mb": temp,
            "times": times, "time_s": float(np.median(times))}


def test_anchor_is_the_fastest_plain_program_and_equal_memory_the_fastest_that_fits():
    name = anchors.plain_name
    progs = {"ablo reverse": _prog("ablo", "exact", [1.0, 1.2, 1.1], 4.0),
             "ablo fom": _prog("ablo", "fom", [0.5, 0.5, 0.5], 0.5),
             name("exact", "x@W"): _prog("plain", "exact", [2.0, 2.0, 2.0], 40.0, "x@W"),
             name("exact", "x@W.T"): _prog("plain", "exact", [1.0, 1.0, 1.0], 40.0, "x@W.T"),
             name("exact", "x@W.T", "nothing_saveable"): _prog("plain", "exact", [1.6, 1.5, 2.2], 4.1, "x@W.T",
                                                              "nothing_saveable"),
             name("exact", "x@W.T", "dots_saveable"): _prog("plain", "exact", [0.8, 0.8, 0.8], 20.0, "x@W.T",
                                                           "dots_saveable"),
             name("exact", "x@W", "nothing_saveable"): _prog("plain", "exact", [3.0, 3.0, 3.0], 3.0, "x@W",
                                                            "nothing_saveable"),
             name("exact", "x@W", "dots_saveable"): _prog("plain", "exact", [2.0, 2.0, 2.0], 20.0, "x@W",
                                                         "dots_saveable"),
             name("fom", "x@W"): _prog("plain", "fom", [1.0, 1.0, 1.0], 0.5, "x@W"),
             name("fom", "x@W.T"): _prog("plain", "fom", [0.4, 0.5, 0.6], 0.5, "x@W.T")}
    s = anchors.summarize({"problem": "hypercleaning", "r": 100, "programs": progs})
    assert s["anchors"] == {"exact": name("exact", "x@W.T", "dots_saveable"), "fom": name("fom", "x@W.T")}
    rows = {row["program"]: row for row in s["rows"]}
    assert rows["ablo reverse"]["vs_anchor"] == pytest.approx(1.1 / 0.8)  # median of per-repeat ratios
    assert rows["ablo fom"]["vs_anchor"] == pytest.approx(1.0)
    m = s["reverse_memory"]
    assert m["layout"] == "x@W.T" and m["plain_scan_temp_mb"] == 40.0 and m["nothing_saveable_temp_mb"] == 4.1
    # 4.1 MB is within 5 % of ablo's 4.0 MB; x@W's 3.0 MB program fits too but is slower
    assert m["equal_memory_program"] == name("exact", "x@W.T", "nothing_saveable")
    assert m["equal_memory_ratio"] == pytest.approx(float(np.median([1.0 / 1.6, 1.2 / 1.5, 1.1 / 2.2])))
    assert "no plain exact program" not in anchors.markdown([s], {})


def test_anchor_worker_and_report_on_smoke_data(tmp_path):
    np.savez(tmp_path / "hypercleaning.npz", **bench.make_data("hypercleaning", "smoke"))
    spec = {"problem": "hypercleaning", "r": 3, "repeats": 2, "layouts": ["x@W.T"],
            "methods": ["reverse", "fom"], "data": str(tmp_path / "hypercleaning.npz")}
    res = anchors.anchor_worker(spec)
    assert set(res["programs"]) == {"ablo reverse", "ablo fom", anchors.plain_name("fom", "x@W.T")} | {
        anchors.plain_name("exact", "x@W.T", p) for p in anchors.POLICIES}
    assert all(len(p["times"]) == 2 and p["temp_mb"] > 0 for p in res["programs"].values())
    assert all(p["vs_ablo_cos"] > 1 - 1e-6 for p in res["programs"].values() if p["algorithm"] == "exact")
    first = anchors.anchor_worker(dict(spec, repeats=2, first_timed=True, methods=["reverse"],
                                       exact=[["x@W", "none"]]))
    assert set(first["programs"]) == {"ablo reverse", anchors.plain_name("exact", "x@W")}
    (tmp_path / "raw").mkdir()
    for k, r in enumerate((res, res)):
        (tmp_path / "raw" / f"hypercleaning-r3-round{k + 1}.json").write_text(json.dumps(dict(r, spec=spec)))
    summary = anchors.write_report(tmp_path)
    (s,) = summary["results"]
    assert s["anchors"]["exact"].startswith("plain exact") and len(summary["raw"][0]["loadavg"]) == 2
    assert len(summary["raw"][0]["programs"]["ablo reverse"]["times"]) == 4  # two rounds of two repeats
    md = (tmp_path / "anchors.md").read_text()
    assert "### hypercleaning, r = 3" in md and "| ablo reverse | exact |" in md and "at equal memory" in md
    assert len((tmp_path / "anchors.csv").read_text().splitlines()) == 1 + len(res["programs"])
    with pytest.raises(ValueError, match="unknown anchors configuration"):
        anchors.run_anchors(tmp_path, ("hypercleaning:7",))


def test_torch_peer_forms_are_the_labels_the_driver_passes():
    """The driver labels the plain PyTorch peer's form; the peer must run that form (a label it did
    not recognise once ran x @ W + b under the name F.linear). Read without importing torch."""
    tree = ast.parse((peers.HERE / "torch_problem.py").read_text())
    forms = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                 and getattr(n.targets[0], "id", None) == "FORMS")
    driven = {form for _, script, form, *_ in peers.PEER_SCRIPTS if script == "torch_plain.py"}
    assert driven == set(forms) == {"F.linear", "matmul"}


def test_bench_code_imports_no_private_names_and_the_cli_help_is_plain():
    """One home for the benchmark code: no module of ablo.bench imports another's private
    (underscore) names, and ``ablo bench --help`` shows no reST markup and names no script
    outside the package."""
    root = Path(bench.__file__).parent
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                assert not [a.name for a in node.names if a.name.startswith("_")], (path, node.module)
                assert not (node.module or "").split(".")[-1].startswith("_"), (path, node.module)
    from typer.testing import CliRunner

    from ablo.cli import app

    out = " ".join(CliRunner().invoke(app, ["bench", "--help"]).output.split())
    assert "python -m ablo.bench" in out and "``" not in out and "benchmarks/" not in out


def test_bench_processes_keep_the_callers_xla_flags():
    """The benchmark's single-threaded settings are added to the flags a user set, not put in their place."""
    from ablo.bench.worker import ENV, single_threaded

    env = single_threaded({"XLA_FLAGS": "--xla_force_host_platform_device_count=2", "HOME": "/h"})
    assert env["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=2", *ENV["XLA_FLAGS"].split()]
    assert env["HOME"] == "/h" and env["OMP_NUM_THREADS"] == "1"
    assert single_threaded(env) == env  # applying it twice changes nothing
