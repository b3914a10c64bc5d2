"""Benchmark ablo's hypergradient estimators against hand-written JAX programs of the same
algorithms and against other libraries, side by side in one run (issue 12). See docs/benchmarks.md.

    python benchmarks/bench_estimators.py --out bench-out --mnist-dir ~/.cache/ablo  # full run (MNIST from `ablo data fetch mnist`)
    python benchmarks/bench_estimators.py --smoke --out /tmp/smoke                      # tiny sizes, 1 round

PyTorch peers run in their own venv (default /tmp/peers-venv, no system site-packages), made by
peers/setup_venv.sh on first use: torch 2.13.0 (CPU build) plus each peer library, each installed
on its own; the ones that fail are reported with pip's error line. jaxopt runs in this environment
(pip install -e '.[bench]'). Every peer is a separate process per round, as every ablo
configuration is, and runs at each problem's check r (ablo.bench.CHECK_R).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ablo import bench
from ablo.atomic import atomic_write

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
#: (library, script, form, methods, problems, needs the torch venv). form "matmul" is x @ W + b,
#: labelled in the tables; every other PyTorch peer uses nn.Linear / F.linear.
PEER_SCRIPTS = [
    ("jaxopt", "jaxopt_peer.py", "", ("reverse", "aid-cg"), ("hypercleaning", "mlp"), False),
    ("torch", "torch_plain.py", "F.linear", ("reverse", "fom"), ("hypercleaning", "mlp"), True),
    ("torch", "torch_plain.py", "matmul", ("reverse",), ("hypercleaning",), True),
    ("higher", "higher_peer.py", "nn.Linear", ("reverse",), ("hypercleaning", "mlp"), True),
    ("torchopt", "torchopt_peer.py", "nn.Linear", ("reverse",), ("hypercleaning", "mlp"), True),
    ("torchopt", "torchopt_peer.py", "F.linear", ("aid-cg",), ("hypercleaning",), True),
]
#: Installed but not benchmarked here (see docs/benchmarks.md for why).
NOT_DRIVEN = {"betty-ml": "installs; its hypergradients run only inside its Engine/Problem training framework, "
                          "not wired up here", "learn2learn": None}


def torch_venv(path: Path, smoke: bool) -> tuple[Path | None, dict]:
    """The venv's python and {package: "ok" | pip's error line}; creates the venv if needed."""
    log = path / "install_log.json"
    if not log.exists():
        if smoke:
            return None, {"torch venv": f"not created in smoke mode (run peers/setup_venv.sh {path})"}
        subprocess.run(["bash", str(PEERS / "setup_venv.sh"), str(path)], check=False)
    if not log.exists():
        return None, {"torch venv": "peers/setup_venv.sh failed"}
    return path / "bin" / "python", json.loads(log.read_text())


def peer_jobs(problems, rounds, venv_python, installed, rs=None, size="full") -> list:
    """Peer jobs ``(spec, rounds, cmd)`` at each problem's check r (ablo.bench.check_r)."""
    jobs = []
    for library, script, form, methods, on, needs_torch in PEER_SCRIPTS:
        if needs_torch and (venv_python is None or (library != "torch" and installed.get(library) != "ok")):
            continue
        python = str(venv_python) if needs_torch else sys.executable
        for p in problems:
            if p not in on:
                continue
            for m in methods:
                spec = {"problem": p, "library": library, "variant": form, "method": m, "r": bench.check_r(p, rs, size),
                        "cg_iters": bench.AID_ITERS, "warmup": True, "pairs": 1 if size == "smoke" else 3}
                jobs.append((spec, rounds, [python, str(PEERS / script)]))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out", help="output directory (results.json, results.md, plots)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, r in {3, 6}, 1 round")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved processes per configuration at the check r")
    ap.add_argument("--rs", default=None, help="comma-separated r values of the sweep (default 10,30,100,300,1000 "
                                                "on hypercleaning, 50 on mlp)")
    ap.add_argument("--problems", default="hypercleaning,mlp")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every registered one benchmarked)")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--parallel", type=int, default=1, help="worker processes at a time (CPU time is per process)")
    ap.add_argument("--venv", default="/tmp/peers-venv", help="venv of the PyTorch peers")
    ap.add_argument("--mnist-dir", default=None, help="MNIST for the mlp problem (default: synthetic data)")
    ap.add_argument("--rerender", metavar="DIR", default=None,
                    help="redo a finished run's checks and tables in DIR with this version's rules (no timing)")
    a = ap.parse_args()
    if a.rerender:
        if not (Path(a.rerender) / "results.json").is_file():
            raise SystemExit(f"--rerender: no results.json in {a.rerender}; give the --out folder of a finished run")
        bench.suite.rerender(a.rerender)
        print((Path(a.rerender) / "results.md").read_text())
        return
    rs = tuple(int(x) for x in a.rs.split(",")) if a.rs else None
    rounds = 1 if a.smoke else a.rounds
    problems = tuple(a.problems.split(","))
    installed, peers = {}, []
    if not a.no_peers:
        venv_python, installed = torch_venv(Path(a.venv), a.smoke)
        peers = peer_jobs(problems, rounds, venv_python, installed, rs, "smoke" if a.smoke else "full")
    summary = bench.run_suite(a.out, problems=problems, methods=a.methods.split(",") if a.methods else None, rs=rs,
                              size="smoke" if a.smoke else "full", rounds=rounds, peers=peers, parallel=a.parallel,
                              mnist_dir=a.mnist_dir)
    summary["peer_install"] = {**installed, **{k: installed.get(k, "not installed") + (f" ({v})" if v else "")
                                               for k, v in NOT_DRIVEN.items() if k in installed}}
    atomic_write(Path(a.out) / "results.json", json.dumps(summary, indent=1))
    print((Path(a.out) / "results.md").read_text())
    print("peer installs:", json.dumps(summary["peer_install"], indent=1))


if __name__ == "__main__":
    main()
