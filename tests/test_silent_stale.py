"""Silent losses (outcome ``silent_loss``) and stale leads (``stale_after``): both engines
against the Markov-chain oracle, against each other, and against values worked out by hand.

Statistical checks use fixed seeds and 4 standard errors of the Monte Carlo mean
(``conftest.within``), on per-replication quantities whose expectation is known exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import BASE, build, within

from funnelsim import analytic, streams
from funnelsim.engine import des
from funnelsim.funnel import compile_funnel
from funnelsim.montecarlo import run

# every new lead arrives in January; 3 years is long enough for all of them to close
COHORT = {
    "months": 36,
    "channels": {
        "web": {"leads_per_month": {"2027-01": 200}},
        "ads": {"leads_per_month": {"2027-01": 100}},
    },
}

SILENT = {
    "new": {
        "duration": {
            "qualified": {"dist": "exponential", "mean": 3},
            "won": 2,
            "lost": {"dist": "gamma", "mean": 4, "shape": 2},
        },
        "next": {"qualified": 0.4, "won": 0.05, "lost": 0.15, "silent_loss": 0.4},
        "channels": {"ads": {"next": {"qualified": 0.2, "won": 0.02, "silent_loss": 0.78}}},
    },
    "qualified": {
        "duration": {"dist": "lognormal", "median": 12, "sigma": 0.6},
        "next": {"won": 0.35, "lost": 0.35, "silent_loss": 0.3},
    },
}

SILENT_LOOP = {
    "new": {
        "duration": {"dist": "exponential", "mean": 2},
        "next": {"qualified": 0.7, "silent_loss": 0.3},
    },
    "qualified": {
        "duration": {"dist": "lognormal", "median": 6, "sigma": 0.5},
        "next": {"nurture": 0.3, "won": 0.3, "lost": 0.2, "silent_loss": 0.2},
    },
    "nurture": {
        "duration": {"dist": "fixed", "value": 30},
        "next": {"qualified": 0.5, "silent_loss": 0.5},
    },
}

STALE = {
    "new": {
        "duration": {"dist": "exponential", "mean": 3},
        "next": {"proposal": 0.6, "lost": 0.4},
    },
    "proposal": {  # lognormal stays, many longer than 45 days: those go stale
        "duration": {"won": {"dist": "lognormal", "median": 30, "sigma": 0.8}},  # none for
        "next": {"won": 0.5, "silent_loss": 0.5},  # silent_loss, which stays until day 45
        "stale_after": 45,
    },
}

STALE_LOOP = {
    "qualified": {
        "duration": {"dist": "gamma", "mean": 20, "shape": 1.5},
        "next": {"nurture": 0.3, "won": 0.3, "lost": 0.2, "silent_loss": 0.2},
        "stale_after": 25,
    },
    "nurture": {
        "duration": {"dist": "weibull", "scale": 40, "shape": 1.2},
        "next": {"qualified": 0.6, "lost": 0.4},
        "stale_after": 60,
    },
}

CASES = {
    "silent": {**COHORT, "stages": SILENT},
    "silent_loop": {**COHORT, "stages": SILENT_LOOP},
    "stale": {**COHORT, "stages": STALE},
    "stale_loop": {**COHORT, "stages": STALE_LOOP},
    "silent_dirichlet": {
        **COHORT,
        "stages": {
            **SILENT,
            "qualified": {
                **SILENT["qualified"],
                "next": {"dirichlet": {"won": 7, "lost": 7, "silent_loss": 6}},
            },
        },
    },
}


@pytest.mark.parametrize("engine", ["vectorized", "des"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_cohort_matches_markov_chain(case, engine):
    replications = 300 if engine == "vectorized" else 40
    scenario = build(CASES[case])
    funnel = compile_funnel(scenario)
    forecast = run(scenario, replications=replications, workers=1, engine=engine)
    data = forecast.data
    total = data.sum("period")
    assert float(data.open.isel(period=-1).sum()) == 0, "the cohort should have closed"
    # a stale stage's rule records its silent losses as lost: no stage here then loses a
    # lead silently, and the forecast reports no silent_lost (its raw count stays 0)
    silent = not case.startswith("stale")
    assert funnel.has_silent_loss == silent
    assert ("silent_lost" in forecast.totals()) == silent
    for c, channel in enumerate(funnel.channels):
        e = analytic.channel_expectations(funnel, c)
        t = total.sel(channel=channel)
        leads = t.leads.values
        checks = {
            "won": within(t.won.values - e.p_won * leads, 0.0),
            "lost": within(t.lost.values - e.p_lost * leads, 0.0),
            "silent_lost": within(t.silent_lost.values - e.p_silent_lost * leads, 0.0),
            "cycle": within(t.cycle_days.values - e.days_to_close_won * t.cycle_count.values, 0.0),
        }
        for name, (ok, message) in checks.items():
            assert ok, f"{case}/{channel} {name}: {message}"
    if not silent:
        assert float(total.silent_lost.sum()) == 0
        return
    assert float(total.silent_lost.sum()) > 0
    # the metric is there, in total, per stage (the stage left) and per channel
    totals = forecast.totals()
    np.testing.assert_allclose(
        totals.silent_lost.values, totals.stage_silent_lost.sum("stage").values
    )
    np.testing.assert_allclose(
        totals.silent_lost.values, totals.channel_silent_lost.sum("channel").values
    )


def test_checks_can_fail():
    """The oracle's silent losses differ from a run that ignores them (counting them as
    lost): the cohort test above would catch an engine that books them as lost."""
    funnel = compile_funnel(build(CASES["silent"]))
    e = analytic.channel_expectations(funnel, 0)
    # web: P(silent) = 0.4 + 0.4·0.3 = 0.52; P(won) = 0.05 + 0.4·0.35 = 0.19
    assert e.p_silent_lost == pytest.approx(0.52)
    assert e.p_won == pytest.approx(0.19)
    assert e.p_lost == pytest.approx(1 - 0.52 - 0.19)
    data = run(build(CASES["silent"]), replications=100, workers=1).data.sum("period")
    t = data.sel(channel="web")
    ok, _ = within(t.lost.values - (e.p_lost + e.p_silent_lost) * t.leads.values, 0.0)
    assert not ok


def test_stale_probabilities_by_hand():
    """proposal: won 0.5 with a lognormal(30, 0.8) stay, silent_loss 0.5, stale after 45:
    won needs the stay to end by day 45; everything else is lost at day 45."""
    funnel = compile_funnel(build(CASES["stale"]))
    e = analytic.channel_expectations(funnel, 0)
    f45 = 0.5 * (1 + math.erf(math.log(45 / 30) / (0.8 * math.sqrt(2))))
    assert e.p_won == pytest.approx(0.6 * 0.5 * f45)
    assert e.p_silent_lost == 0.0
    assert e.p_lost == pytest.approx(1 - 0.6 * 0.5 * f45)
    assert e.visits == pytest.approx({"new": 1.0, "proposal": 0.6})


# ---------------------------------------------------------------- both engines, exactly

ENGINE_CASES = {
    **CASES,
    "pipeline": {
        "channels": {"web": {"leads_per_month": 80}, "ads": {"leads_per_month": 40}},
        "stages": SILENT,
        "pipeline": {"qualified": {"count": 40, "days_in_stage": 20}, "new": 10},
    },
    "stale_pipeline": {
        "channels": BASE["channels"],
        "stages": STALE_LOOP,
        "pipeline": {
            "qualified": {"count": 30, "days_in_stage": 10},
            "nurture": {"count": 20, "days_in_stage": 70},
        },
    },
    "silent_loop_pipeline": {
        "stages": SILENT_LOOP,
        "pipeline": {"nurture": {"count": 20, "days_in_stage": 12}, "qualified": 15},
    },
}


@pytest.mark.parametrize("case", sorted(ENGINE_CASES))
def test_engines_agree_replication_by_replication(case):
    """Same model, same per-lead draws: the tallies are equal, not just close."""
    scenario = build(ENGINE_CASES[case])
    a = run(scenario, replications=10, workers=1, engine="vectorized").data
    b = run(scenario, replications=10, workers=1, engine="des").data
    for name in a.data_vars:
        np.testing.assert_allclose(
            a[name].values, b[name].values, rtol=1e-12, atol=1e-9, err_msg=name
        )
    assert a.won.sum() > 0
    assert a.silent_lost.sum() > 0 or "stale" in case


def test_unlimited_sales_team_matches_the_vectorized_engine():
    """Rep-worked stages with silent losses and stale_after: with capacity to spare no lead
    waits, and the DES gives the vectorized engine's numbers."""
    stages = {
        **SILENT_LOOP,
        "qualified": {**SILENT_LOOP["qualified"], "stale_after": 9},
    }
    common = {
        "stages": stages,
        "pipeline": {"qualified": {"count": 15, "days_in_stage": 4}, "new": 5},
    }
    team = {"reps": 2, "leads_per_rep": 1_000_000, "stages": ["qualified"]}
    a = run(build(common, sales_team=team), replications=6, workers=1).data
    b = run(build(common), replications=6, workers=1, engine="vectorized").data
    assert a.attrs["engine"] == "des"
    for name in b.data_vars:
        np.testing.assert_allclose(
            a[name].values, b[name].values, rtol=1e-12, atol=1e-9, err_msg=name
        )


@pytest.mark.parametrize("engine", ["vectorized", "des"])
@pytest.mark.parametrize("case", ["pipeline", "stale_pipeline", "silent_loop_pipeline"])
def test_every_lead_ends_won_lost_silently_lost_or_open(case, engine):
    scenario = build(ENGINE_CASES[case])
    data = run(scenario, replications=20, workers=1, engine=engine).data
    per_rep = data.sum("period")
    ended = (
        per_rep.won.sum("channel")
        + per_rep.lost.sum("channel")
        + per_rep.silent_lost.sum("channel")
    )
    still_open = data.open.isel(period=-1).sum("stage")
    arrived = per_rep.leads.sum("channel")
    np.testing.assert_array_equal(arrived + len(scenario.open_leads), ended + still_open)
    np.testing.assert_array_equal(
        per_rep.silent_lost.sum("channel"), per_rep.silent_lost_by_stage.sum("stage")
    )


# ---------------------------------------------------------------- the opening pipeline

AGED = {
    "months": 6,
    "channels": {"web": {"leads_per_month": 0}},
    "deal_value": 100,
    "stages": {
        "proposal": {
            "duration": {
                "won": {"dist": "exponential", "mean": 20},
                "lost": {"dist": "exponential", "mean": 5},
            },
            "next": {"won": 0.3, "lost": 0.3, "silent_loss": 0.4},
        }
    },
}


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_opening_leads_are_presumed_silently_lost_by_their_age(engine):
    """N open leads all aged a: each is silently lost with q / (q + Σ p_k S_k(a)), at once
    (in the first period), from its stage."""
    n, age = 400, 10.0
    scenario = build(AGED, pipeline={"proposal": {"count": n, "days_in_stage": age}})
    data = run(scenario, replications=200, workers=1, engine=engine).data
    share = 0.4 / (0.4 + 0.3 * math.exp(-age / 20) + 0.3 * math.exp(-age / 5))
    silent = data.silent_lost_by_stage.sel(stage="proposal")
    assert float(silent.isel(period=slice(1, None)).sum()) == 0, "only in the first period"
    ok, message = within(silent.isel(period=0).values - share * n, 0.0)
    assert ok, message
    # ... which is the analytic oracle's value too, and far from the unaged share 0.4
    expected = analytic.pipeline_expectations(compile_funnel(scenario))
    assert expected["silent_lost"] == pytest.approx(share * n)
    assert not within(silent.isel(period=0).values - 0.4 * n, 0.0)[0]


def test_a_very_old_open_lead_is_almost_surely_silently_lost():
    scenario = build(AGED, pipeline={"proposal": {"count": 50, "days_in_stage": 300}})
    data = run(scenario, replications=20, workers=1).data
    assert (data.silent_lost.isel(period=0).sum("channel").values == 50).all()
    assert float(data.won.sum() + data.lost.sum()) == 0


# ---------------------------------------------------------------- stale_after by hand


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_stays_never_exceed_stale_after(engine):
    """Fixed 50-day stays in a stage stale after 30: every lead is lost at day 30 exactly."""
    scenario = build(
        months=12,
        channels={"web": {"leads_per_month": 60}},
        stages={"deal": {"duration": 50, "next": {"won": 1.0}, "stale_after": 30}},
        deal_value=10,
    )
    data = run(scenario, replications=5, workers=1, engine=engine).data
    total = data.sum("period")
    assert float(total.won.sum()) == 0
    np.testing.assert_allclose(total.stay_days.values, 30.0 * total.entered.values)
    arrived = float(total.leads.sum())
    assert float(total.lost.sum() + data.open.isel(period=-1).sum()) == arrived


def test_traced_stays_never_exceed_stale_after():
    """From the DES's trace of random stays: no stay in a stale stage is longer than its
    stale_after, and a lead still there at the horizon entered it less than that before."""
    scenario = build(
        months=8,
        channels={"web": {"leads_per_month": 300}},
        stages=STALE_LOOP,
        pipeline={"qualified": {"count": 30, "days_in_stage": 10}},
    )
    funnel = compile_funnel(scenario)
    limit = {s: t.stale_after for s, t in enumerate(funnel.tables)}
    trace = des.trace(funnel, int(streams.replication_keys(5, np.arange(1))[0]))
    horizon = funnel.calendar.horizon
    longest = {0: 0.0, 1: 0.0}
    for lead in np.unique(trace.lead):
        mine = np.flatnonzero(trace.lead == lead)
        stages, times = trace.stage[mine], trace.t[mine]
        for j, s in enumerate(stages.tolist()):
            if s >= len(funnel.stages):
                continue
            # the next event ends the stay; none: still there at the horizon (no silent
            # losses here: in a stale stage they are lost, and traced, at stale_after)
            ends = times[j + 1] if j + 1 < len(mine) else horizon
            assert ends - times[j] <= limit[s] + 1e-9, (lead, s, times[j], ends)
            longest[s] = max(longest[s], ends - times[j])
    assert longest[0] == pytest.approx(25) and longest[1] == pytest.approx(60)


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_opening_leads_older_than_stale_after_are_lost_in_the_first_period(engine):
    """A stage stale after 30 days with fixed stays: won 25, lost 40 days. Leads aged 45
    are lost at once; leads aged 20 close as won at day 5 or, with lost's 40-day stay
    (20 + 20 > 30), are lost at day 10 by the rule."""
    common = {
        "channels": {"web": {"leads_per_month": 0}},
        "deal_value": 10,
        "stages": {
            "deal": {
                "duration": {"won": 25, "lost": 40},
                "next": {"won": 0.5, "lost": 0.5},
                "stale_after": 30,
            }
        },
    }

    def aged(days: float) -> dict:
        return {"deal": {"count": 40, "days_in_stage": days}}

    scenario = build(months=3, **common, pipeline=aged(45))
    data = run(scenario, replications=5, workers=1, engine=engine).data
    lost = data.lost.sum("channel").values
    assert (lost[:, 0] == 40).all() and (lost[:, 1:] == 0).all()
    assert float(data.won.sum()) == 0
    assert float(data.open.sum()) == 0

    younger = build(months=3, **common, pipeline=aged(20))
    data = run(younger, replications=5, workers=1, engine=engine).data
    closed = (data.won + data.lost).sum("channel").values
    assert (closed[:, 0] == 40).all() and (closed[:, 1:] == 0).all()
    assert float(data.won.sum()) > 0 and float(data.lost.sum()) > 0
    assert float(data.open.sum()) == 0


def test_trace_records_no_silent_loss():
    """The DES's trace is the history a CRM would hold: wins and losses are recorded, silent
    losses are not (their leads' last event is the entry into the stage they left)."""
    scenario = build(months=6, channels={"web": {"leads_per_month": 200}}, stages=SILENT_LOOP)
    funnel = compile_funnel(scenario)
    key = int(streams.replication_keys(3, np.arange(1))[0])
    trace = des.trace(funnel, key)
    data = run(scenario, replications=1, seed=3, workers=1, engine="des").data
    assert int((trace.stage == funnel.won).sum()) == int(data.won.sum())
    assert int((trace.stage == funnel.lost).sum()) == int(data.lost.sum())
    assert not (trace.stage == funnel.silent).any()
    assert int(data.silent_lost.sum()) > 0
