"""Benchmark ablo's hypergradient estimators against their ideal cost and against other
libraries, side by side in one run (issue 6). See docs/benchmarks.md.

    python benchmarks/bench_estimators.py --out bench-out            # full run (~10 min of CPU; longer on a loaded machine)
    python benchmarks/bench_estimators.py --smoke --out /tmp/smoke   # tiny sizes, 1 round

PyTorch peers run in their own venv (default /tmp/peers-venv, no system site-packages), made by
peers/setup_venv.sh on first use: the CPU build of torch 2.13.0 plus each peer library, each
installed on its own; the ones that fail are reported with pip's error line. jaxopt runs in
this environment (pip install -e '.[bench]'). Every peer is a separate process per round, as
every ablo configuration is.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ablo import bench

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
#: (library, script, methods, needs the torch venv)
PEER_SCRIPTS = [
    ("jaxopt", "jaxopt_peer.py", ("reverse", "aid-cg"), False),
    ("torch", "torch_plain.py", ("reverse", "fom"), True),
    ("higher", "higher_peer.py", ("reverse",), True),
    ("torchopt", "torchopt_peer.py", ("reverse", "aid-cg"), True),
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


def peer_jobs(problems, rs, rounds, venv_python, installed, smoke=False) -> list:
    jobs = []
    for library, script, methods, needs_torch in PEER_SCRIPTS:
        if needs_torch and (venv_python is None or (library != "torch" and installed.get(library) != "ok")):
            continue
        python = str(venv_python) if needs_torch else sys.executable
        for p in problems:
            if needs_torch and p != "hypercleaning":
                continue
            for r in rs:
                for m in methods:
                    spec = {"problem": p, "library": library, "method": m, "r": r, "cg_iters": bench.AID_ITERS,
                            "warmup": r <= 10 or smoke}
                    jobs.append((spec, rounds, [python, str(PEERS / script)]))
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out", help="output directory (results.json, results.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, r in {3, 6}, 1 round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved repeats per configuration")
    ap.add_argument("--rs", default=None, help="comma-separated r values (default 10,100,1000)")
    ap.add_argument("--peer-rs", default="100", help="r values at which peers run (default 100)")
    ap.add_argument("--problems", default="hypercleaning,newsgroups")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--parallel", type=int, default=2, help="worker processes at a time (CPU time is per process)")
    ap.add_argument("--venv", default="/tmp/peers-venv", help="venv of the PyTorch peers")
    a = ap.parse_args()
    size = "smoke" if a.smoke else "full"
    rs = tuple(int(x) for x in (a.rs or ("3,6" if a.smoke else "10,100,1000")).split(","))
    peer_rs = rs[-1:] if a.smoke else tuple(int(x) for x in a.peer_rs.split(","))
    rounds = 1 if a.smoke else a.rounds
    problems = tuple(a.problems.split(","))
    installed, peers = {}, []
    if not a.no_peers:
        venv_python, installed = torch_venv(Path(a.venv), a.smoke)
        peers = peer_jobs(problems, peer_rs, rounds, venv_python, installed, a.smoke)
    summary = bench.run_suite(a.out, problems=problems, rs=rs, size=size, rounds=rounds, peers=peers,
                              parallel=a.parallel)
    summary["peer_install"] = {**installed, **{k: installed.get(k, "not installed") + (f" ({v})" if v else "")
                                               for k, v in NOT_DRIVEN.items() if k in installed}}
    (Path(a.out) / "results.json").write_text(json.dumps(summary, indent=1))
    print((Path(a.out) / "results.md").read_text())
    print("peer installs:", json.dumps(summary["peer_install"], indent=1))


if __name__ == "__main__":
    main()
