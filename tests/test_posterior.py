"""The engines' use of a fitted funnel posterior (``posterior: {file: ...}``): one joint
draw per replication of outcome probabilities, times in stage, deal values and arrivals,
the same in both engines, and a clear error for a posterior that does not fit the scenario.

The posteriors here are written by hand (two or three draws far apart), so which draw a
replication used can be read off its results."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from funnelsim import load_scenario
from funnelsim import run as run_forecast
from funnelsim.cli import main

SCENARIO = """\
version: 1
start: 2026-01-01
months: 2
seed: 5
currency: EUR
channels:
  web:
    leads_per_month: 100
    deal_value: {dist: lognormal, median: 1000, sigma: 0.01}
stages:
  deal:
    duration: {dist: fixed, value: 5}
    next: {won: 0.5, lost: 0.5}
posterior: {file: posterior.nc}
"""

# draw 0: few wins, small deals, short stays; draw 1: many wins, big deals, long stays
DRAWS = {
    "p__deal__web__won": [0.1, 0.9],
    "p__deal__web__lost": [0.9, 0.1],
    "value__web__median": [1000.0, 5000.0],
    "duration__deal__all__value": [2.0, 20.0],
}


def write(tmp_path, draws, scenario=SCENARIO):
    """The scenario and its posterior (one chain) in ``tmp_path``."""
    data = {k: (("chain", "draw"), np.asarray(v, dtype=float)[None, :]) for k, v in draws.items()}
    xr.Dataset(data).to_netcdf(tmp_path / "posterior.nc", group="posterior", engine="h5netcdf")
    (tmp_path / "scenario.yaml").write_text(scenario, encoding="utf-8")
    return load_scenario(tmp_path / "scenario.yaml")


@pytest.fixture(params=["vectorized", "des"])
def engine(request):
    return request.param


def test_each_replication_uses_one_joint_draw(tmp_path, engine):
    scenario = write(tmp_path, DRAWS)
    t = run_forecast(scenario, replications=300, workers=1, engine=engine).totals()
    rate = (t["won"] / (t["won"] + t["lost"])).values
    per_deal = (t["revenue"] / t["won"]).values
    cycle = t["cycle_days"].values
    high = rate > 0.5
    # every part of a replication comes from the same draw: no mixed replications
    assert np.array_equal(high, per_deal > 3000)
    assert np.allclose(cycle[high], 20.0) and np.allclose(cycle[~high], 2.0)
    assert np.allclose(per_deal[high], 5000, rtol=0.01)
    assert np.allclose(per_deal[~high], 1000, rtol=0.01)
    # the draws are picked uniformly: a binomial share, within 4 standard errors of 1/2
    assert abs(high.mean() - 0.5) < 4 * np.sqrt(0.25 / high.size)
    # within a draw, the win rate is that draw's probability (binomial, 4 standard errors)
    leads = (t["won"] + t["lost"]).values
    for p, rows in ((0.9, high), (0.1, ~high)):
        se = np.sqrt(p * (1 - p) / leads[rows].sum())
        assert abs(t["won"].values[rows].sum() / leads[rows].sum() - p) < 4 * se


def test_both_engines_agree_on_a_posterior(tmp_path):
    scenario = write(tmp_path, DRAWS)
    won = {
        engine: run_forecast(scenario, replications=400, workers=1, engine=engine)
        .totals()["won"]
        .values
        for engine in ("vectorized", "des")
    }
    a, b = won["vectorized"], won["des"]
    se = np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
    assert abs(a.mean() - b.mean()) < 4 * se


def test_arrivals_from_the_posterior(tmp_path, engine):
    """Leads per month, growth and season multipliers of each draw: the expected leads of
    the two months (January 31 days, February 28) are λ·m·days/(365.25/12) per month."""
    draws = {
        **DRAWS,
        "arrivals__web__leads_per_month": [50.0, 400.0],
        "arrivals__web__growth_per_month": [0.0, 0.5],
        **{f"arrivals__web__season_{m}": [1.0, 1.0 if m == 1 else 2.0] for m in range(1, 13)},
    }
    scenario = write(tmp_path, draws)
    t = run_forecast(scenario, replications=400, workers=1, engine=engine).totals()
    leads = t["leads"].values
    month = 365.25 / 12
    expected_low = 50 * (31 + 28) / month
    expected_high = 400 * 31 / month + 400 * 2.0 * 1.5 * 28 / month
    high = leads > (expected_low + expected_high) / 2
    # arrivals follow the same draw as the win rate
    rate = (t["won"] / (t["won"] + t["lost"])).values
    assert np.array_equal(high, rate > 0.5)
    for expected, rows in ((expected_low, ~high), (expected_high, high)):
        # Poisson months: the mean of n counts has standard error sqrt(λ/n)
        assert abs(leads[rows].mean() - expected) < 4 * np.sqrt(expected / rows.sum())


def test_negative_binomial_arrivals_are_overdispersed(tmp_path):
    """With ``k``, each month's rate is multiplied by a Gamma(k, 1/k) draw: the variance of
    a month's leads is λ + λ²/k (Poisson: λ)."""
    draws = {
        "arrivals__web__leads_per_month": [100.0, 100.0],
        "arrivals__web__k": [4.0, 4.0],
    }
    scenario = write(tmp_path, draws)
    leads = (
        run_forecast(scenario, replications=2000, workers=1).metrics()["leads"].isel(period=0)
    ).values
    lam = 100.0 * 31 / (365.25 / 12)
    expected_var = lam + lam**2 / 4
    n = leads.size
    assert abs(leads.mean() - lam) < 4 * np.sqrt(expected_var / n)
    # the sample variance's standard error, from the NB's fourth central moment
    # (approximated as a normal's, 2σ⁴/(n−1), widened by the excess kurtosis 6/k + ...)
    se_var = expected_var * np.sqrt((2 + 6 / 4) / (n - 1))
    assert abs(leads.var(ddof=1) - expected_var) < 4 * se_var


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("p__proposal__web__won", "stage 'proposal' is not in the scenario"),
        ("p__deal__mail__won", "channel 'mail' is not in the scenario"),
        ("p__deal__web__wonn", "outcome of deal 'wonn' is not in the scenario (did you mean 'won"),
        ("duration__deal__won__value", "stage deal has one duration: expected duration__deal__all"),
        ("duration__deal__all__median", "field 'median' is not in the scenario's fixed of deal"),
        ("value__web__mean", "field 'mean' is not in the scenario's lognormal deal value"),
        ("arrivals__web__season_13", "arrival field 'season_13' is not in the scenario"),
        ("p__deal__won", "expected p__<stage>__<channel>__<outcome>"),
    ],
)
def test_a_posterior_that_does_not_fit_the_scenario_is_refused(tmp_path, name, message):
    draws = {**DRAWS, name: [0.5, 0.5]}
    if name.startswith("p__deal__web__"):
        del draws["p__deal__web__won"]
    write_only = {k: (("chain", "draw"), np.asarray(v)[None, :]) for k, v in draws.items()}
    xr.Dataset(write_only).to_netcdf(tmp_path / "posterior.nc", group="posterior")
    (tmp_path / "scenario.yaml").write_text(SCENARIO, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "scenario.yaml")])
    assert result.exit_code == 2, result.output
    assert "posterior.nc" in result.output and f"variable {name}" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_probabilities_must_cover_every_outcome(tmp_path):
    draws = {k: v for k, v in DRAWS.items() if k != "p__deal__web__lost"}
    write_only = {k: (("chain", "draw"), np.asarray(v)[None, :]) for k, v in draws.items()}
    xr.Dataset(write_only).to_netcdf(tmp_path / "posterior.nc", group="posterior")
    (tmp_path / "scenario.yaml").write_text(SCENARIO, encoding="utf-8")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "scenario.yaml")])
    assert result.exit_code == 2
    assert "variable p__deal__web__lost: is missing" in result.output


def test_a_probability_outside_0_1_is_refused(tmp_path):
    draws = {**DRAWS, "p__deal__web__won": [0.1, 1.5]}
    write(tmp_path, DRAWS)  # the scenario file
    write_only = {k: (("chain", "draw"), np.asarray(v)[None, :]) for k, v in draws.items()}
    xr.Dataset(write_only).to_netcdf(tmp_path / "posterior.nc", group="posterior")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "scenario.yaml")])
    assert result.exit_code == 2
    assert "p__deal__web__won: draws must be probabilities between 0 and 1" in result.output


def test_the_pipeline_is_conditioned_on_its_age_under_each_draw(tmp_path):
    """An open deal 10 days old. Draw 0 (won after 2 days, lost after 30): it can only be
    lost. Draw 1 (won after 20, lost after 1): only won, worth 2000. Draw 2 (won after 3,
    lost after 4): it has outlived both, so it closes at once, won or lost with the
    probabilities 1/2, worth 3000 if won. Each replication conditions on the age with its
    own draw: revenue 2000 in 1/3 of them, 3000 in 1/6, nothing in the other 1/2."""
    scenario_text = textwrap.dedent(
        """\
        version: 1
        start: 2026-01-01
        months: 2
        seed: 3
        currency: EUR
        channels:
          web: {leads_per_month: 0, deal_value: 1000}
        stages:
          deal:
            duration: {won: {dist: fixed, value: 50}, lost: {dist: fixed, value: 50}}
            next: {won: 0.5, lost: 0.5}
        pipeline: {file: open.csv}
        posterior: {file: posterior.nc}
        """
    )
    (tmp_path / "open.csv").write_text(
        "lead_id,channel,stage,days_in_stage\nD1,web,deal,10\n", encoding="utf-8"
    )
    draws = {
        "p__deal__web__won": [0.5, 0.5, 0.5],
        "p__deal__web__lost": [0.5, 0.5, 0.5],
        "duration__deal__won__value": [2.0, 20.0, 3.0],
        "duration__deal__lost__value": [30.0, 1.0, 4.0],
        "value__web__value": [1000.0, 2000.0, 3000.0],
    }
    scenario = write(tmp_path, draws, scenario_text)
    n = 600
    for engine in ("vectorized", "des"):
        t = run_forecast(scenario, replications=n, workers=1, engine=engine).totals()
        assert np.all(t["won"].values + t["lost"].values == 1)
        revenue = t["revenue"].values
        assert set(np.unique(revenue)) <= {0.0, 2000.0, 3000.0}
        for value, share in ((2000.0, 1 / 3), (3000.0, 1 / 6), (0.0, 1 / 2)):
            # a binomial share, within 4 standard errors
            assert abs((revenue == value).mean() - share) < 4 * np.sqrt(share * (1 - share) / n)
