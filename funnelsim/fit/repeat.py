"""Maximum-likelihood fitting of the repeat-purchase models (SciPy only, no PyMC).

Each customer's history is summarised, as in the papers, by ``x`` (repeat purchases in the
calibration period), ``t_x`` (time of the last purchase) and ``T`` (time of the end of
calibration), both measured from the customer's first purchase, in the model's time unit
(e.g. weeks: days / 7). Spend is summarised by ``mean_spend``, the mean value of the ``x``
repeat purchases (currency).

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way: an
  alternative to the Pareto/NBD model", Marketing Science 24(2), eqs. 6-7).
* **Pareto/NBD** (Schmittlein, Morrison & Colombo 1987, "Counting your customers: who are
  they and what will they do next?", Management Science 33(1)), in the form of Fader &
  Hardie (2005), "A note on deriving the Pareto/NBD model and related expressions".
* **Gamma-Gamma spend** (Fader, Hardie & Lee 2005, "RFM and CLV: using iso-value curves for
  customer base analysis", Journal of Marketing Research 42(4); Fader & Hardie 2013, "The
  Gamma-Gamma model of monetary value").

The ``*_loglik`` functions return one log-likelihood per customer and stay finite for large
``x``, ``T`` and extreme parameters (everything is combined in logs). The ``fit_*`` functions
maximise the total over the logarithms of the parameters with L-BFGS-B from several starting
points, polish the best optimum with Newton steps on a numerical Hessian and return an
:class:`Estimate` with delta-method standard errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, gammasgn, hyp2f1

__all__ = [
    "Estimate",
    "bg_nbd_loglik",
    "fit_bg_nbd",
    "fit_gamma_gamma",
    "fit_pareto_nbd",
    "gamma_gamma_loglik",
    "pareto_nbd_loglik",
]

LOG_BOUND = 25.0
"""The optimiser keeps every log-parameter within ±25 (parameters in e^±25 ≈ 1e-11 .. 7e10)."""

_STEP = 1e-4  # finite-difference step in log-parameter space (a relative step of 0.01 %)


@dataclass(frozen=True)
class Estimate:
    """A maximum-likelihood estimate.

    Attributes
    ----------
    model : str
        ``"bg_nbd"``, ``"pareto_nbd"`` or ``"gamma_gamma"``.
    params : dict[str, float]
        The estimates, by the papers' names (time-dependent ones in the data's time unit).
    loglik : float
        The total log-likelihood at the estimates.
    se : dict[str, float]
        Standard errors from the inverse Hessian of the negative log-likelihood (in
        log-parameter space, transformed with the delta method); NaN if the Hessian is
        singular or not positive definite.
    n : int
        Customers used (for Gamma-Gamma: the repeat buyers).
    converged : bool
        The optimum is an interior local maximum: positive-definite Hessian, a negligible
        Newton decrement, and no parameter at the optimiser's bounds.
    """

    model: str
    params: dict[str, float]
    loglik: float
    se: dict[str, float]
    n: int
    converged: bool


# ------------------------------------------------------------------ log-likelihoods


def bg_nbd_loglik(r, alpha, a, b, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood of the BG/NBD model.

    Fader, Hardie & Lee (2005), "Counting your customers the easy way", eq. 6 (whose sum
    over customers is eq. 7)::

        L = B(a, b + x) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + T)^(r + x))
            + δ(x > 0) B(a + 1, b + x − 1) / B(a, b) · Γ(r + x) α^r / (Γ(r) (α + t_x)^(r + x))

    evaluated as ``log A + logaddexp(alive, dropped)``, with ``B(a + 1, b + x − 1) /
    B(a, b + x) = a / (b + x − 1)``, so that nothing overflows.

    Parameters
    ----------
    r, alpha : float
        Shape and rate of the Gamma distribution of purchase rates λ (alpha in time units).
    a, b : float
        Parameters of the Beta distribution of the dropout probability p.
    x : array_like
        Repeat purchases in the calibration period (whole numbers ≥ 0).
    t_x, T : array_like
        Time of the last purchase and of the end of calibration, from the first purchase
        (time units; ``0 <= t_x <= T``).

    Returns
    -------
    numpy.ndarray
        One log-likelihood per customer.
    """
    x, t_x, T = _floats(x, t_x, T)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    # x − 1 first, so that b + x − 1 keeps its precision for a tiny b
    dropped = np.log(a) - np.log(b + np.maximum(x - 1, 0)) - (r + x) * np.log(alpha + t_x)
    return common + np.logaddexp(alive, np.where(repeat, dropped, -np.inf))


def pareto_nbd_loglik(r, alpha, s, beta, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood of the Pareto/NBD model.

    Schmittlein, Morrison & Colombo (1987), in the form derived by Fader & Hardie (2005),
    "A note on deriving the Pareto/NBD model and related expressions"::

        L = Γ(r + x) α^r β^s / Γ(r) · [ 1 / ((α + T)^(r + x) (β + T)^s) + s / (r + s + x) · A₀ ]

    where, for α ≥ β,
    ``A₀ = F(α + t_x) / (α + t_x)^(r+s+x) − F(α + T) / (α + T)^(r+s+x)`` with
    ``F(y) = ₂F₁(r + s + x, s + 1; r + s + x + 1; (α − β) / y)``, and for α < β the same
    with β in place of α and ``F(y) = ₂F₁(r + s + x, r + x; r + s + x + 1; (β − α) / y)``.

    Each ₂F₁ is evaluated after Euler's transformation ₂F₁(a, b; c; z) = (1 − z)^(c−a−b)
    ₂F₁(c − a, c − b; c; z) (DLMF 15.8.1), which turns it into ₂F₁(1, ·; r + s + x + 1; z), a
    series of positive terms with no large first parameter; the factor (1 − z)^(c−a−b) and
    the powers are applied in logs, and A₀ is a difference of logs (log-sub-exp).

    Parameters
    ----------
    r, alpha : float
        Shape and rate of the Gamma distribution of purchase rates λ (alpha in time units).
    s, beta : float
        Shape and rate of the Gamma distribution of dropout rates μ (beta in time units).
    x, t_x, T : array_like
        Repeat purchases, time of the last purchase and of the end of calibration (time
        units, from the first purchase; ``t_x = 0`` when ``x = 0``).

    Returns
    -------
    numpy.ndarray
        One log-likelihood per customer.
    """
    x, t_x, T = _floats(x, t_x, T)
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    early, late = (_pareto_log_term(r, alpha, s, beta, x, y) for y in (t_x, T))
    with np.errstate(divide="ignore"):  # t_x = T: A₀ = 0
        log_a0 = early + np.log(-np.expm1(np.minimum(late - early, 0.0)))
    died = np.log(s) - np.log(r + s + x) + log_a0
    return common + np.logaddexp(alive, died)


def _pareto_log_term(r, alpha, s, beta, x, y) -> np.ndarray:
    """log[F(max(α, β) + y) / (max(α, β) + y)^(r+s+x)] of A₀, through Euler's transformation.

    With c = r + s + x + 1 and b = s + 1 (α ≥ β) or r + x (α < β):
    ₂F₁(c − 1, b; c; z) = (1 − z)^(1 − b) ₂F₁(1, c − b; c; z), 1 − z = (min + y) / (max + y).
    """
    big, small = np.maximum(alpha, beta), np.minimum(alpha, beta)
    b = np.where(alpha >= beta, s + 1.0, r + x)
    c = r + s + x + 1.0
    log_big, log_small = np.log(big + y), np.log(small + y)
    z = np.minimum(np.abs(alpha - beta) / (big + y), np.nextafter(1.0, 0.0))
    f = _hyp2f1_one(c - b, c, z, np.exp(log_small - log_big))
    return np.log(f) + (1.0 - b) * (log_small - log_big) - (c - 1.0) * log_big


def _hyp2f1_one(b, c, z, one_minus_z) -> np.ndarray:
    """₂F₁(1, b; c; z) for 0 < b < c and 0 <= z < 1: Σ (b)ₙ / (c)ₙ zⁿ, a series of positive
    terms (so ≥ 1); ``one_minus_z`` is 1 − z computed without cancellation.

    SciPy's ``hyp2f1`` where it gives a number. Where it does not (SciPy 1.17 returns NaN
    for c ≳ 500 once z ≳ 0.99), or z is within 1e-9 of 1: if c (1 − z) ≤ 1/2, the expansion
    about z = 1 (:func:`_hyp2f1_one_near_one`), otherwise Gauss's continued fraction
    (:func:`_hyp2f1_one_cf`), which converges in a few hundred terms there.
    """
    b, c, z, eps = np.broadcast_arrays(*_floats(b, c, z, one_minus_z))
    shape = b.shape
    b, c, z, eps = (np.ravel(v) for v in (b, c, z, eps))
    with np.errstate(all="ignore"):
        f = hyp2f1(1.0, b, c, z)
    failed = ~(np.isfinite(f) & (f >= 0.5))
    near = (failed | (eps < 1e-9)) & (c * eps <= 0.5)  # z itself is rounded near 1
    if np.any(near):
        f[near] = _hyp2f1_one_near_one(b[near], c[near], eps[near])
    far = failed & ~near
    if np.any(far):
        f[far] = _hyp2f1_one_cf(b[far], c[far], z[far])
    return f.reshape(shape)


def _hyp2f1_one_near_one(b, c, eps) -> np.ndarray:
    """₂F₁(1, b; c; 1 − eps) for c · eps ≤ 1/2, from the expansion about z = 1
    (Abramowitz & Stegun 15.3.6; DLMF 15.8.4) with k = c − b − 1::

        (c − 1) / k · ₂F₁(1, b; 1 − k; eps) + Γ(c) Γ(−k) / Γ(b) · eps^k (1 − eps)^(1 − c)

    whose series converges fast as b · eps ≤ 1/2. Where k is within 1e-5 of an integer
    (both terms have poles there, which cancel) the mean of the values at k ± 2e-5 is used,
    an error of order 1e-9.
    """
    k = c - b - 1.0
    pole = np.abs(k - np.round(k)) < _POLE
    shift = np.where(pole, 2 * _POLE, 0.0)
    return 0.5 * (_near_one(b, k + shift, eps) + _near_one(b, k - shift, eps))


_POLE = 1e-5


def _near_one(b, k, eps, *, terms: int = 60) -> np.ndarray:
    """The expansion of :func:`_hyp2f1_one_near_one` at a k = c − b − 1 off the integers."""
    term, series = np.ones_like(eps), np.ones_like(eps)
    for n in range(terms):
        term = term * (b + n) * eps / (1.0 - k + n)
        series = series + term
    log_second = (
        _log_gamma_ratio(b, k + 1.0) + gammaln(-k) + k * np.log(eps) - (b + k) * np.log1p(-eps)
    )
    return (b + k) / k * series + gammasgn(-k) * np.exp(log_second)


_STIRLING = np.array([1 / 12, -1 / 360, 1 / 1260, -1 / 1680, 1 / 1188, -691 / 360360, 1 / 156])


def _log_gamma_ratio(b, h) -> np.ndarray:
    """log Γ(b + h) − log Γ(b) without the cancellation of two large log-gammas: for b and
    b + h ≥ 10 the difference of Stirling series (DLMF 5.11.1), whose leading terms combine
    into (b − ½) log1p(h / b) + h log(b + h) − h."""
    b, h = np.broadcast_arrays(*_floats(b, h))
    large = (b >= 10) & (b + h >= 10)
    bl, hl = np.where(large, b, 10.0), np.where(large, h, 0.0)
    stirling = (bl - 0.5) * np.log1p(hl / bl) + hl * np.log(bl + hl) - hl
    for j, coefficient in enumerate(_STIRLING):
        stirling = stirling + coefficient * ((bl + hl) ** -(2 * j + 1) - bl ** -(2 * j + 1))
    with np.errstate(invalid="ignore"):
        plain = gammaln(b + h) - gammaln(b)
    return np.where(large, stirling, plain)


def _hyp2f1_one_cf(b, c, z, *, max_terms: int = 5_000) -> np.ndarray:
    """₂F₁(b, 1; c; z) by Gauss's continued fraction, 1 / (1 + d₁ / (1 + d₂ / (1 + …))), with
    d₂ₘ₊₁ = −(c − 1 + m)(b + m) z / ((c − 1 + 2m)(c + 2m)) and
    d₂ₘ = m (b − c + 1 − m) z / ((c − 2 + 2m)(c − 1 + 2m))
    (the incomplete-beta fraction of Press et al., Numerical Recipes, §6.4, with a = c − 1),
    evaluated by the modified Lentz method. It converges in a few dozen terms except very
    close to z = 1 with b close to c; after ``max_terms`` the last approximant is kept.
    """
    a = c - 1.0
    h, lentz_c, lentz_d = np.ones_like(z), np.ones_like(z), np.zeros_like(z)
    out = np.empty_like(z)
    todo = np.arange(z.size)
    tiny = 1e-300
    for k in range(1, max_terms + 1):
        m = k // 2
        if k % 2:
            d = -(a + m) * (b + m) * z / ((a + 2 * m) * (a + 2 * m + 1))
        else:
            d = m * (b - a - m) * z / ((a + 2 * m - 1) * (a + 2 * m))
        lentz_d = 1.0 + d * lentz_d
        lentz_d = 1.0 / np.where(np.abs(lentz_d) < tiny, tiny, lentz_d)
        lentz_c = 1.0 + d / lentz_c
        lentz_c = np.where(np.abs(lentz_c) < tiny, tiny, lentz_c)
        delta = lentz_c * lentz_d
        h = h * delta
        if k % 2:
            done = np.abs(delta - 1.0) < 1e-15
            if np.any(done):
                out[todo[done]] = h[done]
                keep = ~done
                todo, a, b, z = todo[keep], a[keep], b[keep], z[keep]
                h, lentz_c, lentz_d = h[keep], lentz_c[keep], lentz_d[keep]
                if todo.size == 0:
                    break
    out[todo] = h
    return 1.0 / out


def gamma_gamma_loglik(p, q, gamma, x, mean_spend) -> np.ndarray:
    """Per-customer log-likelihood of the Gamma-Gamma spend model.

    Fader, Hardie & Lee (2005), "RFM and CLV: using iso-value curves", derived in Fader &
    Hardie (2013), "The Gamma-Gamma model of monetary value": each purchase is Gamma(p, ν)
    (shape, rate), ν ~ Gamma(q, γ), so the mean z̄ of a customer's x purchases has density ::

        f(z̄ | p, q, γ; x) = Γ(px + q) / (Γ(px) Γ(q)) · γ^q x^(px) z̄^(px − 1) / (γ + x z̄)^(px + q)

    Parameters
    ----------
    p, q, gamma : float
        Shape of a purchase's value; shape and rate of ν (gamma in currency).
    x : array_like
        Repeat purchases (whole numbers ≥ 1: only repeat buyers have a mean spend).
    mean_spend : array_like
        Mean value of those purchases (currency, > 0).

    Returns
    -------
    numpy.ndarray
        One log-likelihood per customer (the log of a density of z̄, per currency unit).

    Raises
    ------
    ValueError
        If a customer has no repeat purchase.
    """
    x, z = _floats(x, mean_spend)
    if np.any(x < 1):
        first = int(np.argmax(np.ravel(x) < 1))
        raise ValueError(
            f"gamma_gamma_loglik needs repeat buyers (x >= 1); x = {np.ravel(x)[first]:g} "
            f"at index {first}"
        )
    px = p * x
    return (
        gammaln(px + q)
        - gammaln(px)
        - gammaln(q)
        + q * np.log(gamma)
        + px * np.log(x)
        + (px - 1) * np.log(z)
        - (px + q) * np.log(gamma + x * z)
    )


# ------------------------------------------------------------------ fitting


def fit_bg_nbd(x, t_x, T) -> Estimate:
    """Maximum-likelihood BG/NBD estimates (Fader, Hardie & Lee 2005, eq. 7).

    Parameters
    ----------
    x, t_x, T : array_like
        One entry per customer: repeat purchases, time of the last purchase and of the end
        of calibration from the first purchase (time units, e.g. weeks).

    Returns
    -------
    Estimate
        ``params`` r, alpha (in the data's time unit), a, b.

    Raises
    ------
    ValueError
        No customers, inconsistent histories, or no repeat purchase at all.
    """
    x, t_x, T = _history(x, t_x, T)
    rows, counts = _aggregate(x, t_x, T)
    rate = x.sum() / max(T.sum(), np.finfo(float).tiny)
    starts = [
        (r, r / rate, a, b) for r in (0.5, 2.0) for a, b in ((1.0, 1.0), (0.5, 4.0))
    ]  # Gamma(r, α) with the mean rate of the data; drop-outs likely and unlikely

    def negll(theta: np.ndarray) -> float:
        return -float(counts @ bg_nbd_loglik(*np.exp(theta), *rows))

    return _estimate("bg_nbd", ("r", "alpha", "a", "b"), negll, starts, x.size)


def fit_pareto_nbd(x, t_x, T) -> Estimate:
    """Maximum-likelihood Pareto/NBD estimates (Schmittlein, Morrison & Colombo 1987).

    Parameters
    ----------
    x, t_x, T : array_like
        As :func:`fit_bg_nbd` (time units, e.g. weeks).

    Returns
    -------
    Estimate
        ``params`` r, alpha, s, beta (alpha and beta in the data's time unit).

    Raises
    ------
    ValueError
        No customers, inconsistent histories, or no repeat purchase at all.
    """
    x, t_x, T = _history(x, t_x, T)
    rows, counts = _aggregate(x, t_x, T)
    rate = x.sum() / max(T.sum(), np.finfo(float).tiny)
    span = max(float(T.mean()), np.finfo(float).tiny)
    starts = [(r, r / rate, s, s * span) for r in (0.5, 2.0) for s in (0.5, 2.0)]

    def negll(theta: np.ndarray) -> float:
        return -float(counts @ pareto_nbd_loglik(*np.exp(theta), *rows))

    return _estimate("pareto_nbd", ("r", "alpha", "s", "beta"), negll, starts, x.size)


def fit_gamma_gamma(x, mean_spend) -> Estimate:
    """Maximum-likelihood Gamma-Gamma spend estimates (Fader, Hardie & Lee 2005, "RFM and
    CLV"), from the customers with at least one repeat purchase.

    The spends are divided by their mean while fitting (γ scales with the currency, p and q
    do not), so the optimiser sees the same problem in any currency.

    Parameters
    ----------
    x : array_like
        Repeat purchases per customer; customers with ``x = 0`` are ignored.
    mean_spend : array_like
        Mean value of each customer's repeat purchases (currency; > 0 where ``x > 0``).

    Returns
    -------
    Estimate
        ``params`` p, q, gamma (gamma in currency); ``n`` the repeat buyers used.

    Raises
    ------
    ValueError
        No repeat buyers, or a repeat buyer whose mean spend is not a positive number.
    """
    x, z = _spend_history(x, mean_spend)
    scale = float(z.mean())
    rows, counts = _aggregate(x, z / scale)
    starts = [(p, q, (q - 1.0) / p) for p, q in ((1.0, 2.0), (4.0, 4.0), (10.0, 10.0))]

    def negll(theta: np.ndarray) -> float:
        return -float(counts @ gamma_gamma_loglik(*np.exp(theta), *rows))

    fitted = _estimate("gamma_gamma", ("p", "q", "gamma"), negll, starts, x.size)
    params = dict(fitted.params, gamma=fitted.params["gamma"] * scale)
    se = dict(fitted.se, gamma=fitted.se["gamma"] * scale)
    loglik = float(np.sum(gamma_gamma_loglik(*params.values(), x, z)))
    return Estimate(fitted.model, params, loglik, se, fitted.n, fitted.converged)


# ------------------------------------------------------------------ data checks


def _floats(*arrays) -> tuple[np.ndarray, ...]:
    return tuple(np.asarray(a, dtype=float) for a in arrays)


def _history(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check customers' (x, t_x, T) and return them as 1-d float arrays."""
    x, t_x, T = (np.ravel(v) for v in _floats(x, t_x, T))
    if not x.size == t_x.size == T.size:
        raise ValueError(
            f"x, t_x and T must have one entry per customer; got {x.size}, {t_x.size}, {T.size}"
        )
    if x.size == 0:
        raise ValueError("no customers: x, t_x and T are empty")
    _check(np.isfinite(x) & np.isfinite(t_x) & np.isfinite(T), "x, t_x and T must be finite")
    _check((x >= 0) & (x == np.round(x)), "x (repeat purchases) must be a whole number >= 0")
    _check((t_x >= 0) & (t_x <= T), "t_x must lie in [0, T] (time of the last purchase)")
    _check((x > 0) | (t_x == 0), "t_x must be 0 for a customer without repeat purchases")
    if not np.any(x > 0):
        raise ValueError("no customer made a repeat purchase: the purchase rate cannot be fitted")
    return x, t_x, T


def _spend_history(x, mean_spend) -> tuple[np.ndarray, np.ndarray]:
    """The repeat buyers' x and mean spend, checked."""
    x, z = (np.ravel(v) for v in _floats(x, mean_spend))
    if x.size != z.size:
        raise ValueError(
            f"x and mean_spend must have one entry per customer; got {x.size} and {z.size}"
        )
    _check(np.isfinite(x) & (x >= 0) & (x == np.round(x)), "x must be a whole number >= 0")
    buyers = x > 0
    if not np.any(buyers):
        raise ValueError("no repeat buyers (x > 0): the Gamma-Gamma model cannot be fitted")
    _check(
        ~buyers | (np.isfinite(z) & (z > 0)),
        "mean_spend must be a positive amount for customers with x > 0",
    )
    return x[buyers], z[buyers]


def _check(ok: np.ndarray, message: str) -> None:
    if not np.all(ok):
        bad = np.flatnonzero(~ok)
        raise ValueError(f"{message}; {bad.size} customer(s) fail, the first at index {bad[0]}")


def _aggregate(*columns: np.ndarray) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """Identical customers once, with their counts (the likelihood's weights)."""
    rows, counts = np.unique(np.column_stack(columns), axis=0, return_counts=True)
    return tuple(rows.T), counts.astype(float)


# ------------------------------------------------------------------ the optimiser


def _estimate(
    model: str,
    names: Sequence[str],
    negll: Callable[[np.ndarray], float],
    starts: Sequence[Sequence[float]],
    n: int,
) -> Estimate:
    """Minimise ``negll`` over log-parameters and package the result."""
    theta = _best_start(negll, np.log(np.asarray(starts, dtype=float)))
    theta = _newton_polish(negll, theta)
    hess = hessian(negll, theta)
    gradient = _gradient(negll, theta)
    cov = inverse(hess)
    params = np.exp(theta)
    se = params * np.sqrt(np.diag(cov))  # delta method: d θ / d log θ = θ
    decrement = float(gradient @ cov @ gradient) if np.all(np.isfinite(cov)) else np.inf
    interior = bool(np.all(np.abs(theta) < LOG_BOUND - 1e-6))
    return Estimate(
        model=model,
        params={k: float(v) for k, v in zip(names, params, strict=True)},
        loglik=-negll(theta),
        se={k: float(v) for k, v in zip(names, se, strict=True)},
        n=int(n),
        converged=interior and decrement < 1e-8,
    )


def _best_start(negll: Callable[[np.ndarray], float], starts: np.ndarray) -> np.ndarray:
    """L-BFGS-B from each starting point (log-parameters); the lowest minimum."""
    bounds = [(-LOG_BOUND, LOG_BOUND)] * starts.shape[1]
    best, best_value = starts[0], np.inf
    for start in starts:
        result = minimize(
            _finite(negll),
            start,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": 1e-13, "gtol": 1e-7, "maxiter": 2000},
        )
        if result.fun < best_value:
            best, best_value = result.x, float(result.fun)
    return best


def _finite(negll: Callable[[np.ndarray], float]) -> Callable[[np.ndarray], float]:
    """``negll`` with NaN or overflow (parameters far out of range) mapped to a huge value."""

    def wrapped(theta: np.ndarray) -> float:
        value = negll(theta)
        return value if np.isfinite(value) else 1e300

    return wrapped


def _newton_polish(
    negll: Callable[[np.ndarray], float], theta: np.ndarray, *, steps: int = 6
) -> np.ndarray:
    """Newton steps on the finite-difference Hessian, halved until the fit improves."""
    value = negll(theta)
    for _ in range(steps):
        gradient = _gradient(negll, theta)
        cov = inverse(hessian(negll, theta))
        if not np.all(np.isfinite(cov)):
            break
        step = cov @ gradient
        if gradient @ step < 1e-14:  # the Newton decrement: nothing left to gain
            break
        for shrink in 0.5 ** np.arange(12):
            trial = np.clip(theta - shrink * step, -LOG_BOUND, LOG_BOUND)
            trial_value = negll(trial)
            if trial_value <= value:
                break
        else:
            break
        theta, value = trial, trial_value
    return theta


def _gradient(f: Callable[[np.ndarray], float], theta: np.ndarray) -> np.ndarray:
    """Central differences (log-parameter space)."""
    h = _STEP / 10
    eye = np.eye(theta.size) * h
    return np.array([(f(theta + e) - f(theta - e)) / (2 * h) for e in eye])


def hessian(f: Callable[[np.ndarray], float], theta: np.ndarray) -> np.ndarray:
    """Central second differences of ``f`` at ``theta`` (steps of 1e-4: log-parameter space)."""
    k, h = theta.size, _STEP
    eye = np.eye(k) * h
    f0 = f(theta)
    hess = np.empty((k, k))
    for i in range(k):
        hess[i, i] = (f(theta + eye[i]) - 2 * f0 + f(theta - eye[i])) / h**2
        for j in range(i):
            hess[i, j] = hess[j, i] = (
                f(theta + eye[i] + eye[j])
                - f(theta + eye[i] - eye[j])
                - f(theta - eye[i] + eye[j])
                + f(theta - eye[i] - eye[j])
            ) / (4 * h**2)
    return hess


def inverse(hessian: np.ndarray) -> np.ndarray:
    """The inverse of a positive-definite Hessian; all NaN if it is singular or indefinite."""
    if not np.all(np.isfinite(hessian)):
        return np.full(hessian.shape, np.nan)
    eigenvalues, vectors = np.linalg.eigh(hessian)
    if eigenvalues[0] <= 1e-10 * max(eigenvalues[-1], 0.0) or eigenvalues[-1] <= 0:
        return np.full(hessian.shape, np.nan)
    return (vectors / eigenvalues) @ vectors.T
