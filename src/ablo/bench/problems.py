"""The benchmark problems: data written once to an ``.npz`` that ablo and every peer read, the
bilevel problem built from it, and the estimator configuration benchmarked under each name.

Both problems are data hypercleaning with the losses of ``ablo.problems.hypercleaning`` (Shaban et al. 2019
§4.2.1): θ ∈ R^n weights σ(θ_i) on each training example's cross-entropy, inner loss
mean_i σ(θ_i) CE_i + λ Σ_layers ‖W‖², outer loss validation CE, inner GD with a fixed step α, half
of the training labels replaced by random ones; the network is ``ablo.models.mlp_apply`` with the
problem's activation (``ACTIVATION``).

* ``hypercleaning``: a linear model φ = (W, b), n = 5000 examples, 784 features, 10 classes,
  synthetic Gaussian features / √784 (α = 1 is stable for r = 1000), φ_0 = 0, r = 100.
* ``mlp``: two tanh hidden layers of width 512 (``ablo.models.mlp_apply(..., activation=jnp.tanh)``,
 ), n = 1000 MNIST-sized examples (784 features; real MNIST when a data directory
  holds it, else synthetic), φ_0 ``ablo.models.mlp_init``'s normal draw (std √(2/fan-in)), r = 50.
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
#: Hidden-layer activation per problem (``ablo.models.mlp_apply``'s ``activation``), stored in the
#: data as ``activation`` so that the peers build the same network.
ACTIVATION = {"hypercleaning": "relu", "mlp": "tanh"}
#: Inner step α and weight decay λ per problem.
LR = {"hypercleaning": 1.0, "mlp": 0.1}
L2 = 1e-3
#: The r at which each problem's checks are made.
CHECK_R = {"hypercleaning": 100, "mlp": 50}
#: Methods benchmarked, where registered (``available_methods``).
METHODS = ("fom", "ufom", "reverse", "reverse-residuals", "recompute", "checkpointed", "binomial", "truncated",
           "aid-cg", "forward")
#: Benchmark names that are an estimator with options: name -> (registered name, options).
VARIANTS = {"reverse-residuals": ("reverse", {"store": "residuals"})}
#: CG iterations N of AID-CG, for ablo, its reference and the peers alike.
AID_ITERS = 20


def make_data(problem: str, size: str = "full", seed: int = 0, mnist_dir=None) -> dict:
    """Arrays of the problem (numpy, float32): ``x_tr, y_tr, x_val, y_val``, ``theta`` (where the
    hypergradient is taken), ``lr``, ``l2``, ``n_classes``, and φ_0 as ``w0, b0, w1, ...`` (layer i
    maps ``w{i}.shape[0]`` inputs to ``w{i}.shape[1]`` outputs, ``activation`` between layers). ``mnist_dir``: take the
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
    bad = rng.random(n) < 0.5  # corrupt half of the training labels (Shaban et al. 2019 §4.2.1)
    y_tr[bad] = rng.integers(0, c, bad.sum())
    out = dict(x_tr=x[:n], y_tr=y_tr, x_val=x[n:], y_val=y[n:], theta=rng.normal(size=n).astype(np.float32),
               lr=np.float32(LR[problem]), l2=np.float32(L2), n_classes=np.int32(c),
               activation=np.str_(ACTIVATION[problem]))
    if hidden:  # ablo.models.mlp_init's draw (He normal), saved so that every peer starts from it
        import jax

        from ..models import mlp_init

        phi0 = mlp_init(jax.random.PRNGKey(seed), (d, *hidden, c))
    else:  # the linear model starts at 0 (Shaban et al. 2019)
        phi0 = [{"w": np.zeros((d, c), np.float32), "b": np.zeros(c, np.float32)}]
    for i, layer in enumerate(phi0):
        out[f"w{i}"], out[f"b{i}"] = (np.asarray(layer[k], np.float32) for k in ("w", "b"))
    return out


def layers(data) -> int:
    """Number of dense layers stored in ``data`` (w0, w1, ...)."""
    return sum(1 for k in data if k.startswith("w") and k[1:].isdigit())


def build(problem: str, data, r: int):
    """-> (BilevelProblem, θ, task) on ``data`` (as written by make_data), r inner steps: the
    losses of ``ablo.problems.hypercleaning`` with ``ablo.models``' network and ``data``'s
    activation, inner GD at ``data["lr"]``, V = φ_0 constant."""
    import jax
    import jax.numpy as jnp

    from ..problems.hypercleaning import make_problem

    if problem not in SIZES["full"]:
        raise ValueError(f"problem must be one of {sorted(SIZES['full'])}; got {problem!r}")
    # device_put, not jnp.asarray: on the CPU it aliases a 64-byte-aligned numpy array (see load_data)
    # instead of copying it, as torch.from_numpy does for the PyTorch peers
    task = {k: jax.device_put(data[a]) for k, a in (("x", "x_tr"), ("y", "y_tr"), ("x_val", "x_val"),
                                                     ("y_val", "y_val"))}
    phi0 = [{"w": jax.device_put(data[f"w{i}"]), "b": jax.device_put(data[f"b{i}"])} for i in range(layers(data))]
    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[str(data.get("activation", "relu"))]
    prob = make_problem(steps=r, inner_lr=float(data["lr"]), l2=float(data["l2"]), phi0=phi0, activation=act)
    return prob, jax.device_put(data["theta"]), task


def estimator(method: str, r: int):
    """The estimator benchmarked as ``method`` at r steps: defaults, except truncated K = r/10,
    AID-CG with exactly ``AID_ITERS`` CG iterations from v = 0 (no warm start, a tolerance no
    float32 residual reaches), UFOM with q = 0.1, and the options of ``VARIANTS``."""
    from .. import estimators

    if method == "truncated":
        return estimators.get("truncated", K=max(1, r // 10))
    if method == "aid-cg":
        return estimators.get("aid-cg", maxiter=AID_ITERS, tol=1e-30, warm_start=False)
    name, options = VARIANTS.get(method, (method, {}))
    return estimators.get(name, **options)


def available_methods() -> list:
    """``METHODS`` that this version of ablo offers (registered, and taking the options of ``VARIANTS``)."""
    out = []
    for m in METHODS:
        try:
            estimator(m, 10)
        except (ValueError, TypeError):  # not registered, or an option this version does not take
            continue
        out.append(m)
    return out


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
