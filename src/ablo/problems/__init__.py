"""Concrete bilevel problems shared by the experiments, the benchmarks and the examples.

Each module builds an :class:`ablo.BilevelProblem` from arrays (it loads no data itself), so
one definition serves every caller: :mod:`.hypercleaning` (Shaban et al. 2019 §4.2.1; Likhosherstov et al. 2021 §5.2;
Ji et al. 2021 §A.2), :mod:`.counterexample` (Likhosherstov et al. 2021, Theorem 2).
"""
