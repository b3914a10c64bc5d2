"""The benchmark problems: data written once to an ``.npz`` that ablo and every peer read, the
bilevel problem built from it, and the estimator configuration benchmarked under each name.

Both problems are data hypercleaning (paper 001 §4.2.1): θ ∈ R^n weights σ(θ_i) on each training
example's cross-entropy, inner loss mean_i σ(θ_i) CE_i + λ‖φ‖², outer loss validation CE, inner GD
with a fixed step α, half of the training labels replaced by random ones.

* ``hypercleaning``: a linear model φ = (W, b), n = 5000 examples, 784 features, 10 classes,
  synthetic Gaussian features / √784 (α = 1 is stable for r = 1000), φ_0 = 0, r = 100.
* ``mlp``: two tanh hidden layers of width 512, n = 1000 MNIST-sized examples (784 features;
  real MNIST when a data directory holds it, else synthetic), φ_0 a fixed Glorot-normal draw, r = 50.
"""

from __future__ import annotations

import numpy as np

#: Shapes per size. ``hidden`` = () is the linear model.
SIZES = {
    "full": {"hypercleaning": dict(n=5000, d=784, c=10, hidden=()),
             "mlp": dict(n=1000, d=784, c=10, hidden=(512, 512))},
    "smoke": {"hypercleaning": dict(n=64, d=16, c=3, hidden=()),
              "mlp": dict(n=32, d=16, c=3, hidden=(8, 8))},
}
#: Inner step α and weight decay λ per problem.
LR = {"hypercleaning": 1.0, "mlp": 0.1}
L2 = 1e-3
#: The r at which each problem's checks are made (issue 12).
CHECK_R = {"hypercleaning": 100, "mlp": 50}
#: Methods benchmarked, where registered (``available_methods``).
METHODS = ("fom", "ufom", "reverse", "recompute", "checkpointed", "binomial", "truncated", "aid-cg", "forward")
#: CG iterations N of AID-CG, for ablo, its reference and the peers alike.
AID_ITERS = 20


def make_data(problem: str, size: str = "full", seed: int = 0, mnist_dir=None) -> dict:
    """Arrays of the problem (numpy, float32): ``x_tr, y_tr, x_val, y_val``, ``theta`` (where the
    hypergradient is taken), ``lr``, ``l2``, ``n_classes``, and the MLP's φ_0 as ``w0, b0, w1, ...``
    (layer i maps ``w{i}.shape[0]`` inputs to ``w{i}.shape[1]`` outputs). ``mnist_dir``: take the
    MLP problem's examples from MNIST there (first n training images, first n test images)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}; got {size!r}")
    if problem not in SIZES[size]:
        raise ValueError(f"problem must be one of {sorted(SIZES[size])}; got {problem!r}")
    n, d, c, hidden = (SIZES[size][problem][k] for k in ("n", "d", "c", "hidden"))
    rng = np.random.default_rng(seed)
    if problem == "mlp" and mnist_dir is not None and size == "full":
        from ..data import load_mnist

        m = load_mnist(mnist_dir)
        x = np.concatenate([m["train"][0][:n], m["test"][0][:n]]).astype(np.float32)
        y = np.concatenate([m["train"][1][:n], m["test"][1][:n]]).astype(np.int32)
    else:
        x = rng.normal(size=(2 * n, d)).astype(np.float32) / np.sqrt(d, dtype=np.float32)
        teacher = rng.normal(size=(d, c)).astype(np.float32) * np.sqrt(d, dtype=np.float32)
        y = np.argmax(x @ teacher + rng.gumbel(size=(2 * n, c)), axis=1).astype(np.int32)
    y_tr = y[:n].copy()
    bad = rng.random(n) < 0.5  # corrupt half of the training labels (paper 001 §4.2.1)
    y_tr[bad] = rng.integers(0, c, bad.sum())
    out = dict(x_tr=x[:n], y_tr=y_tr, x_val=x[n:], y_val=y[n:], theta=rng.normal(size=n).astype(np.float32),
               lr=np.float32(LR[problem]), l2=np.float32(L2), n_classes=np.int32(c))
    widths = (d, *hidden, c)
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        std = np.sqrt(2.0 / (a + b)) if hidden else 0.0  # Glorot normal; the linear model starts at 0
        out[f"w{i}"] = (rng.normal(size=(a, b)) * std).astype(np.float32)
        out[f"b{i}"] = np.zeros(b, np.float32)
    return out


def layers(data) -> int:
    """Number of dense layers stored in ``data`` (w0, w1, ...)."""
    return sum(1 for k in data if k.startswith("w") and k[1:].isdigit())


def apply_model(phi, x):
    """Logits of the dense tanh network φ = [(W, b), ...] (tanh after every layer but the last)."""
    import jax.numpy as jnp

    for w, b in phi[:-1]:
        x = jnp.tanh(x @ w + b)
    w, b = phi[-1]
    return x @ w + b


def build(problem: str, data, r: int):
    """-> (BilevelProblem, θ, task) on ``data`` (as written by make_data), r inner steps."""
    import jax
    import jax.numpy as jnp

    from ..inner import gd
    from ..models import cross_entropy
    from ..problem import BilevelProblem, constant_init

    if problem not in SIZES["full"]:
        raise ValueError(f"problem must be one of {sorted(SIZES['full'])}; got {problem!r}")
    # device_put, not jnp.asarray: on the CPU it aliases a 64-byte-aligned numpy array (see load_data)
    # instead of copying it, as torch.from_numpy does for the PyTorch peers
    task = tuple(jax.device_put(data[k]) for k in ("x_tr", "y_tr", "x_val", "y_val"))
    phi0 = [(jax.device_put(data[f"w{i}"]), jax.device_put(data[f"b{i}"])) for i in range(layers(data))]
    l2 = float(data["l2"])

    def inner(th, phi, t):
        sq = sum(jnp.vdot(p, p) for p in jax.tree_util.tree_leaves(phi))
        return cross_entropy(apply_model(phi, t[0]), t[1], jax.nn.sigmoid(th)) + l2 * sq

    def outer(th, phi, t):
        return cross_entropy(apply_model(phi, t[2]), t[3])

    return (BilevelProblem(inner, outer, gd(float(data["lr"])), r, constant_init(phi0)),
            jax.device_put(data["theta"]), task)


def estimator(method: str, r: int):
    """The estimator benchmarked as ``method`` at r steps: defaults, except truncated K = r/10,
    AID-CG with exactly ``AID_ITERS`` CG iterations from v = 0 (no warm start, a tolerance no
    float32 residual reaches), UFOM with q = 0.1."""
    from .. import estimators

    if method == "truncated":
        return estimators.get("truncated", K=max(1, r // 10))
    if method == "aid-cg":
        return estimators.get("aid-cg", maxiter=AID_ITERS, tol=1e-30, warm_start=False)
    return estimators.get(method)


def available_methods() -> list:
    from .. import estimators

    return [m for m in METHODS if m in estimators.REGISTRY]


def ufom_key(q: float = 0.1):
    """A PRNG key on which UFOM draws ξ = 0 (its cheap branch; the exact branch is timed as
    ``recompute``/``checkpointed``), so that a timing never falls into the exact branch by chance."""
    import jax

    seed = 0
    while bool(jax.random.bernoulli(jax.random.PRNGKey(seed), q)):
        seed += 1
    return jax.random.PRNGKey(seed)


def load_data(path) -> dict:
    """The arrays of a problem's .npz, each copied into a 64-byte-aligned buffer: ``jax.device_put``
    on the CPU aliases such an array instead of copying it, so the data are held once, as in the
    PyTorch peers (``torch.from_numpy``). One array is loaded at a time."""
    out = {}
    with np.load(path) as z:
        for k in z.files:
            a = z[k]
            buf = np.empty(a.nbytes + 64, np.uint8)
            off = -buf.ctypes.data % 64
            out[k] = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
            out[k][...] = a
    return out
