"""Fitting monthly lead arrivals (funnelsim.fit.arrivals).

* Recovery: counts simulated from the model (fixed seeds, expected leads of a month
  λ · days / (365.25/12)) give back level, trend, season effects and k within 4 standard
  errors; the negative binomial and seasonality are detected when present.
* The rules: seasonality never with fewer than 24 full months, even when present; on flat
  Poisson data trend, seasonality and overdispersion are each chosen at about the tests'
  5 % level across seeds.
* Exposure: a partial month counts its share (the flat-rate estimate in closed form), a
  month with exposure 0 counts for nothing.
* Robustness: zero-count months, a channel without leads or with a single lead, a calendar
  month without any lead.
* The scenario: the channel entry reproduces the fitted mean of every forecast month through
  the scenario's daily-rate formula (and through funnelsim's own compiled funnel), and a
  history simulated from a scenario's rate is fitted back to it.
* PyMC: the model of :func:`add_arrivals` has its posterior mode near the MLE;
  :func:`posterior_channel` at the estimates is :func:`scenario_channel`.
"""

from __future__ import annotations

import calendar

import numpy as np
import pytest
from conftest import build
from scipy.stats import nbinom, poisson

from funnelsim.fit.arrivals import (
    DAYS_PER_MONTH,
    ArrivalFit,
    add_arrivals,
    expected_leads,
    fit_arrivals,
    posterior_channel,
    scenario_channel,
)
from funnelsim.funnel import compile_funnel
from funnelsim.scenario import Channel

SEASON = 0.3 * np.sin(2 * np.pi * np.arange(1, 13) / 12)  # Jan..Dec, sums to 0


def labels(first: str, n: int) -> list[str]:
    year, month = map(int, first.split("-"))
    start = year * 12 + month - 1
    return [f"{(start + i) // 12:04d}-{(start + i) % 12 + 1:02d}" for i in range(n)]


def days(months: list[str]) -> np.ndarray:
    return np.array([calendar.monthrange(int(m[:4]), int(m[5:]))[1] for m in months], float)


def simulate(
    rng: np.random.Generator,
    months: list[str],
    *,
    level: float,
    trend: float = 0.0,
    season: np.ndarray | None = None,
    k: float | None = None,
    exposure: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts from the model: mean exposure · days / (365.25/12) · exp(level + trend·m +
    season), Poisson or negative binomial (size k). Returns (counts, exposure)."""
    n = len(months)
    exposure = np.ones(n) if exposure is None else np.asarray(exposure, float)
    log_rate = level + trend * np.arange(n)
    if season is not None:
        log_rate = log_rate + season[[int(m[5:]) - 1 for m in months]]
    mu = exposure * days(months) / DAYS_PER_MONTH * np.exp(log_rate)
    counts = rng.poisson(mu) if k is None else rng.negative_binomial(k, k / (k + mu))
    return counts, exposure


def assert_within(fit: ArrivalFit, truth: dict[str, float], *, z: float = 4.0) -> None:
    for name, value in truth.items():
        assert abs(fit.params[name] - value) <= z * fit.se[name], (
            f"{name}: {fit.params[name]:.4g} ± {fit.se[name]:.2g}, truth {value:.4g}"
        )


def season_truth(effects: np.ndarray = SEASON) -> dict[str, float]:
    return {f"season_{c}": float(effects[c - 1]) for c in range(1, 13)}


# ------------------------------------------------------------------ recovery


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poisson_with_trend_is_recovered(seed):
    months = labels("2023-03", 20)
    counts, exposure = simulate(np.random.default_rng(seed), months, level=np.log(80), trend=0.03)
    fit = fit_arrivals("web", counts, exposure, months)
    assert (fit.family, fit.trend, fit.seasonal) == ("poisson", True, False)
    assert set(fit.params) == set(fit.se) == {"level", "trend"}
    assert_within(fit, {"level": np.log(80), "trend": 0.03})
    assert set(fit.tests) == {"overdispersion", "trend"}
    assert fit.tests["trend"] < 0.05 <= fit.tests["overdispersion"]
    assert "Poisson" in fit.choice and "growth 3." in fit.choice and "20 full months" in fit.choice


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_negative_binomial_with_k_5_is_detected(seed):
    months = labels("2022-01", 36)
    counts, exposure = simulate(np.random.default_rng(seed), months, level=np.log(60), k=5.0)
    fit = fit_arrivals("events", counts, exposure, months)
    assert fit.family == "negative_binomial"
    assert fit.tests["overdispersion"] < 0.001
    assert fit.choice.startswith("Negative binomial (overdispersed, p < 0.001)")
    assert_within(fit, {"level": np.log(60), "k": 5.0})


def test_loglik_is_the_poisson_or_negative_binomial_probability_of_the_counts():
    months = labels("2021-07", 30)
    rng = np.random.default_rng(7)
    for k in (None, 4.0):
        counts, exposure = simulate(rng, months, level=np.log(40), trend=0.02, k=k)
        fit = fit_arrivals("web", counts, exposure, months)
        mu = expected_leads(fit, months) * exposure
        if fit.family == "poisson":
            expected = poisson.logpmf(counts, mu).sum()
        else:
            size = fit.params["k"]
            expected = nbinom.logpmf(counts, size, size / (size + mu)).sum()
        assert fit.loglik == pytest.approx(expected, rel=1e-10)


def test_seasonality_is_detected_with_36_months():
    months = labels("2022-01", 36)
    rng = np.random.default_rng(8)
    counts, exposure = simulate(rng, months, level=np.log(100), trend=0.01, season=SEASON)
    fit = fit_arrivals("web", counts, exposure, months)
    assert fit.seasonal and fit.trend and fit.family == "poisson"
    assert fit.tests["seasonality"] < 0.001
    assert sum(fit.params[f"season_{c}"] for c in range(1, 13)) == pytest.approx(0, abs=1e-9)
    assert_within(fit, {"level": np.log(100), "trend": 0.01, **season_truth()})
    assert "seasonal (p < 0.001), from ×0.7" in fit.choice  # the trough: ×0.74 = e^-0.3


def test_seasonality_is_not_fitted_with_18_months_even_when_present():
    months = labels("2022-01", 18)
    rng = np.random.default_rng(9)
    counts, exposure = simulate(rng, months, level=np.log(100), season=2 * SEASON)
    fit = fit_arrivals("web", counts, exposure, months)
    assert not fit.seasonal and "seasonality" not in fit.tests
    assert not any(name.startswith("season") for name in fit.params)
    assert "no seasonality: only 18 full months of history (24 needed)" in fit.choice


def test_seasonality_counts_full_months_only():
    months = labels("2022-01", 25)
    rng = np.random.default_rng(10)
    exposure = np.r_[0.5, np.ones(23), 0.5]  # 23 full months: not enough
    counts, _ = simulate(rng, months, level=np.log(100), season=SEASON, exposure=exposure)
    assert "seasonality" not in fit_arrivals("web", counts, exposure, months).tests
    exposure[-1] = 1.0  # 24 full months
    counts, _ = simulate(rng, months, level=np.log(100), season=SEASON, exposure=exposure)
    assert "seasonality" in fit_arrivals("web", counts, exposure, months).tests


def test_flat_poisson_data_choose_extra_terms_at_about_the_tests_level():
    months = labels("2022-01", 36)
    fits = [
        fit_arrivals(
            "web", *simulate(np.random.default_rng(seed), months, level=np.log(50)), months
        )
        for seed in range(100, 140)
    ]
    # 40 seeds, each choice made with probability about 0.05: 2 expected, 7 or more has
    # probability 0.004 (binomial)
    assert sum(f.trend for f in fits) <= 6
    assert sum(f.seasonal for f in fits) <= 6
    assert sum(f.family == "negative_binomial" for f in fits) <= 6
    p_trend = np.array([f.tests["trend"] for f in fits])
    assert 0.3 < p_trend.mean() < 0.7  # roughly uniform under the null
    flat = [f for f in fits if not f.trend]
    assert all(abs(f.params["level"] - np.log(50)) <= 4 * f.se["level"] for f in flat)


# ------------------------------------------------------------------ exposure


def test_a_partial_month_counts_its_share():
    months = labels("2023-01", 14)
    counts = np.array([9, 40, 35, 44, 38, 41, 39, 37, 45, 40, 36, 42, 38, 25])
    exposure = np.r_[0.25, np.ones(12), 0.5]
    fit = fit_arrivals("web", counts, exposure, months)
    assert (fit.family, fit.trend) == ("poisson", False)
    # the flat Poisson MLE: leads over exposure in average months
    rate = counts.sum() / np.sum(exposure * days(months) / DAYS_PER_MONTH)
    assert fit.params["level"] == pytest.approx(np.log(rate), rel=1e-9)
    ignored = fit_arrivals("web", counts, np.ones(14), months)  # as if the months were full
    assert np.exp(ignored.params["level"]) < 0.95 * rate


def test_partial_first_and_last_months_give_no_spurious_trend():
    months = labels("2023-05", 22)
    exposure = np.r_[0.3, np.ones(20), 0.5]
    fits = []
    for seed in range(200, 230):
        rng = np.random.default_rng(seed)
        counts, _ = simulate(rng, months, level=np.log(60), exposure=exposure)
        fits.append(fit_arrivals("web", counts, exposure, months))
    assert fits[0].months == 22 and fits[0].last_month == "2025-02"
    assert sum(f.trend for f in fits) <= 5  # 30 seeds at 5 %: 1.5 expected, P(>= 6) = 0.005
    flat = [f for f in fits if not f.trend]
    assert all(abs(f.params["level"] - np.log(60)) <= 4 * f.se["level"] for f in flat)
    z = [(f.params["level"] - np.log(60)) / f.se["level"] for f in flat]
    assert abs(np.mean(z)) < 4 / np.sqrt(len(z))  # unbiased: the partial months count their share


def test_a_month_with_exposure_0_counts_for_nothing():
    months = labels("2023-01", 14)
    rng = np.random.default_rng(14)
    counts, _ = simulate(rng, months, level=np.log(30))
    exposure = np.ones(14)
    counts[[0, -1]], exposure[[0, -1]] = 0, 0.0
    fit = fit_arrivals("web", counts, exposure, months)
    inner = fit_arrivals("web", counts[1:-1], exposure[1:-1], months[1:-1])
    assert fit.params["level"] == pytest.approx(inner.params["level"], rel=1e-12)
    assert fit.loglik == pytest.approx(inner.loglik, rel=1e-12)


# ------------------------------------------------------------------ few leads


def test_zero_count_months_and_very_few_leads():
    months = labels("2022-01", 36)
    counts, exposure = simulate(np.random.default_rng(15), months, level=np.log(0.4))
    assert np.sum(counts == 0) > 15
    with np.errstate(all="raise"):
        fit = fit_arrivals("referrals", counts, exposure, months)
    assert np.isfinite(fit.loglik) and all(np.isfinite(list(fit.se.values())))
    assert_within(fit, {"level": np.log(0.4)})
    assert 0 < scenario_channel(fit, "2025-01")["leads_per_month"] < 1


def test_a_channel_without_leads_has_a_rate_of_0():
    months = labels("2024-01", 6)
    fit = fit_arrivals("new", np.zeros(6), np.ones(6), months)
    assert fit.params == {"level": -np.inf} and fit.tests == {}
    assert fit.choice.startswith("No leads in 6 months")
    assert scenario_channel(fit, "2024-07") == {"leads_per_month": 0.0}


@pytest.mark.parametrize("where", [0, -1])
def test_a_single_lead_at_an_end_gives_no_infinite_trend(where):
    counts = np.zeros(12)
    counts[where] = 1
    fit = fit_arrivals("web", counts, np.ones(12), labels("2024-01", 12))
    assert not fit.trend and "too few leads to estimate one" in fit.choice
    assert np.exp(fit.params["level"]) == pytest.approx(1 / 12, rel=0.02)  # ≈ 1 in 12 months


def test_a_calendar_month_without_any_lead_gets_a_multiplier_of_about_0():
    months = labels("2021-01", 36)
    season = np.where(np.arange(1, 13) == 8, -np.inf, 0.0)  # no leads in August
    counts, exposure = simulate(np.random.default_rng(16), months, level=np.log(50), season=season)
    fit = fit_arrivals("events", counts, exposure, months)
    assert fit.seasonal and np.isfinite(fit.loglik)
    forecast = labels("2024-01", 12)
    expected = expected_leads(fit, forecast)
    assert expected[7] < 1e-5
    others = np.delete(expected, 7)  # 3 years of about 50 a month: a relative SE of 8 %
    assert others == pytest.approx(50 * np.delete(days(forecast), 7) / DAYS_PER_MONTH, rel=0.35)
    assert "×0.00 of the average month in August" in fit.choice


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("counts", "exposure", "months", "message"),
    [
        ([], [], [], "no months"),
        ([3, -1], [1, 1], ["2024-01", "2024-02"], "counts must be >= 0"),
        ([3, 1.5], [1, 1], ["2024-01", "2024-02"], "whole numbers"),
        ([3, 1], [1, 1.5], ["2024-01", "2024-02"], r"exposure in \[0, 1\]"),
        ([3, 1], [0, 1], ["2024-01", "2024-02"], "exposure 0 must have no leads"),
        ([3, 1], [1, 1], ["2024-01", "2024-03"], "consecutive"),
        ([3, 1], [1, 1], ["2024-01", "2024-13"], "YYYY-MM"),
        ([3, 1], [1], ["2024-01", "2024-02"], "one entry per month"),
    ],
)
def test_bad_histories_are_refused(counts, exposure, months, message):
    with pytest.raises(ValueError, match=message):
        fit_arrivals("web", counts, exposure, months)


# ------------------------------------------------------------------ the scenario


@pytest.fixture(scope="module")
def seasonal_fit() -> ArrivalFit:
    months = labels("2022-01", 36)
    rng = np.random.default_rng(17)
    counts, exposure = simulate(rng, months, level=np.log(150), trend=0.015, season=SEASON)
    fit = fit_arrivals("paid_search", counts, exposure, months)
    assert fit.trend and fit.seasonal
    return fit


def test_scenario_rate_formula_reproduces_the_fitted_monthly_means(seasonal_fit):
    fit, start = seasonal_fit, "2025-01"
    entry = scenario_channel(fit, start)
    assert set(entry) == {"leads_per_month", "seasonality", "growth_per_month"}
    Channel.model_validate(entry)
    forecast = labels(start, 24)
    k = np.arange(24)
    cal = np.array([int(m[5:]) for m in forecast])
    # the scenario (docs/scenario.md): leads_per_month / (365.25/12) per day × seasonality ×
    # (1 + growth)^k, summed over the month's days
    scenario = (
        entry["leads_per_month"]
        / (365.25 / 12)
        * days(forecast)
        * np.asarray(entry["seasonality"])[cal - 1]
        * (1 + entry["growth_per_month"]) ** k
    )
    # the fit: λ = exp(level + trend·m + season) leads per average month, m from 2022-01
    m = 36 + k
    p = fit.params
    rate = np.exp(p["level"] + p["trend"] * m + np.array([p[f"season_{c}"] for c in cal]))
    assert scenario == pytest.approx(rate * days(forecast) / (365.25 / 12), rel=1e-12)
    assert expected_leads(fit, forecast) == pytest.approx(scenario, rel=1e-12)


def test_the_compiled_scenario_expects_the_fitted_monthly_means(seasonal_fit):
    entry = scenario_channel(seasonal_fit, "2025-01")
    scenario = build(start="2025-01-01", months=24, channels={"paid_search": entry})
    funnel = compile_funnel(scenario)
    cal = funnel.calendar
    per_month = entry["leads_per_month"] * funnel.daily_rate[0] * np.diff(cal.edges)
    assert per_month == pytest.approx(expected_leads(seasonal_fit, list(cal.labels)), rel=1e-12)


def test_a_history_simulated_from_a_scenario_rate_is_fitted_back_to_it():
    history, start = labels("2021-01", 48), "2025-01"
    truth = {
        "leads_per_month": 2000.0,  # in 2021-01
        "growth_per_month": 0.01,
        "seasonality": list(np.exp(SEASON + 0.05)),  # not rescaled: geometric mean e^0.05
    }
    # the scenario's monthly expectation over the history, as in the forecast
    k = np.arange(48)
    cal = np.array([int(m[5:]) for m in history])
    mean = (
        truth["leads_per_month"]
        / DAYS_PER_MONTH
        * days(history)
        * np.asarray(truth["seasonality"])[cal - 1]
        * (1 + truth["growth_per_month"]) ** k
    )
    counts = np.random.default_rng(18).poisson(mean)
    fit = fit_arrivals("web", counts, np.ones(48), history)
    assert fit.family == "poisson" and fit.trend and fit.seasonal
    entry = scenario_channel(fit, start)
    assert entry["growth_per_month"] == pytest.approx(0.01, abs=4 * fit.se["trend"])
    forecast = labels(start, 12)
    kf = 48 + np.arange(12)
    want = 2000 / DAYS_PER_MONTH * days(forecast) * np.exp(SEASON + 0.05) * 1.01**kf
    assert expected_leads(fit, forecast) == pytest.approx(want, rel=0.03)


# ------------------------------------------------------------------ PyMC


def test_add_arrivals_has_its_posterior_mode_near_the_mle():
    pm = pytest.importorskip("pymc")
    pytensor = pytest.importorskip("pytensor")
    months = labels("2022-01", 36)
    rng = np.random.default_rng(19)
    counts, exposure = simulate(
        rng, months, level=np.log(80), trend=0.02, season=SEASON, k=8.0, exposure=None
    )
    exposure[0] = 0.5
    counts[0] = rng.negative_binomial(8, 8 / (8 + 40))
    fit = fit_arrivals("web", counts, exposure, months)
    assert (fit.family, fit.trend, fit.seasonal) == ("negative_binomial", True, True)
    # Python implementations: no C compilation, about 20 s less on a cold PyTensor cache
    with pm.Model(), pytensor.config.change_flags(mode="FAST_COMPILE"):
        names = add_arrivals(fit, counts, exposure, months, name_prefix="web_")
        mode = pm.find_MAP(progressbar=False)
    assert names == ["web_level", "web_trend", "web_season", "web_k"]
    assert mode["web_season"].sum() == pytest.approx(0, abs=1e-9)
    # the weak priors move the mode by a fraction of a standard error
    season = {f"season_{c}": mode["web_season"][c - 1] for c in range(1, 13)}
    for name, value in {"level": mode["web_level"], "trend": mode["web_trend"], **season}.items():
        assert abs(value - fit.params[name]) < 0.75 * fit.se[name], name
    assert abs(mode["web_k"] - fit.params["k"]) < fit.se["k"]


def test_add_arrivals_creates_only_the_chosen_parameters_and_checks_the_history():
    pm = pytest.importorskip("pymc")
    months = labels("2024-01", 10)
    counts, exposure = simulate(np.random.default_rng(20), months, level=np.log(20))
    fit = fit_arrivals("web", counts, exposure, months)
    assert (fit.family, fit.trend, fit.seasonal) == ("poisson", False, False)
    with pm.Model() as model:
        assert add_arrivals(fit, counts, exposure, months, name_prefix="a.") == ["a.level"]
    assert set(model.named_vars) == {"a.level", "a.leads"}
    with pm.Model(), pytest.raises(ValueError, match="fitted to 10 months from 2024-01"):
        add_arrivals(fit, counts[1:], exposure[1:], months[1:], name_prefix="a.")


def test_posterior_channel_at_the_estimates_is_the_scenario_channel(seasonal_fit):
    fit = seasonal_fit
    season = np.array([fit.params[f"season_{c}"] for c in range(1, 13)])
    draws = {"level": np.full(3, fit.params["level"]), "trend": np.full(3, fit.params["trend"])}
    draws["season"] = np.tile(season, (3, 1))
    fields = posterior_channel(fit, draws, "2025-01")
    entry = scenario_channel(fit, "2025-01")
    assert fields["leads_per_month"] == pytest.approx(np.full(3, entry["leads_per_month"]))
    assert fields["growth_per_month"] == pytest.approx(np.full(3, entry["growth_per_month"]))
    for c in range(1, 13):
        assert fields[f"season_{c}"] == pytest.approx(np.full(3, entry["seasonality"][c - 1]))
    assert "k" not in fields
