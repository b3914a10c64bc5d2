"""Binomial checkpointing (Griewank 1992; Griewank & Walther 2000, "Algorithm 799: revolve"):
the exact reverse sweep of r inner steps with s stored states and the fewest recomputations.

Model. Reversing l steps from a state a that can be restored (from a slot, or s_0 = V(θ) which
is recomputed from θ without any gradient evaluation), with c free slots, costs

    F(l, c) = min_{1≤j<l} j + F(l − j, c − 1) + F(j, c),   F(1, c) = 0,   F(l, 0) = l(l − 1)/2

forward steps ("advances"): advance j steps, store that state, reverse the upper l − j steps with
one slot fewer, restore a, reverse the lower j. This is revolve with C = c + 1 snapshots (one
holds a), whose closed form is (Griewank & Walther 2000, Prop. 1)

    F(l, c) = t·l − β(C + 1, t − 1),   β(C, t) = C(C + t, t),   t = min{t : β(C, t) ≥ l},

t being the number of times the most recomputed step is run ("repetition number"): r ≤ C(s+1+t, t)
steps are reversed with s slots and t sweeps, so s = ⌈log2 r⌉ slots give O(r log r) time.

Execution. The schedule is computed in Python once per (r, s) (a small DP, numpy) as a table of
actions (reverse step t, advance t → t', store slot, restore slot, restore s_0); a ``lax.scan``
over the table with ``lax.switch`` runs it on a fixed buffer of s states, so the compiled
program is the same size for every r.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb
from typing import ClassVar

import jax
import numpy as np

from ..cost import cost
from .base import finish, step_vjp
from .unrolled import ExactUnrolled
from ..checks import is_int

REVERSE, ADVANCE, STORE, RESTORE, RESTORE_V = range(5)


def repetitions(r: int, slots: int) -> int:
    """t = min{t : C(slots + 1 + t, t) ≥ r}: how often the most recomputed step runs."""
    t = 0
    while comb(slots + 1 + t, t) < r:
        t += 1
    return t


def forward_steps(r: int, slots: int) -> int:
    """Closed form of F(r, slots): advances to reverse r steps with ``slots`` stored states
    (Griewank & Walther 2000, Prop. 1 with C = slots + 1 snapshots, s_0 being free)."""
    t = repetitions(r, slots)
    return t * r - (comb(slots + 2 + t - 1, t - 1) if t >= 1 else 0)


@lru_cache(maxsize=64)
def _splits(r: int, slots: int):
    """(F, J): F[l, c] the fewest advances (the DP in the module docstring), J[l, c] a best split."""
    F = np.zeros((r + 1, slots + 1), dtype=np.int64)
    J = np.zeros((r + 1, slots + 1), dtype=np.int64)
    ls = np.arange(r + 1)
    F[:, 0] = ls * (ls - 1) // 2
    for c in range(1, slots + 1):
        for l in range(2, r + 1):
            j = np.arange(1, l)
            total = j + F[l - j, c - 1] + F[j, c]
            k = int(np.argmin(total))
            F[l, c], J[l, c] = total[k], j[k]
    return F, J


@lru_cache(maxsize=64)
def schedule(r: int, slots: int) -> np.ndarray:
    """The whole revolve schedule as int rows (action, t, t', slot), from s_0 on; read-only."""
    _, J = _splits(r, slots)
    rows = []
    # explicit stack of pending work: ("sweep", a, l, c, held) or ("restore", held)
    stack = [("sweep", 0, r, slots, -1)]
    while stack:
        item = stack.pop()
        if item[0] == "restore":
            held = item[1]
            rows.append((RESTORE_V, 0, 0, 0) if held < 0 else (RESTORE, 0, 0, held))
            continue
        _, a, l, c, held = item
        if l == 1:
            rows.append((REVERSE, a, 0, 0))
        elif c == 0:
            for k in range(l - 1, -1, -1):
                if k > 0:
                    rows.append((ADVANCE, a, a + k, 0))
                rows.append((REVERSE, a + k, 0, 0))
                if k > 0:
                    rows.append((RESTORE_V, 0, 0, 0) if held < 0 else (RESTORE, 0, 0, held))
        else:
            j, slot = int(J[l, c]), slots - c
            rows += [(ADVANCE, a, a + j, 0), (STORE, 0, 0, slot)]
            # run in this order: upper part, restore a, lower part
            stack += [("sweep", a, j, c, held), ("restore", held), ("sweep", a + j, l - j, c - 1, slot)]
    table = np.asarray(rows, dtype=np.int32)
    table.setflags(write=False)
    return table


def _split(r: int, slots: int):
    """(chain, rest): the first descent as snapshot positions p_1 < ... < p_k (slots 0..k−1, padded
    to ``slots`` entries by repeating p_k) and the rows from the first reversal (of step r − 1) on."""
    table = schedule(r, slots)
    first = int(np.argmax(table[:, 0] == REVERSE))
    head = table[:first]
    chain = list(head[head[:, 0] == ADVANCE][:, 2][: (head[:, 0] == STORE).sum()])
    assert list(head[head[:, 0] == STORE][:, 3]) == list(range(len(chain)))
    chain += [chain[-1] if chain else 0] * (slots - len(chain))
    return np.asarray(chain, np.int32), table[first:]


@dataclass(frozen=True)
class Binomial(ExactUnrolled):
    """Exact hypergradient with binomial checkpointing (revolve) in s stored states.

    Cost: F(r, s) + 2 gradient evaluations (F = ``forward_steps``, the fewest revolve allows: the
    first descent's r − 1 steps included; plus the step to s_r and the outer gradient), r HVPs,
    one JVP of V; s states besides the working one (XLA's temp memory holds about two copies of
    the slot buffer: the forward's stored chain and the backward's working buffer, measured in
    tests/test_memory.py). ``s=None`` takes ⌈log2 r⌉. Examples:
    r = 100, s = 7: 247 gradient evaluations (2.5r); r = 1000, s = 10: 3 547 (3.5r).

    Args:
        s: the number of stored states (an integer >= 1), or None for ⌈log2 r⌉.

    Example:
        ```python
        g, state, cost = ablo.hypergradient(problem, ablo.Binomial(s=7), theta, task)
        ```"""

    s: int | None = None
    name: ClassVar[str] = "binomial"

    def __post_init__(self):
        if self.s is not None and (not is_int(self.s) or self.s < 1):
            raise ValueError(f"s (number of stored states) must be an integer >= 1 or None (⌈log2 r⌉); got {self.s!r}")

    def slots(self, r: int) -> int:
        """Slots actually used: s, at most r − 1 (beyond that every state is stored, as in Reverse)."""
        s = self.s if self.s is not None else int(np.ceil(np.log2(max(r, 2))))
        return max(1, min(int(s), r - 1))

    def forward(self, problem, theta, task):
        r = problem.steps
        chain, _ = _split(r, self.slots(r))
        starts = np.concatenate([[0], chain[:-1]])

        def descend(s, x):
            s = problem.run(theta, task, x[0], x[1], s)
            return s, s

        s, buffer = jax.lax.scan(descend, problem.initial_state(theta, task), np.stack([starts, chain], 1))
        s_last = problem.run(theta, task, int(chain[-1]), r - 1, s)  # s_{r−1}
        return problem.step(theta, s_last, r - 1, task), (buffer, s_last)

    def backward(self, problem, theta, task, aux, b_theta, b_s):
        r = problem.steps
        _, rows = _split(r, self.slots(r))
        buffer, current = aux
        take = lambda buf, k: jax.tree_util.tree_map(lambda x: jax.lax.dynamic_index_in_dim(x, k, 0, False), buf)
        put = lambda buf, k, s: jax.tree_util.tree_map(lambda x, y: jax.lax.dynamic_update_index_in_dim(x, y, k, 0),
                                                       buf, s)
        branches = [
            lambda c, row: (c[0], c[1], *step_vjp(problem, theta, c[0], row[1], task, c[2], c[3])),
            lambda c, row: (problem.run(theta, task, row[1], row[2], c[0]), *c[1:]),
            lambda c, row: (c[0], put(c[1], row[3], c[0]), *c[2:]),
            lambda c, row: (take(c[1], row[3]), *c[1:]),
            lambda c, row: (problem.initial_state(theta, task), *c[1:]),
        ]
        (_, _, b_theta, b_s), _ = jax.lax.scan(lambda c, row: (jax.lax.switch(row[0], branches, c, row), None),
                                               (current, buffer, b_theta, b_s), rows)
        return finish(problem, theta, task, b_theta, b_s)

    def backward_cost(self, r):
        slots = self.slots(r)
        # F(r, s) + 2 in all: the forward half runs r steps and estimate() adds the outer gradient
        return cost(grad_evals=forward_steps(r, slots) - r + 1, hvps=r, jvps=1, states=slots)
