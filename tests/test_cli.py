"""The ``ablo`` command end to end: list, run (toy2d --tiny), compare, diagnose, and the error
paths (one line on stderr, exit code 2, no traceback)."""

import json

import pytest

from ablo import cli
from ablo.results import write_summary


def call(args, capsys):
    """(exit code, stdout, stderr) of ``ablo ARGS``."""
    try:
        cli.main(args)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_names_experiments_and_estimators(capsys):
    code, out, _ = call(["list"], capsys)
    assert code == 0
    for name in ("toy2d", "demo", "reverse", "truncated", "fom", "ufom"):
        assert name in out


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ABLO_DATA_DIR", raising=False)
        try:
            cli.main(["run", "toy2d", "--tiny", "--out", str(out), "-m", "truncated-2", "-m", "reverse",
                      "--steps", "12", "--first-step-norm", "0.3"])
        except SystemExit as e:
            assert not e.code
    return out


def test_run_writes_every_result_file(toy_run):
    for name in ("summary.json", "results.md", "bound.csv", "trajectories.csv", "bound.png", "trajectories_f.png",
                 "trajectories_f_tilde.png", "descent_ratio.csv", "descent_ratio.png"):
        assert (toy_run / name).stat().st_size > 0, name
    doc = json.loads((toy_run / "summary.json").read_text())
    assert doc["experiment"] == "toy2d"
    cfg = doc["config"]
    # defaults < tiny < --set / --key value and named options
    assert cfg["outer_steps"] == 12 and cfg["first_step_norm"] == 0.3
    assert cfg["steps"] == 6 and cfg["methods"] == ["truncated-2", "reverse"]
    ratio = cfg["descent_ratio_min"]  # Fig. 2 along a K = 1 trajectory the run adds itself
    assert set(ratio["f"]) == {"2", "6"} and abs(ratio["f"]["6"] - 1) < 1e-4 and ratio["f"]["2"] > 0
    assert {(r["objective"], r["method"], r["K"]) for r in doc["results"]} == {
        (o, m, k) for o in ("f", "f_tilde") for m, k in (("truncated-2", 2), ("reverse", None))}
    manifest = json.loads((toy_run / "manifest.json").read_text())
    assert manifest["experiment"] == "toy2d" and manifest["config"]["outer_steps"] == 12
    assert len(manifest["config_sha256"]) == 64 and manifest["data"] is None and "jax" in manifest["versions"]


#: A hypercleaning summary's config on the papers' data and protocol (their figures apply).
PAPER_HYPERCLEANING = {"model": "linear", "n_train": 5000, "n_val": 5000, "corrupt": 0.5, "steps": 100,
                       "corruption": "uniform", "test_set": "rest", "outer_steps": 1000, "budget_calls": None,
                       "schedule": "inv-sqrt", "decay_bias": True, "l2": 0.001 / 5000,
                       "dataset": {"name": "MNIST", "train_images": 60000, "test_images": 10000, "image_size": 28}}


def test_compare_aggregates_seeds_and_shows_paper_figures(tmp_path, toy_run, capsys):
    rows = lambda seeds, acc: [{"method": "truncated", "K": 100, "seed": s, "test_acc": a, "f1": 0.8}
                               for s, a in zip(seeds, acc)]
    write_summary(tmp_path / "a", "hypercleaning", PAPER_HYPERCLEANING, rows([0, 1], [88.0, 90.0]))
    write_summary(tmp_path / "b", "hypercleaning", PAPER_HYPERCLEANING, rows([2], [92.0]))
    code, out, err = call(["compare", str(tmp_path / "a"), str(tmp_path / "b" / "summary.json"), str(toy_run)], capsys)
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("| truncated | 100"))
    assert "| 3 |" in line and "90 ± 2" in line and "88.33" in line  # mean ± sample std of 88, 90, 92; Shaban et al. 2019
    assert "## toy2d" in out and "f_tilde" in out


def test_compare_refuses_a_seed_pooled_twice(tmp_path, capsys):
    """Two runs of seed 0 would read as n = 2 seeds with a meaningless std: refused, naming both."""
    row = [{"method": "recompute", "seed": 0, "test_acc": 90.0}]
    for name in ("first", "again"):
        write_summary(tmp_path / name, "hypercleaning", {"model": "mlp", "seeds": [0]}, row)
    code, out, err = call(["compare", str(tmp_path / "first"), str(tmp_path / "again")], capsys)
    lines = [l for l in err.splitlines() if l.strip()]
    assert code == 2 and len(lines) == 1 and out == ""
    assert "seed 0 of hypercleaning (method=recompute) appears twice" in lines[0]
    assert str(tmp_path / "first") in lines[0] and str(tmp_path / "again") in lines[0]
    code, _, err = call(["compare", str(tmp_path / "first"), str(tmp_path / "first")], capsys)  # one folder twice
    assert code == 2 and "appears twice" in err
    # the same seed in another setting (here another method) is a different row: no conflict
    write_summary(tmp_path / "fom", "hypercleaning", {"model": "mlp", "seeds": [0]}, [dict(row[0], method="fom")])
    code, out, err = call(["compare", str(tmp_path / "first"), str(tmp_path / "fom")], capsys)
    assert code == 0, err
    assert any(l.startswith("| recompute") for l in out.splitlines()) and any(l.startswith("| fom") for l in out.splitlines())


def test_compare_keeps_different_settings_apart(tmp_path, capsys):
    for name, model, acc, corruption in (("lin", "linear", 88.0, "uniform"), ("mlp", "mlp", 92.0, "wrong")):
        write_summary(tmp_path / name, "hypercleaning", {**PAPER_HYPERCLEANING, "model": model, "seeds": [0],
                                                         "corruption": corruption},
                      [{"method": "recompute", "seed": 0, "test_acc": acc, "steps": 7}])
    code, out, err = call(["compare", str(tmp_path / "lin"), str(tmp_path / "mlp")], capsys)
    assert code == 0, err
    header = next(l for l in out.splitlines() if l.startswith("| config.corruption | config.model"))
    assert "| steps |" in header and "paper_test_acc" in header
    lin = next(l for l in out.splitlines() if l.startswith("| uniform | linear"))
    mlp = next(l for l in out.splitlines() if l.startswith("| wrong | mlp"))
    assert "| 88 |" in lin and "88.33" in lin  # exact on the linear model: Shaban et al. 2019 Table 2, K = T
    assert "| 92 |" in mlp and "90.82" in mlp  # exact on the MLP: Likhosherstov et al. 2021 Table 1


def test_diagnose_runs_on_the_built_in_example(capsys):
    code, out, err = call(["diagnose", "--steps", "4", "--samples", "3"], capsys)
    assert code == 0, err
    assert "q*" in out and "fom" in out and "exact branch recompute" in out
    code, out, err = call(["diagnose", "--steps", "4", "--samples", "3", "--branch", "fom"], capsys)
    assert code == 2 and out == "" and err.strip().startswith("ablo: error: --branch fom: exact must be an unrolled")


@pytest.mark.slow  # another diagnose run; the default run has `ablo diagnose --branch checkpointed` (test_readme_commands)
def test_diagnose_names_the_exact_branch_it_ran(capsys):
    code, out, err = call(["diagnose", "--steps", "4", "--samples", "3", "--branch", "checkpointed"], capsys)
    assert code == 0, err
    assert "exact branch checkpointed" in out


@pytest.mark.parametrize("args,message", [
    (["compare", "/no/such/run"], "summary.json"),
    (["bench", "--problems", "nope"], "problem must be one of"),
    (["bench", "--rounds", "0"], "--rounds must be >= 1"),
])
def test_errors_are_one_line_and_exit_2(args, message, capsys, tmp_path):
    """More of ``ablo run``'s in tests/test_run_hostile.py."""
    code, _, err = call(args + (["--out", str(tmp_path)] if args[0] in ("run", "bench") else []), capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0], err


def test_ablo_traceback_raises_the_error_with_its_traceback(monkeypatch, tmp_path):
    """One line is for users; ABLO_TRACEBACK=1 gives the traceback a bug report needs."""
    monkeypatch.setenv("ABLO_TRACEBACK", "1")
    with pytest.raises(ValueError, match="summary.json"):
        cli.main(["compare", str(tmp_path / "no-such-run")])


def test_environment_data_dir_is_the_cache_not_an_option(tmp_path, monkeypatch):
    """ABLO_DATA_DIR names the fetch cache (tests/test_data_cache.py): an experiment reading no data
    ignores it, a missing or empty folder falls back to the built-in data, and only --data-dir
    itself is refused where the experiment takes no data."""
    from ablo.experiments import get

    seen = []
    monkeypatch.setattr(cli, "run_experiment", lambda exp, cfg, out, resume, overwrite: seen.append(cfg))
    for value in (str(tmp_path / "missing"), str(tmp_path) + "/"):
        monkeypatch.setenv("ABLO_DATA_DIR", value)
        cli.main(["run", "toy2d", "--tiny", "--out", str(tmp_path / "out")])
        assert not hasattr(seen.pop(), "data_dir")
        cli.main(["run", "hypercleaning", "--out", str(tmp_path / "out")])
        assert seen.pop().data_dir is None
    with pytest.raises(ValueError, match="does not take --data-dir"):
        cli.build_config(get("toy2d"), None, None, None, tmp_path, None, None, [], [], True, None)


def test_overrides_are_texts_for_the_typed_config():
    assert cli.parse_overrides(["x=null"], ["--model", "mlp", "--first-step-norm=2"]) == {
        "x": "null", "model": "mlp", "first_step_norm": "2"}
    with pytest.raises(ValueError, match="needs a value"):
        cli.parse_overrides([], ["--flag"])


def test_config_command_lists_types_ranges_and_help(capsys):
    code, out, err = call(["config", "toy2d"], capsys)
    assert code == 0, err
    assert "inner_lr = 0.1  [> 0]" in out and "inner GD step size" in out


def test_demo_command_runs_the_demo_configuration(monkeypatch, tmp_path, capsys):
    started = []
    monkeypatch.setattr(cli, "run_experiment", lambda exp, cfg, out, **kw: started.append((exp.name, cfg, out)))
    code, _, err = call(["demo", "--out", str(tmp_path), "--budget-calls", "500"], capsys)
    assert code == 0, err
    name, cfg, out = started[0]
    assert name == "demo" and out == tmp_path and cfg.budget_calls == 500 and cfg.data_dir is None
    assert cfg.model == "mlp" and cfg.methods == ("recompute", "fom", "ufom", "adaptive-ufom") and cfg.seeds == (3,)
    assert not set(cfg.seeds) & set(cfg.tuned_seeds)  # the demo reports a seed its settings were not chosen on
    code, _, err = call(["demo", "--out", str(tmp_path), "--budget-calls", "-1"], capsys)
    assert code == 2 and "budget_calls" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    code, out, err = call(["demo", "--out", str(tmp_path)], capsys)
    assert code == 0, err
    for name in ("summary.json", "results.md", "curves.csv", "curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = json.loads((tmp_path / "summary.json").read_text())["results"]
    assert {r["method"] for r in rows} == {"recompute", "fom", "ufom", "adaptive-ufom"}
    # the exact and unbiased estimators clean the data; FOM's hypergradient is 0 here, so it cannot
    by = {r["method"]: r for r in rows}
    assert min(by[m]["f1"] for m in ("recompute", "ufom", "adaptive-ufom")) > 0.5 > by["fom"]["f1"]


def test_ctrl_c_prints_how_to_resume_and_exits_130(monkeypatch, tmp_path, capsys):
    from ablo.outer import Interrupted

    def interrupted(*args):
        raise Interrupted(5, tmp_path / "checkpoint.npz")

    monkeypatch.setattr(cli, "run_experiment", interrupted)
    code, _, err = call(["run", "toy2d", "--tiny", "--out", str(tmp_path / "r")], capsys)
    assert code == 130
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines == ["ablo: interrupted after outer step 5; run the same command with --resume to continue"]
