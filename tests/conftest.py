"""Exactness tests compare against finite differences in float64: enable it for the suite. Runs
never read a developer's ``ablo data fetch`` cache unless a test points ABLO_DATA_DIR at one."""

import atexit
import os
import shutil
import tempfile

# Compiling is about 70 % of the suite's time (backend compile, summed over a run with jax.monitoring)
# and the tests' programs are tiny, so the CPU backend compiles cheaply: no LLVM optimisation, the
# classic elemental emitters instead of the MLIR fusion emitters, and one codegen thread (the suite
# runs one worker per core). Together they cut test_exact's CPU time from 34 s to 19 s (one run each);
# none changes HLO fusion or buffer assignment, so memory_analysis is the same. Set before JAX starts its
# backend; CLI subprocesses inherit it.
os.environ["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), "--xla_backend_optimization_level=0",
                                                "--xla_llvm_disable_expensive_passes=true",
                                                "--xla_cpu_use_fusion_emitters=false",
                                                "--xla_cpu_parallel_codegen_split_count=1"]))

# Tests build the same small programs many times (every CLI test runs a tiny experiment in a new
# process; runs rebuild their closures per seed; the two xdist workers compile the same experiments): a
# persistent compilation cache compiles each program once per suite run. The first pytest process (the
# xdist controller, or the only one) makes a fresh folder, removed at its exit; workers and CLI
# subprocesses inherit it. JAX writes an entry in one call and reads a torn one as a miss (a warning,
# then a compile), so sharing is safe. A cache hit keeps memory_analysis. A folder the user set is used.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _cache = tempfile.mkdtemp(prefix="ablo-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache, True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


@pytest.fixture(autouse=True, scope="session")
def _empty_data_cache(tmp_path_factory):
    """The fetch cache (ABLO_DATA_DIR, else XDG_CACHE_HOME/ablo) is an empty folder for the session,
    so configs built without data_dir take the built-in data as on a fresh machine."""
    empty = tmp_path_factory.mktemp("empty-data-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ABLO_DATA_DIR", str(empty))
        mp.setenv("XDG_CACHE_HOME", str(empty))
        yield empty


#: The modules with the most compile work (summed test time, slowest first, from a --durations=0 run).
#: xdist's loadscope hands modules to the two workers in collection order as each frees up; started
#: first, they no longer run alone at the end while the other worker idles (longest job first).
SLOWEST_MODULES = ("test_telescope_vmap.py", "test_experiment_fewshot.py", "test_experiment_hyper_representation.py",
                   "test_exact.py", "test_bench.py", "test_readme_commands.py", "test_experiment_synthetic.py",
                   "test_experiment_hypercleaning.py", "test_telescope.py", "test_experiment_unbiased.py",
                   "test_solve.py", "test_products.py", "test_front_door.py", "test_toy2d.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each module stays together
