"""Hypothesis properties of both engines on random funnels.

Every lead ends won, lost or open; the funnel's stock of open leads moves only by arrivals
and closes; in a loop-free funnel counts never increase down the funnel; and the two
engines give the same tally.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from funnelsim.montecarlo import run
from funnelsim.scenario import scenario_from_dict

durations = st.one_of(
    st.builds(lambda m: {"dist": "exponential", "mean": m}, st.floats(0.5, 40)),
    st.builds(lambda v: {"dist": "fixed", "value": v}, st.floats(0.5, 40)),
    st.builds(
        lambda lo, w: {"dist": "uniform", "low": lo, "high": lo + w},
        st.floats(0, 10),
        st.floats(0.1, 20),
    ),
    st.builds(
        lambda m, s: {"dist": "lognormal", "median": m, "sigma": s},
        st.floats(0.5, 20),
        st.floats(0.1, 1.5),
    ),
    st.builds(
        lambda m, k: {"dist": "gamma", "mean": m, "shape": k}, st.floats(0.5, 30), st.floats(0.3, 5)
    ),
)


@st.composite
def funnels(draw, *, loops: bool):
    n = draw(st.integers(1, 5))
    names = [f"s{i}" for i in range(n)]
    stages = {}
    for i, name in enumerate(names):
        weights = {"lost": draw(st.floats(0.05, 1)), "won": draw(st.floats(0, 1))}
        if i + 1 < n:
            weights[names[i + 1]] = draw(st.floats(0.05, 1))
        if loops and i > 0 and draw(st.booleans()):
            weights[names[draw(st.integers(0, i))]] = draw(st.floats(0.01, 0.8))
        total = sum(weights.values())
        probs = {k: v / total for k, v in weights.items()}
        probs["lost"] = 1.0 - sum(v for k, v in probs.items() if k != "lost")
        stage = {"next": probs}
        if draw(st.booleans()):
            stage["duration"] = {k: draw(durations) for k in probs}
        else:
            stage["duration"] = draw(durations)
        stages[name] = stage
    pipeline = {}
    for name in names:
        if draw(st.booleans()):
            pipeline[name] = draw(st.integers(0, 15))
    data = {
        "version": 1,
        "start": draw(st.sampled_from(["2027-01-01", "2027-02-15", "2028-12-31"])),
        "months": draw(st.integers(1, 5)),
        "currency": "EUR",
        "seed": draw(st.integers(0, 2**32)),
        "channels": {
            "a": {"leads_per_month": draw(st.floats(0, 40))},
            "b": {"leads_per_month": {"dist": "uniform", "low": 0, "high": 20}, "deal_value": 5},
        },
        "stages": stages,
        "deal_value": {"dist": "exponential", "mean": 100},
    }
    if pipeline:
        data["pipeline"] = pipeline
    return scenario_from_dict(data)


def _check_conservation(scenario, data):
    per_rep = data.sum("period")
    arrived = per_rep.leads.sum("channel").values
    closed = (per_rep.won + per_rep.lost).sum("channel").values
    open_end = data.open.isel(period=-1).sum("stage").values
    np.testing.assert_array_equal(arrived + len(scenario.open_leads), closed + open_end)
    # the stock of open leads moves only by arrivals and closes, period by period
    stock = data.open.sum("stage").values
    flow = (data.leads - data.won - data.lost).sum("channel").values
    previous = np.concatenate(
        [np.full((stock.shape[0], 1), len(scenario.open_leads)), stock[:, :-1]], axis=1
    )
    np.testing.assert_array_equal(stock, previous + flow)
    assert (data.open.values >= 0).all()


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(funnels(loops=True))
def test_conservation_and_engines_agree(scenario):
    a = run(scenario, replications=3, workers=1, engine="vectorized").data
    b = run(scenario, replications=3, workers=1, engine="des").data
    _check_conservation(scenario, a)
    for name in a.data_vars:
        np.testing.assert_allclose(
            a[name].values, b[name].values, rtol=1e-12, atol=1e-9, err_msg=name
        )


@SETTINGS
@given(funnels(loops=False))
def test_counts_never_increase_down_a_loop_free_funnel(scenario):
    data = run(scenario, replications=4, workers=1).data.sum("period")
    entered = data.entered.values  # (replication, stage), stages in funnel order
    opening = np.zeros(entered.shape[1])
    for lead in scenario.open_leads:
        opening[list(scenario.stages).index(lead.stage)] += 1
    # leads entering stage i+1 come from stage i: its entries plus its opening pipeline
    assert (entered[:, 1:] <= entered[:, :-1] + opening[None, :-1]).all()
    assert (entered[:, 0] == data.leads.sum("channel").values).all()
    won, lost = data.won.sum("channel").values, data.lost.sum("channel").values
    rate = np.divide(won, won + lost, out=np.zeros_like(won), where=(won + lost) > 0)
    assert ((0 <= rate) & (rate <= 1)).all()
