"""Reproducibility and the paired random streams."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASE, build

from funnelsim import streams
from funnelsim.funnel import compile_funnel
from funnelsim.montecarlo import run, simulate_batch

SCENARIO = {
    "channels": {
        "web": {"leads_per_month": 200, "seasonality": [1, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1]},
        "events": {"leads_per_month": {"dist": "uniform", "low": 10, "high": 60}},
    },
    "stages": {
        **BASE["stages"],
        "proposal": {**BASE["stages"]["proposal"], "next": {"dirichlet": {"won": 4, "lost": 6}}},
    },
    "pipeline": {"qualified": 30},
}


@pytest.mark.parametrize("engine", ["vectorized", "des"])
def test_same_numbers_whatever_the_number_of_workers(engine):
    scenario = build(SCENARIO)
    n = 24 if engine == "vectorized" else 8
    results = [run(scenario, replications=n, workers=w, engine=engine).data for w in (1, 2, 4)]
    again = run(scenario, replications=n, workers=2, engine=engine).data
    for other in results[1:] + [again]:
        for name in results[0].data_vars:
            np.testing.assert_array_equal(results[0][name].values, other[name].values, err_msg=name)


def test_replication_i_does_not_depend_on_batching():
    funnel = compile_funnel(build(SCENARIO))
    whole = simulate_batch(funnel, "vectorized", 5, 0, 10)
    parts = [simulate_batch(funnel, "vectorized", 5, a, b) for a, b in ((0, 3), (3, 4), (4, 10))]
    for name, values in whole.arrays().items():
        joined = np.concatenate([getattr(p, name) for p in parts])
        np.testing.assert_allclose(values, joined, rtol=1e-12, err_msg=name)


def test_replication_keys_are_spawned_streams():
    """Replication i is stream i of SeedSequence(seed).spawn(n)."""
    children = np.random.SeedSequence(42).spawn(5)
    expected = [c.generate_state(1, np.uint64)[0] for c in children]
    assert streams.replication_keys(42, np.arange(5)).tolist() == expected


def test_seed_changes_the_numbers():
    scenario = build(SCENARIO)
    a = run(scenario, replications=5, workers=1, seed=1).data
    b = run(scenario, replications=5, workers=1, seed=2).data
    assert not np.array_equal(a.won.values, b.won.values)


def test_changing_one_channel_leaves_the_other_channels_draws():
    base = build(SCENARIO)
    more = dict(SCENARIO)
    more["channels"] = {**SCENARIO["channels"], "web": {"leads_per_month": 260}}
    a = run(base, replications=6, workers=1).data.sel(channel="events")
    b = run(build(more), replications=6, workers=1).data.sel(channel="events")
    for name in ("leads", "won", "lost", "revenue"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def test_more_leads_keep_the_existing_leads():
    """A higher rate keeps each existing lead (same index, same draws) and adds new ones."""
    funnel = compile_funnel(build(SCENARIO))
    keys = streams.replication_keys(3, np.arange(4))
    from funnelsim.engine.common import arrivals

    volume = np.array([[200.0, 30.0]] * 4)
    rates = volume[:, :, None] * funnel.daily_rate[None, :, :]
    few = arrivals(funnel, keys, rates)
    many = arrivals(funnel, keys, rates * 1.2)
    assert len(many) > len(few)
    assert set(few.key.tolist()) <= set(many.key.tolist())


def test_deal_values_do_not_change_outcomes():
    scenario = build(SCENARIO)
    richer = build({**SCENARIO, "deal_value": {"dist": "lognormal", "median": 20000, "sigma": 0.4}})
    a = run(scenario, replications=6, workers=1).data
    b = run(richer, replications=6, workers=1).data
    np.testing.assert_array_equal(a.won.values, b.won.values)
    np.testing.assert_allclose(b.revenue.values, 2 * a.revenue.values)  # same draws, scaled


def test_progress_reports_every_replication():
    calls = []
    run(build(SCENARIO), replications=7, workers=1, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (7, 7)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
