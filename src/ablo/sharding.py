"""A meta-batch of tasks sharded across devices with JAX's own sharding (``jax.sharding``).

The outer step (Likhosherstov et al. 2021, Alg. 1) averages the hypergradient over a meta-batch,
G = (1/n) Σ_i G(θ, T_i). With ``devices = N`` the task axis (axis 0 of every task leaf) is
placed on a one-axis :class:`~jax.sharding.Mesh` named ``"tasks"``: each device estimates
n/N tasks and the mean is a cross-device sum (``psum``). θ, the optimizer state and the
estimator state stay replicated, so the result equals the single-device one up to the
order of the floating-point reduction.

Estimators that keep the default ``Estimator.estimate_batch`` run under ``jax.shard_map``
with exactly that method's semantics (the same per-task keys ``split(key, n)``, mean
gradient, summed cost, mean estimator state): vmapped estimators and UFOM's ``lax.map``
(which must really skip the exact branch) are both split across devices. An estimator with
its own ``estimate_batch`` is left to the XLA SPMD partitioner, which sees the task axis
sharded by a ``NamedSharding`` constraint and inserts the cross-device reduction itself.

Multi-host: call ``jax.distributed.initialize()`` first in every process; ``jax.devices()``
then lists the devices of all hosts and the same mesh spans them (docs/distributed.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .cost import Cost
from .estimators.base import Estimator
from .checks import is_int

AXIS = "tasks"


def check_devices(devices, meta_batch: int) -> None:
    """Raise ValueError unless ``devices`` is None or an integer in [1, available] dividing the meta-batch."""
    if devices is None:
        return
    available = len(jax.devices())
    if not is_int(devices) or not 1 <= devices <= available:
        raise ValueError(f"devices must be an integer in [1, {available}] (the devices JAX sees); got {devices!r}. "
                         "On CPU, set XLA_FLAGS=--xla_force_host_platform_device_count=N before JAX starts.")
    if meta_batch % devices:
        raise ValueError(f"meta_batch ({meta_batch}) must be a multiple of devices ({devices}) so that every "
                         "device gets the same number of tasks")


def task_mesh(devices: int) -> Mesh:
    """A one-axis mesh ``("tasks",)`` over the first ``devices`` devices."""
    return Mesh(np.array(jax.devices()[:devices]), (AXIS,))


def shard_tasks(tasks, mesh: Mesh):
    """Constrain axis 0 of every task leaf to be split across the mesh (inside jit)."""
    return jax.lax.with_sharding_constraint(tasks, NamedSharding(mesh, PartitionSpec(AXIS)))


def estimate_batch(estimator: Estimator, problem, theta, tasks, state, key, mesh: Mesh):
    """``estimator.estimate_batch`` with the task axis split across ``mesh``: (mean grad, state, total Cost)."""
    tasks = shard_tasks(tasks, mesh)
    if type(estimator).estimate_batch is not Estimator.estimate_batch:
        return estimator.estimate_batch(problem, theta, tasks, state, key)
    n = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    keys = jax.random.split(key, n)

    def local(theta, tasks, state, keys):
        # Mark the replicated inputs as device-varying: gradients in θ then stay per device
        # (otherwise autodiff would psum them inside each task's estimate, and a per-device
        # branch such as UFOM's ξ would wait on the other devices' collectives).
        theta, state = jax.lax.pcast((theta, state), AXIS, to="varying")
        one = lambda task, k: estimator.estimate(problem, theta, task, state, k)
        if estimator.random_branch:
            g, s, c = jax.lax.map(lambda a: one(*a), (tasks, keys))
        else:
            g, s, c = jax.vmap(one)(tasks, keys)
        total = lambda x: jax.lax.psum(x.sum(0), AXIS)
        first = lambda x: jax.lax.all_gather(x[0], AXIS)[0]
        mean_or_first = lambda x: total(x) / n if jnp.issubdtype(x.dtype, jnp.inexact) else first(x)
        c = Cost(total(c.grad_evals), total(c.hvps), total(c.jvps), total(c.states), total(c.samples),
                 total(c.nonfinite.astype(jnp.int32)) > 0)
        return jax.tree_util.tree_map(lambda x: total(x) / n, g), jax.tree_util.tree_map(mean_or_first, s), c

    spec = PartitionSpec(AXIS)
    return jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(), spec, PartitionSpec(), spec),
                         out_specs=PartitionSpec())(theta, tasks, state, keys)
