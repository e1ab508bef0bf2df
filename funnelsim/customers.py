"""Repeat sales: what customers do after their first purchase, vectorized per cohort.

Every won deal becomes a customer, and so does each existing customer; each draws its own
purchase rate and dropout (or churn) from the population's distribution and buys again in
simulated time. The models:

* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): while
  alive a customer buys at rate λ ~ Gamma(r, α) (shape r, rate α, per time unit); after
  each repeat purchase it drops out with probability p ~ Beta(a, b).
* **Pareto/NBD** (Schmittlein, Morrison & Colombo 1987): purchases at rate λ ~ Gamma(r, α);
  lifetime exponential with rate μ ~ Gamma(s, β).
* **Gamma-Gamma spend** (Fader, Hardie & Lee 2005, "RFM and CLV"): a customer's purchases are
  Gamma(p, ν) with ν ~ Gamma(q, γ); or any distribution, each purchase drawn afresh.
* **Subscriptions**, shifted-beta-geometric (Fader & Hardie 2007, "How to project customer
  retention"): churn probability θ ~ Beta(α, β) (or fixed) per billing period; a customer
  renews at each anniversary of its close date with probability 1 − θ.

Existing customers from a file are simulated conditional on their own history: alive with
the model's probability P(alive | x, t_x, T), and then with the posterior λ ~ Gamma(r + x,
α + T), p ~ Beta(a, b + x) (BG/NBD) or μ ~ Gamma(s, β + T) (Pareto/NBD: given alive at T,
the likelihood of λ and μ is λ^x e^(−λT) · e^(−μT), so both posteriors are Gamma and
independent) and, given their mean spend, ν ~ Gamma(q + p·x, γ + x·z̄).

New customers are simulated here with NumPy, vectorized per cohort, from each customer's own
key (so a customer keeps its draws when other parts of a scenario change). Existing BG/NBD
and Pareto/NBD customers, who can number tens of thousands in every replication, are walked
customer by customer by the compiled kernel ``funnelsim/_cohort.c`` (the same model, drawn
from one NumPy generator per replication with NumPy's own samplers); existing subscribers
with NumPy.

The module also holds the closed forms used as test oracles and for the lifetime value.
It knows nothing of which engine made the customers.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

import numpy as np

from funnelsim import streams
from funnelsim.distributions import poisson_from_uniform, standard_gamma
from funnelsim.scenario import (
    BGNBD,
    DAYS_PER_UNIT,
    POSTERIOR_PARAMETERS,
    BetaChurn,
    GammaGammaSpend,
    ParetoNBD,
    Subscription,
)

REPEAT = 8  # purpose of the random streams (see streams.py)
_LAMBDA, _DROPOUT, _SPEND, _GAP, _DIE, _VALUE, _ALIVE, _CHURN = range(8)
_COUNT, _TIME, _SPACING, _REST = range(8, 12)
BILLING_DAYS = {"week": 7.0, "month": 365.25 / 12, "year": 365.25}


# ------------------------------------------------------------------ random draws


class _Keyed:
    """Draws that belong to customers: from each customer's key (new customers, so that a
    customer keeps its draws when other parts of a scenario change)."""

    def __init__(self, keys: np.ndarray):
        self.keys = keys

    def gamma(self, shape, purpose: int, index=None) -> np.ndarray:
        return standard_gamma(shape, self.keys_for(purpose, index))

    def uniform(self, purpose: int, index=None, step: int = 0) -> np.ndarray:
        keys = self.keys if index is None else self.keys[index]
        return streams.uniform(keys, streams.salt(REPEAT, purpose, step))

    def poisson(self, mean: np.ndarray, purpose: int, index) -> np.ndarray:
        return poisson_from_uniform(self.uniform(purpose, index), mean)

    def per_purchase(self, purpose: int, customer: np.ndarray, number: np.ndarray) -> np.ndarray:
        """One uniform per purchase, from the customer's key and the purchase's number."""
        return streams.to_unit(streams.indexed(self.keys_for(purpose, customer), number))

    def exponential_per_purchase(self, purpose: int, customer, number) -> np.ndarray:
        return -np.log(self.per_purchase(purpose, customer, number))

    def beta(self, a, b, purpose: int, index=None) -> np.ndarray:
        g = self.gamma(a, purpose, index)
        return g / (g + self.gamma(b, purpose + 100, index))

    def spend_gamma(self, shape: float, customer: np.ndarray, number: np.ndarray) -> np.ndarray:
        return standard_gamma(shape, self.purchase_keys(customer, number))

    def purchase_keys(self, customer: np.ndarray, number: np.ndarray) -> np.ndarray:
        """One key per purchase: the customer's key and the purchase's number."""
        return streams.indexed(self.keys_for(_VALUE, customer), number)

    def keys_for(self, purpose: int, index=None, step: int = 0) -> np.ndarray:
        keys = self.keys if index is None else self.keys[index]
        return streams.derive(keys, streams.salt(REPEAT, purpose, step))


class _Stream:
    """Draws from a NumPy generator: existing subscribers of one replication (their number is
    fixed, so the draws stay paired between scenarios, at a fraction of the cost), and
    synthetic cohorts for tests."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng, self.size = rng, size

    def _n(self, index) -> int:
        return self.size if index is None else int(np.size(index))

    def gamma(self, shape, purpose: int, index=None) -> np.ndarray:
        n = self._n(index)
        if np.ndim(shape) == 0:
            return self.rng.standard_gamma(float(shape), size=n)
        return self.rng.standard_gamma(shape, size=n)

    def uniform(self, purpose: int, index=None, step: int = 0) -> np.ndarray:
        return self.rng.random(self._n(index))

    def poisson(self, mean: np.ndarray, purpose: int, index) -> np.ndarray:
        return self.rng.poisson(mean)

    def per_purchase(self, purpose: int, customer: np.ndarray, number: np.ndarray) -> np.ndarray:
        return self.rng.random(customer.size)

    def exponential_per_purchase(self, purpose: int, customer, number) -> np.ndarray:
        return self.rng.standard_exponential(customer.size)

    def beta(self, a, b, purpose: int, index=None) -> np.ndarray:
        return self.rng.beta(a, b, size=self._n(index))

    def spend_gamma(self, shape: float, customer: np.ndarray, number: np.ndarray) -> np.ndarray:
        return self.rng.standard_gamma(shape, size=customer.size)

    def purchase_keys(self, customer: np.ndarray, number: np.ndarray) -> np.ndarray:
        return streams.keys_from_rng(self.rng, customer.size)

    def keys_for(self, purpose: int, index=None, step: int = 0) -> np.ndarray:
        return streams.keys_from_rng(self.rng, self._n(index))


# ------------------------------------------------------------------ a cohort's life


@dataclass
class Life:
    """What a cohort of customers did within the horizon (times in days from the start)."""

    customer: np.ndarray  # per purchase: the customer's index
    when: np.ndarray  # per purchase: the time
    value: np.ndarray  # per purchase: the value (currency)
    until: np.ndarray  # per customer: when it stopped being active (inf: still active)
    active: np.ndarray  # per customer: active at its start


def simulate_cohort(
    model,
    start: np.ndarray,
    horizon: float,
    draws,
    *,
    history: dict[str, np.ndarray] | None = None,
    origin: date | None = None,
) -> Life:
    """Repeat purchases of customers starting at ``start`` (days) until ``horizon``.

    ``history`` holds each customer's x, t_x and T in days and mean spend.
    Subscribers renew on the anniversaries of ``start``, by the calendar when ``origin``
    (the date of day 0) is given.
    """
    if isinstance(model, Subscription):
        return _subscriptions(model, start, horizon, draws, origin)
    n = start.size
    unit = DAYS_PER_UNIT[model.unit]
    active = np.ones(n, dtype=bool)
    x = t_x = age = None
    if history is not None:
        x = history["x"]
        t_x, age = history["t_x"] / unit, history["T"] / unit
        active = draws.uniform(_ALIVE) < p_alive(model, x, t_x, age)
    shape = model.r if x is None else model.r + x
    rate = model.alpha if age is None else model.alpha + age
    bg_nbd = isinstance(model, BGNBD)
    if bg_nbd:
        b = model.b if x is None else model.b + x
        end = np.full(n, horizon)  # of a customer's purchases in the horizon
        until = np.where(active, np.inf, start)
    else:
        mu = draws.gamma(model.s, _DROPOUT) / (model.beta if age is None else model.beta + age)
        mu /= unit
        lifetime = start - np.log(draws.uniform(_DIE)) / mu
        end = np.minimum(horizon, lifetime)
        until = np.where(active, lifetime, start)

    # The first repeat purchase, from its marginal distribution: with λ ~ Gamma(shape, rate)
    # the first of a Poisson process's events comes after a Lomax time, P(T₁ > t) =
    # (rate / (rate + t))^shape; and given T₁, λ ~ Gamma(shape + 1, rate + T₁). So λ (and
    # the dropout and spend) are drawn only for the customers who buy in the horizon.
    current = np.flatnonzero(active)
    rate_c = rate if np.ndim(rate) == 0 else rate[current]
    shape_c = shape if np.ndim(shape) == 0 else shape[current]
    wait = np.log(draws.uniform(_GAP, current))
    wait /= -shape_c
    np.expm1(wait, out=wait)
    wait *= rate_c  # in units
    first = wait * unit
    first += start[current]
    pick = np.flatnonzero(first < end[current])
    buyers, first, wait = current[pick], first[pick], wait[pick]  # from here: per buyer
    lam = draws.gamma(shape + 1 if np.ndim(shape) == 0 else shape[buyers] + 1, _LAMBDA, buyers)
    lam /= ((rate if np.ndim(rate) == 0 else rate[buyers]) + wait) * unit  # per day
    nu = None
    if isinstance(model.spend, GammaGammaSpend):
        sp = model.spend
        q_shape, q_rate = np.full(buyers.size, sp.q), np.full(buyers.size, sp.gamma)
        if history is not None:
            xs, spend = history["x"][buyers], history["spend"][buyers]
            known = ~np.isnan(spend) & (xs > 0)
            q_shape[known] += sp.p * xs[known]
            q_rate[known] += xs[known] * spend[known]
        nu = draws.gamma(q_shape, _SPEND, buyers) / q_rate
    if bg_nbd:  # J: the repeat purchase after which the customer drops out
        last = _last_purchase(model.a, b if x is None else b[buyers], draws, buyers)
        stops = last == 1
        until[buyers[stops]] = first[stops]
        going = np.flatnonzero(~stops)
        allowed = last[going] - 1
    else:
        going = np.arange(buyers.size)
        allowed = np.inf  # no dropout at purchases

    # Later purchases. Given λ, those after the first form a Poisson process on (first, end):
    # N ~ Poisson(λ · (end − first)) of them, at independent uniform times (in no order).
    # A BG/NBD customer stops after its J-th purchase: when N ≥ m = J − 1 it makes only the
    # first m, in time order: the m smallest of N uniforms, drawn without the others by
    # Rényi's representation U_(k) = S_k / (S_m + G), S_k a sum of k Exp(1) spacings and
    # G ~ Gamma(N − m + 1); it stops at the m-th.
    t_now, who_c = first[going], buyers[going]
    window = end[who_c] - t_now
    n_more = draws.poisson(lam[going] * window, _COUNT, who_c)
    cut = n_more >= allowed
    made = np.where(cut, allowed, n_more).astype(np.int64)
    who = np.repeat(np.arange(going.size), made)  # each later purchase's customer, in order
    number = np.arange(who.size) - np.repeat(np.cumsum(made) - made, made) + 1
    buyer = going[who]
    fraction = np.empty(who.size)  # of the window
    if cut.any():
        rows = cut[who]
        free = ~rows
        fraction[free] = draws.per_purchase(_TIME, buyers[buyer[free]], number[free])
        m = made[cut]
        spacing = draws.exponential_per_purchase(_SPACING, buyers[buyer[rows]], number[rows])
        np.cumsum(spacing, out=spacing)
        before = np.concatenate(([0.0], spacing))[np.cumsum(m) - m]  # sums of earlier customers
        spacing -= np.repeat(before, m)
        last_sum = spacing[np.cumsum(m) - 1]
        total = last_sum + draws.gamma(n_more[cut] - m + 1.0, _REST, who_c[cut])
        fraction[rows] = spacing / np.repeat(total, m)
        until[who_c[cut]] = t_now[cut] + window[cut] * (last_sum / total)
    else:
        fraction[:] = draws.per_purchase(_TIME, buyers[buyer], number)
    fraction *= window[who]
    fraction += t_now[who]
    customer = np.concatenate((buyers, buyers[buyer]))
    when = np.concatenate((first, fraction))
    number = np.concatenate((np.zeros(buyers.size, dtype=np.uint64), number.astype(np.uint64)))
    if nu is not None:
        nu = np.concatenate((nu, nu[buyer]))  # per purchase
    value = _spend(model.spend, customer, number, nu, draws)
    return Life(customer, when, value, until, active)


def _last_purchase(a: float, b, draws, index: np.ndarray) -> np.ndarray:
    """J, the repeat purchase after which each customer drops out: with p ~ Beta(a, b) and
    a dropout chance p after every purchase, P(J > j) = B(a, b + j) / B(a, b) (the
    beta-geometric). With one b for all it is drawn by inverting that survival function,
    tabulated up to _TABLE purchases; beyond the table (and with one b per customer) from
    p ~ Beta(a, b + k) given J > k and a geometric count. Infinite when p is 0."""
    u = draws.uniform(_DIE, index)
    k, beyond = 0, 1.0  # purchases tabulated; P(J > k)
    j = np.ones(u.size)
    if np.ndim(b) == 0:
        survival = _beta_geometric_survival(float(a), float(b))
        k, beyond = _TABLE, float(survival[-1])
        j += np.searchsorted(-survival, -u, side="right")
    tail = np.flatnonzero(j > k)
    if tail.size:
        b_tail = b + k if np.ndim(b) == 0 else b[tail] + k
        p = draws.beta(a, b_tail, _DROPOUT, index[tail])
        with np.errstate(divide="ignore", over="ignore"):  # p → 0: never drops out
            j[tail] = k + 1 + np.floor(np.log(u[tail] / beyond) / np.log1p(-p))
    return j


_TABLE = 1024


@functools.lru_cache(maxsize=256)
def _beta_geometric_survival(a: float, b: float) -> np.ndarray:
    """P(J > j) = B(a, b + j) / B(a, b) = Π_{i < j} (b + i) / (a + b + i) for j = 1 ..
    _TABLE (decreasing)."""
    i = np.arange(_TABLE, dtype=float)
    return np.cumprod((b + i) / (a + b + i))


def _spend(spend, customer: np.ndarray, number: np.ndarray, nu, draws) -> np.ndarray:
    """The value of each purchase (the customer's ``number``-th repeat purchase); ``nu``:
    the Gamma-Gamma rate of each purchase's customer."""
    if customer.size == 0:
        return np.zeros(0)
    if isinstance(spend, GammaGammaSpend):
        value = draws.spend_gamma(spend.p, customer, number)
        value /= nu
        return value
    return spend.draw(draws.purchase_keys(customer, number))


def _subscriptions(model: Subscription, start, horizon: float, draws, origin) -> Life:
    n = start.size
    if isinstance(model.churn, BetaChurn):
        theta = draws.beta(*model.churn.beta, _CHURN)
    else:
        theta = np.full(n, float(model.churn))
    u = draws.uniform(_DIE)
    with np.errstate(divide="ignore", invalid="ignore"):
        renewals = np.where(
            theta >= 1, 0, np.where(theta <= 0, np.inf, np.floor(np.log(u) / np.log1p(-theta)))
        )
    # renewals on the anniversaries k = 1..K within the horizon
    fits = np.floor((horizon - start) / BILLING_DAYS[model.billing]) + 1
    for _ in range(3):  # average periods: a day or two off the calendar's at most
        fits = np.where(renewal_day(model.billing, start, fits, origin) >= horizon, fits - 1, fits)
    paid = np.minimum(renewals, np.maximum(fits, 0)).astype(np.int64)
    customer = np.repeat(np.arange(n), paid)
    k = np.arange(customer.size) - np.repeat(np.cumsum(paid) - paid, paid) + 1
    when = renewal_day(model.billing, start[customer], k, origin)
    value = np.full(customer.size, float(model.price))
    until = np.full(n, np.inf)  # churns at the first anniversary not renewed
    ends = np.isfinite(renewals)
    until[ends] = renewal_day(model.billing, start[ends], renewals[ends] + 1, origin)
    return Life(customer, when, value, until, np.ones(n, dtype=bool))


def renewal_day(billing: str, start: np.ndarray, k: np.ndarray, origin) -> np.ndarray:
    """The k-th anniversary (days from the start date) of subscriptions begun at ``start``:
    every 7 days for weekly billing; for monthly and yearly billing the same day of the
    month k (or 12 k) calendar months on, or the month's last day when it is shorter (a
    subscription of 31 January renews on 28 February). Without an ``origin`` date, average
    months and years (365.25 / 12 and 365.25 days)."""
    start, k = np.broadcast_arrays(np.asarray(start, dtype=float), np.asarray(k, dtype=float))
    if billing == "week" or origin is None:
        return start + k * BILLING_DAYS[billing]
    months = (k * (12 if billing == "year" else 1)).astype(np.int64)
    day0 = np.datetime64(origin, "D")
    whole = np.floor(start)
    day = day0 + whole.astype(np.int64).astype("timedelta64[D]")
    month = day.astype("datetime64[M]")
    of_month = (day - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    target = month + months.astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + 1).astype("datetime64[D]") - first).astype(np.int64)
    renewal = first + np.minimum(of_month, length - 1).astype("timedelta64[D]")
    return (renewal - day0).astype(np.int64) + (start - whole)


# ------------------------------------------------------------------ closed forms


def bg_nbd_expected_purchases(model: BGNBD, t: np.ndarray | float) -> np.ndarray:
    """E[X(t)]: expected repeat purchases of a new customer in t units of time
    (Fader, Hardie & Lee 2005, eq. 9)."""
    from scipy.special import hyp2f1

    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    t = np.asarray(t, dtype=float)
    z = t / (alpha + t)
    # (α/(α+t))^r · 2F1(r, b; a+b−1; z) by Euler's transformation, as in the conditional
    # expectation below
    tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b - 1, z)
    return (a + b - 1) / (a - 1) * (1 - tail)


def bg_nbd_p_alive(model: BGNBD, x, t_x, age) -> np.ndarray:
    """P(alive | x, t_x, T) of the BG/NBD (Fader, Hardie & Lee 2005, eq. 11); t_x and T in
    the model's unit. Computed in logs so that large x and T do not overflow."""
    x = np.asarray(x, dtype=float)
    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds = (
            np.log(a)
            - np.log(b + x - 1)
            + (r + x) * (np.log(alpha + np.asarray(age)) - np.log(alpha + np.asarray(t_x)))
        )
    odds = np.where(x > 0, np.exp(np.minimum(log_odds, 700.0)), 0.0)
    return 1.0 / (1.0 + odds)


def pareto_nbd_p_alive(model: ParetoNBD, x, t_x, age) -> np.ndarray:
    """P(alive | x, t_x, T) of the Pareto/NBD (Fader & Hardie 2005, "A note on deriving the
    Pareto/NBD model", eq. 18): the alive term of the likelihood over the likelihood,
    Γ(r + x) α^r β^s / (Γ(r) (α + T)^(r + x) (β + T)^s) / L; t_x and T in the model's unit."""
    from scipy.special import gammaln

    from funnelsim.fit.repeat import pareto_nbd_loglik

    r, alpha, s, beta = model.r, model.alpha, model.s, model.beta
    x, t_x, age = (np.asarray(v, dtype=float) for v in (x, t_x, age))
    log_alive = (
        gammaln(r + x)
        - gammaln(r)
        + r * np.log(alpha)
        + s * np.log(beta)
        - (r + x) * np.log(alpha + age)
        - s * np.log(beta + age)
    )
    return np.minimum(np.exp(log_alive - pareto_nbd_loglik(r, alpha, s, beta, x, t_x, age)), 1.0)


def p_alive(model, x, t_x, age) -> np.ndarray:
    """P(alive | x, t_x, T) of a BG/NBD or Pareto/NBD model; t_x and T in its unit."""
    if isinstance(model, ParetoNBD):
        return pareto_nbd_p_alive(model, x, t_x, age)
    return bg_nbd_p_alive(model, x, t_x, age)


def bg_nbd_conditional_purchases(model: BGNBD, t, x, t_x, age) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected purchases in the next t units of a customer with that
    history (Fader, Hardie & Lee 2005, eq. 10)."""
    from scipy.special import hyp2f1

    r, alpha, a, b = model.r, model.alpha, model.a, model.b
    x = np.asarray(x, dtype=float)
    age = np.asarray(age, dtype=float)
    t = np.asarray(t, dtype=float)
    z = t / (alpha + age + t)
    # ((α+T)/(α+T+t))^(r+x) · 2F1(r+x, b+x; a+b+x−1; z), rewritten with Euler's
    # transformation as (1 − z)^(a−1) · 2F1(a+b−1−r, a−1; a+b+x−1; z): the same value,
    # without an overflowing 2F1 times an underflowing power for heavy buyers
    tail = (1 - z) ** (a - 1) * hyp2f1(a + b - 1 - r, a - 1, a + b + x - 1, z)
    alive_part = (a + b + x - 1) / (a - 1) * (1 - tail)
    return alive_part * bg_nbd_p_alive(model, x, t_x, age)


def pareto_nbd_expected_purchases(model: ParetoNBD, t) -> np.ndarray:
    """E[X(t)] of the Pareto/NBD (Schmittlein et al. 1987): r β / (α (s − 1)) ·
    [1 − (β / (β + t))^(s − 1)]."""
    r, alpha, s, beta = model.r, model.alpha, model.s, model.beta
    t = np.asarray(t, dtype=float)
    if abs(s - 1) < 1e-12:
        return r * beta / alpha * np.log((beta + t) / beta)
    return r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))


def gamma_gamma_mean(spend: GammaGammaSpend) -> float:
    """E[Z] = p γ / (q − 1): the mean value of a purchase over customers."""
    return spend.p * spend.gamma / (spend.q - 1)


def sbg_survival(churn, t) -> np.ndarray:
    """S(t) = B(α, β + t) / B(α, β): the share of subscribers still there after t renewals
    (Fader & Hardie 2007); (1 − θ)^t for a fixed churn θ."""
    t = np.asarray(t, dtype=float)
    if isinstance(churn, BetaChurn):
        from scipy.special import betaln

        alpha, beta = churn.beta
        return np.exp(betaln(alpha, beta + t) - betaln(alpha, beta))
    return (1.0 - float(churn)) ** t


def mean_spend(model) -> float:
    """Mean value of a repeat purchase (currency)."""
    if isinstance(model, Subscription):
        return float(model.price)
    if isinstance(model.spend, GammaGammaSpend):
        return gamma_gamma_mean(model.spend)
    return model.spend.expected_value()


def expected_repeat_purchases(model, days: np.ndarray) -> np.ndarray:
    """Expected repeat purchases (renewals) of a new customer within ``days`` of its first."""
    days = np.asarray(days, dtype=float)
    if isinstance(model, Subscription):
        period = BILLING_DAYS[model.billing]
        k = np.arange(1, int(days.max() // period) + 2)
        survival = sbg_survival(model.churn, k)
        return np.array([survival[: int(d // period)].sum() for d in np.atleast_1d(days)])
    unit = DAYS_PER_UNIT[model.unit]
    if isinstance(model, BGNBD):
        return bg_nbd_expected_purchases(model, days / unit)
    return pareto_nbd_expected_purchases(model, days / unit)


# ------------------------------------------------------------------ a batch's repeat sales


def add_repeat_sales(funnel, tally, rep_keys: np.ndarray) -> None:
    """Simulate the repeat purchases of the batch's new customers (``tally.customers``) and
    of the existing customers, and add them to ``tally``."""
    model = funnel.repeat
    reps, periods, channels = tally.leads.shape
    cal = funnel.calendar
    horizon = cal.horizon
    first_payment = np.zeros((reps, periods, channels))
    repeat_revenue = np.zeros((reps, periods, channels))
    existing_revenue = np.zeros((reps, periods))
    purchases = np.zeros((reps, periods))
    began = np.zeros((reps, periods + 1))  # customers becoming active, by period
    ended = np.zeros((reps, periods + 1))  # ... and stopping (P: after the horizon)

    def book(life: Life, rep: np.ndarray, start: np.ndarray) -> np.ndarray:
        """Count purchases and active spells; returns each purchase's (rep, period) cell."""
        cell = cal.period_or_after(life.when)
        cell += rep[life.customer] * periods
        purchases.flat[:] += np.bincount(cell, minlength=purchases.size)
        alive = life.active
        rows = rep[alive] * (periods + 1)
        began.flat[:] += np.bincount(rows + cal.period_or_after(start[alive]), minlength=began.size)
        stop = cal.period_or_after(np.minimum(life.until[alive], horizon))
        ended.flat[:] += np.bincount(stop + rows, minlength=ended.size)
        return cell

    models = replication_models(funnel, rep_keys)
    cohort = tally.customers
    if cohort is not None and cohort.t.size:
        groups = (
            [np.arange(cohort.t.size)]
            if models is None
            else [np.flatnonzero(cohort.rep == r) for r in range(reps)]
        )
        for r, index in enumerate(groups):
            if index.size == 0:
                continue
            which = model if models is None else models[r]
            life = new_customer_lives(which, cohort.t[index], cohort.key[index], cal)
            cell = book(life, cohort.rep[index], cohort.t[index])
            channel = cohort.channel[index][life.customer]
            np.add.at(repeat_revenue.reshape(-1, channels), (cell, channel), life.value)
        if isinstance(model, Subscription):
            p_close = cal.period_or_after(cohort.t)
            np.add.at(first_payment, (cohort.rep, p_close, cohort.channel), float(model.price))
    drawn = tally.existing  # the DES draws them already for word of mouth
    for r, old in drawn if drawn is not None else existing_customers(funnel, rep_keys, models):
        purchases[r] += old.purchases
        existing_revenue[r] += old.revenue
        began[r, 0] += old.began
        ended[r] += old.ended
    tally.first_payment = first_payment
    tally.repeat_revenue = repeat_revenue
    tally.existing_revenue = existing_revenue
    tally.repeat_purchases = purchases
    tally.active_customers = (np.cumsum(began, axis=1) - np.cumsum(ended, axis=1))[:, :periods]


def new_customer_keys(lead_keys: np.ndarray) -> np.ndarray:
    """The keys of new customers' draws, from their won leads' keys (so a customer's life is
    the same wherever and with whomever it is simulated)."""
    return streams.derive(lead_keys, streams.salt(REPEAT, 0x6E6577))  # "new"


def new_customer_lives(model, start: np.ndarray, lead_keys: np.ndarray, calendar) -> Life:
    """The lives of customers won at ``start`` (days) from leads with ``lead_keys``."""
    draws = _Keyed(new_customer_keys(lead_keys))
    return simulate_cohort(model, start, calendar.horizon, draws, origin=calendar.start)


@dataclass
class Existing:
    """What one replication's existing customers did, per period (P: after the horizon)."""

    purchases: np.ndarray  # (P,) repeat purchases (renewals)
    revenue: np.ndarray  # (P,) their value (currency)
    began: float  # customers active at the start
    ended: np.ndarray  # (P + 1,) customers who stopped being active in each period
    active_start: np.ndarray  # (P,) customers active at the start of each period


def existing_customers(funnel, rep_keys: np.ndarray, models: list | None = None):
    """Each replication's existing customers (their first purchases before the start):
    yields (row, Existing). Drawn from a NumPy generator per replication (their number is
    fixed, so the draws stay paired between scenarios that do not change them): BG/NBD and
    Pareto/NBD customers by the compiled kernel ``funnelsim._cohort``, subscribers by
    :func:`simulate_cohort`."""
    history = funnel.history
    count = funnel.existing_count if history is None else len(history.customer_id)
    if not count:
        return
    cal = funnel.calendar
    salt = streams.salt(REPEAT, 0x6F6C64)  # "old"
    for r, key in enumerate(streams.derive(rep_keys, salt).tolist()):
        rng = np.random.default_rng(key)
        model = funnel.repeat if models is None else models[r]
        if isinstance(model, Subscription):
            yield r, _existing_subscribers(model, count, cal, rng)
        else:
            yield r, _existing_buyers(model, count, history, cal, rng)


def _existing_subscribers(model: Subscription, count: int, cal, rng) -> Existing:
    start = np.zeros(count)
    life = simulate_cohort(model, start, cal.horizon, _Stream(rng, count), origin=cal.start)
    periods = cal.periods
    period = cal.period_or_after(life.when)  # renewals fall within the horizon
    return Existing(
        purchases=np.bincount(period, minlength=periods),
        revenue=np.bincount(period, weights=life.value, minlength=periods),
        began=float(count),
        ended=np.bincount(
            cal.period_or_after(np.minimum(life.until, cal.horizon)), minlength=periods + 1
        ).astype(float),
        active_start=(life.until[None, :] > cal.edges[:-1, None]).sum(axis=1).astype(float),
    )


def _kernel():
    try:
        from funnelsim import _cohort
    except ImportError:
        import funnelsim

        raise ImportError(
            f"funnelsim's compiled kernel is missing from {funnelsim.__path__[0]}: this copy "
            "was not built; install it with pip install -e . (from its folder), or run the "
            "funnelsim command of an installed copy"
        ) from None
    return _cohort


def _existing_buyers(model, count: int, history, cal, rng) -> Existing:
    _cohort = _kernel()

    unit = DAYS_PER_UNIT[model.unit]
    pareto = isinstance(model, ParetoNBD)
    spend = model.spend
    gamma_gamma = isinstance(spend, GammaGammaSpend)
    params = np.array(
        [
            unit,
            model.r,
            model.alpha,
            0.0 if pareto else model.a,
            0.0 if pareto else model.b,
            model.s if pareto else 0.0,
            model.beta if pareto else 0.0,
            spend.p if gamma_gamma else 0.0,
            spend.q if gamma_gamma else 0.0,
            spend.gamma if gamma_gamma else 0.0,
        ]
    )
    groups: list = [(count, params, None)]
    if history is not None:
        x = np.asarray(history.repeat_purchases, dtype=float)
        t_x = np.asarray(history.recency_days, dtype=float) / unit
        age = np.asarray(history.age_days, dtype=float) / unit
        alive = np.asarray(p_alive(model, x, t_x, age), dtype=float)
        mean = np.asarray(history.mean_spend, dtype=float)
        groups = [(count, params, (x, age, mean, alive))]
        if pareto:
            groups = list(_by_age(params, x, age, mean, alive))
    periods = cal.periods
    out = np.zeros(3 * periods + 2)  # the kernel adds each group's customers to it
    table = np.ascontiguousarray(cal._day_period, dtype=np.int64)
    survival = None if pareto else _beta_geometric_survival(float(model.a), float(model.b))
    bit_generator = rng.bit_generator
    with bit_generator.lock:
        for n, group_params, hist in groups:
            _cohort.simulate(
                bit_generator.capsule,
                int(pareto),
                int(gamma_gamma),
                n,
                group_params,
                hist,
                float(cal.horizon),
                table,
                out,
                survival,
            )
    purchases, revenue = out[:periods], out[periods : 2 * periods]
    ended, began = out[2 * periods : 3 * periods + 1], float(out[-1])
    if not gamma_gamma:  # purchases are exchangeable: each period's sum of iid values
        counts = purchases.astype(np.int64)
        values = spend.draw(streams.keys_from_rng(rng, int(counts.sum())))
        revenue = np.bincount(
            np.repeat(np.arange(periods), counts), weights=values, minlength=periods
        )
    active_start = began - np.concatenate(([0.0], np.cumsum(ended[: periods - 1])))
    return Existing(purchases, revenue, began, ended, active_start)


def _by_age(params: np.ndarray, x, age, mean, alive):
    """Pareto/NBD customers with histories, one group per age T: the kernel draws μ ~
    Gamma(s, β) with one β, and a customer alive at T has μ ~ Gamma(s, β + T)."""
    ages, group = np.unique(age, return_inverse=True)
    order = np.argsort(group, kind="stable")
    bounds = np.searchsorted(group[order], np.arange(ages.size + 1))
    for k, t in enumerate(ages.tolist()):
        rows = order[bounds[k] : bounds[k + 1]]
        shifted = params.copy()
        shifted[6] += t  # β + T
        hist = tuple(np.ascontiguousarray(v[rows]) for v in (x, age, mean, alive))
        yield rows.size, shifted, hist


def replication_models(funnel, rep_keys: np.ndarray) -> list | None:
    """With posterior draws, each replication's repeat model: one joint draw, picked by the
    replication's own stream (so the same replication always takes the same draw)."""
    draws = funnel.posterior
    if draws is None:
        return None
    model = funnel.repeat
    names = POSTERIOR_PARAMETERS.get(model.model)
    if names is None or names[0] not in draws:
        return None
    picks = streams.posterior_pick(rep_keys, draws[names[0]].size)
    models = []
    for j in picks.tolist():
        update = {k: float(draws[k][j]) for k in names}
        if "p" in draws and isinstance(model.spend, GammaGammaSpend):
            spend = model.spend.model_copy(
                update={k: float(draws[k][j]) for k in ("p", "q", "gamma")}
            )
            update["spend"] = spend
        models.append(model.model_copy(update=update))
    return models
