"""Concrete bilevel problems shared by the experiments, the benchmarks and the examples.

Each module builds an :class:`ablo.BilevelProblem` from arrays (it loads no data itself), so
one definition serves every caller: :mod:`.hypercleaning` (paper 001 §4.2.1; paper 000 §5.2;
paper 004 §A.2).
"""
