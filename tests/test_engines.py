"""Both engines against the Markov-chain oracle and against each other.

Statistical checks use fixed seeds and a tolerance of 4 standard errors of the Monte Carlo
mean, estimated from the replications themselves (see ``conftest.within``). Each check is on
a per-replication quantity whose expectation is known exactly, e.g. won − P(won)·leads.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASE, build, within

from funnelsim import analytic, streams
from funnelsim.funnel import compile_funnel
from funnelsim.montecarlo import run

# A cohort: every new lead arrives in January and the horizon is long enough (3 years, the
# slowest route takes ~months) for all of them to close, so eventual values apply.
COHORT = {"months": 36, "channels": {"web": {"leads_per_month": {"2027-01": 150}}}}

LOOP = {
    "new": {
        "duration": {"dist": "exponential", "mean": 2},
        "next": {"qualified": 0.6, "lost": 0.4},
    },
    "qualified": {
        "duration": {"dist": "lognormal", "median": 6, "sigma": 0.5},
        "next": {"proposal": 0.5, "nurture": 0.3, "lost": 0.2},
    },
    "nurture": {
        "duration": {"dist": "fixed", "value": 30},
        "next": {"qualified": 0.5, "lost": 0.5},
    },
    "proposal": {
        "duration": {
            "won": {"dist": "gamma", "mean": 20, "shape": 2},
            "lost": {"dist": "weibull", "scale": 8, "shape": 1.5},
        },
        "next": {"won": 0.45, "lost": 0.55},
    },
}

TWO_CHANNELS = {
    "web": {"leads_per_month": {"2027-01": 150}},
    "referrals": {
        "leads_per_month": {"2027-01": 60},
        "deal_value": {"dist": "uniform", "low": 20000, "high": 30000},
    },
}
OVERRIDES = {
    **BASE["stages"],
    "qualified": {
        **BASE["stages"]["qualified"],
        "channels": {
            "referrals": {
                "next": {"proposal": 0.9, "lost": 0.1},
                "duration": {"dist": "empirical", "values": [1, 2, 2, 3, 10]},
            }
        },
    },
}
DIRICHLET = {
    **BASE["stages"],
    "proposal": {**BASE["stages"]["proposal"], "next": {"dirichlet": {"won": 8, "lost": 12}}},
}

CASES = {
    "linear": dict(COHORT),
    "loop": {**COHORT, "stages": LOOP},
    "channel_overrides": {**COHORT, "channels": TWO_CHANNELS, "stages": OVERRIDES},
    "dirichlet": {**COHORT, "stages": DIRICHLET},
}


@pytest.mark.parametrize("engine", ["vectorized", "des"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cohort_matches_markov_chain(case, engine):
    replications = 300 if engine == "vectorized" else 60
    scenario = build(CASES[case])
    funnel = compile_funnel(scenario)
    data = run(scenario, replications=replications, workers=1, engine=engine).data
    total = data.sum("period")
    assert float(data.open.isel(period=-1).sum()) == 0, "the cohort should have closed"
    for c, channel in enumerate(funnel.channels):
        e = analytic.channel_expectations(funnel, c)
        t = total.sel(channel=channel)
        leads, won = t.leads.values, t.won.values
        checks = {
            "won": within(won - e.p_won * leads, 0.0),
            "revenue": within(t.revenue.values - e.deal_value * won, 0.0),
            "cycle": within(t.cycle_days.values - e.days_to_close_won * t.cycle_count.values, 0.0),
        }
        for name, (ok, message) in checks.items():
            assert ok, f"{case}/{channel} {name}: {message}"
    # entries per stage: sum over channels of leads × expected visits
    leads = total.leads.values  # (replication, channel)
    for s, stage in enumerate(funnel.stages):
        visits = np.array(
            [
                analytic.channel_expectations(funnel, c).visits[stage]
                for c in range(len(funnel.channels))
            ]
        )
        ok, message = within(total.entered.values[:, s] - leads @ visits, 0.0)
        assert ok, f"{case} entered {stage}: {message}"


def test_days_in_stage_weighs_per_outcome_durations():
    scenario = build(COHORT)
    data = run(scenario, replications=300, workers=1).data.sum("period")
    stage = "proposal"
    expected = 0.4 * 12 + 0.6 * 6  # p_won·E[days | won] + p_lost·E[days | lost]
    ok, message = within(
        data.stay_days.sel(stage=stage).values - expected * data.entered.sel(stage=stage).values,
        0.0,
    )
    assert ok, message


def test_checks_can_fail():
    """The tolerance is tight enough to catch a wrong answer: a 10% wrong P(won) fails."""
    scenario = build(COHORT)
    funnel = compile_funnel(scenario)
    p = analytic.channel_expectations(funnel, 0).p_won
    total = run(scenario, replications=300, workers=1).data.sum("period").sel(channel="web")
    assert within(total.won.values - p * total.leads.values, 0.0)[0]
    assert not within(total.won.values - 1.1 * p * total.leads.values, 0.0)[0]


ARRIVALS = {
    "start": "2027-01-15",  # partial first and last months
    "months": 12,
    "channels": {
        "search": {
            "leads_per_month": 300,
            "seasonality": [0.5, 1, 1.5, 1, 1, 1, 0.7, 0.7, 1, 1.2, 1.4, 2.0],
            "growth_per_month": 0.03,
        },
        "events": {"leads_per_month": {"2027-03": 200, "2027-09": 400, "2028-01": 50}},
        "partners": {"leads_per_month": {"dist": "gamma", "mean": 40, "shape": 4}},
    },
}


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_arrivals_follow_rate_seasonality_growth_and_plans(engine):
    replications = 400 if engine == "vectorized" else 100
    scenario = build(ARRIVALS)
    funnel = compile_funnel(scenario)
    expected = analytic.expected_leads(funnel)  # (channel, period)
    data = run(scenario, replications=replications, workers=1, engine=engine).data
    assert data.sizes["period"] == 13
    for c, channel in enumerate(funnel.channels):
        for p, period in enumerate(funnel.calendar.labels):
            sample = data.leads.sel(channel=channel, period=period).values
            if expected[c, p] == 0:
                assert sample.sum() == 0, f"{channel} {period}: leads in a month with no plan"
                continue
            ok, message = within(sample, expected[c, p])
            assert ok, f"{channel} {period}: {message}"


def test_arrival_rate_by_hand():
    """The rate formula itself: 300/(365.25/12) per day × season × 1.03^k × days."""
    funnel = compile_funnel(build(ARRIVALS))
    expected = analytic.expected_leads(funnel)
    # 2027-01-15 .. 2027-01-31: 17 days, January season 0.5, k = 0
    assert expected[0, 0] == pytest.approx(300 / (365.25 / 12) * 0.5 * 17)
    # March 2027: 31 days, season 1.5, k = 2
    assert expected[0, 2] == pytest.approx(300 / (365.25 / 12) * 1.5 * 1.03**2 * 31)
    # the plan gives a calendar month's leads; the last period is 2028-01-01 .. 2028-01-14
    assert expected[1, 2] == pytest.approx(200)
    assert expected[1, 12] == pytest.approx(50 * 14 / 31)
    assert expected[2].sum() == pytest.approx(40 / (365.25 / 12) * 365)


PIPELINE_ONLY = {
    "months": 24,
    "channels": {"web": {"leads_per_month": 0}},
    "stages": BASE["stages"],
    "pipeline": {
        "proposal": {"count": 200, "days_in_stage": 15},
        "qualified": {"count": 100},
    },
}


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_pipeline_outcomes_are_conditioned_on_age(engine):
    scenario = build(PIPELINE_ONLY)
    funnel = compile_funnel(scenario)
    expected = analytic.pipeline_expectations(funnel)
    data = run(scenario, replications=300, workers=1, engine=engine).data.sum(("period", "channel"))
    assert (data.leads.values == 0).all()
    ok, message = within(data.won.values, expected["won"])
    assert ok, message
    ok, message = within(data.revenue.values, expected["revenue"])
    assert ok, message
    # Ignoring the age would be wrong: at 15 days a proposal that will be lost (mean 6 days)
    # has mostly left already, so the survivors are mostly future wins.
    naive = 200 * 0.4 + 100 * 0.6 * 0.4
    assert expected["won"] > naive + 40
    assert not within(data.won.values, naive)[0]


def test_horizon_and_period_bookkeeping_by_hand():
    """Deterministic durations: every count can be worked out on paper."""
    scenario = build(
        {
            "start": "2027-01-01",
            "months": 3,
            "channels": {"web": {"leads_per_month": 0}},
            "stages": {
                "work": {"duration": 40, "next": {"review": 1.0}},
                "review": {"duration": 30, "next": {"won": 1.0}},
            },
            "deal_value": 1000,
            "pipeline": {"work": {"count": 5, "days_in_stage": 10}, "review": {"count": 2}},
        }
    )
    for engine in ("vectorized", "des"):
        data = run(scenario, replications=2, workers=1, engine=engine).data.isel(replication=1)
        # review pipeline: closes at day 30 = 2027-01-31 (January). work pipeline: 30 days
        # left, enters review on day 30 (January), closes on day 60 = 2027-03-02 (March).
        assert data.won.sum("channel").values.tolist() == [2, 0, 5], engine
        assert data.revenue.sum("channel").values.tolist() == [2000, 0, 5000], engine
        assert data.entered.sel(stage="review").values.tolist() == [5, 0, 0], engine
        assert data.entered.sel(stage="work").values.tolist() == [0, 0, 0], engine
        # open at the end of Jan (day 31): 5 in review; Feb (day 59): 5 in review; Mar: none
        assert data.open.sel(stage="review").values.tolist() == [5, 5, 0], engine
        assert data.open.sel(stage="work").values.tolist() == [0, 0, 0], engine


ENGINE_CASES = {
    **CASES,
    "arrivals": ARRIVALS,
    "pipeline": {**PIPELINE_ONLY, "channels": BASE["channels"]},
    "loop_with_pipeline": {
        "stages": LOOP,
        "pipeline": {"nurture": {"count": 20, "days_in_stage": 12}, "proposal": 15},
    },
}


@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
def test_engines_agree_replication_by_replication(case):
    """Same model, same per-lead draws: the tallies are equal, not just close."""
    scenario = build(ENGINE_CASES[case])
    a = run(scenario, replications=12, workers=1, engine="vectorized").data
    b = run(scenario, replications=12, workers=1, engine="des").data
    for name in a.data_vars:
        np.testing.assert_allclose(
            a[name].values, b[name].values, rtol=1e-12, atol=1e-9, err_msg=name
        )
    assert a.won.sum() > 0


def test_every_lead_ends_won_lost_or_open():
    scenario = build({**ENGINE_CASES["loop_with_pipeline"]})
    data = run(scenario, replications=50, workers=1).data
    per_rep = data.sum("period")
    ended = per_rep.won.sum("channel") + per_rep.lost.sum("channel")
    still_open = data.open.isel(period=-1).sum("stage")
    arrived = per_rep.leads.sum("channel")
    np.testing.assert_array_equal(arrived + len(scenario.open_leads), ended + still_open)


def test_memory_does_not_grow_with_the_number_of_leads(monkeypatch):
    """A replication with many leads is simulated a few months at a time: 4× the leads
    over the same 48 months need about the same peak memory (whole, they need 4×)."""
    import tracemalloc

    from funnelsim.engine import vectorized

    monkeypatch.setattr(vectorized, "LEADS_PER_GROUP", 20_000)

    def peak(leads_per_month: int) -> int:
        funnel = compile_funnel(
            build({"months": 48, "channels": {"web": {"leads_per_month": leads_per_month}}})
        )
        tracemalloc.start()
        vectorized.simulate(funnel, streams.replication_keys(5, np.arange(1)))
        result = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return result

    small, large = peak(4_000), peak(16_000)
    assert large < 1.6 * small, (small, large)


def test_simulating_a_few_months_at_a_time_gives_the_same_numbers(monkeypatch):
    from funnelsim.engine import vectorized

    scenario = build(
        {
            "channels": {"web": {"leads_per_month": 300, "growth_per_month": 0.05}},
            "stages": LOOP,
            "pipeline": {"qualified": 20},
        }
    )
    funnel = compile_funnel(scenario)
    keys = streams.replication_keys(3, np.arange(4))
    whole = vectorized.simulate(funnel, keys)
    monkeypatch.setattr(vectorized, "LEADS_PER_GROUP", 1_000)
    assert len(vectorized.arrival_groups(funnel)) > 3
    parts = vectorized.simulate(funnel, keys)
    for name, values in whole.arrays().items():
        np.testing.assert_allclose(getattr(parts, name), values, rtol=1e-12, err_msg=name)


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_wins_and_revenue_follow_seasonality_growth_and_the_horizon_by_hand(engine):
    """Won and revenue per month against the issue's rate formula, computed day by day here
    (not by analytic.py): every lead is won with probability 0.3 exactly 3 days after it
    arrives, so month m's wins are 0.3 × the expected leads arriving 3 days before it, and
    leads of the last 3 days are still open at the end. Thinning a Poisson process leaves
    it Poisson, so the tolerance is 4 standard errors of the replications' spread."""
    import datetime as dt

    season = [0.6, 0.8, 1.4, 1.2, 1.0, 0.9, 0.7, 0.8, 1.1, 1.3, 1.5, 1.0]
    scenario = build(
        {
            "start": "2027-02-10",
            "months": 12,
            "channels": {
                "web": {"leads_per_month": 150, "seasonality": season, "growth_per_month": 0.04}
            },
            "stages": {
                "call": {
                    "duration": {"dist": "fixed", "value": 3},
                    "next": {"won": 0.3, "lost": 0.7},
                }
            },
            "deal_value": 1000,
        }
    )
    start, end = dt.date(2027, 2, 10), dt.date(2028, 2, 10)
    days = (end - start).days
    won = {}
    for d in range(days - 3):  # leads arriving then close inside the horizon
        arrive, close = start + dt.timedelta(d), start + dt.timedelta(d + 3)
        k = (arrive.year - start.year) * 12 + arrive.month - start.month
        rate = 150 / (365.25 / 12) * season[arrive.month - 1] * 1.04**k
        label = f"{close.year}-{close.month:02d}"
        won[label] = won.get(label, 0.0) + 0.3 * rate
    data = run(
        scenario, replications=300 if engine == "vectorized" else 100, workers=1, engine=engine
    ).data
    assert list(data.period.values) == list(won)
    for label, expected in won.items():
        sample = data.won.sel(period=label).sum("channel").values
        ok, message = within(sample, expected)
        assert ok, f"won in {label}: {message}"
        revenue = data.revenue.sel(period=label).sum("channel").values
        np.testing.assert_array_equal(revenue, 1000 * sample)
    ok, message = within(data.won.sum(("period", "channel")).values, sum(won.values()))
    assert ok, f"won in the horizon: {message}"
