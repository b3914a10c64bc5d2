"""Validation of numeric settings that may be traced.

A hyperparameter such as UFOM's q or an inner step size may be a Python number, a concrete
array, or a tracer (inside ``jit``/``vmap``/``grad``, e.g. a sweep over q). Concrete values are
checked now and a bad one raises a ValueError naming the parameter; a traced value cannot be
inspected and passes unchecked.
"""

from __future__ import annotations

import math
from numbers import Real

import jax
import numpy as np


def is_int(x) -> bool:
    """True for a Python or NumPy integer (not a bool): the one test every integer setting uses."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x) -> bool:
    """True for a Python or NumPy real number (not a bool)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def check_positive(name: str, value, integer: bool, optional: bool = True) -> None:
    """ValueError naming ``name`` unless ``value`` is an integer >= 1 (``integer``) or a finite
    real > 0 (None passes when ``optional``)."""
    if value is None and optional:
        return
    ok = (is_int(value) and value >= 1) if integer else (is_real(value) and math.isfinite(value) and value > 0)
    if not ok:
        kind = "an integer >= 1" if integer else "a finite number > 0"
        raise ValueError(f"{name} must be {'None or ' if optional else ''}{kind}; got {value!r}")


def check_above_zero(name: str, value, hint: str = "") -> None:
    """ValueError naming ``name`` and ``value`` (plus ``hint``) unless it is a real number > 0."""
    if not is_real(value) or not value > 0:
        raise ValueError(f"{name} must be a number > 0; got {value!r}{hint}")


def check_int(name: str, value, low: int) -> None:
    """ValueError naming ``name`` and ``value`` unless it is an integer >= ``low``."""
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value being traced by a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


def check_key(key, needed_by: str = "") -> None:
    """ValueError unless ``key`` is one PRNG key (``jax.random.key(seed)`` or
    ``jax.random.PRNGKey(seed)``, possibly traced); ``None`` is refused when ``needed_by`` names a
    random estimator, which would otherwise take one fixed draw on every call."""
    how = "make one with jax.random.key(seed) (or jax.random.PRNGKey(seed)) and split it between calls"
    if key is None:
        if needed_by:
            raise ValueError(f"key: estimator {needed_by!r} is random and needs a key; {how}")
        return
    if not isinstance(key, (jax.Array, np.ndarray)):
        raise ValueError(f"key must be a PRNG key; got {key!r}: {how}")
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    if not (typed and key.shape == () or not typed and key.dtype == np.uint32 and key.shape == (2,)):
        raise ValueError(f"key must be a single PRNG key; got an array of dtype {key.dtype} and shape {key.shape}: "
                         f"{how} (under vmap, map over the keys: each call sees one)")


def _interval(lo, hi, lo_open, hi_open) -> str:
    return f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def check_number(name: str, x, lo: float, hi: float, lo_open: bool = False, hi_open: bool = True, hint: str = ""):
    """``x`` unchanged when it is a real number, or a real array all of whose values lie in the
    interval (a tracer passes unchecked); otherwise ValueError naming ``name``, the interval and
    ``hint``. Bools, strings and complex numbers are rejected; Python numbers are compared exactly
    (no float() overflow on huge integers)."""
    if is_traced(x):
        if not np.issubdtype(x.dtype, np.floating) and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{name} must be a real number; got a traced array of dtype {x.dtype}{hint}")
        return x
    if isinstance(x, (bool, np.bool_)):
        ok = False
    elif isinstance(x, Real):
        ok = (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi) and not (
            isinstance(x, float) and math.isnan(x))
    else:
        dtype = getattr(x, "dtype", None)
        real = dtype is not None and (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer))
        v = np.asarray(x, dtype=float) if real else None
        ok = v is not None and v.size > 0 and bool(np.all((v > lo if lo_open else v >= lo) & (v < hi if hi_open else v <= hi)))
    if not ok:
        raise ValueError(f"{name} must be a number in {_interval(lo, hi, lo_open, hi_open)}; got {x!r}{hint}")
    return x
