"""The --tiny runs whose numbers tests/fixtures/tiny_numbers.json holds, recorded before the
experiments moved onto one driver: (experiment, {config overrides}) by case name, and the result
fields compared (every numeric row field but wall time)."""

import math
import tempfile

import jax

from ablo.experiments import execute, get

CASES = {
    "toy2d": ("toy2d", {"seed": 3}),
    "hypercleaning-linear": ("hypercleaning", {"model": "linear", "seeds": (3,), "inner_lr": 1.0}),  # the old default α
    "hypercleaning-mlp": ("hypercleaning", {"model": "mlp", "seeds": (3, 4), "inner_lr": "auto"}),
    "counterexample": ("counterexample", {"seeds": (3, 4)}),
    "synthetic-q": ("synthetic-q", {"seeds": (3, 4)}),
    "fewshot": ("fewshot", {"seeds": (3,)}),
}

SKIP = ("second", "time", "compile", "elapsed", "wall")


def numbers(summary: dict) -> list:
    """The deterministic numbers of a summary's rows: every int/float field but wall-clock ones."""
    out = []
    for row in summary["results"]:
        keep = {k: v for k, v in row.items() if not any(s in k for s in SKIP)
                and (isinstance(v, (int, float, str)) or v is None)}
        out.append(keep)
    return out


def run_case(name: str) -> list:
    """The numbers of case ``name``, run as the CLI runs it (float32, whatever the caller's x64 setting)."""
    experiment, overrides = CASES[name]
    exp = get(experiment)
    cfg = exp.make_config({"tuned_seeds": (), **overrides}, tiny=True)
    with tempfile.TemporaryDirectory() as out, jax.enable_x64(False):
        return numbers(execute(exp, cfg, out))


def close(a, b, rel=1e-5) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)
    return a == b


if __name__ == "__main__":
    import json
    import sys

    names = sys.argv[1:] or list(CASES)
    for n in names:
        print(n, json.dumps({n: run_case(n)}), flush=True)
