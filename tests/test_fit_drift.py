"""Drift: a proposal's win rate rising from 20% to 40% over twelve months of arrivals.

The history is simulated month by month by the project's own engine: each month's leads
come from a scenario whose proposal win rate is that month's, 0.2 + 0.2·m/11 for the
arrival months m = 0 … 11 of 2026 (everything else stationary), and the twelve histories
are one CRM export, fitted as of 2026-12-31.

The truth's expected wins from the pipeline open at that day are exact: a lead in the
proposal stage of age a from cohort m wins with p_m·S_won(a) / (p_m·S_won(a) +
(1 − p_m)·S_lost(a)), one still new with 0.6 times its cohort's p_m (the horizon of six
months outlasts every stay: P(stay > 180 days) < 1e-8).
"""

from __future__ import annotations

import csv
from datetime import date

import numpy as np
import pytest
from scipy import stats
from test_fit_losses import exports

from funnelsim import load_scenario, scenario_from_dict
from funnelsim import run as run_forecast
from funnelsim.fit import crm, drift, events, losses
from funnelsim.fit.synthetic import history_rows

AS_OF = date(2026, 12, 31)
MONTHS = 12
LEADS = 900  # a month
TO_PROPOSAL = 0.6


def win_rate(m: int) -> float:
    return 0.2 + 0.2 * m / (MONTHS - 1)


def month_truth(m: int) -> dict:
    label = f"2026-{m + 1:02d}"
    return {
        "version": 1,
        "name": f"drift truth, cohort {label}",
        "start": f"{label}-01",
        "months": 14 - m,
        "seed": 1,
        "currency": "EUR",
        "channels": {
            "web": {
                "leads_per_month": {label: LEADS},
                "deal_value": {"dist": "lognormal", "median": 4000, "sigma": 0.5},
            }
        },
        "stages": {
            "new": {
                "duration": {"dist": "lognormal", "median": 3, "sigma": 0.5},
                "next": {"proposal": TO_PROPOSAL, "lost": 1 - TO_PROPOSAL},
            },
            "proposal": {
                "duration": {
                    "won": {"dist": "lognormal", "median": 20, "sigma": 0.4},
                    "lost": {"dist": "lognormal", "median": 10, "sigma": 0.5},
                },
                "next": {"won": win_rate(m), "lost": 1 - win_rate(m)},
            },
        },
    }


@pytest.fixture(scope="module")
def drifting(tmp_path_factory):
    folder = tmp_path_factory.mktemp("drift")
    rows = []
    for m in range(MONTHS):
        scenario = scenario_from_dict(month_truth(m), source=folder / f"truth{m}.yaml")
        rows += [(f"M{m:02d}-{r[0]}", *r[1:]) for r in history_rows(scenario, seed=10 + m)]
    rows.sort(key=lambda r: r[3])
    path = folder / "events.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["lead_id", "channel", "stage", "entered_at", "value"])
        writer.writerows(rows)
    return path


def _choices(history):
    durations = crm.choose_durations(history)
    chosen = losses.choose_losses(history, durations)
    silent = frozenset(s for s, c in enumerate(chosen) if c.silent)
    return drift.choose_drift(history, durations, silent)


def test_auto_picks_drift_where_the_win_rate_rises(drifting):
    history = events.read_events(drifting, as_of=AS_OF)
    by_stage = {c.stage: c for c in _choices(history)}
    assert by_stage["proposal"].drift
    assert by_stage["proposal"].slopes["won"] > 0  # the won logit rises (lost is the last)
    assert not by_stage["new"].drift
    assert "drifts over 12 arrival months" in drift.explain(by_stage["proposal"])


def test_auto_picks_stationary_on_a_stationary_history(tmp_path):
    history = events.read_events(exports(tmp_path)["full"], as_of=date(2026, 5, 31))
    assert [c.drift for c in _choices(history)] == [False] * 4


def test_drift_none_and_a_short_history_are_stationary(drifting):
    history = events.read_events(drifting, as_of=date(2026, 2, 28))
    durations = crm.choose_durations(history)
    choices = drift.choose_drift(history, durations, frozenset())
    assert not any(c.drift for c in choices)
    assert "arrival month(s); 3 needed" in drift.explain(choices[1])
    history = events.read_events(drifting, as_of=AS_OF)
    none = drift.choose_drift(history, crm.choose_durations(history), frozenset(), "none")
    assert [c.how for c in none] == ["--drift none"] * 2


# ------------------------------------------------------------------ the pipeline forecast


def _truth_pipeline_wins(history) -> float:
    """The truth's expected wins from the open pipeline (see the module docstring)."""
    won = stats.lognorm(0.4, scale=20)
    lost = stats.lognorm(0.5, scale=10)
    cohort = crm.cohort_months(history) + MONTHS - 1  # 0 … 11
    total = 0.0
    for r in np.flatnonzero(history.stay_outcome < 0):
        p = win_rate(int(cohort[r]))
        if history.stages[history.stay_stage[r]] == "new":
            total += TO_PROPOSAL * p
            continue
        a = history.stay_days[r]
        total += p * won.sf(a) / (p * won.sf(a) + (1 - p) * lost.sf(a))
    return total


def _pipeline_wins(out) -> np.ndarray:
    """Wins in six months from the fitted scenario's open pipeline alone (no new leads)."""
    import xarray as xr

    data = load_scenario(out / "scenario.yaml").model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    data["months"] = 6
    data["pipeline"]["file"] = str(out / "open_leads.csv")
    posterior = xr.open_dataset(out / "posterior.nc", group="posterior", engine="h5netcdf")
    kept = posterior.load().drop_vars([v for v in posterior if v.startswith("arrivals__")])
    kept.to_netcdf(out / "pipeline.nc", group="posterior", engine="h5netcdf")
    data["posterior"] = {"file": str(out / "pipeline.nc")}
    for channel in data["channels"].values():
        channel.update(leads_per_month=0, growth_per_month=0)
        channel.pop("seasonality", None)
    scenario = scenario_from_dict(data, source=out / "pipeline.yaml")
    return run_forecast(scenario, replications=2000, workers=2).totals()["won"].values


@pytest.mark.slow
def test_only_the_drift_models_interval_holds_the_pipelines_wins(drifting, tmp_path):
    from funnelsim.fit.funnel_fit import fit_events

    truth = _truth_pipeline_wins(events.read_events(drifting, as_of=AS_OF))
    intervals = {}
    for mode in ("none", "auto"):
        out = tmp_path / mode
        result = fit_events(drifting, out, as_of=AS_OF, seed=2, drift_mode=mode)
        wins = _pipeline_wins(out)
        intervals[mode] = np.quantile(wins, [0.05, 0.95])
        if mode == "auto":
            assert [c["drift"] for c in result.estimates["drift"]] == [False, True]
            assert result.estimates["drift_slopes"]["proposal__won"]["posterior_mean"] > 0
    low, high = intervals["none"]
    assert not low <= truth <= high, (truth, intervals)
    low, high = intervals["auto"]
    assert low <= truth <= high, (truth, intervals)
