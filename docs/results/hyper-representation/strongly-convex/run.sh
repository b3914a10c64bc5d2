#!/usr/bin/env bash
# Ji et al. 2021 §5.2 setup in the hyper-representation experiment: the inner problem is the dense layer
# with a fixed ℓ2 term (strongly convex), θ = the four conv blocks (+ the centre c). $1 = name, $2 = method
# spec or anil/maml, $3 = rho, $4 = extra flags (--resume). Run from the repository root with OMNIGLOT set
# to the Omniglot folder; ANIL and MAML have no regulariser, so adapted/learn_rho/rho0 are not set for them.
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
export PYTHONPATH=$PWD/src
case "$2" in
  anil) M="--set methods= --set anil=true" ;;
  maml) M="--set methods= --set anil=false --set maml=true" ;;
  *) M="--set methods=$2 --set anil=false --set adapted=1 --set learn_rho=false --set rho0=$3" ;;
esac
exec python -m ablo run hyper-representation --data-dir "${OMNIGLOT:?set OMNIGLOT to the Omniglot folder}" \
  --set table_methods= --set short_horizon=false $M --budget-calls 3000 --set curve_points=6 --set eval_tasks=200 \
  --out runs/hr-sc/$1 $4
