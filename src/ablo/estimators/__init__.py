"""Hypergradient estimators behind one interface (see ``base``), and a registry by name."""

from __future__ import annotations

from .base import Estimator
from .adaptive import AdaptiveUFOM, make_adaptive
from .debiased import UFOM, Debiased, make_debiased
from .first_order import FOM
from .implicit import AID, HOAG, aid_cg, aid_fp, aid_neumann
from .stochastic import BSA, TTSA, StocBiO
from .registry import REGISTRY, get, parse, register, spec_of
from .unrolled import Checkpointed, ExactUnrolled, Forward, Recompute, Reverse, Truncated
from .revolve import Binomial
from .telescope import AdaptiveTelescope, Telescope
from .es import ES, PES
from .reversible import Reversible
from .reptile import Reptile
from .warm_start import WarmStart, aid_bio, itd_bio

register("reverse", Reverse, "exact reverse mode through the stored unrolled loop (Likhosherstov et al. 2021, Alg. 2; Shaban et al. 2019, eq. 6)")
register("recompute", Recompute, "exact, O(1) memory: states recomputed from phi_0 (Likhosherstov et al. 2021, §3)")
register("checkpointed", Checkpointed, "exact, two-level: M checkpoints (default sqrt r), <= 2r+1 gradients, memory "
         "O(M + r/M) (Shaban et al. 2019, Table 1)", shorthand="M")
register("binomial", Binomial, "exact with binomial checkpointing (revolve) in s stored states, default ceil(log2 r)",
         shorthand="s")
register("forward", Forward, "exact forward mode, FMD (Shaban et al. 2019, eq. 7)")
register("truncated", Truncated, "K-step truncated reverse, K-RMD (Shaban et al. 2019, eq. 8)", shorthand="K")
register("fom", FOM, "first-order method, biased, O(1) memory (Likhosherstov et al. 2021, Alg. 3)")
register("ufom", UFOM, "unbiased first-order method with fixed q (Likhosherstov et al. 2021, Alg. 4)", shorthand="q")
register("aid-cg", aid_cg, "implicit differentiation, conjugate gradient, warm starts (Ji et al. 2021, Alg. 1, eq. 3)")
register("aid-neumann", aid_neumann, "implicit differentiation, truncated Neumann series (Ji et al. 2021, eq. 5, deterministic)")
register("aid-fp", aid_fp, "implicit differentiation, fixed-point iteration, AID-FP (Ji et al. 2021, §A.2)")
register("itd-bio", itd_bio, "ITD-BiO: reverse mode through an inner loop warm-started at y_(k-1)^T (Ji et al. 2021, Alg. 1, Prop. 2)")
register("aid-bio", aid_bio, "AID-BiO: AID-CG with warm starts of y and v, Ji et al. 2021's method (Ji et al. 2021, Alg. 1, eq. 3)")
register("hoag", HOAG, "AID-CG with warm starts and tolerance tol*decay^k over outer steps (Ji et al. 2021, §A.2)")
register("stocbio", StocBiO, "mini-batch stochastic AID, Neumann series over independent batches (Ji et al. 2021, Alg. 2-3, eq. 5-6)")
register("bsa", BSA, "single-sample stochastic AID, growing inner steps (Ghadimi & Wang 2018; Ji et al. 2021, §A.2)")
register("ttsa", TTSA, "two-time-scale single-sample AID, one inner step per outer step (Hong et al. 2020; Ji et al. 2021, §A.2)")
register("adaptive-ufom", make_adaptive, "UFOM with q = max(q*, q_min) adapted online from smoothed D2, V2 (Likhosherstov et al. 2021, eq. 22-24)")
register("debiased", make_debiased, "any cheap estimator (default K-RMD) debiased by the exact one with prob. q",
         shorthand="q")
register("telescope", Telescope, "randomized telescope over K-RMD lengths K1/../r, single-sample or Russian-roulette, "
         "unbiased (Beatson & Adams 2019)")
register("adaptive-telescope", AdaptiveTelescope, "single-sample telescope whose probabilities track |Delta_i|/sqrt(C_i) "
         "online (Beatson & Adams 2019)")
register("es", ES, "antithetic Gaussian smoothing over theta, N pairs, forward runs only: unbiased for the smoothed "
         "objective, O(1) memory, variance (dim theta + 1)|g|^2/N (Salimans et al. 2017)")
register("pes", PES, "Persistent ES over windows of K steps, particles and perturbation sums carried from call to "
         "call (Vicol, Metz & Sohl-Dickstein 2021)", shorthand="K")
register("reversible", Reversible, "exact for gd and heavy-ball momentum: the dynamics reversed in fixed point, the bits "
         "lost to beta kept in a buffer, one state held (Maclaurin, Duvenaud & Adams 2015)")
register("reptile", Reptile, "Reptile direction theta - phi_r, MAML-form problems only (Nichol et al. 2018; Likhosherstov et al. 2020, §5)")

__all__ = ["Estimator", "ExactUnrolled", "Reverse", "Recompute", "Checkpointed", "Binomial", "Forward", "Truncated", "FOM",
           "UFOM", "AdaptiveUFOM", "Debiased", "AID", "HOAG", "aid_cg", "aid_neumann", "aid_fp", "StocBiO", "BSA",
           "TTSA", "Reptile", "Telescope", "AdaptiveTelescope", "ES", "PES", "Reversible", "WarmStart", "make_adaptive", "make_debiased", "REGISTRY", "register", "get", "parse",
           "spec_of"]
