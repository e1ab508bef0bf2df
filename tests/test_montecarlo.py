"""Reproducibility and the paired random streams."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest
from conftest import BASE, build

from funnelsim import montecarlo, streams
from funnelsim.funnel import compile_funnel
from funnelsim.montecarlo import EngineError, choose_engine, run, simulate_batch

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


def test_auto_picks_the_vectorized_engine_unless_a_sales_team_needs_the_des():
    plain = build(SCENARIO)
    assert choose_engine(plain) == "vectorized"
    assert run(plain, replications=2, workers=1).data.attrs["engine"] == "vectorized"
    team = build(
        {**SCENARIO, "sales_team": {"reps": 2, "leads_per_rep": 3, "stages": ["proposal"]}}
    )
    assert choose_engine(team) == "des"
    assert choose_engine(plain, "des") == "des"
    with pytest.raises(EngineError, match="sales team"):
        choose_engine(team, "vectorized")


def test_workers_default_to_the_cpu_count(monkeypatch):
    asked = []
    batches = montecarlo._batches
    monkeypatch.setattr(montecarlo.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(
        montecarlo, "_batches", lambda *args: asked.append(args[-1]) or batches(*args)
    )
    run(build(SCENARIO), replications=4)
    assert asked == [3]


def test_an_interrupted_run_stops_its_workers_at_once():
    """Ctrl-C (here raised from the progress callback after the first batch) must not wait
    for the queued batches: the run stops in a fraction of the time the whole run takes."""
    scenario = build(SCENARIO)
    n = 400  # ~50 batches of the DES on two workers

    began = time.perf_counter()
    run(scenario, replications=n, workers=2, engine="des")
    whole = time.perf_counter() - began

    def interrupt(done, total):
        raise KeyboardInterrupt

    others = set(multiprocessing.active_children())  # e.g. left by earlier tests
    began = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run(scenario, replications=n, workers=2, engine="des", progress=interrupt)
    stopped = time.perf_counter() - began
    assert set(multiprocessing.active_children()) <= others  # the run's workers are gone
    assert stopped < whole / 3, (stopped, whole)
