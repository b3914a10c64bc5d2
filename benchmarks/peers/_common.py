"""The peer-worker protocol shared by every peer script (numpy only, so it runs in the PyTorch
venv too): read the spec (argv[1], JSON), load the driver's .npz, time one hypergradient after
an optional warm-up, save it, and print one JSON line with CPU and wall time and peak RSS
(see ablo.bench; the driver runs it single-threaded)."""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(hypergradient, load=None) -> None:
    """``hypergradient(spec, data) -> callable`` returning the hypergradient as a flat numpy array;
    ``load(path) -> dict`` of arrays (default: np.load); an attribute ``report() -> dict`` of the
    callable adds to the printed result."""
    spec = json.loads(sys.argv[1])
    data = load(spec["data"]) if load else dict(np.load(spec["data"]))
    f = hypergradient(spec, data)
    out = {"rss_base_mb": peak_rss_mb()}
    if spec.get("warmup", True):
        t = time.perf_counter()
        f()
        out["first_call_s"] = time.perf_counter() - t
    t, w = time.process_time(), time.perf_counter()  # CPU time, as ablo.bench measures it
    g = f()
    out["time_s"], out["wall_s"] = time.process_time() - t, time.perf_counter() - w
    out["peak_rss_mb"] = peak_rss_mb()
    out.update(getattr(f, "report", dict)())
    if spec.get("grad_out"):
        np.save(spec["grad_out"], np.asarray(g, np.float32).ravel())
    print(json.dumps(out))
