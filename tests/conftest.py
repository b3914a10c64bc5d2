"""Exactness tests compare against finite differences in float64: enable it for the suite. Runs
never read a developer's ``ablo data fetch`` cache unless a test points ABLO_DATA_DIR at one."""

import os

# Compiling dominates the suite's time; XLA's LLVM optimisations are most of a CPU compile and the
# tests' programs are tiny, so they are switched off (buffer assignment, and so memory_analysis, is
# decided before LLVM and does not change). Set before JAX starts its backend; CLI subprocesses inherit it.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0",
                                                "--xla_llvm_disable_expensive_passes=true"]))

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)


@pytest.fixture(autouse=True, scope="session")
def _empty_data_cache(tmp_path_factory):
    """The fetch cache (ABLO_DATA_DIR, else XDG_CACHE_HOME/ablo) is an empty folder for the session,
    so configs built without data_dir take the built-in data as on a fresh machine."""
    empty = tmp_path_factory.mktemp("empty-data-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLO_DATA_DIR", str(empty))
        mp.setenv("XDG_CACHE_HOME", str(empty))
        yield empty
