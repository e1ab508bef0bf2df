"""The forecast of a funnel fitted to a CRM export that hides losses, against the truth's.

The truth is the recovery truth of ``test_fit_crm``; its history is exported as a real CRM
would: with every ``lost`` row removed (silent), half of them removed (partly recorded),
or closed by a "stale after 60 days" rule. Each export is fitted as of the end of May, and
the wins of the 12 months after (the open pipeline and new leads) are forecast by

* the fitted scenario (posterior draws), and
* the truth given the history: the truth's parameters and lead volumes, the same open
  leads, with the losses the export hid as silent losses (an open lead of age a was lost
  unrecorded with the truth's weight p_lost / (p_lost + Σ_k p_k S_k(a)), which is the
  engine's treatment of ``silent_loss``).

Both forecasts take their new leads at the truth's volumes: the arrivals are fitted apart
from the losses (``test_fit_arrivals``, ``test_fit_crm``), and extrapolating five months of
10% monthly growth twelve months ahead is uncertain by more than 6% on its own (the
posterior interval of the growth), which would hide what this test checks: the stage
probabilities, times in stage and silent losses, on the open pipeline and on new leads.
The bar is the issue's: within 6% of the truth's expectation. The naive comparison is the
fit that believes every loss is recorded (``--losses recorded``, the model before silent
losses): it forecasts several times the wins.

Each fit samples the default NUTS on ~15,000 rows (minutes): slow.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml
from test_fit_crm import AS_OF, GROWTH, TRUTH
from test_fit_losses import exports

from funnelsim import load_scenario, scenario_from_dict
from funnelsim import run as run_forecast
from funnelsim.fit.funnel_fit import fit_events
from funnelsim.fit.synthetic import write_history

pytestmark = pytest.mark.slow
MONTHS = 12
REPLICATIONS = 2000
STALE = 60.0


def _won(scenario) -> np.ndarray:
    totals = run_forecast(scenario, replications=REPLICATIONS, workers=2).totals()
    return totals["won"].values


def _truth_given_history(truth: dict, out, hidden_share: float) -> np.ndarray:
    """The truth's wins in the 12 months after --as-of, with ``hidden_share`` of each
    stage's losses unrecorded, from the fit's open leads."""
    data = copy.deepcopy(truth)
    data.update(start="2026-06-01", months=MONTHS, pipeline={"file": str(out / "open_leads.csv")})
    for channel in data["channels"].values():
        channel["leads_per_month"] *= GROWTH**5
    for stage in data["stages"].values():
        for nxt in [stage["next"]] + [o["next"] for o in stage.get("channels", {}).values()]:
            if hidden_share and "lost" in nxt:
                lost = nxt.pop("lost")
                nxt["silent_loss"] = lost * hidden_share
                if hidden_share < 1:
                    nxt["lost"] = lost * (1 - hidden_share)
        if hidden_share == 1 and isinstance(stage["duration"], dict):
            stage["duration"].pop("lost", None)
    return _won(scenario_from_dict(data, source=out / "truth.yaml"))


def _fitted(out, truth: dict) -> np.ndarray:
    """The fitted scenario's wins in the 12 months after --as-of, its new leads at the
    truth's volumes (see the module docstring)."""
    import xarray as xr

    data = load_scenario(out / "scenario.yaml").model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    data["months"] = MONTHS
    data["pipeline"]["file"] = str(out / data["pipeline"]["file"])
    posterior = xr.open_dataset(out / "posterior.nc", group="posterior", engine="h5netcdf")
    kept = posterior.load().drop_vars([v for v in posterior if v.startswith("arrivals__")])
    kept.to_netcdf(out / "conversion.nc", group="posterior", engine="h5netcdf")
    data["posterior"] = {"file": str(out / "conversion.nc")}
    for name, channel in data["channels"].items():
        true = truth["channels"][name]
        channel.pop("seasonality", None)
        channel.update(
            leads_per_month=true["leads_per_month"] * GROWTH**5,
            growth_per_month=true["growth_per_month"],
        )
    return _won(scenario_from_dict(data, source=out / "fitted.yaml"))


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return exports(tmp_path_factory.mktemp("exports"))


@pytest.mark.parametrize(("kind", "hidden"), [("silent", 1.0), ("half", 0.5)])
def test_the_forecast_is_within_6_percent_of_the_truth(paths, tmp_path_factory, kind, hidden):
    out = tmp_path_factory.mktemp(f"fit_{kind}")
    fit_events(paths[kind], out, as_of=AS_OF, currency="EUR", seed=2)
    truth_data = yaml.safe_load(TRUTH)
    truth = _truth_given_history(truth_data, out, hidden)
    fitted = _fitted(out, truth_data)
    assert abs(fitted.mean() / truth.mean() - 1) < 0.06, (fitted.mean(), truth.mean())
    if kind == "silent":  # the naive comparison: every open lead a future win
        naive_out = tmp_path_factory.mktemp("fit_naive")
        fit_events(
            paths[kind], naive_out, as_of=AS_OF, currency="EUR", seed=2, losses_mode="recorded"
        )
        assert _fitted(naive_out, truth_data).mean() > 1.5 * truth.mean()


def test_stale_after_reproduces_a_truth_simulated_with_the_rule(tmp_path):
    truth = yaml.safe_load(TRUTH)
    for stage in truth["stages"].values():
        stage["stale_after"] = STALE
    scenario = scenario_from_dict(truth, source=tmp_path / "truth.yaml")
    write_history(scenario, tmp_path / "events.csv", seed=3)
    out = tmp_path / "fit"
    result = fit_events(
        tmp_path / "events.csv", out, as_of=AS_OF, currency="EUR", seed=2, stale_after=STALE
    )
    assert result.estimates["stale_after_days"] == STALE
    fitted_scenario = load_scenario(out / "scenario.yaml")
    assert all(s.stale_after == STALE for s in fitted_scenario.stages.values())
    true = _truth_given_history(truth, out, 0.0)
    fitted = _fitted(out, truth)
    assert abs(fitted.mean() / true.mean() - 1) < 0.06, (fitted.mean(), true.mean())
