"""Matrix products of the inner gradient and HVP, arranged for XLA's CPU backend.

Every estimator spends its time in the inner gradient ``problem.step`` evaluates r times and,
for the reverse sweeps, in one forward-over-reverse HVP per step (``estimators.base.step_vjp``).
On a linear model with few classes (hypercleaning: X 5000 × 784, W 784 × 10) both are a handful
of narrow products with the data matrix X, each bound by one pass over X, and XLA's CPU pipeline
arranges two of them badly. ``optimize_products(f)`` rewrites f's jaxpr:

* **Merge** products sharing a large operand: dot(X, B_1), …, dot(X, B_k) → Z = dot(X,
  stack(B_1, …, B_k)) sliced back, for products with the same dimension numbers whose other
  operands have one shape and do not depend on one another's results. A states-only reverse
  sweep recomputes the logits X·W_t inside its HVP next to the tangent X·v: merged, that is one
  pass over X (XLA's ``DotMerger`` pass runs in its GPU pipelines only). Stacking copies the B_i
  and slicing copies the results, so a group is merged only when the shared operand is larger
  than both together.
* **Orient** narrow products so that the large operand is read along its rows: the gradient
  Xᵀ·r of X·W (JAX emits dot(r, X) and a transpose, which XLA folds into one product reading X
  column-wise) took 2.2x the time of dot(r, X) on our CPU. A product whose large operand is
  read against its layout is computed with its operands swapped, and a product whose result
  feeds a transpose that would fold that way keeps its result behind an optimization barrier;
  only when the result is at most 1/8 of that operand (wide products of an MLP layer are left
  as they are: there the swap measured slower).

Dead equations are dropped first, so a product whose result is never used is never computed.
Products inside nested ``jit`` calls are left alone. Values are the same products; they equal
f's to the rounding of the kernel, not bit for bit. Measured in docs/benchmarks.md, on the CPU
only: ``BilevelProblem`` therefore rewrites by default on the CPU backend alone
(``rewrite_products=None`` resolves to ``jax.default_backend() == "cpu"``; ``ablo.diagnose``
reports the decision); ``rewrite_products=True`` opts in elsewhere, ``False`` turns it off.
"""
from __future__ import annotations

import heapq
from typing import Callable

import jax
import numpy as np
from jax import lax

__all__ = ["optimize_products"]


def optimize_products(fun: Callable) -> Callable:
    """``fun`` with its matrix products merged and oriented (see the module docstring).
    Pytrees in and out; meant to be called under ``jit`` (it traces ``fun`` at every call)."""

    def rewritten(*args):
        flat, tree = jax.tree_util.tree_flatten(args)
        # leaves already traced by an enclosing jit/vmap/grad are traced here; concrete ones (arrays,
        # Python numbers, strings) stay the values they are, so Python control flow on them works
        # as it does under jax.grad
        dynamic = [i for i, x in enumerate(flat) if isinstance(x, jax.core.Tracer)]

        def traced(*xs):
            leaves = list(flat)
            for i, x in zip(dynamic, xs):
                leaves[i] = x
            return fun(*jax.tree_util.tree_unflatten(tree, leaves))

        closed, shape = jax.make_jaxpr(traced, return_shape=True)(*(flat[i] for i in dynamic))
        out = _evaluate(closed.jaxpr, closed.consts, [flat[i] for i in dynamic])
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), out)

    return rewritten


def _is_var(atom) -> bool:
    return isinstance(atom, jax.extend.core.Var)


def _live(jaxpr) -> list:
    """The equations that reach an output (or have effects), in order."""
    needed = {v for v in jaxpr.outvars if _is_var(v)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in needed for v in eqn.outvars):
            keep.append(eqn)
            needed.update(v for v in eqn.invars if _is_var(v))
    return keep[::-1]


def _size(aval) -> int:
    return int(np.prod(aval.shape)) * np.dtype(aval.dtype).itemsize


def _groups(eqns) -> list:
    """Groups (shared side, [equation indices]) of mutually independent products to merge."""
    producer = {v: i for i, e in enumerate(eqns) for v in e.outvars}
    ancestors = []
    for e in eqns:
        mask = 0
        for v in e.invars:
            if _is_var(v) and v in producer:
                j = producer[v]
                mask |= ancestors[j] | (1 << j)
        ancestors.append(mask)
    independent = lambda i, j: not (ancestors[i] >> j & 1 or ancestors[j] >> i & 1)

    open_groups: dict = {}
    for i, e in enumerate(eqns):
        if e.primitive.name != "dot_general":
            continue
        params = tuple(sorted((k, repr(v)) for k, v in e.params.items()))
        for side in (0, 1):
            shared, other = e.invars[side], e.invars[1 - side]
            if not _is_var(shared):
                continue
            key = (shared, side, other.aval.shape, str(other.aval.dtype), params)
            for group in open_groups.setdefault(key, []):
                if all(independent(i, j) for j in group):
                    group.append(i)
                    break
            else:
                open_groups[key].append([i])
    chosen, used = [], set()
    for (shared, side, *_), groups in open_groups.items():
        for group in groups:
            group = [i for i in group if i not in used]
            if len(group) < 2:
                continue
            e = eqns[group[0]]
            stacked = len(group) * (_size(e.invars[1 - side].aval) + _size(e.outvars[0].aval))
            if _size(shared.aval) > stacked:
                chosen.append((side, group))
                used.update(group)
    return chosen


def _stack_axis(rank: int, contract, batch) -> int:
    """Where the new axis goes in the stacked operand: next to its free dimensions, on the side
    that keeps them contiguous away from the contracting ones ((M, K) → (k, M, K); (K, N) →
    (K, N, k))."""
    free = [d for d in range(rank) if d not in contract and d not in batch]
    if free and contract and max(free) < min(contract):
        return free[0]
    return free[-1] + 1 if free else rank


def _merged_product(eqns, side: int, read) -> list:
    """One dot_general for the group; the members' results sliced out of it."""
    e = eqns[0]
    (contract_l, contract_r), (batch_l, batch_r) = e.params["dimension_numbers"]
    contract = (contract_l, contract_r)[1 - side]
    batch = (batch_l, batch_r)[1 - side]
    rank = len(e.invars[1 - side].aval.shape)
    axis = _stack_axis(rank, contract, batch)
    shift = lambda dims: tuple(d + (d >= axis) for d in dims)
    stacked = jax.numpy.stack([read(q.invars[1 - side]) for q in eqns], axis=axis)
    if side == 0:  # shared lhs, stacked rhs
        operands = (read(e.invars[0]), stacked)
        numbers = ((tuple(contract_l), shift(contract_r)), (tuple(batch_l), shift(batch_r)))
        lhs_rank = len(e.invars[0].aval.shape)
        lhs_free = lhs_rank - len(contract_l) - len(batch_l)
        free_before = sum(1 for d in range(axis) if d not in contract_r and d not in batch_r)
        out_axis = len(batch_l) + lhs_free + free_before
    else:  # shared rhs, stacked lhs
        operands = (stacked, read(e.invars[1]))
        numbers = ((shift(contract_l), tuple(contract_r)), (shift(batch_l), tuple(batch_r)))
        free_before = sum(1 for d in range(axis) if d not in contract_l and d not in batch_l)
        out_axis = len(batch_l) + free_before
    params = e.params
    z = lax.dot_general(*operands, numbers, precision=params.get("precision"),
                        preferred_element_type=params.get("preferred_element_type"),
                        out_sharding=params.get("out_sharding"))
    return [lax.index_in_dim(z, k, axis=out_axis, keepdims=False) for k in range(len(eqns))]


def _evaluate(jaxpr, consts, args) -> list:
    eqns = _live(jaxpr)
    groups = _groups(eqns)
    node_of = list(range(len(eqns)))  # equation index -> node id (a group takes its first member's)
    members = {i: [i] for i in range(len(eqns))}
    for _, group in groups:
        for i in group[1:]:
            node_of[i] = group[0]
            del members[i]
        members[group[0]] = group
    side_of = {group[0]: side for side, group in groups}

    producer = {v: node_of[i] for i, e in enumerate(eqns) for v in e.outvars}
    needs = {n: {producer[v] for i in ms for v in eqns[i].invars if _is_var(v) and v in producer} - {n}
             for n, ms in members.items()}
    users: dict = {n: [] for n in members}
    for n, deps in needs.items():
        for d in deps:
            users[d].append(n)
    waiting = {n: len(deps) for n, deps in needs.items()}
    ready = [n for n, k in waiting.items() if k == 0]
    heapq.heapify(ready)

    transposed = {v for e in eqns if e.primitive.name == "transpose" for v in e.invars if _is_var(v)}
    env: dict = {}
    read = lambda v: env[v] if _is_var(v) else v.val
    for v, x in zip(jaxpr.constvars, consts):
        env[v] = x
    for v, x in zip(jaxpr.invars, args):
        env[v] = x
    while ready:
        n = heapq.heappop(ready)
        e = eqns[n]
        if n in side_of:
            group = [eqns[i] for i in members[n]]
            for q, value in zip(group, _merged_product(group, side_of[n], read)):
                env[q.outvars[0]] = value
        elif _orientation(e) == "swap":
            env[e.outvars[0]] = _swapped_product(e, read)
        else:
            out = e.primitive.bind(*map(read, e.invars), **e.primitive.get_bind_params(e.params))
            if len(e.outvars) == 1 and e.outvars[0] in transposed and _orientation(e) == "guard":
                out = lax.optimization_barrier(out)
            for v, x in zip(e.outvars, out if e.primitive.multiple_results else [out]):
                env[v] = x
        for u in users[n]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    return [read(v) for v in jaxpr.outvars]


def _natural(rank: int, contract, as_lhs: bool) -> bool:
    """An operand is read in row-major order by a GEMM when its contracting dimensions are its
    trailing ones as the left operand ((M, K)) or its leading ones as the right one ((K, N))."""
    c = sorted(contract)
    return c == list(range(rank - len(c), rank)) if as_lhs else c == list(range(len(c)))


def _big_operand(e):
    """(aval, contracting dims, is lhs) of a batch-free product's larger operand when its result
    is at most 1/8 of it; else None."""
    if e.primitive.name != "dot_general":
        return None
    (cl, cr), (bl, br) = e.params["dimension_numbers"]
    lhs, rhs = (v.aval for v in e.invars)
    if bl or br or 8 * _size(e.outvars[0].aval) > max(_size(lhs), _size(rhs)):
        return None
    return (lhs, cl, True) if _size(lhs) >= _size(rhs) else (rhs, cr, False)


def _orientation(e):
    """"swap" when the product's large operand is read against its layout in its role and along it
    in the other one (dot(X, r) contracting X's rows: dot(r, X) reads X row by row); "guard" when
    it is read along its layout but XLA folding a transpose of the result into the product
    (transpose(dot(A, B)) = dot(B, A)) would read it against it; else None."""
    big = _big_operand(e)
    if big is None:
        return None
    aval, contract, is_lhs = big
    here, there = (_natural(len(aval.shape), contract, lhs) for lhs in (is_lhs, not is_lhs))
    return "swap" if there and not here else "guard" if here and not there else None


def _swapped_product(e, read):
    """dot(A, B) as transpose(dot(B, A)); the barrier keeps XLA from folding the transpose back."""
    (cl, cr), _ = e.params["dimension_numbers"]
    a, b = (read(v) for v in e.invars)
    z = lax.dot_general(b, a, ((tuple(cr), tuple(cl)), ((), ())), precision=e.params.get("precision"),
                        preferred_element_type=e.params.get("preferred_element_type"))
    z = lax.optimization_barrier(z)
    n_b = len(e.invars[1].aval.shape) - len(cr)
    n_a = len(e.invars[0].aval.shape) - len(cl)
    return lax.transpose(z, tuple(range(n_b, n_b + n_a)) + tuple(range(n_b)))
