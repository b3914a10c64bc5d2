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


def is_traced(x) -> bool:
    """True when ``x`` is an abstract value being traced by a JAX transformation."""
    return isinstance(x, jax.core.Tracer)


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
