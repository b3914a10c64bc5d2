"""The peer-worker protocol shared by every peer script (numpy only, so it runs in the PyTorch
venv too): read the spec (argv[1], JSON), load the driver's .npz, time ``spec["pairs"]`` calls of
one hypergradient after an optional warm-up, save it, and print one JSON line with the median CPU
and wall time and peak RSS (as ablo.bench's worker; the driver runs it single-threaded)."""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    """As ablo.bench.worker.peak_rss_mb (VmHWM: ru_maxrss would carry the driver's peak over exec)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024.0
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(hypergradient, load=None) -> None:
    """``hypergradient(spec, data) -> callable`` returning the hypergradient as a flat numpy array;
    ``load(path) -> dict`` of arrays (default: np.load)."""
    spec = json.loads(sys.argv[1])
    data = load(spec["data"]) if load else dict(np.load(spec["data"]))
    f = hypergradient(spec, data)
    out = {"rss_base_mb": peak_rss_mb()}
    if spec.get("warmup", True):
        t = time.perf_counter()
        f()
        out["first_call_s"] = time.perf_counter() - t
    times, walls = [], []
    for _ in range(max(1, int(spec.get("pairs", 1)))):
        t, w = time.process_time(), time.perf_counter()  # CPU time, as ablo.bench measures it
        g = f()
        times.append(time.process_time() - t)
        walls.append(time.perf_counter() - w)
    out["time_s"], out["wall_s"], out["times"] = statistics.median(times), statistics.median(walls), times
    out["peak_rss_mb"] = peak_rss_mb()
    if spec.get("grad_out"):
        np.save(spec["grad_out"], np.asarray(g, np.float32).ravel())
    print(json.dumps(out))
