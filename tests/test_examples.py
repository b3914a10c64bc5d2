"""The examples run end to end (small settings) and print what their docstrings promise."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = {
    "maml_sine.py": (["--budget-calls", "600", "--steps", "3"], ["adaptive ufom", "reptile", "query MSE"]),
    "hyperparameter_weight_decay.py": (["--steps", "10", "--outer-steps", "3"],
                                       ["truncated K=10", "aid-cg", "learned, one per parameter"]),
    "custom_inner_optimizer.py": (["--outer-steps", "3"], ["central difference", "learned schedule (6 outer"]),
    "maml_equinox_cnn.py": (["--outer-steps", "2", "--steps", "2", "--meta-batch", "2", "--methods", "fom"],
                            ["maml    fom", "anil    fom", "test query acc"]),
    "hyperparameter_flax.py": (["--steps", "5", "--outer-steps", "2"], ["after 2 outer Adam steps", "function calls"]),
}


def test_every_example_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(CASES)


#: Each example is a process that imports JAX and compiles its own programs: minutes of CPU between
#: them. These run with ``pytest -m slow``; the default suite runs custom_inner_optimizer.py end to
#: end, and tests/test_model_examples.py checks the Equinox and Flax examples' hypergradients
#: against finite differences.
SLOW = {"maml_sine.py", "hyperparameter_weight_decay.py", "maml_equinox_cnn.py", "hyperparameter_flax.py"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW else []) for n in sorted(CASES)])
def test_example_runs(name):
    args, expected = CASES[name]
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in expected:
        assert text in proc.stdout, (text, proc.stdout[-2000:])
