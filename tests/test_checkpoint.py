"""Checkpoints: bitwise round trip, clear errors for corrupt or foreign files, and resume (also
after SIGKILL in a subprocess) equal to an uninterrupted run."""

import json
import os
import random
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import ablo
from ablo import checkpoint as ckpt
from ablo import cost
from ablo.outer import Budget, Checkpointing, Options, Progress, run

PROBLEM_SRC = textwrap.dedent("""
    import jax, jax.numpy as jnp, optax, ablo
    jax.config.update("jax_enable_x64", True)
    inner = lambda th, phi, c: 0.5 * jnp.sum(jax.nn.softplus(th["w"]) * (phi - c) ** 2)
    outer = lambda th, phi, c: 0.5 * jnp.sum((phi - 2 * c) ** 2)
    PROBLEM = ablo.BilevelProblem(inner, outer, ablo.adam(0.1), steps=3, init=lambda th, c: th["b"])
    sampler = lambda k: jax.random.normal(k, (2,)) + 1.0
    OPT = optax.adam(0.05)
    THETA0 = {"w": jnp.zeros(2), "b": jnp.zeros(2)}
    EST = ablo.estimators.get("adaptive-ufom", q_min=0.2)  # carries smoothed D², V² in its state
""")
exec(PROBLEM_SRC)  # the same definitions in this process and in the subprocesses


def go(directory, steps, resume=False, every=3, **kw):
    return run(PROBLEM, EST, OPT, THETA0, sampler, key=jax.random.PRNGKey(7), budget=Budget(steps=steps),
               options=Options(2, checkpoint=Checkpointing(directory, every, resume), **kw))


def without_seconds(log):
    return [{k: v for k, v in e.items() if k != "seconds"} for e in log]


def snapshot():
    opt_state = optax.adam(0.1).init({"a": jnp.arange(3.0), "b": (jnp.ones((2, 2), jnp.float32),)})
    return ckpt.Snapshot({"a": jnp.arange(3.0), "b": (jnp.ones((2, 2), jnp.float32),)}, opt_state,
                         (jnp.asarray(0.25), jnp.asarray(3, jnp.int32)), jax.random.PRNGKey(5), step=4,
                         seconds=2.0, skipped=1, log=[{"step": 4, "outer_loss": 0.1}],
                         cost=cost.cost(grad_evals=100.0, hvps=23.5, states=3.0),
                         cost_residual=cost.cost(grad_evals=-1e-6))


def test_round_trip_is_bitwise(tmp_path):
    snap = snapshot()
    ckpt.save(tmp_path, snap)
    back = ckpt.load(tmp_path, snap)
    for name in ckpt.TREES:
        a, b = getattr(snap, name), getattr(back, name)
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
            assert x.dtype == y.dtype and np.array_equal(np.asarray(x), y)
    assert np.array_equal(back.key, np.asarray(snap.key))
    assert (back.step, back.function_calls, back.seconds, back.skipped, back.log) == (4, 123.5, 2.0, 1, snap.log)
    assert float(back.cost_residual.grad_evals) == np.float32(-1e-6)  # the compensation is carried too
    assert ckpt.info(tmp_path)["step"] == 4
    assert [p.name for p in tmp_path.iterdir()] == [ckpt.FILENAME]  # no temp file left behind


def test_no_checkpoint_is_none(tmp_path):
    assert ckpt.load(tmp_path, snapshot()) is None


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_checkpoint_names_the_file(tmp_path, damage):
    snap = snapshot()
    p = ckpt.save(tmp_path, snap)
    data = p.read_bytes()
    p.write_bytes({"truncate": data[: len(data) // 2], "garbage": b"\x00not a zip" * 50, "empty": b""}[damage])
    with pytest.raises(ckpt.CheckpointError, match=str(p)):
        ckpt.load(tmp_path, snap)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    snap = snapshot()
    ckpt.save(tmp_path, snap)
    other = ckpt.Snapshot(jnp.zeros(4), snap.opt_state, snap.estimator_state, snap.key)
    with pytest.raises(ckpt.CheckpointError, match="different theta"):
        ckpt.load(tmp_path, other)


def test_resume_in_process_equals_uninterrupted(tmp_path):
    full = go(tmp_path / "full", 10)
    go(tmp_path / "part", 7)  # stops at step 7 with a checkpoint
    resumed = go(tmp_path / "part", 10, resume=True)
    assert resumed.steps == 10
    for name in ("theta", "opt_state", "estimator_state"):
        leaves = (jax.tree_util.tree_leaves(getattr(r, name)) for r in (full, resumed))
        for a, b in zip(*leaves):
            assert np.array_equal(a, b)
    assert resumed.log[-1]["k_upd"] > 0  # the adaptive statistics were carried across the restart
    assert without_seconds(resumed.log) == without_seconds(full.log)
    assert resumed.function_calls == full.function_calls


def test_resume_with_another_key_is_refused(tmp_path):
    go(tmp_path, 2)
    with pytest.raises(ValueError, match="another key"):
        run(PROBLEM, EST, OPT, THETA0, sampler, key=jax.random.PRNGKey(8), budget=Budget(steps=4),
            options=Options(2, checkpoint=Checkpointing(tmp_path, resume=True)))


SCRIPT = PROBLEM_SRC + textwrap.dedent("""
    import contextlib, json, sys, time
    import numpy as np
    from ablo.outer import Budget, Checkpointing, Options, Progress, run
    mode, directory = sys.argv[1], sys.argv[2]

    @contextlib.contextmanager
    def paced(description, total):       # host-side only: slows the run so the parent can kill it mid-way
        count = [0]
        def advance(n=1):
            count[0] += n
            print(count[0], flush=True)
            time.sleep(0.02)
        yield advance

    def go(d, resume, progress=None):
        return run(PROBLEM, EST, OPT, THETA0, sampler, key=jax.random.PRNGKey(7), budget=Budget(steps=STEPS),
                   options=Options(2, checkpoint=Checkpointing(d, EVERY, resume), progress=Progress(bar=progress)))

    if mode == "killme":
        go(directory, False, paced)
    else:  # resume the killed run, then an uninterrupted one in a fresh directory
        out = {}
        for name, d, resume in (("resumed", directory, True), ("full", directory + "-full", False)):
            r = go(d, resume)
            out[name] = {"theta": jax.tree_util.tree_map(lambda x: np.asarray(x).tolist(), r.theta),
                         "log": [{k: v for k, v in e.items() if k != "seconds"} for e in r.log], "steps": r.steps}
        print(json.dumps(out))
""")


def test_sigkill_at_a_random_step_then_resume_equals_uninterrupted(tmp_path):
    steps, every = 200, 4
    script = SCRIPT.replace("STEPS", str(steps)).replace("EVERY", str(every))
    kill_at = random.Random().randint(every + 1, 40)
    d = str(tmp_path / "run")
    p = subprocess.Popen([sys.executable, "-c", script, "killme", d], stdout=subprocess.PIPE, text=True)
    try:
        for line in p.stdout:
            if int(line) >= kill_at:
                break
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL
    killed = ckpt.load(d, ckpt.Snapshot(THETA0, OPT.init(THETA0), EST.init(PROBLEM, THETA0, None), None))
    assert every <= killed.step < steps and killed.step % every == 0  # mid-way, after >= 1 checkpoint
    done = subprocess.run([sys.executable, "-c", script, "finish", d], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["resumed"]["steps"] == out["full"]["steps"] == steps
    assert out["resumed"]["theta"] == out["full"]["theta"]
    assert out["resumed"]["log"] == out["full"]["log"]


@pytest.mark.slow  # three hypercleaning runs through the CLI: about 40 s of CPU
def test_cli_run_killed_and_resumed_writes_the_same_summary(tmp_path, monkeypatch):
    """Issue 7: ``ablo run hypercleaning`` killed with SIGKILL at a random step after a checkpoint, then
    ``--resume``: summary.json equals an uninterrupted run's (wall-clock seconds aside)."""
    import time

    from ablo import cli
    from ablo.results import read_summary

    monkeypatch.delenv("ABLO_DATA_DIR", raising=False)
    every, steps = 5, 60
    args = ["run", "hypercleaning", "--tiny", "--steps", str(steps), "--set", "budget_calls=null", "-m", "truncated-1",
            "--eval-every", str(every)]
    killed, full = tmp_path / "killed", tmp_path / "full"
    target = every * random.Random().randint(1, 6)
    ck = killed / "checkpoints" / "truncated-1 seed 0"
    p = subprocess.Popen([sys.executable, "-m", "ablo.cli", *args, "--out", str(killed)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while p.poll() is None and (ckpt.info(ck) or {"step": 0})["step"] < target:
            time.sleep(0.005)
        os.kill(p.pid, signal.SIGKILL)
    finally:
        p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, p.stderr.read()[-2000:]
    assert not (killed / "summary.json").exists()
    step = ckpt.info(ck)["step"]
    assert target <= step < steps and step % every == 0

    def ablo(*extra):
        try:
            cli.main([*args, *extra])
        except SystemExit as e:
            assert not e.code
    ablo("--out", str(killed), "--resume")
    ablo("--out", str(full))
    a, b = read_summary(killed), read_summary(full)
    for doc in (a, b):
        for row in doc["results"]:
            assert row.pop("seconds") > 0
    assert a == b
    assert a["results"][0]["steps"] == steps


def test_resume_with_another_estimator_problem_or_optimizer_is_refused(tmp_path):
    go(tmp_path, 2)
    other_problem = ablo.BilevelProblem(PROBLEM.inner_loss, PROBLEM.outer_loss, ablo.adam(0.2), steps=3,
                                        init=PROBLEM.init)  # another inner step size: same shapes
    for name, args in (("estimator", (PROBLEM, ablo.estimators.get("adaptive-ufom", q_min=0.3), OPT)),
                       ("problem", (other_problem, EST, OPT)), ("optimizer", (PROBLEM, EST, optax.adam(0.07)))):
        with pytest.raises(ckpt.CheckpointError, match=f"another {name}"):
            run(*args, THETA0, sampler, key=jax.random.PRNGKey(7), budget=Budget(steps=4),
                options=Options(2, checkpoint=Checkpointing(tmp_path, resume=True)))
    assert go(tmp_path, 4, resume=True).steps == 4  # the same settings resume


def test_a_checkpoint_without_fingerprint_still_resumes(tmp_path):
    """Checkpoints written without a fingerprint are accepted."""
    go(tmp_path, 2)
    arrays = dict(np.load(ckpt.path(tmp_path)))
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    assert set(meta.pop("fingerprint")) == {"estimator", "problem", "optimizer"}
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(ckpt.path(tmp_path), **arrays)
    assert go(tmp_path, 4, resume=True).steps == 4


def test_describe_is_by_value_not_by_address():
    assert ckpt.describe(optax.adam(0.05)) == ckpt.describe(optax.adam(0.05)) != ckpt.describe(optax.adam(0.06))
    assert "0x" not in ckpt.describe(PROBLEM) and "0x" not in ckpt.describe(EST)


def test_a_checkpoint_of_another_format_version_is_refused_with_what_to_do(tmp_path):
    """Format version 1 (before the cost record was stored as a tree) cannot be resumed: the error
    says which version, and to resume with the release that wrote it or start afresh."""
    go(tmp_path, 2)
    arrays = dict(np.load(ckpt.path(tmp_path)))
    meta = json.loads(arrays["__meta__"].tobytes().decode())
    meta["version"] = 1
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(ckpt.path(tmp_path), **arrays)
    with pytest.raises(ckpt.CheckpointError, match="format version 1.*release that wrote it"):
        go(tmp_path, 4, resume=True)
