"""The Markov-chain oracle against values worked out by hand."""

from __future__ import annotations

import math

import pytest
from conftest import build

from funnelsim import analytic
from funnelsim.funnel import compile_funnel


def test_linear_funnel_by_hand():
    funnel = compile_funnel(build())
    e = analytic.channel_expectations(funnel, 0)
    # new → qualified 0.5 → proposal 0.6 → won 0.4
    assert e.p_won == pytest.approx(0.5 * 0.6 * 0.4)
    assert e.visits == pytest.approx({"new": 1.0, "qualified": 0.5, "proposal": 0.3})
    # a won lead spends 3 (new) + 5·e^(0.5²/2) (qualified, lognormal mean) + 12 (proposal, won)
    assert e.days_to_close_won == pytest.approx(3 + 5 * math.exp(0.125) + 12)
    # any lead: 3 + 0.5·qualified mean + 0.3·(0.4·12 + 0.6·6)
    assert e.days_to_close == pytest.approx(
        3 + 0.5 * 5 * math.exp(0.125) + 0.3 * (0.4 * 12 + 0.6 * 6)
    )
    assert e.revenue_per_lead == pytest.approx(0.12 * 10000 * math.exp(0.08))


def test_loop_by_hand():
    """a → b; b → a (loop) 0.5, won 0.3, lost 0.2: the geometric series of returns."""
    scenario = build(
        stages={
            "a": {"duration": 1, "next": {"b": 1.0}},
            "b": {"duration": 2, "next": {"a": 0.5, "won": 0.3, "lost": 0.2}},
        },
        deal_value=100,
    )
    e = analytic.channel_expectations(compile_funnel(scenario), 0)
    # each pass through b ends the lead with probability 0.5, so 2 passes on average
    assert e.visits == pytest.approx({"a": 2.0, "b": 2.0})
    assert e.p_won == pytest.approx(0.6)
    # a won lead made N passes, N ~ geometric(0.5) on {1, 2, ...} independent of the exit
    # type, so E[days | won] = 3 · E[N] = 6
    assert e.days_to_close_won == pytest.approx(6.0)
    assert e.days_to_close == pytest.approx(6.0)
    assert e.revenue_per_lead == pytest.approx(60.0)


def test_loop_with_outcome_dependent_time_by_hand():
    """q → n (nurture, 10 days) 0.2 → q; q → won 0.3 (4 days), lost 0.5 (1 day)."""
    scenario = build(
        stages={
            "q": {
                "duration": {"n": 2, "won": 4, "lost": 1},
                "next": {"n": 0.2, "won": 0.3, "lost": 0.5},
            },
            "n": {"duration": 10, "next": {"q": 1.0}},
        },
        deal_value=1,
    )
    e = analytic.channel_expectations(compile_funnel(scenario), 0)
    # P(won) = 0.3 / (1 − 0.2) = 0.375; each loop costs 2 + 10 = 12 days; the number of
    # loops L before exiting is geometric: P(L = l) = 0.2^l · 0.8, E[L] = 0.25.
    assert e.p_won == pytest.approx(0.375)
    assert e.visits == pytest.approx({"q": 1.25, "n": 0.25})
    assert e.days_to_close_won == pytest.approx(12 * 0.25 + 4)
    assert e.days_to_close == pytest.approx(12 * 0.25 + (0.3 * 4 + 0.5 * 1) / 0.8)


def test_channel_override_and_dirichlet_means():
    scenario = build(
        channels={
            "web": {"leads_per_month": 10},
            "partner": {"leads_per_month": 5, "deal_value": 50000},
        },
        stages={
            "new": {
                "duration": 1,
                "next": {"dirichlet": {"won": 2, "lost": 6}},
                "channels": {"partner": {"next": {"won": 0.5, "lost": 0.5}}},
            }
        },
    )
    funnel = compile_funnel(scenario)
    web, partner = (analytic.channel_expectations(funnel, c) for c in range(2))
    assert web.p_won == pytest.approx(0.25)
    assert partner.p_won == pytest.approx(0.5)
    assert partner.revenue_per_lead == pytest.approx(25000)


def test_pipeline_expectations_condition_on_age():
    scenario = build(
        stages={
            "p": {
                "duration": {
                    "won": {"dist": "exponential", "mean": 20},
                    "lost": {"dist": "exponential", "mean": 5},
                },
                "next": {"won": 0.5, "lost": 0.5},
            }
        },
        deal_value=10,
        pipeline={"p": {"count": 10, "days_in_stage": 10}},
    )
    expected = analytic.pipeline_expectations(compile_funnel(scenario))
    w, lo = 0.5 * math.exp(-10 / 20), 0.5 * math.exp(-10 / 5)
    assert expected["won"] == pytest.approx(10 * w / (w + lo))
    assert expected["revenue"] == pytest.approx(100 * w / (w + lo))
