#!/usr/bin/env bash
# Few-shot budget test, one seed: exact (recompute) and FOM at equal calls (15k, 30k, 45k) and FOM at
# exact's outer steps (45, 90, 135). $1 = seed, $2 = extra flags (--resume)
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# ran on the code of commit c16d4a1, from a checkout of it; OMNIGLOT = the Omniglot folder, OUT = where the runs go
O=${OUT:-runs/fewshot-budget}
COMMON="--data-dir ${OMNIGLOT:?set OMNIGLOT to the Omniglot folder} --set tuned_seeds=0,1 --seeds $1 --set curve_tasks=300 --set eval_tasks=500 --set checkpoint_every=15"
python -m ablo run fewshot $COMMON -m recompute --budget-calls 45000 --set eval_calls=15000 --out $O/exact-calls-s$1 $2
python -m ablo run fewshot $COMMON -m fom --budget-calls 45000 --set eval_calls=15000 --out $O/fom-calls-s$1 $2
python -m ablo run fewshot $COMMON -m fom --set budget_calls=none --steps 135 --set eval_calls=2700 --out $O/fom-steps-s$1 $2
