"""Fitting a channel's monthly lead arrivals: Poisson or negative binomial, with a trend and
seasonality when the data support them (SciPy; PyMC only in :func:`add_arrivals`).

The model
---------
A channel's history is its new leads per calendar month, ``counts[m]`` for consecutive
months ``m = 0 .. n-1`` (``m = 0`` the first month of the history, ``n - 1`` the last), the
share ``exposure[m]`` of each month that the history covers (1 for a full month, e.g. 0.5
for a history starting on the 16th of a 30-day month) and the months' labels ``YYYY-MM``.

    counts[m] ~ Poisson(μ[m])   or   NegBin(mean μ[m], size k), variance μ + μ²/k
    μ[m]      = exposure[m] · days[m] / (365.25/12) · λ[m]
    log λ[m]  = level + trend · m + season[calendar month of m]

with 12 season effects summing to zero (``season_1`` January .. ``season_12`` December).

**Units (the one convention).** λ is a rate in *leads per average month of 365.25/12 days*,
exactly the unit of a scenario's ``leads_per_month`` (docs/scenario.md, "Channels": the
daily rate is ``leads_per_month / (365.25/12) × seasonality × (1 + growth)^k``). A calendar
month of ``days[m]`` days therefore expects ``λ[m] · days[m] / (365.25/12)`` leads: 0.92 λ
in a 28-day February, 1.02 λ in a 31-day month. The days factor is part of the exposure
while fitting, so the fit and the scenario describe the same Poisson process: a history
simulated from a scenario is fitted without spurious "seasonality" from short Februaries,
and :func:`scenario_channel` reproduces the fitted mean of every forecast month exactly
(leap years included), with no conversion of the season effects.

Choosing the model (in this order)
----------------------------------
1. **Dispersion**, under the fullest mean allowed (trend, plus seasonality with ≥ 24 full
   months): negative binomial instead of Poisson when the likelihood-ratio test of k is
   significant at 5 %. Poisson is the boundary k = ∞, so the statistic is referred to the
   50:50 mixture of χ²₀ and χ²₁ (Self & Liang 1987): the χ²₁ p-value halved (1 when the
   statistic is 0). Testing with the fullest mean keeps an unmodelled trend or season from
   passing for overdispersion. The dispersion is not revisited after steps 2-3.
2. **Seasonality**, only with at least 24 full months (``exposure == 1``): trend + season
   against trend alone, under the chosen family, χ² with 11 degrees of freedom, 5 %.
3. **Trend**, under the chosen family and seasonality: with against without, χ²₁, 5 %.
   A trend whose estimate diverges (the fit drives some month's rate below 1e-6 leads a
   month where the model without a trend does not: e.g. every lead in the last month) is
   not chosen, whatever its p-value: such data cannot estimate a growth rate.

Seasonal effects may diverge too: a calendar month without any lead in any year gets a
multiplier ≈ 0 (a fitted rate below 1e-6), which is a fair forecast. The information matrix
is then singular (all standard errors NaN), and as the effects sum to zero, that month's
very negative effect lowers ``level`` and raises the other months' multipliers (by about
e^2): each month's λ is right, the split into level and season is not readable.

k is the maximum-likelihood estimate, biased upwards (overdispersion underestimated) when
the mean has many parameters for the months available (about ×1.3 with 14 parameters and
60 months), which also makes the dispersion test conservative there.

Estimation: for a fixed k the log-likelihood is concave in (level, trend, season), and is
maximised by Newton's method with step halving; k is profiled out on log k with
:func:`scipy.optimize.minimize_scalar` (bounded, after a coarse grid). Standard errors come
from the inverse of the analytic observed information (in log k for k, then the delta
method); the season effects' from the 11 free effects (``season_12 = −Σ season_1..11``).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import betaln, gammaln, polygamma, psi
from scipy.stats import chi2

from funnelsim.fit.repeat import inverse

__all__ = [
    "ArrivalFit",
    "add_arrivals",
    "expected_leads",
    "fit_arrivals",
    "posterior_channel",
    "scenario_channel",
]

DAYS_PER_MONTH = 365.25 / 12
"""The scenario's average month (days): λ and ``leads_per_month`` are leads per such month."""

ALPHA = 0.05
"""Significance level of every likelihood-ratio test."""

SEASONAL_MONTHS = 24
"""Full months of history needed before seasonality is considered."""

MIN_RATE = 1e-6
"""A fitted rate (leads a month) below this marks a diverging estimate."""

LOG_K_BOUNDS = (-8.0, 20.0)
"""The search range of log k (k from 3e-4 to 5e8; k = 5e8 is Poisson for any real channel)."""

POISSON, NB = "poisson", "negative_binomial"

_MONTH = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True)
class ArrivalFit:
    """The chosen model of one channel's monthly lead arrivals, by maximum likelihood.

    Attributes
    ----------
    channel : str
        The channel's name.
    family : str
        ``"poisson"`` or ``"negative_binomial"``.
    trend : bool
        Whether a trend (constant monthly growth or decline) was chosen.
    seasonal : bool
        Whether the 12 season effects were chosen.
    params : dict[str, float]
        The chosen model's estimates: ``level`` (log leads per average month of 365.25/12
        days, at the history's first month), ``trend`` (log growth per month), ``season_1``
        .. ``season_12`` (January .. December, log multipliers summing to 0) and ``k`` (the
        negative binomial's size), only those in the model. ``level`` is −inf for a channel
        without any lead.
    se : dict[str, float]
        Standard errors, same keys (NaN where the information matrix is singular).
    loglik : float
        The log-likelihood of the chosen model at the estimates (with all constants).
    months : int
        Calendar months in the history (partial ones included).
    choice : str
        What was chosen and why, in plain words.
    tests : dict[str, float]
        The p-values of the tests that were run: ``overdispersion``, ``seasonality`` (only
        with ≥ 24 full months), ``trend``.
    first_month : str
        The history's first month ``YYYY-MM`` (month index 0).
    """

    channel: str
    family: str
    trend: bool
    seasonal: bool
    params: dict[str, float]
    se: dict[str, float]
    loglik: float
    months: int
    choice: str
    tests: dict[str, float]
    first_month: str

    @property
    def last_month(self) -> str:
        """The history's last month ``YYYY-MM`` (month index ``months − 1``)."""
        return _label(_month_number(self.first_month) + self.months - 1)


def fit_arrivals(
    channel: str,
    counts: Sequence[float] | np.ndarray,
    exposure: Sequence[float] | np.ndarray,
    months: Sequence[str],
) -> ArrivalFit:
    """Fit a channel's monthly lead arrivals and choose its model (see the module's notes).

    Parameters
    ----------
    channel : str
        The channel's name (kept in the result).
    counts : array_like
        New leads in each calendar month of the history (whole numbers ≥ 0).
    exposure : array_like
        The share of each month the history covers, in [0, 1]: 1 for full months, less for a
        partial first or last month (a month with 0 must have no leads).
    months : sequence of str
        The months' labels ``YYYY-MM``, consecutive.

    Returns
    -------
    ArrivalFit

    Raises
    ------
    ValueError
        No months, counts that are negative or not whole, exposures outside [0, 1], labels
        that are malformed or not consecutive, or arrays of different lengths.
    """
    history = _History.of(counts, exposure, months)
    if history.total == 0:
        return _no_leads(channel, history)
    allowed = history.full_months >= SEASONAL_MONTHS
    fits: dict[tuple[str, bool, bool], _Fit] = {}

    def fit(family: str, trend: bool, seasonal: bool) -> _Fit:
        key = (family, trend, seasonal)
        if key not in fits:
            fits[key] = _fit(history, family, trend=trend, seasonal=seasonal)
        return fits[key]

    tests: dict[str, float] = {}
    statistic = 2 * (fit(NB, True, allowed).loglik - fit(POISSON, True, allowed).loglik)
    tests["overdispersion"] = 0.5 * float(chi2.sf(statistic, 1)) if statistic > 1e-9 else 1.0
    family = NB if tests["overdispersion"] < ALPHA else POISSON

    seasonal = False
    if allowed:
        statistic = 2 * (fit(family, True, True).loglik - fit(family, True, False).loglik)
        tests["seasonality"] = float(chi2.sf(max(statistic, 0.0), 11))
        seasonal = tests["seasonality"] < ALPHA

    with_trend, without = fit(family, True, seasonal), fit(family, False, seasonal)
    tests["trend"] = float(chi2.sf(max(2 * (with_trend.loglik - without.loglik), 0.0), 1))
    diverges = with_trend.diverged(history) and not without.diverged(history)
    trend = tests["trend"] < ALPHA and not diverges

    chosen = with_trend if trend else without
    params, se = chosen.named()
    return ArrivalFit(
        channel=channel,
        family=family,
        trend=trend,
        seasonal=seasonal,
        params=params,
        se=se,
        loglik=chosen.loglik,
        months=history.n,
        choice=_choice(family, trend, seasonal, params, tests, history, diverges),
        tests=tests,
        first_month=history.first_month,
    )


def expected_leads(fit: ArrivalFit, months: Sequence[str]) -> np.ndarray:
    """The fitted model's expected leads in each full calendar month ``months`` (``YYYY-MM``,
    inside or beyond the history): ``λ[m] · days[m] / (365.25/12)``."""
    numbers = np.array([_month_number(label) for label in months], dtype=np.int64)
    index = numbers - _month_number(fit.first_month)
    return np.exp(_log_rate(fit, index, numbers % 12 + 1)) * _days(numbers) / DAYS_PER_MONTH


def scenario_channel(fit: ArrivalFit, first_forecast_month: str) -> dict:
    """The scenario's ``channels:`` entry for a forecast whose start month is
    ``first_forecast_month`` (``YYYY-MM``).

    ``leads_per_month`` = exp(level + trend · m) with m the start month's index (leads per
    average month of 365.25/12 days, without the season effect); ``growth_per_month`` =
    exp(trend) − 1 when a trend was chosen; ``seasonality`` = exp(season_1 .. season_12)
    (January .. December, geometric mean 1) when seasonal. The scenario's daily rate
    ``leads_per_month / (365.25/12) × seasonality × (1 + growth)^k`` then gives every
    forecast month exactly the fitted mean :func:`expected_leads` (both count a month's
    days, see the module's notes on units). A channel without leads gets 0 leads a month.
    """
    index = _month_number(first_forecast_month) - _month_number(fit.first_month)
    trend = fit.params.get("trend", 0.0)
    entry: dict = {"leads_per_month": float(np.exp(fit.params["level"] + trend * index))}
    if fit.seasonal:
        entry["seasonality"] = [float(np.exp(fit.params[f"season_{c}"])) for c in range(1, 13)]
    if fit.trend:
        entry["growth_per_month"] = float(np.expm1(trend))
    return entry


def posterior_channel(fit: ArrivalFit, draws: Mapping[str, Any], first_forecast_month: str):
    """The scenario channel's fields for each posterior draw of :func:`add_arrivals`'
    variables, as :func:`scenario_channel` gives them for the estimates.

    ``draws`` maps the variables' names without the prefix (``level``, ``trend``,
    ``season`` with January .. December on its last axis, ``k``) to arrays of draws (NumPy
    or xarray). Returns ``leads_per_month``, ``growth_per_month`` (with a trend),
    ``season_1`` .. ``season_12`` (multipliers, when seasonal) and ``k`` (negative
    binomial), each with the draws' shape (the season's last axis dropped).
    """
    index = _month_number(first_forecast_month) - _month_number(fit.first_month)
    trend = draws["trend"] if fit.trend else 0.0
    out = {"leads_per_month": np.exp(draws["level"] + trend * index)}
    if fit.trend:
        out["growth_per_month"] = np.expm1(trend)
    if fit.seasonal:
        for c in range(12):
            out[f"season_{c + 1}"] = np.exp(draws["season"][..., c])
    if fit.family == NB:
        out["k"] = draws["k"]
    return out


def add_arrivals(
    fit: ArrivalFit,
    counts: Sequence[float] | np.ndarray,
    exposure: Sequence[float] | np.ndarray,
    months: Sequence[str],
    *,
    name_prefix: str,
) -> list[str]:
    """Add the chosen arrival model of ``fit`` to the PyMC model being built (call inside a
    ``with pm.Model():`` block), for sampling it jointly with other parameters.

    Variables (the prefix followed by):

    * ``level`` ~ Normal(log(mean monthly count), 3): the mean count per average month of
      the history (0.5 leads in total if it has none), on the log scale;
    * ``trend`` ~ Normal(0, 0.2) (log growth per month; ±0.4 covers −33 % .. +49 % a
      month), only with a trend;
    * ``season`` ~ ZeroSumNormal(0.5), 12 effects January .. December: independent
      Normal(0, 0.5) conditioned on summing to 0 (11 free), only when seasonal;
    * ``k`` ~ LogNormal(log 10, 2), the negative binomial's size, only for that family;
    * ``leads``: the observed counts (months with exposure 0 left out), Poisson or negative
      binomial with mean ``exposure · days / (365.25/12) · λ``, the likelihood.

    The fit's estimates are the variables' initial values. Returns the names of the
    parameters (not of the observed ``leads``).

    Raises
    ------
    ValueError
        The history is invalid (as :func:`fit_arrivals`) or is not the one ``fit`` was fitted
        to (another first month or number of months).
    """
    import pymc as pm  # here, not at the top: the maximum-likelihood fit needs no PyMC
    import pytensor.tensor as pt

    history = _History.of(counts, exposure, months)
    if history.first_month != fit.first_month or history.n != fit.months:
        raise ValueError(
            f"channel {fit.channel!r} was fitted to {fit.months} months from "
            f"{fit.first_month}; got {history.n} months from {history.first_month}"
        )
    keep = history.offset > -np.inf
    offset, index = history.offset[keep], history.index[keep]
    season_of = history.calendar_month[keep] - 1

    def start(name: str) -> dict:
        value = fit.params.get(name, np.nan)
        return {"initval": value} if np.isfinite(value) else {}

    names = [f"{name_prefix}level"]
    mean = max(history.total, 0.5) / float(np.exp(offset).sum())
    eta = pm.Normal(names[0], mu=np.log(mean), sigma=3.0, **start("level")) + offset
    if fit.trend:
        names.append(f"{name_prefix}trend")
        eta = eta + pm.Normal(names[-1], mu=0.0, sigma=0.2, **start("trend")) * index
    if fit.seasonal:
        names.append(f"{name_prefix}season")
        initial = np.array([fit.params[f"season_{c}"] for c in range(1, 13)])
        kwargs = {"initval": initial - initial.mean()} if np.all(np.isfinite(initial)) else {}
        season = pm.ZeroSumNormal(names[-1], sigma=0.5, shape=12, **kwargs)
        eta = eta + season[season_of]
    observed = history.counts[keep].astype(np.int64)
    if fit.family == NB:
        names.append(f"{name_prefix}k")
        k = pm.LogNormal(names[-1], mu=np.log(10.0), sigma=2.0, **start("k"))
        pm.NegativeBinomial(f"{name_prefix}leads", mu=pt.exp(eta), alpha=k, observed=observed)
    else:
        pm.Poisson(f"{name_prefix}leads", mu=pt.exp(eta), observed=observed)
    return names


# ------------------------------------------------------------------ the history


def _month_number(label: str) -> int:
    """``YYYY-MM`` as a count of months since year 0 (January = 0 mod 12)."""
    match = _MONTH.fullmatch(str(label))
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise ValueError(f"month {label!r} is not of the form YYYY-MM (e.g. 2027-03)")
    return int(match.group(1)) * 12 + int(match.group(2)) - 1


def _label(number: int) -> str:
    year, month = divmod(int(number), 12)
    return f"{year:04d}-{month + 1:02d}"


def _days(numbers: np.ndarray) -> np.ndarray:
    """Days in each month (numbers from :func:`_month_number`)."""
    return np.array([calendar.monthrange(n // 12, n % 12 + 1)[1] for n in numbers], dtype=float)


@dataclass(frozen=True)
class _History:
    """A checked history: counts, log exposure in average months (−inf for an empty month),
    month index and calendar month (1..12)."""

    counts: np.ndarray
    offset: np.ndarray
    index: np.ndarray
    calendar_month: np.ndarray
    full_months: int
    first_month: str

    @property
    def n(self) -> int:
        return int(self.counts.size)

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    @classmethod
    def of(cls, counts, exposure, months) -> _History:
        counts = np.ravel(np.asarray(counts, dtype=float))
        exposure = np.ravel(np.asarray(exposure, dtype=float))
        labels = [months] if isinstance(months, str) else list(months)
        if not counts.size == exposure.size == len(labels):
            raise ValueError(
                "counts, exposure and months must have one entry per month; got "
                f"{counts.size}, {exposure.size} and {len(labels)}"
            )
        if counts.size == 0:
            raise ValueError("no months: counts, exposure and months are empty")
        _check(np.isfinite(counts) & (counts >= 0), "counts must be >= 0 (new leads a month)")
        _check(counts == np.round(counts), "counts must be whole numbers of leads")
        _check(np.isfinite(exposure) & (exposure >= 0) & (exposure <= 1), "exposure in [0, 1]")
        _check((exposure > 0) | (counts == 0), "a month with exposure 0 must have no leads")
        numbers = np.array([_month_number(label) for label in labels], dtype=np.int64)
        _check(np.diff(numbers, prepend=numbers[0] - 1) == 1, "months must be consecutive")
        with np.errstate(divide="ignore"):
            offset = np.log(exposure * _days(numbers) / DAYS_PER_MONTH)
        return cls(
            counts=counts,
            offset=offset,
            index=np.arange(counts.size, dtype=float),
            calendar_month=numbers % 12 + 1,
            full_months=int(np.sum(exposure >= 1 - 1e-9)),
            first_month=_label(numbers[0]),
        )

    def design(self, *, trend: bool, seasonal: bool) -> np.ndarray:
        """Columns: level, trend (month index), 11 season contrasts (month c: +1 in c, −1 in
        December), for the months with exposure > 0."""
        columns = [np.ones(self.n)]
        if trend:
            columns.append(self.index)
        if seasonal:
            for c in range(1, 12):
                columns.append((self.calendar_month == c) * 1.0 - (self.calendar_month == 12) * 1.0)
        keep = self.offset > -np.inf
        return np.column_stack(columns)[keep].astype(float)


def _check(ok: np.ndarray, message: str) -> None:
    if not np.all(ok):
        bad = np.flatnonzero(~ok)
        raise ValueError(f"{message}; {bad.size} month(s) fail, the first at index {bad[0]}")


# ------------------------------------------------------------------ the likelihood


def _loglik(y: np.ndarray, eta: np.ndarray, k: float | None) -> float:
    """Total log-likelihood of counts ``y`` with log means ``eta`` (Poisson when k is None).

    The negative binomial is written to stay accurate for large k:
    log Γ(y + k) − log Γ(k) = log Γ(y) − log B(k, y) (y > 0)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if k is None:
            value = np.sum(y * eta - np.exp(eta) - gammaln(y + 1))
        else:
            log_k = np.log(k)
            ratio = np.where(y > 0, gammaln(np.maximum(y, 1)) - betaln(k, np.maximum(y, 1)), 0)
            value = np.sum(
                ratio
                - gammaln(y + 1)
                - k * np.log1p(np.exp(eta - log_k))
                + y * (eta - np.logaddexp(log_k, eta))
            )
    return float(value) if np.isfinite(value) else -np.inf


def _score_info(y, eta, X, k: float | None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient of the log-likelihood in the mean parameters, and minus its Hessian."""
    mu = np.exp(eta)
    if k is None:
        return X.T @ (y - mu), (X * mu[:, None]).T @ X
    score = k * (y - mu) / (k + mu)
    weight = k * mu * (k + y) / (k + mu) ** 2
    return X.T @ score, (X * weight[:, None]).T @ X


def _solve(info: np.ndarray, score: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.solve(info, score)
    except np.linalg.LinAlgError:
        return np.linalg.lstsq(info, score, rcond=None)[0]


def _newton(y, offset, X, beta, k: float | None) -> tuple[np.ndarray, float]:
    """Maximise the (concave) log-likelihood in the mean parameters for a fixed k."""
    value = _loglik(y, offset + X @ beta, k)
    for _ in range(200):
        score, info = _score_info(y, offset + X @ beta, X, k)
        step = _solve(info, score)
        if not np.all(np.isfinite(step)) or score @ step < 1e-10:  # the Newton decrement
            break
        for shrink in 0.5 ** np.arange(40):
            trial = beta + shrink * step
            trial_value = _loglik(y, offset + X @ trial, k)
            if trial_value >= value:
                break
        else:
            break
        gain = trial_value - value
        beta, value = trial, trial_value
        if gain < 1e-12:
            break
    return beta, value


@dataclass(frozen=True)
class _Fit:
    """One candidate model's maximum-likelihood estimate."""

    beta: np.ndarray
    log_k: float | None
    loglik: float
    cov: np.ndarray  # of (beta, log k)
    trend: bool
    seasonal: bool
    eta: np.ndarray  # fitted log means of the months with exposure > 0

    def diverged(self, history: _History) -> bool:
        """Some month's fitted rate (leads per average month) is below MIN_RATE."""
        keep = history.offset > -np.inf
        return bool(np.any(self.eta - history.offset[keep] < np.log(MIN_RATE)))

    def named(self) -> tuple[dict[str, float], dict[str, float]]:
        """Estimates and standard errors by name (season_12 = −Σ season_1..11)."""
        size = self.beta.size
        # rows: the reported parameters as linear combinations of (beta, log k)
        rows, names = [np.eye(size + 1)[0]], ["level"]
        if self.trend:
            rows.append(np.eye(size + 1)[1])
            names.append("trend")
        if self.seasonal:
            first = 2 if self.trend else 1
            for c in range(11):
                rows.append(np.eye(size + 1)[first + c])
            rows.append(-np.sum(rows[-11:], axis=0))
            names += [f"season_{c}" for c in range(1, 13)]
        A = np.array(rows)[:, : size + (self.log_k is not None)]
        cov = self.cov
        values = A @ self.beta_all
        se = np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", A, cov, A), 0.0))
        params = {n: float(v) for n, v in zip(names, values, strict=True)}
        errors = {n: float(s) for n, s in zip(names, se, strict=True)}
        if self.log_k is not None:
            k = float(np.exp(self.log_k))
            params["k"] = k
            errors["k"] = float(k * np.sqrt(max(cov[-1, -1], 0.0)))
        return params, errors

    @property
    def beta_all(self) -> np.ndarray:
        return self.beta if self.log_k is None else np.append(self.beta, self.log_k)


def _fit(history: _History, family: str, *, trend: bool, seasonal: bool) -> _Fit:
    """The maximum-likelihood estimate of one candidate model."""
    keep = history.offset > -np.inf
    y, offset = history.counts[keep], history.offset[keep]
    X = history.design(trend=trend, seasonal=seasonal)
    beta = np.zeros(X.shape[1])
    beta[0] = np.log(max(history.total, 0.5) / np.exp(offset).sum())
    beta, value = _newton(y, offset, X, beta, None)
    log_k = None
    if family == NB:
        start = beta

        def profile(log_k: float) -> float:
            return -_newton(y, offset, X, start, float(np.exp(log_k)))[1]

        grid = np.arange(LOG_K_BOUNDS[0], LOG_K_BOUNDS[1] + 1e-9, 2.0)
        best = int(np.argmin([profile(g) for g in grid]))
        bounds = (grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)])
        result = minimize_scalar(profile, bounds=bounds, method="bounded", options={"xatol": 1e-7})
        log_k = float(result.x) if result.fun <= profile(grid[best]) else float(grid[best])
        beta, value = _newton(y, offset, X, start, float(np.exp(log_k)))
    eta = offset + X @ beta
    return _Fit(
        beta=beta,
        log_k=log_k,
        loglik=value,
        cov=inverse(_information(y, eta, X, log_k)),
        trend=trend,
        seasonal=seasonal,
        eta=eta,
    )


def _information(y, eta, X, log_k: float | None) -> np.ndarray:
    """Minus the Hessian of the log-likelihood in (beta, log k) (analytic)."""
    _, info = _score_info(y, eta, X, None if log_k is None else float(np.exp(log_k)))
    if log_k is None:
        return info
    k, mu = float(np.exp(log_k)), np.exp(eta)
    d_k = psi(y + k) - psi(k) - np.log1p(mu / k) + (mu - y) / (k + mu)
    d_kk = polygamma(1, y + k) - polygamma(1, k) + 1 / k - 1 / (k + mu) + (y - mu) / (k + mu) ** 2
    cross = -X.T @ (k * (y - mu) * mu / (k + mu) ** 2)
    corner = -float(np.sum(k * k * d_kk + k * d_k))
    return np.block([[info, cross[:, None]], [cross[None, :], np.array([[corner]])]])


def _log_rate(fit: ArrivalFit, index: np.ndarray, calendar_month: np.ndarray) -> np.ndarray:
    """log λ (leads per average month) at month indices with their calendar months."""
    log_rate = fit.params["level"] + fit.params.get("trend", 0.0) * index
    if fit.seasonal:
        season = np.array([fit.params[f"season_{c}"] for c in range(1, 13)])
        log_rate = log_rate + season[np.asarray(calendar_month) - 1]
    return log_rate


# ------------------------------------------------------------------ saying what was chosen


def _p(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _months(n: int, adjective: str = "") -> str:
    return f"{n} {adjective}month{'' if n == 1 else 's'}"


def _choice(family, trend, seasonal, params, tests, history, diverges) -> str:
    if family == NB:
        parts = [f"Negative binomial (overdispersed, {_p(tests['overdispersion'])})"]
    else:
        parts = [f"Poisson (no overdispersion, {_p(tests['overdispersion'])})"]
    if trend:
        growth = float(np.expm1(params["trend"]))
        word = "growth" if growth >= 0 else "decline"
        parts.append(f"{word} {abs(growth):.1%} a month ({_p(tests['trend'])})")
    elif diverges:
        parts.append("no trend: too few leads to estimate one")
    else:
        parts.append(f"no trend ({_p(tests['trend'])})")
    if seasonal:
        multiplier = np.exp([params[f"season_{c}"] for c in range(1, 13)])
        multiplier = multiplier / multiplier.mean()  # against the average calendar month
        low, high = int(np.argmin(multiplier)), int(np.argmax(multiplier))
        parts.append(
            f"seasonal ({_p(tests['seasonality'])}), from ×{multiplier[low]:.2f} of the "
            f"average month in {calendar.month_name[low + 1]} to ×{multiplier[high]:.2f} in "
            f"{calendar.month_name[high + 1]}"
        )
    elif "seasonality" in tests:
        parts.append(f"no seasonality ({_p(tests['seasonality'])})")
    else:
        parts.append(
            f"no seasonality: only {_months(history.full_months, 'full ')} of history "
            f"({SEASONAL_MONTHS} needed)"
        )
    return "; ".join(parts) + "."


def _no_leads(channel: str, history: _History) -> ArrivalFit:
    """A channel without a single lead: a rate of 0 (level = −inf), nothing to test."""
    return ArrivalFit(
        channel=channel,
        family=POISSON,
        trend=False,
        seasonal=False,
        params={"level": -np.inf},
        se={"level": np.nan},
        loglik=0.0,
        months=history.n,
        choice=f"No leads in {_months(history.n)} of history: a rate of 0 leads a month (Poisson).",
        tests={},
        first_month=history.first_month,
    )
