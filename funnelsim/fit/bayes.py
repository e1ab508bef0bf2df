"""Bayesian repeat-purchase models in PyMC, sampled with NUTS and checked with ArviZ.

The likelihoods are the same as in :mod:`funnelsim.fit.repeat` (BG/NBD: Fader, Hardie & Lee
2005, eq. 6; Pareto/NBD: Fader & Hardie 2005, "A note on deriving the Pareto/NBD model",
eq. 22-24; Gamma-Gamma: Fader, Hardie & Lee 2005, "RFM and CLV", eq. 4), written in PyTensor
and added to the model as a potential.

Priors (``priors="default"``): every parameter θ is positive with log θ ~ Normal(0, 3), i.e.
``LogNormal(0, 3)``: weakly informative, a 95% range of e^±6 ≈ 0.0025 to 400, which covers
the parameters of days, weeks and months alike. ``priors="flat"`` puts improper flat priors
on the parameters themselves, so the posterior mode (MAP) is the maximum-likelihood estimate.

This module imports PyMC: only ``funnelsim fit`` uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from funnelsim.fit.repeat import _aggregate

COUNT_PARAMETERS = {"bg_nbd": ("r", "alpha", "a", "b"), "pareto_nbd": ("r", "alpha", "s", "beta")}
SPEND_PARAMETERS = ("p", "q", "gamma")
PRIOR_SIGMA = 3.0
TARGET_ACCEPT = 0.9  # NUTS's step-size target: smaller steps than PyMC's 0.8, fewer divergences


def _parameter(name: str, priors: str):
    if priors == "flat":
        return pm.HalfFlat(name)
    return pm.LogNormal(name, mu=0.0, sigma=PRIOR_SIGMA)


def bg_nbd_loglik(r, alpha, a, b, x, t_x, T):
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6), in logs."""
    first = (
        pt.gammaln(r + x)
        - pt.gammaln(r)
        + r * pt.log(alpha)
        + pt.gammaln(a + b)
        + pt.gammaln(b + x)
        - pt.gammaln(b)
        - pt.gammaln(a + b + x)
    )
    alive = -(r + x) * pt.log(alpha + T)
    dropped = pt.log(a) - pt.log(pt.maximum(b + x - 1, 1e-12)) - (r + x) * pt.log(alpha + t_x)
    return first + pt.switch(x > 0, pt.logaddexp(alive, dropped), alive)


def pareto_nbd_loglik(r, alpha, s, beta, x, t_x, T):
    """Per-customer Pareto/NBD log-likelihood (Fader & Hardie 2005, eq. 22-24), in logs.

    As :func:`funnelsim.fit.repeat.pareto_nbd_loglik`: A₀'s ₂F₁ after Euler's transformation,
    ₂F₁(1, c − b; c; z), a series of positive terms (:func:`_log_hyp2f1_one`), and the
    powers in logs. PyTensor's own ``hyp2f1`` has a gradient that costs 4-14 ms per
    evaluation on 2,357 customers (a series in its parameters per customer); this one is a
    fixed number of terms, differentiated like any sum.
    """
    k = r + s + x
    big, small = pt.maximum(alpha, beta), pt.minimum(alpha, beta)
    b = pt.switch(pt.ge(alpha, beta), s + 1.0, r + x)
    c = k + 1.0

    def log_term(y):
        log_big, log_small = pt.log(big + y), pt.log(small + y)
        z = pt.abs(alpha - beta) / (big + y)
        return (
            _log_hyp2f1_one(c - b, c, z) + (1.0 - b) * (log_small - log_big) - (c - 1.0) * log_big
        )

    log_f_tx, log_f_T = log_term(t_x), log_term(T)
    # log(F(t_x) − F(T)), F(t_x) > F(T); t_x = T: A₀ = 0, a term of e^(−35) relative
    log_a0 = log_f_tx + pt.log1p(-pt.exp(pt.minimum(log_f_T - log_f_tx, -1e-15)))
    front = pt.gammaln(r + x) - pt.gammaln(r) + r * pt.log(alpha) + s * pt.log(beta)
    alive = -(r + x) * pt.log(alpha + T) - s * pt.log(beta + T)
    dead = pt.log(s) - pt.log(k) + log_a0
    return front + pt.logaddexp(alive, dead)


SERIES_TERMS = 40
"""Terms of the ₂F₁(1, b; c; z) series: the n-th is below zⁿ, so at z ≤ 0.5 (CDNOW near its
estimates: z ≤ 0.1) the sum is exact to double precision; beyond, a geometric tail
estimate is added and :func:`series_error` measures what is left."""


def _log_hyp2f1_one(b, c, z):
    """log ₂F₁(1, b; c; z) = log Σ (b)ₙ / (c)ₙ zⁿ for 0 < b < c, 0 <= z < 1: SERIES_TERMS
    terms, each the product of the ratios ρₖ = (b + k) z / (c + k) < 1 before it (all
    positive and at most 1: nothing overflows), and the tail as a geometric series with
    the next ratio. Exact to double precision for z ≤ 0.5; at z = 0.95 off by ~1e-3."""
    n = pt.arange(SERIES_TERMS, dtype="float64")
    b, c, z = (pt.shape_padright(pt.as_tensor_variable(v)) for v in (b, c, z))
    # log of term n + 1 over term n; summed in logs (a product's gradient divides by its
    # factors, NaN where z = 0, α = β)
    log_ratio = pt.log(b + n) - pt.log(c + n) + pt.log(pt.maximum(z, 1e-300))
    terms = pt.exp(pt.cumsum(log_ratio, axis=-1))  # terms 1 .. N, each below 1
    last = ((b + SERIES_TERMS) / (c + SERIES_TERMS) * z)[..., 0]
    total = 1.0 + pt.sum(terms, axis=-1) + terms[..., -1] * last / (1.0 - last)
    return pt.log(total)


def series_error(params: dict[str, float], x, t_x, T) -> float:
    """The largest difference, over customers, between this module's Pareto/NBD
    log-likelihood and SciPy's (:func:`funnelsim.fit.repeat.pareto_nbd_loglik`) at
    ``params``: where α and β are far apart, z nears 1 and the fixed series falls short."""
    from funnelsim.fit import repeat

    values = [float(params[n]) for n in COUNT_PARAMETERS["pareto_nbd"]]
    ours = pareto_nbd_loglik(*(pt.as_tensor_variable(v) for v in values), x, t_x, T).eval()
    return float(np.max(np.abs(ours - repeat.pareto_nbd_loglik(*values, x, t_x, T))))


def gamma_gamma_loglik(p, q, gamma, x, mean_spend):
    """Per-customer Gamma-Gamma log-likelihood of the mean of x repeat purchases
    (Fader, Hardie & Lee 2005, "RFM and CLV", eq. 4), for x > 0."""
    return (
        pt.gammaln(p * x + q)
        - pt.gammaln(p * x)
        - pt.gammaln(q)
        + q * pt.log(gamma)
        + (p * x - 1) * pt.log(mean_spend)
        + p * x * pt.log(x)
        - (p * x + q) * pt.log(x * mean_spend + gamma)
    )


def count_model(model: str, x, t_x, T, *, priors: str = "default") -> pm.Model:
    """The BG/NBD or Pareto/NBD model of repeat-purchase counts (time in the model's unit)."""
    names = COUNT_PARAMETERS[model]
    loglik: Callable = bg_nbd_loglik if model == "bg_nbd" else pareto_nbd_loglik
    # identical customers once, weighted by their number (CDNOW: 2,357 customers, ~1,100 rows)
    (x, t_x, T), counts = _aggregate(*(np.asarray(v, dtype=float) for v in (x, t_x, T)))
    with pm.Model() as m:
        params = [_parameter(n, priors) for n in names]
        pm.Potential("loglik", pt.dot(counts, loglik(*params, x, t_x, T)))
    return m


def spend_model(x, mean_spend, *, priors: str = "default") -> pm.Model:
    """The Gamma-Gamma model of the repeat buyers' mean spend."""
    buyers = x > 0
    with pm.Model() as m:
        params = [_parameter(n, priors) for n in SPEND_PARAMETERS]
        pm.Potential("loglik", pt.sum(gamma_gamma_loglik(*params, x[buyers], mean_spend[buyers])))
    return m


def posterior_mode(m: pm.Model, start: dict[str, float] | None = None) -> dict[str, float]:
    """The MAP: with flat priors, the maximum-likelihood estimate."""
    with m:
        point = pm.find_MAP(start=start, progressbar=False, maxeval=20_000)
    return {k: float(v) for k, v in point.items() if not k.endswith("__")}


def sample(
    m: pm.Model,
    *,
    draws: int,
    tune: int,
    chains: int,
    seed: int,
    cores: int,
    from_mode: bool = False,
):
    """NUTS samples as ArviZ InferenceData (PyMC's progress log is silenced: the library
    does not print; the diagnostics are returned to the caller).

    ``from_mode``: start the chains near the posterior mode, with the mass matrix's first
    guess from the curvature there (:func:`mode_and_scale`), instead of PyMC's default
    (the prior's centre, identity mass matrix). For a posterior with many observations
    behind some parameters and few behind others (a funnel's stages), the default spends
    most of its warmup on long trajectories while the mass matrix adapts; this start
    needs about a third of the gradient evaluations and compiles the model once.
    """
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    options = dict(
        draws=draws,
        tune=tune,
        chains=chains,
        cores=cores,
        random_seed=seed,
        progressbar=False,
        compute_convergence_checks=False,
    )
    try:
        with m:
            if not from_mode:
                return pm.sample(target_accept=TARGET_ACCEPT, **options)
            step, starts = _nuts_from_mode(m, chains, seed)
            return pm.sample(step=step, initvals=starts, **options)
    finally:
        logger.setLevel(level)


def _nuts_from_mode(m: pm.Model, chains: int, seed: int):
    """A NUTS step with its mass matrix's first guess from the curvature at the posterior
    mode, and each chain's start: the mode jittered by up to one posterior sd per
    coordinate (dispersed starts, so R-hat can see chains that disagree)."""
    from pymc.blocking import DictToArrayBijection, RaveledVars
    from pymc.step_methods.hmc.quadpotential import QuadPotentialDiagAdapt

    fn = m.logp_dlogp_function(ravel_inputs=True)
    fn.trust_input = True
    fn.set_extra_values({})
    point = m.initial_point()
    start = DictToArrayBijection.map({v.name: point[v.name] for v in m.continuous_value_vars})
    mode, variance = mode_and_scale(fn, start.data)
    rng = np.random.default_rng(seed)
    starts = []
    for _ in range(chains):
        x = mode + np.sqrt(variance) * rng.uniform(-1.0, 1.0, mode.size)
        values = DictToArrayBijection.rmap(RaveledVars(x, start.point_map_info))
        # as tensors: PyMC maps a transformed start back through its transform
        # symbolically (a NumPy array fails in the simplex transform)
        starts.append({k: pt.as_tensor_variable(v) for k, v in values.items()})
    potential = QuadPotentialDiagAdapt(mode.size, mode, variance, 10, rng=rng.integers(2**32))
    step = pm.NUTS(potential=potential, logp_dlogp_func=fn, target_accept=TARGET_ACCEPT)
    return step, starts


def mode_and_scale(
    logp_dlogp: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray,
    *,
    iterations: int = 50,
    h: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """The posterior mode, approached by Newton steps on the diagonal of the Hessian
    (finite differences of the gradient: one gradient per coordinate) with backtracking,
    and 1 / the negative Hessian's diagonal there: each coordinate's variance with the
    others held fixed, a first guess for NUTS's mass matrix (which it then adapts).

    The search stops when a step gains less than 0.001 in log density: within about
    √0.002 ≈ 0.05 posterior sd of the mode, close enough for a sampler's start."""
    logp, grad = logp_dlogp(x)
    curvature = np.ones_like(x)
    for _ in range(iterations):
        curvature = np.empty_like(x)
        for i in range(x.size):
            bumped = x.copy()
            bumped[i] += h
            curvature[i] = (grad[i] - logp_dlogp(bumped)[1][i]) / h
        curvature = np.where(np.isfinite(curvature) & (curvature > 1e-8), curvature, 1.0)
        step = np.clip(grad / curvature, -2.0, 2.0)
        for _ in range(20):
            new_logp, new_grad = logp_dlogp(x + step)
            if np.isfinite(new_logp) and new_logp >= logp:
                break
            step /= 2
        else:
            break
        x, gain = x + step, new_logp - logp
        logp, grad = new_logp, new_grad
        if gain < 1e-3:
            break
    return x, 1.0 / curvature


def log_likelihood_at(model: str, params: dict[str, float], x, t_x, T) -> float:
    """The total log-likelihood at given parameters (a check against the SciPy fit)."""
    loglik = bg_nbd_loglik if model == "bg_nbd" else pareto_nbd_loglik
    values = [pt.as_tensor_variable(float(params[n])) for n in COUNT_PARAMETERS[model]]
    return float(np.sum(loglik(*values, x, t_x, T).eval()))
