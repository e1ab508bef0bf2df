"""Word of mouth: a channel whose leads come at a rate per active customer.

The checks are exact expectations: with a fixed monthly churn θ, existing subscribers
renew on the start date's monthly anniversaries, so (1 − θ)^m of them are active at the
start of month m; and when every referred lead is won at once, the active customers grow
by a linear recursion, E[A(m+1)] = E[A(m)] · (1 + k · p_won · days(m) / 30.44).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASE, build, within

from funnelsim.errors import InputError
from funnelsim.montecarlo import EngineError, choose_engine, run
from funnelsim.scenario import DAYS_PER_MONTH

SUBSCRIPTION = {"model": "subscription", "billing": "month", "price": 50, "churn": 0.1}
K = 0.08  # leads per active customer per month


def scenario(*, won: float = 0.0, duration=2.0, existing: int = 1000, **channel):
    return build(
        channels={"referrals": {"leads_per_active_customer_per_month": K, **channel}},
        stages={"trial": {"duration": duration, "next": {"won": won, "lost": 1 - won}}},
        repeat=SUBSCRIPTION,
        existing_customers={"count": existing},
    )


def month_days(s) -> np.ndarray:
    edges = [np.datetime64(s.start, "M") + m for m in range(s.months + 1)]
    return np.diff(np.array(edges).astype("datetime64[D]")).astype(float)


def test_referred_leads_follow_the_active_existing_customers():
    s = scenario()  # no lead is won: only the existing subscribers refer
    leads = run(s, replications=300, workers=1).metrics()["leads"]
    expected = 1000 * K * 0.9 ** np.arange(12) * month_days(s) / DAYS_PER_MONTH
    for m in (0, 5, 11):
        ok, message = within(leads.values[:, m], expected[m])
        assert ok, f"month {m + 1}: {message}"
    total = leads.sum("period").values
    ok, message = within(total, expected.sum())
    assert ok, message
    assert not within(total, 1.05 * expected.sum())[0]  # it can fail


def test_customers_won_from_referrals_refer_in_turn():
    churn_free = {**SUBSCRIPTION, "churn": 0.0}
    s = build(
        channels={"referrals": {"leads_per_active_customer_per_month": K}},
        stages={"trial": {"duration": 0, "next": {"won": 0.5, "lost": 0.5}}},
        repeat=churn_free,
        existing_customers={"count": 500},
    )
    totals = run(s, replications=300, workers=1).totals()
    growth = K * 0.5 * month_days(s) / DAYS_PER_MONTH
    active = 500 * np.concatenate(([1.0], np.cumprod(1 + growth)))
    expected_leads = float((K * month_days(s) / DAYS_PER_MONTH * active[:-1]).sum())
    ok, message = within(totals["leads"].values, expected_leads)
    assert ok, message
    ok, message = within(totals["customers_active_at_end"].values, active[-1])
    assert ok, message
    without_feedback = 500 * K * 12 * 365 / 365.25
    assert not within(totals["leads"].values, without_feedback)[0]  # the feedback shows


def test_word_of_mouth_runs_on_the_des_only():
    s = scenario()
    assert choose_engine(s) == "des"
    with pytest.raises(EngineError, match="word of mouth"):
        choose_engine(s, "vectorized")


def test_same_numbers_whatever_the_workers():
    s = scenario(won=0.4, duration={"dist": "exponential", "mean": 5})
    one = run(s, replications=40, workers=1).totals()
    two = run(s, replications=40, workers=2).totals()
    for name in ("leads", "won", "revenue", "customers_active_at_end"):
        np.testing.assert_array_equal(one[name].values, two[name].values)


@pytest.mark.parametrize(
    ("changes", "where", "words"),
    [
        (
            {"repeat": None, "existing_customers": None},
            "leads_per_active_customer_per_month",
            "needs a repeat section",
        ),
        ({"leads_per_month": 10}, "leads_per_month", "not both"),
    ],
)
def test_bad_word_of_mouth_channels(changes, where, words):
    data = {
        **BASE,
        "channels": {"referrals": {"leads_per_active_customer_per_month": K}},
        "repeat": SUBSCRIPTION,
    }
    if "leads_per_month" in changes:
        data["channels"]["referrals"]["leads_per_month"] = changes["leads_per_month"]
    else:
        data = {k: v for k, v in data.items() if k != "repeat"}
    with pytest.raises(InputError) as error:
        build(base=data)
    text = error.value.render()
    assert f"channels -> referrals -> {where}" in text and words in text
