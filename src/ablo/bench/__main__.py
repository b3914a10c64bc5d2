"""``python -m ablo.bench worker SPEC_JSON``: one configuration in this process (see ``worker``)."""

import json
import sys

from .worker import worker


def main(argv: list) -> None:
    if len(argv) == 2 and argv[0] == "worker":
        print(json.dumps(worker(json.loads(argv[1]))))
        return
    raise SystemExit("usage: python -m ablo.bench worker SPEC_JSON  (drivers: benchmarks/bench_estimators.py, "
                     "ablo bench)")


if __name__ == "__main__":
    main(sys.argv[1:])
