"""Hostile ``ablo run`` invocations (issue: runs that never silently mix, lose or freeze results).

Each row is one invocation that must exit 2 with exactly one line on stderr naming the key, value
or file at fault — and, when it targets the folder of a previous run, leave that run's
summary.json, curves, plots, manifest and checkpoints byte-identical."""

import fcntl
import hashlib
from pathlib import Path

import pytest
from _cli_run import ablo

from ablo import cli

PREV = "PREV"  # replaced by the previous run's folder


def call(args, capsys):
    return ablo(*args)


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def previous(tmp_path_factory):
    """A finished toy2d --tiny run (seed 0) whose folder the hostile invocations aim at."""
    out = tmp_path_factory.mktemp("prev") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ABLO_DATA_DIR", raising=False)
        try:
            cli.main(["run", "toy2d", "--tiny", "--out", str(out)])
        except SystemExit as e:
            assert not e.code
    assert (out / "summary.json").is_file() and (out / "manifest.json").is_file()
    return out


TOY = ["run", "toy2d", "--tiny", "--out", PREV]
HC = ["run", "hypercleaning", "--tiny", "--out", PREV]

CASES = [
    # resume that would mix two runs
    (TOY + ["--resume", "--set", "inner_lr=0.2"], "inner_lr: 0.1 -> 0.2"),
    (TOY + ["--resume", "--steps", "31"], "outer_steps: 30 -> 31"),
    (TOY + ["--resume", "--seed", "1"], "seed: 0 -> 1"),
    (TOY + ["--resume", "-m", "reverse"], "methods"),
    (TOY + ["--resume", "--overwrite"], "not both"),
    # a fresh run into a folder that holds results
    (TOY, "already holds a run of toy2d"),
    (TOY + ["--seed", "1"], "already holds a run of toy2d"),
    (["run", "toy2d", "--tiny", "--out", ""], "--out is empty"),
    (["run", "toy2d", "--tiny", "--out", "."], "--out is empty"),
    (["run", "toy2d", "--tiny", "--out", PREV + "/summary.json"], "is a file"),
    # values: wrong type, out of range, not finite, lists where one value is meant
    (TOY + ["--set", "methods=[]"], "methods: give at least 1"),
    (TOY + ["--set", "steps=0"], "steps: 0 is out of range"),
    (TOY + ["--set", "steps=1.5"], "steps: expected an integer"),
    (TOY + ["--set", "outer_steps=-1"], "outer_steps: -1 is out of range"),
    (TOY + ["--set", "inner_lr=-1"], "inner_lr: -1.0 is out of range"),
    (TOY + ["--set", "inner_lr=1e400"], "inner_lr: expected a finite number"),
    (TOY + ["--set", "inner_lr=nan"], "inner_lr: expected a finite number"),
    (TOY + ["--set", "inner_lr=[1,2]"], "inner_lr: expected float, one value"),
    (TOY + ["--set", "first_step_norm=0"], "first_step_norm: 0.0 is out of range"),
    (TOY + ["--set", "penalty=-1"], "penalty: -1.0 is out of range"),
    (TOY + ["--set", "seed=-1"], "seed: -1 is out of range"),
    (TOY + ["--set", "seed=1.0"], "seed: expected an integer"),
    (TOY + ["--set", "w0=1,2,3"], "w0: give 2 numbers"),
    (TOY + ["--lambda0", "1"], "lambda0: give 2 numbers"),
    (TOY + ["--set", "resume=maybe"], "unknown config key 'resume'"),
    (TOY + ["--no-such-key", "1"], "unknown config key 'no_such_key'"),
    (TOY + ["--set", "novalue"], "--set expects key=value"),
    (TOY + ["--set", "outer_steps=3", "--steps", "4"], "given twice"),
    (TOY + ["--flag"], "--flag needs a value"),
    # estimator specs: one grammar, checked before anything runs
    (TOY + ["-m", "truncated-5.5"], "option K must be an integer"),
    (TOY + ["-m", "fom-3"], "fom takes no shorthand value"),
    (TOY + ["-m", "no-such-method"], "unknown estimator 'no-such-method'"),
    (TOY + ["-m", "ufom:q=2"], "q (probability of the exact branch) must be a number in (0, 1]"),
    (TOY + ["-m", "reverse:K=3"], "reverse has no option 'K'"),
    (TOY + ["-m", "truncated:K=200"], "K (truncation depth) must be an integer in [0, r]"),
    (TOY + ["-m", "aid-cg:warm_start=maybe"], "option warm_start must be true or false"),
    # options an experiment does not take
    (TOY + ["--budget-calls", "100"], "does not take --budget-calls"),
    (TOY + ["--devices", "2"], "does not take --devices"),
    (TOY + ["--seeds", "0,1"], "runs one seed"),
    (TOY + ["--data-dir", "/no/such/dir"], "does not take --data-dir"),
    (["run", "no-such-experiment", "--out", PREV], "unknown experiment"),
    # the other experiments' configs
    (HC + ["--set", "n_train=0"], "n_train"),
    (HC + ["--set", "outer_lr=-1"], "outer_lr"),
    (HC + ["--set", "eval_every=1e400"], "eval_every"),
    (HC + ["--set", "corrupt=1.5"], "corrupt"),
    (HC + ["--model", "mlp", "--set", "hidden=0"], "hidden"),
    (HC + ["--model", "linear", "--set", "hidden=8"], "hidden"),
    (HC + ["--data-dir", "/no/such/dir"], "does not exist"),
    (["run", "newsgroups", "--tiny", "--out", PREV, "--set", "inner_steps=0"], "inner_steps"),
    (["run", "counterexample", "--tiny", "--out", PREV, "--set", "alpha=-1"], "alpha"),
    (["run", "stochastic-hypercleaning", "--tiny", "--out", PREV, "--set", "corruptions=[1.5]"], "corruptions"),
    (["run", "fewshot", "--tiny", "--out", PREV, "--set", "ways=0"], "ways"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_hostile_invocation_exits_2_with_one_line_and_leaves_the_previous_run_alone(args, message, previous,
                                                                                    capsys, monkeypatch):
    monkeypatch.delenv("ABLO_DATA_DIR", raising=False)
    before = snapshot(previous)
    code, _, err = call([str(previous) + a[len(PREV):] if a.startswith(PREV) else a for a in args], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and message in lines[0], err
    assert snapshot(previous) == before


def test_a_second_process_on_the_same_folder_is_refused(previous, capsys):
    with open(previous / ".lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running `ablo run` holds it
        before = snapshot(previous)
        code, _, err = call(["run", "toy2d", "--tiny", "--out", str(previous), "--resume"], capsys)
        fcntl.flock(held, fcntl.LOCK_UN)
    assert code == 2 and "another ablo process is writing to" in err and len(err.strip().splitlines()) == 1
    assert snapshot(previous) == before


def test_resume_with_the_same_config_is_allowed_and_says_from_where(previous, capsys):
    code, out, err = call(["run", "toy2d", "--tiny", "--out", str(previous), "--resume"], capsys)
    assert code == 0, err
    assert "results in" in out


def test_inner_step_above_two_over_L_is_refused_with_L(tmp_path, capsys):
    code, _, err = call(["run", "toy2d", "--tiny", "--out", str(tmp_path / "r"), "--set", "inner_lr=2.5"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "inner_lr = 2.5 is at or above 2/L = 2" in err and "L = 1" in err


def test_overwrite_replaces_a_previous_run_but_not_a_foreign_folder(tmp_path, capsys):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, _, err = call(["run", "toy2d", "--tiny", "--out", str(foreign), "--overwrite"], capsys)
    assert code == 2 and "refusing to delete" in err and (foreign / "notes.txt").read_text() == "keep me"
