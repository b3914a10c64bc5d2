"""The benchmark harness (ablo.bench, benchmarks/): smoke mode only, no timing assertions."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from ablo import bench

ROOT = Path(__file__).resolve().parents[1]


def test_make_data_shapes_and_bad_input():
    d = bench.make_data("hypercleaning", "smoke")
    n, f, c = (bench.SIZES["smoke"]["hypercleaning"][k] for k in ("n", "d", "c"))
    assert d["x_tr"].shape == d["x_val"].shape == (n, f) and d["x_tr"].dtype == np.float32
    assert d["theta"].shape == (n,) and set(np.unique(d["y_tr"])) <= set(range(c))
    g = bench.make_data("newsgroups", "smoke")
    assert g["theta"].shape == (g["x_tr"].shape[1],)  # one λ per feature
    assert np.allclose(np.linalg.norm(g["x_tr"], axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="problem"):
        bench.make_data("mnist", "smoke")
    with pytest.raises(ValueError, match="size"):
        bench.run_suite("/nonexistent", size="huge")
    with pytest.raises(ValueError, match="rounds"):
        bench.run_suite("/nonexistent", rounds=0)


def test_worker_in_process_exact_estimators_agree(tmp_path):
    np.savez(tmp_path / "d.npz", **bench.make_data("newsgroups", "smoke"))
    out = {}
    for m in ("reverse", "checkpointed"):
        spec = {"problem": "newsgroups", "method": m, "r": 4, "data": str(tmp_path / "d.npz"),
                "grad_out": str(tmp_path / f"{m}.npy"), "paired_units": m == "reverse", "warmup": False}
        out[m] = bench.worker(spec)
        assert out[m]["time_s"] > 0 and out[m]["temp_mb"] >= 0
    assert out["reverse"]["C1_s"] > 0 and out["reverse"]["C2_s"] > 0
    assert out["reverse"]["cost"]["grad_evals"] == 5 and out["reverse"]["cost"]["hvps"] == 4
    cmp = bench.compare(np.load(tmp_path / "checkpointed.npy"), np.load(tmp_path / "reverse.npy"))
    assert cmp["cos"] > 1 - 1e-6 and cmp["rel_err"] < 1e-4


def test_compare_and_criteria_logic():
    assert bench.compare([1.0, 0.0], [1.0, 0.0]) == {"cos": 1.0, "rel_err": 0.0}
    assert bench.compare([0.0, 1.0], [0.0, 0.0]) == {"cos": None, "rel_err": None}
    rows = [{"problem": "p", "method": "reverse", "r": 100, "ratio_to_ideal": 1.3, "temp_mb": 10.0},
            {"problem": "p", "method": "reverse", "r": 10, "temp_mb": 1.0},
            {"problem": "p", "method": "fom", "r": 100, "ratio_to_ideal": 1.1, "temp_mb": 1.0},
            {"problem": "p", "method": "fom", "r": 10, "temp_mb": 1.2}]
    checks = bench.criteria(rows, [{"problem": "p", "peer": "torch", "method": "reverse", "r": 100,
                                    "speedup": 3.0, "peak_rss_ratio": 0.9, "peak_rss_cold_ratio": 0.8,
                                    "rss_growth_ratio": 1.0}])
    text = "\n".join(checks)
    assert "FAIL time/ideal <= 1.15: p reverse r=100: 1.30" in text
    assert "PASS time/ideal <= 1.15: p fom r=100: 1.10" in text
    assert "FAIL temp constant within 5%: p fom" in text  # 1.0 vs 1.2 MB
    assert "PASS reverse temp grows linearly in r" in text
    assert "FAIL PyTorch peer" in text  # 3x faster but more memory than the peer


def test_smoke_suite_with_a_peer(tmp_path):
    """The whole pipeline at tiny sizes, two rounds: subprocess workers, a peer, the tables; the
    second round loads ablo's program from the persistent compilation cache the first one wrote."""
    jobs = []
    if sys.modules.get("jaxopt") or _has("jaxopt"):
        jobs = [({"problem": "hypercleaning", "library": "jaxopt", "method": "reverse", "r": 100, "warmup": False},
                 1, [sys.executable, str(ROOT / "benchmarks" / "peers" / "jaxopt_peer.py")])]
    s = bench.run_suite(tmp_path, problems=("hypercleaning",), methods=("reverse",), rs=(100,), size="smoke",
                        rounds=2, peers=jobs, log=lambda *_: None)
    rows = {(r.get("library", "ablo"), r["method"]): r for r in s["results"]}
    assert not [r for r in s["results"] if "error" in r], [r.get("error") for r in s["results"]]
    assert rows[("ablo", "reverse")]["vs_exact"]["cos"] == pytest.approx(1.0)
    assert rows[("ablo", "reverse")]["ratio_to_ideal"] > 0 and rows[("ablo", "units")]["C1_s"] > 0
    rev = rows[("ablo", "reverse")]
    assert rev["warm_rounds"] == 1 and rev["peak_rss_cold_mb"] > 0 and rev["peak_rss_mb"] > 0
    assert rev["compile_s"] > 0  # from the cold round: compiling, not loading
    assert json.loads((tmp_path / "results.json").read_text())["experiment"] == "bench"
    md = (tmp_path / "results.md").read_text()
    assert "| hypercleaning | ablo | reverse | 100 |" in md
    if jobs:  # the peer ratios are among the checks
        assert "Checks (issue 6)" in md
    if jobs:  # jaxopt differentiates the same unrolled loop: it must agree with ablo's exact
        assert rows[("jaxopt", "reverse")]["vs_exact"]["cos"] > 1 - 1e-5
        assert s["peer_ratios"][0]["peer"] == "jaxopt"


def _has(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None
