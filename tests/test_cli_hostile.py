"""Hostile inputs (property-based, hypothesis): every public constructor and ``outer.run`` answers
any bad value with a ValueError that names the parameter, never another exception type; valid
values are accepted. Only argument checking runs per example (nothing is compiled)."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ablo
from ablo import outer
from ablo.outer import Budget

N = 200
hostile = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-3, max_value=12),
    st.floats(allow_nan=True, allow_infinity=True), st.floats(min_value=-0.5, max_value=1.5),
    st.text(max_size=4), st.binary(max_size=2), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1), st.just(1j), st.just(object()))


def real(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(float(v) if abs(v) < 1e300 else 1e300)


def integer(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, int)


def in_interval(v, lo, hi, lo_open=False, hi_open=True) -> bool:
    return real(v) and (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)


def accepts_or_value_error(fn, v, valid: bool, name: str):
    if valid:
        fn(v)
    else:
        with pytest.raises(ValueError, match=name):
            fn(v)


LOSS = lambda th, phi, task: jnp.sum(phi ** 2)
PROBLEM = ablo.BilevelProblem(LOSS, LOSS, ablo.gd(0.1), steps=5)

CASES = {
    "gd.lr": (lambda v: ablo.gd(v), lambda v: in_interval(v, 0, math.inf, lo_open=True), "lr"),
    "momentum.beta": (lambda v: ablo.momentum(0.1, beta=v), lambda v: in_interval(v, 0, 1), "beta"),
    "adam.b1": (lambda v: ablo.adam(0.1, b1=v), lambda v: in_interval(v, 0, 1), "b1"),
    "adam.b2": (lambda v: ablo.adam(0.1, b2=v), lambda v: in_interval(v, 0, 1), "b2"),
    "adam.eps": (lambda v: ablo.adam(0.1, eps=v), lambda v: in_interval(v, 0, math.inf), "eps"),
    "ufom.q": (lambda v: ablo.UFOM(q=v), lambda v: in_interval(v, 0, 1, lo_open=True, hi_open=False), "q"),
    "truncated.K": (lambda v: ablo.Truncated(K=v).check(PROBLEM), lambda v: integer(v) and 0 <= v <= 5, "K"),
    "checkpointed.M": (lambda v: ablo.Checkpointed(M=v), lambda v: v is None or integer(v) and v >= 1, "M"),
    "problem.steps": (lambda v: ablo.BilevelProblem(LOSS, LOSS, ablo.gd(0.1), steps=v),
                      lambda v: integer(v) and v >= 1, "steps"),
    "problem.inner_loss": (lambda v: ablo.BilevelProblem(v, LOSS, ablo.gd(0.1), steps=2), callable, "inner_loss"),
    "problem.optimizer": (lambda v: ablo.BilevelProblem(LOSS, LOSS, v, steps=2), lambda v: False, "optimizer"),
    "budget.steps": (lambda v: Budget(steps=v), lambda v: v is None or integer(v) and v >= 1, "steps"),
    "budget.function_calls": (lambda v: Budget(function_calls=v),
                              lambda v: v is None or in_interval(v, 0, math.inf, lo_open=True), "function_calls"),
    "budget.seconds": (lambda v: Budget(seconds=v),
                       lambda v: v is None or in_interval(v, 0, math.inf, lo_open=True), "seconds"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@settings(max_examples=N, deadline=None)
@given(v=hostile)
def test_constructors_accept_or_raise_value_error(case, v):
    fn, valid, name = CASES[case]
    accepts_or_value_error(fn, v, valid(v), name)


SAMPLER = lambda key: jax.random.normal(key, (2,))
positive = lambda v: v is None or in_interval(v, 0, math.inf, lo_open=True)
OPTION_CASES = {  # each option value checks itself when built (outer.run takes them ready-made)
    "Options.meta_batch": (lambda v: outer.Options(meta_batch=v), lambda v: integer(v) and v >= 1, "meta_batch"),
    "Options.on_nonfinite": (lambda v: outer.Options(on_nonfinite=v), lambda v: v in ("raise", "skip"),
                             "on_nonfinite"),
    "Options.devices": (lambda v: outer.Options(meta_batch=2, devices=v),
                        lambda v: v is None or integer(v) and 1 <= v <= len(jax.devices()) and 2 % v == 0, "devices"),
    "Progress.log_every": (lambda v: outer.Progress(log_every=v), lambda v: integer(v) and v >= 1, "log_every"),
    "Progress.losses": (lambda v: outer.Progress(losses=v), lambda v: isinstance(v, bool), "losses"),
    "Progress.bar": (lambda v: outer.Progress(bar=v), lambda v: v is None or callable(v), "bar"),
    "Evaluation.fn": (lambda v: outer.Evaluation(v), lambda v: v is None or callable(v), "fn"),
    "Evaluation.every": (lambda v: outer.Evaluation(every=v), lambda v: v is None or integer(v) and v >= 1, "every"),
    "Evaluation.every_calls": (lambda v: outer.Evaluation(every_calls=v), positive, "every_calls"),
    "Checkpointing.every": (lambda v: outer.Checkpointing("x", every=v), lambda v: v is None or integer(v) and v >= 1,
                            "every"),
    "Checkpointing.resume": (lambda v: outer.Checkpointing("x", resume=v), lambda v: isinstance(v, bool), "resume"),
    "Checkpointing.directory": (lambda v: outer.Checkpointing(v), lambda v: isinstance(v, str), "directory"),
}


@pytest.mark.parametrize("case", sorted(OPTION_CASES))
@settings(max_examples=N, deadline=None)
@given(v=st.one_of(hostile, st.sampled_from(["raise", "skip"])))
def test_run_options_accept_or_raise_value_error(case, v):
    fn, valid, name = OPTION_CASES[case]
    accepts_or_value_error(fn, v, valid(v), name)


@pytest.mark.parametrize("name", ["key", "budget", "options"])
@settings(max_examples=N, deadline=None)
@given(v=hostile)
def test_run_refuses_a_hostile_key_budget_or_options_before_compiling(name, v):
    args = dict(dict(key=jax.random.PRNGKey(0), budget=Budget(steps=1), options=outer.Options()), **{name: v})
    with pytest.raises(ValueError, match=name):
        outer.run(PROBLEM, ablo.FOM(), optax.sgd(0.1), jnp.zeros(2), SAMPLER, **args)


# --- the command line ----------------------------------------------------------------------------
OPTIONS = ["--seed", "--seeds", "--budget-calls", "--steps", "--devices", "--method", "--data-dir", "--set", "--out",
           "--eval-every", "--n-train", "--no-such-key"]
cli_value = st.one_of(st.text(max_size=8), st.from_regex(r"-?[0-9]{0,3}(\.[0-9]{0,2})?(e-?[0-9])?", fullmatch=True),
                      st.sampled_from(["nan", "inf", "-inf", "0", "-1", "1e999", "[1,", "{}", "null", "--tiny", "-"]))


def call_cli(args, monkeypatch):
    """(exit code, stderr, whether the experiment was started) of ``ablo ARGS``, the experiment itself replaced
    by a recorder so that valid arguments cost nothing."""
    import contextlib
    import io

    from ablo import cli

    started = []
    monkeypatch.setattr(cli, "run_experiment", lambda exp, cfg, out, resume, overwrite: started.append(cfg))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli.main(args)
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return code, err.getvalue(), bool(started)


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(OPTIONS), value=cli_value)
def test_cli_bad_option_values_give_one_line_and_nonzero_exit(option, value, monkeypatch, tmp_path):
    monkeypatch.delenv("ABLO_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    code, err, started = call_cli(["run", "demo", option, value], monkeypatch)
    assert "Traceback" not in err
    if started:
        assert code == 0
    else:
        assert code != 0
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("ablo: error: "), err


@pytest.mark.parametrize("args", [["--seed", "abc"], ["--steps", "1.5"], ["--devices", "two"],
                                  ["--budget-calls", "lots"], ["--seed"]])
def test_cli_values_click_rejects_give_one_line(args, monkeypatch):
    """Values typer/click reject before ablo sees them (not a number, a missing value)."""
    code, err, started = call_cli(["run", "demo", *args], monkeypatch)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and not started and len(lines) == 1, err


@settings(max_examples=N, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(max_size=12))
def test_cli_unknown_experiment_gives_one_line(name, monkeypatch):
    from ablo.experiments import load_all

    code, err, started = call_cli(["run", name], monkeypatch)
    assert "Traceback" not in err
    if name not in load_all():
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0 and not started and len(lines) == 1, err
