"""AID-BiO on the dense-layer inner problem, in plain NumPy (no compilation: it runs on a loaded machine).

A 4-block conv embedding as the experiment's (3x3 conv, 16 filters, 2x2 max-pool while the map is
larger than 2x2, batch norm with the batch's statistics, ReLU; He-normal weights drawn with NumPy, so
θ_0 is of the experiment's distribution, not its exact draw), Omniglot 5-way 1-shot tasks with 15
queries per class at 14x14 (background characters), the dense layer w = (W, b) as the inner variable:

    g(w) = Σ_S CE(X_S W + b) + ρ‖w − c‖²,   f(w) = mean_Q CE(X_Q W + b),   T = 10 GD steps of γ = 0.1 from c.

Per task and ρ: the Hessian's extreme eigenvalues at y_T (exact), inner suboptimality
‖y_T − y*‖/‖c − y*‖ (y* by Newton's method), the true relative residual of 10 CG steps, and the
hypergradient with respect to the centre c three ways — AID-BiO at y_T (2ρ v, v from 10 CG steps),
exact reverse through the T steps run (ITD), and the limit problem's (2ρ H(y*)⁻¹ ∇f(y*)) — with their
norms and cosines.

    python docs/results/hyper-representation/strongly-convex/diagnose_numpy.py
"""

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

WAYS, QUERIES, SIZE, FILTERS, BLOCKS, T, LR = 5, 15, 14, 16, 4, 10, 0.1


def conv3x3(x, w):
    n, h, wd, c = x.shape
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.concatenate([p[:, i:i + h, j:j + wd, :] for i in range(3) for j in range(3)], axis=-1)
    return cols @ w.reshape(9 * c, -1)


def block(x, w):
    x = conv3x3(x, w)
    if x.shape[1] > 2:
        n, h, wd, c = x.shape
        x = np.pad(x, ((0, 0), (0, h % 2), (0, wd % 2), (0, 0)), constant_values=-np.inf)
        x = x.reshape(n, x.shape[1] // 2, 2, x.shape[2] // 2, 2, c).max((2, 4))
    x = (x - x.mean((0, 1, 2))) / np.sqrt(x.var((0, 1, 2)) + 1e-5)
    return np.maximum(x, 0)


def embed(ws, x):
    for w in ws:
        x = block(x, w)
    return np.concatenate([x.reshape(x.shape[0], -1), np.ones((x.shape[0], 1))], 1)  # bias as a feature


def softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def grad_g(w, X, y, c, rho):
    p = softmax(X @ w)
    p[np.arange(len(y)), y] -= 1
    return X.T @ p + 2 * rho * (w - c)


def hess_g(w, X, rho):
    d, k = w.shape
    p = softmax(X @ w)
    H = np.zeros((d * k, d * k))
    for xi, pi in zip(X, p):
        H += np.kron(np.outer(xi, xi), np.diag(pi) - np.outer(pi, pi))  # row-major vec(W): index (feature, class)
    return H + 2 * rho * np.eye(d * k)


def grad_f(w, X, y):
    p = softmax(X @ w)
    p[np.arange(len(y)), y] -= 1
    return X.T @ p / len(y)


def cg(A, b, iters):
    x, r = np.zeros_like(b), b.copy()
    p, rs = r.copy(), r @ r
    for _ in range(iters):
        Ap = A @ p
        a = rs / (p @ Ap)
        x, r = x + a * p, r - a * Ap
        new = r @ r
        p, rs = r + new / rs * p, new
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="/work/shared/data/omniglot")
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--rhos", default="0.01,0.1,1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    imgs = np.load(Path(args.data_dir) / "images_background.npz")["images"]  # (964, 20, 105, 105)
    ws, c_in = [], 1
    for _ in range(BLOCKS):
        ws.append(rng.normal(size=(3, 3, c_in, FILTERS)) * np.sqrt(2 / (9 * c_in)))
        c_in = FILTERS
    small = lambda a: np.asarray(Image.fromarray((np.asarray(a, np.float64) * 255).astype(np.uint8)).resize(
        (SIZE, SIZE), Image.BOX), np.float64)[..., None] / 255
    rows = []
    for task in range(args.tasks):
        cls = rng.choice(len(imgs), WAYS, replace=False)
        draw = np.stack([rng.permutation(imgs.shape[1])[:1 + QUERIES] for _ in cls])
        xs = np.stack([small(imgs[k, d[0]]) for k, d in zip(cls, draw)])
        xq = np.stack([small(imgs[k, j]) for k, d in zip(cls, draw) for j in d[1:]])
        ys, yq = np.arange(WAYS), np.repeat(np.arange(WAYS), QUERIES)
        Xs, Xq = embed(ws, xs), embed(ws, xq)
        d = Xs.shape[1]
        c = np.vstack([rng.normal(size=(d - 1, WAYS)) / np.sqrt(d - 1), np.zeros((1, WAYS))])
        for rho in [float(r) for r in args.rhos.split(",")]:
            traj = [c]
            for _ in range(T):
                traj.append(traj[-1] - LR * grad_g(traj[-1], Xs, ys, c, rho))
            yT = traj[-1]
            ystar = yT.copy()
            for _ in range(50):  # Newton
                ystar = ystar - np.linalg.solve(hess_g(ystar, Xs, rho), grad_g(ystar, Xs, ys, c, rho).ravel()).reshape(ystar.shape)
            HT, Hs = hess_g(yT, Xs, rho), hess_g(ystar, Xs, rho)
            ev = np.linalg.eigvalsh(HT)
            b = grad_f(yT, Xq, yq).ravel()
            v10 = cg(HT, b, 10)
            g_aid = 2 * rho * v10
            g_lim = 2 * rho * np.linalg.solve(Hs, grad_f(ystar, Xq, yq).ravel())
            lam, g_rev = b.copy(), np.zeros_like(b)  # reverse through w_t = w_{t-1} − γ∇g(w_{t-1}; c)
            for t in range(T, 0, -1):
                g_rev += LR * 2 * rho * lam  # ∂w_t/∂c through the regulariser: +2ργ
                lam = lam - LR * hess_g(traj[t - 1], Xs, rho) @ lam
            g_rev += lam  # w_0 = c
            cosine = lambda a, b_: float(a @ b_ / (np.linalg.norm(a) * np.linalg.norm(b_)))
            dist = lambda a: float(np.linalg.norm(a - ystar))
            rows.append({"rho": rho, "task": task, "hess_min": float(ev[0]), "hess_max": float(ev[-1]),
                         "gamma_hess_max": LR * float(ev[-1]),
                         "y_T_dist_rel": dist(yT) / dist(c), "y_star_grad_norm": float(np.linalg.norm(grad_g(ystar, Xs, ys, c, rho))),
                         "cg10_true_rel_residual": float(np.linalg.norm(HT @ v10 - b) / np.linalg.norm(b)),
                         "norm_c_aid": float(np.linalg.norm(g_aid)), "norm_c_rev": float(np.linalg.norm(g_rev)),
                         "norm_c_lim": float(np.linalg.norm(g_lim)),
                         "cos_c_aid_rev": cosine(g_aid, g_rev), "cos_c_aid_lim": cosine(g_aid, g_lim),
                         "cos_c_rev_lim": cosine(g_rev, g_lim)})
            print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    with open(out / "diagnostics_numpy.csv", "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    keys = [k for k in rows[0] if k not in ("rho", "task")]
    med = [{"rho": r, "tasks": args.tasks, **{k: float(np.median([x[k] for x in rows if x["rho"] == r])) for k in keys}}
           for r in dict.fromkeys(x["rho"] for x in rows)]
    (out / "diagnostics_numpy.json").write_text(json.dumps({"median_over_tasks": med, "args": vars(args)}, indent=1))
    for m in med:
        print(json.dumps(m))


if __name__ == "__main__":
    main()
