"""Checkpoints of an outer run: everything needed to continue it bit for bit.

One file, ``<dir>/checkpoint.npz``, replaced atomically (temp file + rename,
:func:`ablo.atomic.atomic_write`), so a kill leaves either the previous checkpoint or the new
one, never a truncated file. It is a plain NumPy ``.npz`` (no pickle):

* ``theta/<i>``, ``opt_state/<i>``, ``estimator_state/<i>``, ``cost/<i>``, ``cost_residual/<i>``:
  the leaves of each pytree (``cost`` is the run's :class:`~ablo.cost.Cost` so far, the one call
  counter, and ``cost_residual`` the low-order part of its compensated sum);
* ``key``: the run's PRNG key data (step k draws its tasks from ``fold_in(key, k)``);
* ``__meta__``: UTF-8 JSON with the format name and version, each tree's structure
  (``str(treedef)``), leaf count, shapes and dtypes, the step, the cumulative function calls
  (read from ``cost``, for :func:`info`), seconds and skipped steps, the log so far and the
  run's :func:`fingerprint` (the estimator, problem and optimizer it was written for).

Version 1 files (before the cost record was a tree) are refused with a message that says so.

Pytrees are rebuilt on the structure of the resuming run's own trees, after checking that the
stored structure, shapes and dtypes are the same; any mismatch, or an unreadable file, raises
:class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

import jax
import numpy as np

from .atomic import atomic_write
from .cost import Cost, zero

FORMAT = "ablo-checkpoint"
VERSION = 2
FILENAME = "checkpoint.npz"
TREES = ("theta", "opt_state", "estimator_state", "cost", "cost_residual")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that belongs to a different run."""


@dataclass
class Snapshot:
    """The state of an outer run after ``step`` completed steps; ``cost`` is its
    :class:`~ablo.cost.Cost` so far (``function_calls`` reads it) and ``cost_residual`` the
    low-order part of that compensated sum (:func:`ablo.cost.accumulate`)."""

    theta: Any
    opt_state: Any
    estimator_state: Any
    key: Any
    step: int = 0
    seconds: float = 0.0
    skipped: int = 0
    log: List[dict] = field(default_factory=list)
    fingerprint: Optional[dict] = None
    cost: Cost = field(default_factory=zero)
    cost_residual: Cost = field(default_factory=zero)
    stopped: str = ""

    @property
    def function_calls(self) -> float:
        """Function calls so far (``cost.function_calls``)."""
        return float(self.cost.function_calls)


def describe(obj, seen=None) -> str:
    """A text description of ``obj`` that is the same in every process: values of numbers, strings
    and containers, shapes and dtypes of arrays, dataclass fields, and functions by module and
    qualified name with what their closures hold (an optax transformation's learning rate, a
    loss's constants); anything else by its type name, never by memory address."""
    seen = set() if seen is None else seen
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return repr(obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):
        return f"array{tuple(obj.shape)}:{obj.dtype}"
    if id(obj) in seen:
        return type(obj).__qualname__
    seen.add(id(obj))
    sub = lambda x: describe(x, seen)
    if isinstance(obj, (tuple, list)):
        return f"{type(obj).__qualname__}[" + ",".join(map(sub, obj)) + "]"
    if isinstance(obj, dict):
        return "{" + ",".join(f"{k!r}:{sub(v)}" for k, v in sorted(obj.items(), key=lambda kv: repr(kv[0]))) + "}"
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return f"{type(obj).__qualname__}(" + ",".join(f"{f.name}={sub(getattr(obj, f.name))}"
                                                        for f in dataclasses.fields(obj)) + ")"
    if isinstance(obj, functools.partial):
        return f"partial({sub(obj.func)},{sub(obj.args)},{sub(obj.keywords)})"
    if hasattr(obj, "__code__"):
        cells = [c.cell_contents for c in (obj.__closure__ or ()) if c.cell_contents is not c]
        return f"{obj.__module__}.{obj.__qualname__}(" + ",".join(map(sub, cells)) + ")"
    return type(obj).__qualname__


def fingerprint(problem, estimator, optimizer) -> dict:
    """{"estimator", "problem", "optimizer": SHA-256 of :func:`describe`}: what a checkpoint was
    written for, so that a resume with other settings is refused."""
    digest = lambda x: hashlib.sha256(describe(x).encode()).hexdigest()
    return {"estimator": digest(estimator), "problem": digest(problem), "optimizer": digest(optimizer)}


def path(directory) -> Path:
    """The checkpoint file of a run folder: ``<directory>/checkpoint.npz``."""
    return Path(directory) / FILENAME


def key_data(key) -> np.ndarray:
    """Raw uint32 data of a PRNG key (typed ``jax.random.key`` or legacy ``PRNGKey``)."""
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key)


def _describe(leaves) -> list:
    return [[list(np.shape(x)), str(np.asarray(x).dtype)] for x in leaves]


def save(directory, snap: Snapshot) -> Path:
    """Write ``snap`` atomically to ``<directory>/checkpoint.npz``; returns the path."""
    arrays, trees = {}, {}
    for name in TREES:
        leaves, treedef = jax.tree_util.tree_flatten(getattr(snap, name))
        leaves = [np.asarray(x) for x in jax.device_get(leaves)]
        arrays.update({f"{name}/{i}": x for i, x in enumerate(leaves)})
        trees[name] = {"treedef": str(treedef), "leaves": _describe(leaves)}
    arrays["key"] = key_data(snap.key)
    meta = {"format": FORMAT, "version": VERSION, "trees": trees, "step": int(snap.step),
            "function_calls": float(snap.function_calls), "seconds": float(snap.seconds),
            "skipped": int(snap.skipped), "log": snap.log}
    if snap.fingerprint is not None:
        meta["fingerprint"] = snap.fingerprint
    arrays["__meta__"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return atomic_write(path(directory), buf.getvalue())


def _read(p: Path):
    """(arrays, meta) of the checkpoint file ``p``, or CheckpointError naming it."""
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("__meta__").tobytes().decode())
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint {p} is corrupt or truncated ({type(e).__name__}: {e}); "
                              "delete it to start the run afresh") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {p} is not an {FORMAT} file")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {p} is of format version {meta.get('version')}, written by another ablo "
                              f"release (this one reads version {VERSION}); resume it with the release that wrote it, "
                              "or delete it to start the run afresh")
    return arrays, meta


def info(directory) -> Optional[dict]:
    """The metadata of the checkpoint in ``directory`` (step, function_calls, seconds, skipped, log,
    tree descriptions) without rebuilding its trees; None when there is none."""
    p = path(directory)
    return _read(p)[1] if p.exists() else None


def load(directory, like: Snapshot) -> Optional[Snapshot]:
    """The checkpoint in ``directory`` rebuilt on the trees of ``like``; None when there is none.

    Raises CheckpointError (naming the file) when it is corrupt, truncated, of another format
    version, or written for trees of another structure, shape or dtype."""
    p = path(directory)
    if not p.exists():
        return None
    arrays, meta = _read(p)
    try:
        trees = {}
        for name in TREES:
            leaves, treedef = jax.tree_util.tree_flatten(getattr(like, name))
            stored = meta["trees"][name]
            if stored["treedef"] != str(treedef) or stored["leaves"] != _describe(leaves):
                raise CheckpointError(
                    f"checkpoint {p} was written for a different {name} (structure, shapes or dtypes differ: "
                    f"stored {stored['leaves']}, this run {_describe(leaves)}); resume with the same problem, "
                    "estimator and optimizer, or use another checkpoint directory")
            trees[name] = jax.tree_util.tree_unflatten(treedef, [arrays[f"{name}/{i}"] for i in range(len(leaves))])
        return Snapshot(trees["theta"], trees["opt_state"], trees["estimator_state"], arrays["key"],
                        int(meta["step"]), float(meta["seconds"]), int(meta["skipped"]), list(meta["log"]),
                        meta.get("fingerprint"), trees["cost"], trees["cost_residual"])
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {p} is incomplete ({type(e).__name__}: {e})") from None
