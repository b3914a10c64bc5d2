"""What ``pip install ablo`` promises: the core works with jax + optax + numpy only (the command's
dependencies may be absent in an environment that vendors the core), ``python -m ablo`` and
``ablo --version`` work."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import ablo

SRC = str(Path(ablo.__file__).resolve().parents[1])

#: Packages only the command, experiments, data loaders and plots use.
APP_ONLY = ("typer", "rich", "click", "matplotlib", "sklearn", "PIL")

#: Core modules: none may import an app-only package, at import time or when used.
CORE = ("ablo", "ablo.problem", "ablo.inner", "ablo.estimators", "ablo.outer", "ablo.checkpoint", "ablo.theory",
        "ablo.cost", "ablo.api", "ablo.meta", "ablo.sharding", "ablo.linear_solvers", "ablo.models", "ablo.curvature",
        "ablo.atomic", "ablo.problems")


def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_core_imports_and_runs_without_the_command_dependencies():
    code = textwrap.dedent(f"""
        import importlib, importlib.abc, sys

        class Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {APP_ONLY!r}:
                    raise ImportError(f"blocked for this test: {{name}}")
                return None

        sys.meta_path.insert(0, Blocker())
        for name in {CORE!r}:
            importlib.import_module(name)

        import jax, jax.numpy as jnp, ablo
        problem = ablo.BilevelProblem(lambda th, phi, t: jnp.sum((phi - th * t) ** 2),
                                      lambda th, phi, t: jnp.sum(phi ** 2), ablo.gd(0.1), steps=5,
                                      init=ablo.constant_init(jnp.zeros(2)))
        g, _, cost = ablo.hypergradient(problem, ablo.Reverse(), jnp.ones(2), jnp.ones(2),
                                        key=jax.random.PRNGKey(0))
        assert jnp.all(jnp.isfinite(g)) and float(jnp.linalg.norm(g)) > 0, g
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {APP_ONLY!r})
        assert not leaked, leaked
        try:
            import typer
        except ImportError as e:
            assert "blocked" in str(e)
        else:
            raise AssertionError("the blocker let typer through")
        print("core ok")
    """)
    result = run_python(code)
    assert result.returncode == 0 and "core ok" in result.stdout, result.stderr[-3000:]


def test_python_dash_m_ablo_and_version():
    result = run_python("import runpy, sys; sys.argv = ['ablo', '--version']; runpy.run_module('ablo', run_name='__main__')")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"ablo {ablo.__version__}"


def test_the_distribution_version_is_the_package_version():
    """pyproject.toml reads the version from ablo.__version__ (one source)."""
    text = (Path(SRC).parent / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in text and 'version = { attr = "ablo.__version__" }' in text
