"""Few-shot episodes from a class-indexed image array: the task convention of :mod:`ablo.meta`.

An m-way K-shot episode with Q queries per class draws m classes without replacement and
K + Q distinct drawings of each; the first K form the support set D_tr (m·K examples), the
other Q the query set D_te (m·Q examples), labelled 0..m−1 in the order the classes were drawn.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def episode_sampler(images: np.ndarray, ways: int, shots: int, queries: int):
    """key -> {"support": (x (m·K, h, w, 1), y (m·K,)), "query": (x (m·Q, h, w, 1), y (m·Q,))}, a pure
    JAX function. ``images``: (classes, drawings, h, w) uint8 ink 0-255 (or floats in [0, 1]).
    Cost: one gather of m(K + Q) images. ValueError when the array has too few classes or drawings."""
    n_cls, n_ex = images.shape[:2]
    for name, v in (("ways", ways), ("shots", shots), ("queries", queries)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1; got {v!r}")
    if ways > n_cls or shots + queries > n_ex:
        raise ValueError(f"an episode needs ways <= {n_cls} classes and shots + queries <= {n_ex} drawings per "
                         f"class; got ways={ways}, shots={shots}, queries={queries}")
    data = jnp.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0

    def sample(key):
        kc, ke = jax.random.split(key)
        cls = jax.random.choice(kc, n_cls, (ways,), replace=False)
        ex = jnp.argsort(jax.random.uniform(ke, (ways, n_ex)), axis=1)[:, : shots + queries]
        x = data[cls[:, None], ex].astype(jnp.result_type(float))[..., None] / scale  # (m, K+Q, h, w, 1)
        y = jnp.broadcast_to(jnp.arange(ways)[:, None], (ways, shots + queries))
        flat = lambda a: a.reshape((-1,) + a.shape[2:])
        return {"support": (flat(x[:, :shots]), flat(y[:, :shots])), "query": (flat(x[:, shots:]), flat(y[:, shots:]))}

    return sample
