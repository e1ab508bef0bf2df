"""Maximum-likelihood fitting of the repeat-purchase models (funnelsim.fit.repeat).

* Published numbers: on the CDNOW sample (2,357 customers, calibration to 1997-09-30, weeks)
  BG/NBD, Pareto/NBD and Gamma-Gamma estimates within 0.5 % of Fader, Hardie & Lee (2005)
  and Fader & Hardie (2005), log-likelihoods within 0.05.
* The log-likelihoods against their definitions: BG/NBD eq. 6 evaluated directly, the
  Pareto/NBD against numerical integration over the time of death (including arguments
  where SciPy's ``hyp2f1`` gives NaN), the Gamma-Gamma density integrating to one.
* Robustness: finite, without floating-point warnings, for x = 500, T = 10,000 and
  parameters from 1e-6 to 1e6.
* Recovery: data simulated by ``funnelsim.customers`` give back the parameters, each
  within 4 standard errors (fixed seeds).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.integrate import quad
from scipy.special import beta as beta_function
from scipy.special import gamma as gamma_function
from scipy.special import gammaln

from funnelsim.customers import _Stream, simulate_cohort
from funnelsim.fit.repeat import (
    Estimate,
    bg_nbd_loglik,
    fit_bg_nbd,
    fit_gamma_gamma,
    fit_pareto_nbd,
    gamma_gamma_loglik,
    pareto_nbd_loglik,
)
from funnelsim.scenario import BGNBD, ParetoNBD

CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow"
CALIBRATION_END = pd.Timestamp("1997-09-30")

# Fader, Hardie & Lee (2005), "Counting your customers the easy way" and "RFM and CLV";
# Fader & Hardie (2005), Pareto/NBD note. See shared/data/cdnow/README.md.
PUBLISHED_BG_NBD = {"r": 0.2426, "alpha": 4.4135, "a": 0.7929, "b": 2.4258}
PUBLISHED_BG_NBD_LOGLIK = -9582.43
PUBLISHED_PARETO_NBD = {"r": 0.5533, "alpha": 10.578, "s": 0.6062, "beta": 11.667}
PUBLISHED_PARETO_NBD_LOGLIK = -9594.97
PUBLISHED_GAMMA_GAMMA = {"p": 6.2488, "q": 3.7446, "gamma": 15.4477}


# ------------------------------------------------------------------ the CDNOW summary


def cdnow_summary(path: Path, *, header: bool) -> pd.DataFrame:
    """Per customer: x, t_x, T (weeks) and mean_spend (mean of the repeat purchases, NaN
    without any), from a CDNOW transaction file, calibration ending 1997-09-30 inclusive,
    purchases on the same day merged (amounts summed)."""
    columns = ["customer_id", "date", "number_of_cds", "dollar_value"]
    raw = pd.read_csv(
        path,
        sep=r"\s+",
        header=0 if header else None,
        names=None if header else ["master_id", *columns],
        dtype={"date": str},
    )
    raw["day"] = pd.to_datetime(raw["date"], format="%Y%m%d")
    calibration = raw[raw["day"] <= CALIBRATION_END]
    days = calibration.groupby(["customer_id", "day"], as_index=False)["dollar_value"].sum()
    days["repeat"] = days["day"] > days.groupby("customer_id")["day"].transform("min")
    by_customer = days.groupby("customer_id")
    first, last = by_customer["day"].min(), by_customer["day"].max()
    return pd.DataFrame(
        {
            "x": (by_customer.size() - 1).astype(float),
            "t_x": (last - first).dt.days / 7,
            "T": (CALIBRATION_END - first).dt.days / 7,
            "mean_spend": days[days["repeat"]].groupby("customer_id")["dollar_value"].mean(),
        }
    )


@pytest.fixture(scope="module")
def sample() -> pd.DataFrame:
    path = CDNOW / "CDNOW_sample.txt"
    if not path.exists():
        pytest.skip(f"CDNOW data not found at {CDNOW} (shared/ beside the project)")
    return cdnow_summary(path, header=False)


def columns(table: pd.DataFrame, *names: str) -> list[np.ndarray]:
    return [table[name].to_numpy(dtype=float) for name in names]


def test_cdnow_summary_matches_the_published_one(sample):
    published = pd.read_csv(CDNOW / "cdnow_customers_summary_with_transactions.csv")
    published = published.set_index("ID")
    assert len(sample) == len(published) == 2357
    assert (sample["x"] > 0).sum() == 946
    assert np.array_equal(sample.index.to_numpy(), published.index.to_numpy())
    assert np.array_equal(sample["x"].to_numpy(), published["x"].to_numpy())
    for ours, theirs in (("t_x", "t_x"), ("T", "T"), ("mean_spend", "zbar")):
        mine = sample[ours].fillna(0.0).to_numpy()  # the published file has zbar 0 for x = 0
        assert np.max(np.abs(mine - published[theirs].to_numpy())) <= 0.005 + 1e-9, ours


# ------------------------------------------------------------------ published estimates


@pytest.fixture(scope="module")
def fitted(sample) -> dict[str, Estimate]:
    x, t_x, T, spend = columns(sample, "x", "t_x", "T", "mean_spend")
    return {
        "bg_nbd": fit_bg_nbd(x, t_x, T),
        "pareto_nbd": fit_pareto_nbd(x, t_x, T),
        "gamma_gamma": fit_gamma_gamma(x, np.nan_to_num(spend)),
    }


def test_bg_nbd_loglik_at_the_published_estimates(sample):
    x, t_x, T = columns(sample, "x", "t_x", "T")
    total = bg_nbd_loglik(*PUBLISHED_BG_NBD.values(), x, t_x, T).sum()
    assert total == pytest.approx(PUBLISHED_BG_NBD_LOGLIK, abs=0.01)


def test_pareto_nbd_loglik_at_the_published_estimates(sample):
    x, t_x, T = columns(sample, "x", "t_x", "T")
    total = pareto_nbd_loglik(*PUBLISHED_PARETO_NBD.values(), x, t_x, T).sum()
    assert total == pytest.approx(PUBLISHED_PARETO_NBD_LOGLIK, abs=0.05)


@pytest.mark.parametrize(
    ("model", "published", "loglik", "n"),
    [
        ("bg_nbd", PUBLISHED_BG_NBD, PUBLISHED_BG_NBD_LOGLIK, 2357),
        ("pareto_nbd", PUBLISHED_PARETO_NBD, PUBLISHED_PARETO_NBD_LOGLIK, 2357),
        ("gamma_gamma", PUBLISHED_GAMMA_GAMMA, None, 946),
    ],
)
def test_fit_reproduces_the_published_estimates(fitted, model, published, loglik, n):
    estimate = fitted[model]
    assert estimate.model == model
    assert estimate.converged
    assert estimate.n == n
    assert list(estimate.params) == list(published) == list(estimate.se)
    for name, value in published.items():
        assert estimate.params[name] == pytest.approx(value, rel=0.005), name
        assert 0 < estimate.se[name] < estimate.params[name], name
    if loglik is not None:
        assert estimate.loglik == pytest.approx(loglik, abs=0.05)


def test_gamma_gamma_loglik_is_the_total_at_the_estimates(sample, fitted):
    x, spend = columns(sample, "x", "mean_spend")
    buyers = x > 0
    estimate = fitted["gamma_gamma"]
    total = gamma_gamma_loglik(*estimate.params.values(), x[buyers], spend[buyers]).sum()
    assert estimate.loglik == pytest.approx(total, abs=1e-9)


# ------------------------------------------------------------------ the likelihoods


@pytest.mark.parametrize(
    ("r", "alpha", "a", "b", "x", "t_x", "T"),
    [
        (0.2426, 4.4135, 0.7929, 2.4258, 0, 0.0, 38.86),
        (0.2426, 4.4135, 0.7929, 2.4258, 1, 1.71, 38.86),
        (0.2426, 4.4135, 0.7929, 2.4258, 2, 30.43, 38.86),
        (1.7, 12.0, 2.5, 0.6, 7, 20.0, 52.0),
    ],
)
def test_bg_nbd_loglik_is_equation_6(r, alpha, a, b, x, t_x, T):
    """Fader, Hardie & Lee (2005), eq. 6, with Beta and Gamma functions, not logs."""
    nbd = gamma_function(r + x) * alpha**r / gamma_function(r)
    alive = beta_function(a, b + x) / beta_function(a, b) * nbd / (alpha + T) ** (r + x)
    dropped = 0.0
    if x > 0:
        dropped = beta_function(a + 1, b + x - 1) / beta_function(a, b)
        dropped *= nbd / (alpha + t_x) ** (r + x)
    assert bg_nbd_loglik(r, alpha, a, b, x, t_x, T) == pytest.approx(np.log(alive + dropped))


def pareto_nbd_loglik_by_quadrature(r, alpha, s, beta, x, t_x, T) -> float:
    """The Pareto/NBD likelihood from the model: with λ ~ Gamma(r, α) and μ ~ Gamma(s, β)
    integrated out, the customer is alive at T, or died at a time τ in (t_x, T]:
    Γ(r+x) α^r / Γ(r) · [(α+T)^-(r+x) (β/(β+T))^s + ∫ (α+τ)^-(r+x) s β^s (β+τ)^-(s+1) dτ]."""

    def log_density(tau):
        return (
            np.log(s)
            + s * np.log(beta)
            - (s + 1) * np.log(beta + tau)
            - (r + x) * np.log(alpha + tau)
        )

    peak = log_density(t_x)

    def scaled(tau):
        return np.exp(log_density(tau) - peak)

    integral, _ = quad(scaled, t_x, T, epsabs=0, epsrel=1e-12, limit=500)
    alive = -(r + x) * np.log(alpha + T) + s * np.log(beta / (beta + T))
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    return common + np.logaddexp(alive, peak + np.log(integral))


@pytest.mark.parametrize(
    ("r", "alpha", "s", "beta", "x", "t_x", "T"),
    [
        (0.5533, 10.578, 0.6062, 11.667, 2, 30.43, 38.86),  # α < β
        (0.5533, 10.578, 0.6062, 11.667, 0, 0.0, 38.86),
        (0.8, 20.0, 1.3, 4.0, 7, 12.0, 39.0),  # α > β
        (1.2, 5.0, 0.8, 5.0, 3, 12.0, 30.0),  # α = β
        (0.5, 10.0, 0.6, 12.0, 500, 9000.0, 10000.0),
        # SciPy's hyp2f1 gives NaN here: continued fraction, expansion about z = 1, the latter
        # at a pole (r + x − 1 = 0) of its two terms
        (0.7, 30.0, 2.0, 1.0, 1000, 2.0, 40.0),
        (2.0, 1e5, 3.0, 0.1, 800, 2.0, 30.0),
        (1.0, 0.01, 600.0, 1e4, 0, 0.0, 5.0),
    ],
)
def test_pareto_nbd_loglik_matches_its_integral(r, alpha, s, beta, x, t_x, T):
    expected = pareto_nbd_loglik_by_quadrature(r, alpha, s, beta, x, t_x, T)
    got = pareto_nbd_loglik(r, alpha, s, beta, x, t_x, T)
    assert got == pytest.approx(expected, rel=1e-8, abs=1e-8)


@pytest.mark.parametrize("x", [1, 3, 20])
def test_gamma_gamma_density_integrates_to_one(x):
    def density(z):
        return np.exp(gamma_gamma_loglik(6.25, 3.74, 15.44, x, z))

    total, _ = quad(density, 0, np.inf, epsabs=0, epsrel=1e-10, limit=200)
    assert total == pytest.approx(1.0, rel=1e-8)


@pytest.mark.filterwarnings("error")  # no overflow, division or invalid-value warnings
def test_logliks_are_finite_for_extreme_inputs():
    x = np.array([0, 0, 1, 3, 500, 500, 500])
    t_x = np.array([0.0, 0.0, 1e-3, 0.5, 1e-3, 9999.0, 1e4])
    T = np.array([0.0, 1e4, 1e4, 1e4, 1e4, 1e4, 1e4])
    extremes = (1e-6, 1.0, 1e6)
    for params in itertools.product(extremes, repeat=4):
        for loglik in (bg_nbd_loglik, pareto_nbd_loglik):
            values = loglik(*params, x, t_x, T)
            assert values.shape == x.shape
            assert np.all(np.isfinite(values)), (loglik.__name__, params, values)
    for params in itertools.product(extremes, repeat=3):
        values = gamma_gamma_loglik(*params, np.array([1, 500, 500]), np.array([1e-6, 1e6, 30]))
        assert np.all(np.isfinite(values)), params


# ------------------------------------------------------------------ recovery from simulations

SPEND = {"model": "gamma_gamma", "p": 6.0, "q": 4.0, "gamma": 15.0}


def simulated_history(model, *, customers: int, weeks: float, seed: int):
    """x, t_x, T (weeks) and mean spend of a cohort whose first purchases are at time 0."""
    draws = _Stream(np.random.default_rng(seed), customers)
    life = simulate_cohort(model, np.zeros(customers), weeks * 7, draws)
    x = np.bincount(life.customer, minlength=customers).astype(float)
    last = np.zeros(customers)
    np.maximum.at(last, life.customer, life.when)
    spent = np.bincount(life.customer, weights=life.value, minlength=customers)
    mean_spend = np.divide(spent, x, out=np.zeros(customers), where=x > 0)
    return x, last / 7, np.full(customers, weeks), mean_spend


def assert_recovered(estimate: Estimate, truth: dict[str, float]) -> None:
    assert estimate.converged
    for name, value in truth.items():
        se = estimate.se[name]
        assert np.isfinite(se) and se > 0, name
        assert abs(estimate.params[name] - value) < 4 * se, (name, estimate.params[name], se)


def test_bg_nbd_and_gamma_gamma_recover_simulated_parameters():
    truth = {"r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5}
    model = BGNBD.model_validate({"model": "bg_nbd", "unit": "week", **truth, "spend": SPEND})
    x, t_x, T, spend = simulated_history(model, customers=4000, weeks=52, seed=7)
    assert_recovered(fit_bg_nbd(x, t_x, T), truth)
    spend_fit = fit_gamma_gamma(x, spend)
    assert spend_fit.n == np.count_nonzero(x)
    assert_recovered(spend_fit, {k: v for k, v in SPEND.items() if k != "model"})


def test_pareto_nbd_recovers_simulated_parameters():
    truth = {"r": 0.5, "alpha": 5.0, "s": 0.6, "beta": 10.0}
    model = ParetoNBD.model_validate(
        {"model": "pareto_nbd", "unit": "week", **truth, "spend": SPEND}
    )
    x, t_x, T, _ = simulated_history(model, customers=4000, weeks=52, seed=8)
    assert_recovered(fit_pareto_nbd(x, t_x, T), truth)


def test_time_unit_only_rescales_alpha():
    model = BGNBD.model_validate(
        {"model": "bg_nbd", "r": 0.5, "alpha": 5.0, "a": 0.8, "b": 2.5, "spend": SPEND}
    )
    x, t_x, T, _ = simulated_history(model, customers=1500, weeks=39, seed=3)
    weeks, days = fit_bg_nbd(x, t_x, T), fit_bg_nbd(x, 7 * t_x, 7 * T)
    for name in ("r", "a", "b"):
        assert days.params[name] == pytest.approx(weeks.params[name], rel=1e-4)
    assert days.params["alpha"] == pytest.approx(7 * weeks.params["alpha"], rel=1e-4)
    # a density in time: per day rather than per week, each purchase's factor λ shrinks by 7
    assert days.loglik == pytest.approx(weeks.loglik - x.sum() * np.log(7), abs=1e-6)


def test_no_interior_maximum_is_reported_as_not_converged():
    """Identical Poisson rates and no dropout: the likelihood rises towards r, α → ∞ and
    a → 0, so there is no interior maximum and no standard errors."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(0.2 * 52, size=2000)
    t_x = np.array([rng.uniform(0, 52, n).max() if n else 0.0 for n in counts])
    estimate = fit_bg_nbd(counts, t_x, np.full(counts.size, 52.0))
    assert not estimate.converged
    assert all(np.isnan(se) for se in estimate.se.values())


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([], [], [], "no customers"),
        ([0, 0], [0, 0], [10, 10], "no customer made a repeat purchase"),
        ([1, 2], [1.0], [5.0, 5.0], "one entry per customer"),
        ([1, -1], [1.0, 0.0], [5.0, 5.0], "whole number >= 0"),
        ([1, 1.5], [1.0, 1.0], [5.0, 5.0], "whole number >= 0"),
        (
            [1, 2, 3],
            [1.0, 6.0, 7.0],
            [5.0, 5.0, 5.0],
            "t_x must lie in [0, T] (time of the last purchase); "
            "2 customer(s) fail, the first at index 1",
        ),
        ([1, 0], [1.0, 2.0], [5.0, 5.0], "t_x must be 0"),
        ([1, 2], [1.0, np.nan], [5.0, 5.0], "finite"),
    ],
)
@pytest.mark.parametrize("fit", [fit_bg_nbd, fit_pareto_nbd])
def test_bad_histories_are_refused(fit, x, t_x, T, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fit(np.array(x, dtype=float), np.array(t_x, dtype=float), np.array(T, dtype=float))


@pytest.mark.parametrize(
    ("x", "spend", "message"),
    [
        ([0, 0], [0.0, 0.0], "no repeat buyers"),
        ([], [], "no repeat buyers"),
        ([1, 2], [10.0], "one entry per customer"),
        ([1, 2], [10.0, 0.0], "mean_spend must be a positive amount"),
    ],
)
def test_bad_spend_is_refused(x, spend, message):
    with pytest.raises(ValueError, match=message):
        fit_gamma_gamma(np.array(x, dtype=float), np.array(spend, dtype=float))


def test_gamma_gamma_loglik_refuses_customers_without_repeat_purchases():
    with pytest.raises(ValueError, match="x >= 1"):
        gamma_gamma_loglik(6.25, 3.74, 15.44, np.array([2, 0]), np.array([10.0, 0.0]))
