"""Other libraries on the benchmark's problems: one script per peer in this folder, each a worker
of the protocol in ``protocol.py`` (read the spec, time the hypergradient, print one JSON line),
run by ``suite.run_rounds`` in its own process per round, interleaved with ablo's workers.

The PyTorch peers run in their own venv without system site-packages (``make_venv``):
``pip install torch==2.13.0`` (the CPU build), then each peer library on its own with the torch
pin, recording ``ok`` or pip's error line; jaxopt runs in ablo's environment
(``pip install 'ablo[bench]'``). The scripts import only their siblings ``protocol`` and
``torch_problem`` (numpy, torch), except jaxopt's, which builds ablo's problem.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: (library, script, form, methods, problems, needs the torch venv). Forms of the functional
#: PyTorch network: "F.linear" (W stored (out, in)) and "matmul" (x @ W + b, W (in, out));
#: "nn.Linear" for the module-based peers.
PEER_SCRIPTS = [
    ("jaxopt", "jaxopt_peer.py", "", ("reverse", "aid-cg"), ("hypercleaning", "mlp"), False),
    ("torch", "torch_plain.py", "F.linear", ("reverse", "fom"), ("hypercleaning", "mlp"), True),
    ("torch", "torch_plain.py", "matmul", ("reverse",), ("hypercleaning",), True),
    ("higher", "higher_peer.py", "nn.Linear", ("reverse",), ("hypercleaning", "mlp"), True),
    ("torchopt", "torchopt_peer.py", "nn.Linear", ("reverse",), ("hypercleaning", "mlp"), True),
    ("torchopt", "torchopt_peer.py", "F.linear", ("aid-cg",), ("hypercleaning",), True),
]
#: The PyTorch build every torch peer runs on, and the peer libraries installed beside it.
TORCH = "torch==2.13.0"
LIBRARIES = ("torchopt", "higher", "learn2learn", "betty-ml")
#: Installed but not benchmarked here (see docs/benchmarks.md for why).
NOT_DRIVEN = {"betty-ml": "installs; its hypergradients run only inside its Engine/Problem training framework, "
                          "not wired up here", "learn2learn": None}


def make_venv(path: Path) -> dict:
    """Create the PyTorch peers' venv at ``path`` (no system site-packages) if it is not there,
    install ``TORCH`` and numpy, then each of ``LIBRARIES`` on its own with the torch pin (so that
    pip keeps the CPU build); write and return ``install_log.json``: {package: "ok" | pip's error
    line (a compiler's fatal error first)}."""
    path = Path(path)
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH, "numpy<3"], check=True)
    log = {}
    for pkg in LIBRARIES:
        proc = subprocess.run([str(python), "-m", "pip", "install", pkg, TORCH], capture_output=True, text=True)
        lines = (proc.stdout + proc.stderr).splitlines()
        why = [ln.strip() for ln in lines if "fatal error" in ln] + [ln.strip() for ln in lines if ln.startswith("ERROR")]
        log[pkg] = "ok" if proc.returncode == 0 else (why or ["pip failed"])[0]
    (path / "install_log.json").write_text(json.dumps(log, indent=1))
    return log


def torch_venv(path: Path, create: bool) -> tuple[Path | None, dict]:
    """The venv's python and its install log; the venv is made (``make_venv``) if ``create``."""
    log = Path(path) / "install_log.json"
    if not log.exists():
        if not create:
            return None, {"torch venv": f"not created (smoke run); make it with a full run or make_venv({str(path)!r})"}
        try:
            make_venv(path)
        except subprocess.CalledProcessError as e:
            return None, {"torch venv": f"could not be made: {e}"}
    return Path(path) / "bin" / "python", json.loads(log.read_text())


def peer_jobs(problems, rounds: int, venv_python, installed: dict, r_of, pairs: int = 3, only=None) -> list:
    """Peer jobs ``(spec, rounds, cmd)`` for ``suite.run_rounds`` at r = ``r_of(problem)``;
    ``only``: the libraries to run (default all); torch peers only where the venv is there and
    their library installed."""
    from ..problems import AID_ITERS

    jobs = []
    for library, script, form, methods, on, needs_torch in PEER_SCRIPTS:
        if only is not None and library not in only:
            continue
        if needs_torch and (venv_python is None or (library != "torch" and installed.get(library) != "ok")):
            continue
        python = str(venv_python) if needs_torch else sys.executable
        for p in problems:
            if p not in on:
                continue
            for m in methods:
                spec = {"problem": p, "library": library, "variant": form, "method": m, "r": r_of(p),
                        "cg_iters": AID_ITERS, "warmup": True, "pairs": pairs}
                jobs.append((spec, rounds, [python, str(HERE / script)]))
    return jobs


def install_summary(installed: dict) -> dict:
    """The install log with the reason each installed-but-not-driven library is not benchmarked."""
    return {**installed, **{k: installed.get(k, "not installed") + (f" ({v})" if v else "")
                            for k, v in NOT_DRIVEN.items() if k in installed}}
