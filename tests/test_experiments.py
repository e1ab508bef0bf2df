"""Paired experiments (funnelsim.experiments): common random numbers, levers, targets, goal.

Statistical checks use the Monte Carlo standard error of the paired differences (4 standard
errors) with fixed seeds; exact checks are exact where common random numbers make them so
(a lever that scales every draw of one part scales that part's totals exactly).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import BASE, build, within

from funnelsim.analytic import channel_expectations, expected_leads
from funnelsim.errors import InputError
from funnelsim.experiments import (
    DIFF_METRICS,
    TargetSpec,
    Variant,
    change_lever,
    compare,
    difference,
    goal,
    improve,
    levers,
    parse_step,
    parse_target,
    parse_variant_options,
    target_report,
    target_specs,
    variant_of,
)
from funnelsim.funnel import compile_funnel
from funnelsim.montecarlo import run
from funnelsim.scenario import lever_names, load_scenario, scenario_from_dict, scenario_with

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))

# A loop-free funnel whose stays last minutes: within a year's horizon every lead closes,
# so the eventual Markov-chain expectations are the horizon's (the cut is negligible).
FAST = {
    "channels": {"web": {"leads_per_month": 120}, "partners": {"leads_per_month": 40}},
    "stages": {
        "new": {
            "duration": {"dist": "exponential", "mean": 0.01},
            "next": {"qualified": 0.5, "lost": 0.5},
        },
        "qualified": {
            "duration": {"dist": "exponential", "mean": 0.02},
            "next": {"won": 0.4, "lost": 0.6},
        },
    },
}

ECONOMICS = {
    "costs": {
        "channels": {"web": {"cost_per_lead": 30}},
        "rep_per_month": 9000,
        "gross_margin": 0.7,
    },
    "repeat": {
        "model": "bg_nbd",
        "unit": "week",
        "r": 0.5,
        "alpha": 10.0,
        "a": 0.8,
        "b": 2.5,
        "spend": {"model": "gamma_gamma", "p": 5.0, "q": 4.0, "gamma": 300.0},
    },
    "existing_customers": {"count": 300},
}


def totals(scenario, replications=None, seed=None, workers=1):
    return run(scenario, replications=replications, seed=seed, workers=workers).totals()


# ------------------------------------------------------------------ compare


def test_compare_of_a_scenario_with_itself_is_exactly_zero():
    base = build(ECONOMICS, replications=60)
    result = compare(base, [variant_of(base, "same", [])], workers=1)
    metrics = result["variants"][0]["metrics"]
    assert set(metrics) == set(DIFF_METRICS)  # every metric is there with repeat and costs
    for metric, d in metrics.items():
        for key in ("mean", "sd", "p5", "p50", "p95"):
            assert d[key] == 0.0, (metric, key)
        assert d["p_greater"] == 0.0 and d["p_less"] == 0.0
        assert d["base_mean"] == d["variant_mean"]


def test_compare_pairs_replication_i_with_replication_i():
    base = build(FAST, replications=40)
    variant = variant_of(base, "more", ["channels.web.leads_per_month=150"])
    result = compare(base, [variant], workers=1)
    won = result["variants"][0]["metrics"]["won"]
    a, b = totals(base)["won"].values, totals(variant.scenario)["won"].values
    expected = difference(a, b)
    assert won["mean"] == pytest.approx(expected["mean"])
    assert won["p95"] == pytest.approx(expected["p95"])
    # the variant's leads include the base's: never fewer wins, replication by replication
    assert (b >= a).all() and won["p_less"] == 0.0


def test_compare_does_not_depend_on_the_number_of_workers():
    base = build(FAST, replications=24)
    variants = [variant_of(base, "more", ["channels.partners.leads_per_month=60"])]
    one = compare(base, variants, workers=1)
    two = compare(base, variants, workers=2)
    assert one == two


@pytest.mark.parametrize(
    "changes",
    [
        ["channels.web.leads_per_month=132"],  # +10% leads of one channel
        ["deal_value.median=10500"],  # +5% deal value
        ["stages.qualified.next.won=0.44", "stages.qualified.next.lost=0.56"],  # +10% close rate
    ],
    ids=["leads", "deal_value", "close_rate"],
)
def test_common_random_numbers_reduce_the_variance_of_a_small_change_3x(changes):
    base = build(FAST, replications=300, seed=5)
    variant = scenario_with(base, changes)
    crn = totals(variant)["revenue"].values - totals(base)["revenue"].values
    independent = totals(variant, seed=6)["revenue"].values - totals(base)["revenue"].values
    ratio = independent.std(ddof=1) / crn.std(ddof=1)
    assert ratio >= 3.0, f"sd with independent streams / sd with CRN = {ratio:.2f}"


def test_compare_refuses_a_different_horizon():
    base = build(FAST)
    other = build(FAST, months=6)
    with pytest.raises(InputError, match="same start, months and currency"):
        compare(base, [Variant("short", other, "short.yaml")])


def test_variant_with_a_path_through_a_missing_channel_is_refused():
    base = build(FAST)
    with pytest.raises(InputError) as info:
        variant_of(base, "typo", ["channels.wbe.leads_per_month=150"])
    message = str(info.value)
    assert message.startswith("--variant typo")
    assert "did you mean 'web'" in message
    assert "channels.wbe={...}" in message


def test_variant_with_a_bad_value_names_the_variant():
    base = build(FAST)
    with pytest.raises(InputError) as info:
        variant_of(base, "neg", ["channels.web.leads_per_month=-5"])
    assert "[from --variant neg:channels.web.leads_per_month=-5]" in str(info.value)


def test_parse_variant_options_groups_changes_by_name():
    parsed = parse_variant_options(["a:x=1", "b:y=2", "a:z=3"])
    assert parsed == {"a": ["x=1", "z=3"], "b": ["y=2"]}
    for bad in ("noname", ":x=1", "a:x", "a:=1"):
        with pytest.raises(InputError, match="NAME:PATH=VALUE"):
            parse_variant_options([bad])


# ------------------------------------------------------------------ levers: theory checks


def test_ten_percent_more_leads_give_ten_percent_more_expected_wins():
    base = build(FAST, replications=200, seed=3)
    change = improve(base, "channels.web.leads_per_month", 0.10)
    a, b = totals(base)["won"].values, totals(change.scenario)["won"].values
    funnel = compile_funnel(base)
    web = funnel.channels.index("web")
    leads = expected_leads(funnel)[web].sum()
    p_won = channel_expectations(funnel, web).p_won
    good, why = within(b - a, 0.10 * leads * p_won)
    assert good, why
    assert (b >= a).all()  # the base's leads are all there, with their draws


def test_a_better_close_rate_gives_the_markov_chain_uplift():
    base = build(FAST, replications=200, seed=4)
    change = improve(base, "stages.qualified.advance", 0.10)
    assert change.scenario.stages["qualified"].next == pytest.approx({"won": 0.44, "lost": 0.56})
    a, b = totals(base)["won"].values, totals(change.scenario)["won"].values
    before, after = compile_funnel(base), compile_funnel(change.scenario)
    expected = sum(
        expected_leads(before)[c].sum()
        * (channel_expectations(after, c).p_won - channel_expectations(before, c).p_won)
        for c in range(len(before.channels))
    )
    good, why = within(b - a, expected)
    assert good, why
    # every lead that was won is still won: the advance interval only widens
    assert (b >= a).all()


def test_advance_means_the_outcomes_that_raise_the_chance_of_winning():
    data = copy.deepcopy(BASE)
    data["stages"]["new"]["next"] = {"qualified": 0.3, "nurture": 0.3, "lost": 0.4}
    data["stages"]["nurture"] = {
        "duration": {"dist": "exponential", "mean": 30},
        "next": {"new": 0.2, "lost": 0.8},
    }
    scenario = scenario_from_dict(data)
    new = improve(scenario, "stages.new.advance", 0.5).scenario.stages["new"].next
    # qualified × 1.5; nurture (a loop that lowers the chance) and lost share the rest
    assert new == pytest.approx(
        {"qualified": 0.45, "nurture": 0.3 * 0.55 / 0.7, "lost": 0.4 * 0.55 / 0.7}
    )
    nurture = improve(scenario, "stages.nurture.advance", 0.5).scenario.stages["nurture"].next
    assert nurture == pytest.approx({"new": 0.3, "lost": 0.7})  # re-engaging advances


def test_advance_keeps_a_dirichlet_concentration_and_caps_below_one():
    data = copy.deepcopy(BASE)
    data["stages"]["proposal"]["next"] = {"dirichlet": {"won": 40, "lost": 60}}
    scenario = scenario_from_dict(data)
    up = improve(scenario, "stages.proposal.advance", 0.5).scenario
    alpha = up.stages["proposal"].next.dirichlet
    assert alpha == pytest.approx({"won": 60, "lost": 40})
    capped = change_lever(scenario, "stages.proposal.advance", 5.0)
    assert capped.scenario is not None and "capped" in capped.description
    assert capped.scenario.stages["proposal"].next.dirichlet["lost"] > 0


def test_shorter_stays_are_exactly_shorter_and_bigger_deals_exactly_bigger():
    base = build(replications=30, seed=8)  # conftest's funnel: durations per outcome
    t0 = totals(base)
    shorter = totals(improve(base, "stages.qualified.duration", 0.2).scenario)
    i = list(t0.stage.values).index("qualified")
    days0 = t0["stage_days_in_stage"].values[:, i]
    days1 = shorter["stage_days_in_stage"].values[:, i]
    np.testing.assert_allclose(days1, 0.8 * days0, rtol=1e-12)  # every stay × 0.8
    np.testing.assert_array_equal(shorter["leads"].values, t0["leads"].values)
    bigger = totals(improve(base, "deal_value", 0.1).scenario)
    np.testing.assert_allclose(bigger["revenue"].values, 1.1 * t0["revenue"].values, rtol=1e-12)
    np.testing.assert_array_equal(bigger["won"].values, t0["won"].values)


def test_every_distribution_family_scales_exactly():
    from funnelsim.distributions import as_distribution
    from funnelsim.experiments import scale_distribution
    from funnelsim.streams import keys_from_rng

    keys = keys_from_rng(np.random.default_rng(1), 500)
    for dist in (
        {"dist": "fixed", "value": 4.0},
        {"dist": "exponential", "mean": 3.0},
        {"dist": "gamma", "mean": 3.0, "shape": 0.7},
        {"dist": "lognormal", "median": 3.0, "sigma": 0.8},
        {"dist": "weibull", "scale": 3.0, "shape": 1.5},
        {"dist": "uniform", "low": 1.0, "high": 5.0},
        {"dist": "empirical", "values": [1.0, 2.0, 7.0]},
    ):
        before = as_distribution(dist)
        after = as_distribution(scale_distribution(before.model_dump(), 0.7))
        np.testing.assert_allclose(after.draw(keys), 0.7 * before.draw(keys), rtol=1e-12)
        assert after.expected_value() == pytest.approx(0.7 * before.expected_value())


def test_repeat_spend_and_price_levers_scale_repeat_revenue_exactly():
    base = build(ECONOMICS, replications=20, seed=2)
    t0 = totals(base)
    spend = totals(improve(base, "repeat.spend", 0.1).scenario)
    np.testing.assert_allclose(
        spend["revenue_repeat"].values, 1.1 * t0["revenue_repeat"].values, rtol=1e-9
    )
    np.testing.assert_array_equal(spend["repeat_purchases"].values, t0["repeat_purchases"].values)
    faster = totals(improve(base, "repeat.purchase_rate", 0.3).scenario)
    assert faster["repeat_purchases"].values.mean() > t0["repeat_purchases"].values.mean()
    subscription = {
        "repeat": {"model": "subscription", "billing": "month", "price": 50, "churn": 0.05},
        "existing_customers": {"count": 100},
    }
    sub = build(subscription, replications=20, seed=2)
    s0 = totals(sub)
    price = totals(improve(sub, "repeat.spend", 0.1).scenario)
    np.testing.assert_allclose(
        price["revenue_repeat"].values, 1.1 * s0["revenue_repeat"].values, rtol=1e-9
    )
    churn = totals(improve(sub, "repeat.churn", 0.5).scenario)
    # a fixed churn: every customer renews at least as often (its own uniform, lower odds)
    assert (churn["repeat_purchases"].values >= s0["repeat_purchases"].values).all()


def test_one_more_rep_keeps_the_skills_of_the_others():
    data = copy.deepcopy(BASE)
    data["sales_team"] = {
        "reps": 2,
        "leads_per_rep": 5,
        "stages": ["proposal"],
        "hiring": [{"from": "2027-06-01", "reps": 3}],
        "skill": [1.1, 0.9, 0.8],
    }
    scenario = scenario_from_dict(data)
    team = improve(scenario, "sales_team.reps", 0.1).scenario.sales_team
    assert team.reps == 3
    assert [h.reps for h in team.hiring] == [4]
    assert team.skill == [1.1, 0.9, 1.0, 0.8]  # the new rep (index 2), then the hire


def test_a_budget_channel_gets_more_budget():
    data = copy.deepcopy(BASE)
    data["channels"]["web"] = {}
    data["costs"] = {"channels": {"web": {"budget_per_month": 12000, "cost_per_lead": 100}}}
    scenario = scenario_from_dict(data)
    change = improve(scenario, "channels.web.leads_per_month", 0.25)
    assert change.scenario.costs.channels["web"].budget_per_month == pytest.approx(15000)
    assert "budget_per_month" in change.description


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_lever_applies_to_the_shipped_scenarios(path):
    scenario = load_scenario(path)
    names = lever_names(scenario)
    assert any(n.startswith("channels.") for n in names)
    for name in names:
        change = improve(scenario, name, 0.1)
        assert change.reason is None, (name, change.reason)
        assert change.scenario.sha256 != scenario.sha256, name
        assert change.description


def test_levers_rank_by_revenue_with_intervals_and_costs():
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(FAST))
    data["replications"] = 40
    data["costs"] = {"channels": {"web": {"cost_per_lead": 50}}}
    data["levers"] = {
        "step": "10%",
        "costs": {"deal_value": 20000, "stages.new.advance": {"once": 1000, "per_month": 500}},
    }
    scenario = scenario_from_dict(data)
    result = levers(scenario, workers=1)
    rows = result["levers"]
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    means = [r["revenue"]["mean"] for r in rows]
    assert means == sorted(means, reverse=True)
    by_name = {r["lever"]: r for r in rows}
    assert by_name["stages.new.advance"]["cost_given"] == pytest.approx(1000 + 500 * 12)
    assert by_name["deal_value"]["cost"] == pytest.approx(20000)
    web = by_name["channels.web.leads_per_month"]
    # more web leads cost their cost_per_lead: the scenario's own marketing cost rises
    assert web["cost_given"] is None and web["cost_in_scenario"] > 0
    assert web["cost"] == pytest.approx(web["metrics"]["marketing_cost"]["mean"])
    for r in rows:
        d = r["revenue"]
        assert d["p5"] <= d["p50"] <= d["p95"] and 0 <= d["p_greater"] <= 1
    ranked = levers(scenario, rank_by="return", workers=1)["levers"]
    ratios = [r["revenue_per_cost"] for r in ranked if r["revenue_per_cost"] is not None]
    assert ratios == sorted(ratios, reverse=True) and len(ratios) == 3
    other = levers(scenario, step=0.2, workers=1)
    assert other["notes"] and all(r["cost_given"] is None for r in other["levers"])


def test_levers_with_posterior_draws_scale_the_draws(tmp_path):
    posterior = {
        "p__deal__web__won": [0.2, 0.6],
        "p__deal__web__lost": [0.8, 0.4],
        "value__web__median": [1000.0, 3000.0],
        "duration__deal__all__value": [2.0, 4.0],
        "arrivals__web__leads_per_month": [80.0, 120.0],
    }
    data = {k: (("chain", "draw"), np.asarray(v)[None, :]) for k, v in posterior.items()}
    xr.Dataset(data).to_netcdf(tmp_path / "posterior.nc", group="posterior", engine="h5netcdf")
    (tmp_path / "fitted.yaml").write_text(
        "version: 1\nstart: 2026-01-01\nmonths: 3\nseed: 5\nreplications: 40\ncurrency: EUR\n"
        "channels: {web: {leads_per_month: 100, deal_value: {dist: lognormal, median: 1000, "
        "sigma: 0.01}}}\n"
        "stages: {deal: {duration: {dist: fixed, value: 3}, next: {won: 0.5, lost: 0.5}}}\n"
        "posterior: {file: posterior.nc}\n",
        encoding="utf-8",
    )
    scenario = load_scenario(tmp_path / "fitted.yaml")
    for name in lever_names(scenario):
        change = improve(scenario, name, 0.1)
        assert change.reason is None, name
    draws = improve(scenario, "stages.deal.advance", 0.5).scenario.posterior_draws
    np.testing.assert_allclose(draws["p__deal__web__won"], [0.3, 0.9])
    np.testing.assert_allclose(draws["p__deal__web__lost"], [0.7, 0.1])
    t0 = totals(scenario)
    bigger = improve(scenario, "deal_value", 0.1).scenario
    np.testing.assert_allclose(draws_of(bigger, "value__web__median"), [1100.0, 3300.0])
    np.testing.assert_allclose(totals(bigger)["revenue"].values, 1.1 * t0["revenue"].values)
    more = improve(scenario, "channels.web.leads_per_month", 0.1).scenario
    np.testing.assert_allclose(draws_of(more, "arrivals__web__leads_per_month"), [88.0, 132.0])
    assert (totals(more)["leads"].values >= t0["leads"].values).all()
    assert scenario.posterior_draws["value__web__median"][0] == 1000.0  # the base is untouched


def draws_of(scenario, name):
    return scenario.posterior_draws[name]


# ------------------------------------------------------------------ targets


def test_targets_read_bare_numbers_by_the_metric_direction():
    scenario = build(
        {"costs": {"channels": {"web": {"cost_per_lead": 10}}}},
        targets={"revenue": "2e6", "cac": 900, "won": {"at_most": 50}},
    )
    specs = {s.metric: s for s in target_specs(scenario)}
    assert specs["revenue"] == TargetSpec("revenue", 2e6, at_most=False)
    assert specs["cac"].at_most and not specs["revenue"].at_most and specs["won"].at_most


def test_target_probability_is_the_share_of_replications():
    scenario = build(replications=50, targets={"won": 150})
    t = totals(scenario)
    report = target_report(t, target_specs(scenario), "USD")["won"]
    assert report["probability"] == pytest.approx((t["won"].values >= 150).mean())
    assert report["at_least"] == 150 and report["unit"] == "leads"


def test_unknown_target_metric_names_the_field_and_the_valid_metrics():
    with pytest.raises(InputError) as info:
        build(targets={"customers_new": 10})
    message = str(info.value)
    assert "targets -> customers_new" in message
    assert "expected a total metric of this scenario: leads, won, lost, revenue" in message
    with pytest.raises(InputError, match="did you mean 'revenue'"):
        parse_target("revnue=5", build())


def test_parse_target_and_step():
    scenario = build()
    assert parse_target("revenue=2e6", scenario) == TargetSpec("revenue", 2e6, False)
    assert parse_target("lost=10", scenario).at_most
    assert parse_target("won<=12", scenario) == TargetSpec("won", 12.0, True)
    with pytest.raises(InputError, match="not a number"):
        parse_target("won=lots", scenario)
    assert parse_step("10%") == pytest.approx(0.1) and parse_step("0.25") == 0.25
    for bad in ("0", "0%", "-5%", "100%", "1.5", "ten"):
        with pytest.raises(InputError, match="--step"):
            parse_step(bad)


def test_lever_costs_must_name_levers():
    with pytest.raises(InputError) as info:
        build(levers={"costs": {"stages.nwe.advance": 5}})
    assert "levers -> costs -> stages.nwe.advance" in str(info.value)
    assert "did you mean 'stages.new.advance'" in str(info.value)


# ------------------------------------------------------------------ goal


def test_goal_finds_a_value_that_reaches_and_one_just_below_that_does_not():
    base = build(FAST, replications=80, seed=9)
    target = parse_target("won>=800", base)
    result = goal(base, target, "channels.web.leads_per_month", probability=0.75, workers=1)
    assert result["status"] == "found"
    value, precision = result["value"], result["lever"]["precision"]
    assert result["lever"]["better"] == "larger"
    below = result["just_short"]["value"]
    assert 0 < value - below <= precision * (1 + 1e-9)

    def p(v):
        changed = scenario_with(base, [f"channels.web.leads_per_month={v!r}"])
        return float((totals(changed)["won"].values >= 800).mean())

    assert p(value) >= 0.75 > p(below)
    assert p(value) == result["probability"]  # the same replications: reproducible


def test_goal_over_a_lever_that_is_better_smaller():
    base = build(replications=40, seed=2, months=3)
    target = parse_target("won>=60", base)
    result = goal(base, target, "stages.proposal.duration", probability=0.5, workers=1)
    assert result["lever"]["better"] == "smaller"
    if result["status"] == "found":
        assert result["probability"] >= 0.5 > result["just_short"]["probability"]
        assert result["just_short"]["value"] > result["value"]
        assert "every stay" in result["change"]


def test_goal_says_when_no_value_within_bounds_reaches_the_target():
    base = build(FAST, replications=30)
    target = parse_target("won>=100000", base)
    result = goal(base, target, "channels.web.leads_per_month", probability=0.8, workers=1)
    assert result["status"] == "unreachable" and result["value"] is None
    assert result["best_within_bounds"]["value"] == pytest.approx(4 * 120)


def test_goal_rejects_what_it_cannot_search():
    base = build(FAST)
    target = parse_target("won>=10", base)
    with pytest.raises(InputError, match="neither a number in the scenario nor a lever"):
        goal(base, target, "channels.web.leads", probability=0.8)
    with pytest.raises(InputError, match="stages.new.advance"):
        goal(base, target, "stages.new.next.qualified", probability=0.8)
    with pytest.raises(InputError, match="cannot be simulated"):
        goal(base, target, "channels.web.leads_per_month", probability=0.8, low=-10, high=5)
    with pytest.raises(InputError, match="--probability"):
        goal(base, target, "channels.web.leads_per_month", probability=1.5)


def test_set_paths_through_names_must_name_what_the_scenario_has():
    base = build(FAST)
    # a channel override of an existing channel may be added field by field
    changed = scenario_with(base, ["stages.new.channels.partners.next={qualified: 0.9, lost: 0.1}"])
    assert changed.stages["new"].channels["partners"].next["qualified"] == 0.9
    for path, name in (
        ("stages.new.channels.partnres.next.lost=1", "partners"),
        ("stages.nwe.duration.mean=2", "new"),
        ("channels.partnres.leads_per_month=5", "partners"),
    ):
        with pytest.raises(InputError) as info:
            scenario_with(base, [path])
        assert f"did you mean '{name}'" in str(info.value), path
