#!/usr/bin/env bash
# Ji et al. 2021 §5.2's setting in the hyper-representation experiment, one process per seed ($1; further
# arguments, e.g. --resume, are passed on): w = the dense layer with ρ = 1 fixed (2-strongly convex), θ = the
# four conv blocks and the centre c; ITD-BiO, AID-BiO (warm y and v), ANIL and MAML at 10,000 function calls.
# Run from the repository root with OMNIGLOT set to the Omniglot folder; then analyse.py.
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
export PYTHONPATH=$PWD/src
exec python -m ablo run hyper-representation --data-dir "${OMNIGLOT:?set OMNIGLOT to the Omniglot folder}" \
  --set adapted=1 --set learn_rho=false --set rho0=1 --set inner_lr=0.05 \
  --set table_methods= --set short_horizon=false --set methods=itd-bio,aid-bio --set anil=true --set maml=true \
  --budget-calls 10000 --seed "$1" --out "docs/results/hyper-representation/ji-setting/seed$1" "${@:2}"
