"""python -m ablo.bench COMMAND [OPTIONS]: the benchmark drivers (COMMAND --help for each).

Commands:
  anchors       ablo's estimators against the fastest plain JAX of each algorithm (dense-layer
                layouts x jax.checkpoint policies), memory beside time
  suite         every estimator against its hand-written JAX reference, and the peer libraries
  ablation      what ablo's product rewrite buys, apart from the algorithm
  exact-branch  UFOM's exact branch on the synthetic-q experiment
  tradeoffs     the table of docs/estimators-tradeoffs.md
  step-vjp      one reverse step: mixed mode against reverse-over-reverse

"worker SPEC_JSON" and "anchor-worker SPEC_JSON" run one configuration in this process (the
drivers start them). Every command runs single-threaded (XLA's and BLAS's threads off).
"""

import json
import os
import sys


def main(argv: list) -> None:
    from .worker import single_threaded

    os.environ.update(single_threaded(os.environ))  # read when JAX's backend starts
    from . import ablation, anchors, exact_branch, step_vjp, suite, tradeoffs
    from .worker import worker

    workers = {"worker": worker, "anchor-worker": anchors.anchor_worker}
    commands = {"anchors": anchors.main, "suite": suite.main, "ablation": ablation.main,
                "exact-branch": exact_branch.main, "tradeoffs": tradeoffs.main, "step-vjp": step_vjp.main}
    if len(argv) == 2 and argv[0] in workers:
        print(json.dumps(workers[argv[0]](json.loads(argv[1]))))
    elif argv and argv[0] in commands:
        commands[argv[0]](argv[1:])
    elif argv and argv[0] in ("-h", "--help"):
        print(__doc__)
    else:
        raise SystemExit(f"unknown command {argv[0]!r}; choose from {', '.join(commands)}" if argv else __doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
