"""The sales team in the DES: queueing theory as the oracle, and the team's bookkeeping.

One rep-worked stage with Poisson arrivals and exponential durations is an M/M/c queue
(c = reps × leads_per_rep slots) and, with exponential patience, an M/M/c+M queue. Steady-state
quantities are estimated per replication from the months after a one-month warm-up (the last
month, whose waits the horizon cuts short, is left out) and compared with Erlang C and
Erlang A within 4 standard errors of the replication means.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import BASE, build, within

from funnelsim import analytic
from funnelsim.montecarlo import EngineError, run

DAYS_PER_MONTH = 365.25 / 12


def queue_scenario(*, arrivals_per_day, mean_service, reps, leads_per_rep, patience=None, months=8):
    team = {"reps": reps, "leads_per_rep": leads_per_rep, "stages": ["work"]}
    if patience is not None:
        team["patience"] = {"dist": "exponential", "mean": patience}
    return build(
        months=months,
        channels={"web": {"leads_per_month": arrivals_per_day * DAYS_PER_MONTH}},
        stages={
            "work": {
                "duration": {"dist": "exponential", "mean": mean_service},
                "next": {"won": 1.0},
            }
        },
        deal_value=1,
        sales_team=team,
    )


def steady(data, name, denominator="entered"):
    """Per replication: the ratio of sums over the steady months (2nd to last but one)."""
    months = data.isel(period=slice(1, -1)).sel(stage="work")
    return months[name].sum("period").values / months[denominator].sum("period").values


def test_erlang_c_probability_of_waiting_and_mean_wait():
    scenario = queue_scenario(arrivals_per_day=8, mean_service=1, reps=5, leads_per_rep=2)
    theory = analytic.erlang_c(10, 8.0, 1.0)
    data = run(scenario, replications=30, workers=2).data
    ok, message = within(steady(data, "waited"), theory["p_wait"])
    assert ok, f"P(wait): {message}"
    ok, message = within(steady(data, "wait_days"), theory["mean_wait"])
    assert ok, f"mean wait: {message}"
    assert data.cold.sum() == 0  # no patience: nobody goes cold


def test_erlang_a_fraction_that_goes_cold():
    scenario = queue_scenario(
        arrivals_per_day=10, mean_service=1, reps=10, leads_per_rep=1, patience=2
    )
    theory = analytic.erlang_a(10, 10.0, 1.0, 0.5)
    data = run(scenario, replications=30, workers=2).data
    ok, message = within(steady(data, "cold"), theory["p_abandon"])
    assert ok, f"P(cold): {message}"
    ok, message = within(steady(data, "waited"), theory["p_wait"])
    assert ok, f"P(wait): {message}"
    ok, message = within(steady(data, "wait_days"), theory["mean_wait"])
    assert ok, f"mean wait: {message}"
    # going cold is a way of being lost
    assert (data.lost.sum(("period", "channel")) >= data.cold.sum(("period", "stage"))).all()


def test_queue_checks_can_fail():
    """With one slot fewer the waits are clearly longer: the tolerance is not too loose."""
    scenario = queue_scenario(arrivals_per_day=8, mean_service=1, reps=3, leads_per_rep=3)
    data = run(scenario, replications=30, workers=2).data
    assert not within(steady(data, "wait_days"), analytic.erlang_c(10, 8.0, 1.0)["mean_wait"])[0]


UNLIMITED = {"reps": 3, "leads_per_rep": 1_000_000, "stages": ["qualified", "proposal"]}


def test_unlimited_capacity_matches_the_vectorized_engine():
    loop = {
        **BASE["stages"],
        "proposal": {
            "duration": {**BASE["stages"]["proposal"]["duration"], "qualified": 3},
            "next": {"won": 0.4, "qualified": 0.1, "lost": 0.5},
        },
        "qualified": {
            **BASE["stages"]["qualified"],
            "duration": {"dist": "gamma", "mean": 5, "shape": 2},
        },
    }
    common = {"stages": loop, "pipeline": {"proposal": {"count": 15, "days_in_stage": 4}}}
    with_team = build(common, sales_team=UNLIMITED)
    without = build(common)
    a = run(with_team, replications=8, workers=1).data
    b = run(without, replications=8, workers=1, engine="vectorized").data
    assert a.attrs["engine"] == "des"
    for name in ("leads", "won", "lost", "revenue", "entered", "stay_days", "open", "cycle_days"):
        np.testing.assert_allclose(
            a[name].values, b[name].values, rtol=1e-12, atol=1e-9, err_msg=name
        )
    assert float(a.wait_days.sum()) == 0 and float(a.cold.sum()) == 0


def test_skill_scales_the_outcomes_other_than_lost():
    team = {"reps": 1, "leads_per_rep": 1_000_000, "stages": ["proposal"], "skill": [0.5]}
    scenario = build(
        {"months": 24, "channels": {"web": {"leads_per_month": {"2027-01": 300}}}}, sales_team=team
    )
    total = run(scenario, replications=100, workers=2).data.sum("period")
    entered = total.entered.sel(stage="proposal").values
    won = total.won.sum("channel").values
    ok, message = within(won - 0.5 * 0.4 * entered, 0.0)
    assert ok, message


def test_vectorized_engine_refuses_a_sales_team():
    scenario = build(sales_team=UNLIMITED)
    with pytest.raises(EngineError, match="cannot model a sales team"):
        run(scenario, replications=2, engine="vectorized")


def test_hiring_ramps_capacity_by_hand():
    """4 reps × 4 slots; from 2027-03-01 6 reps, the 2 new ones ramping over 2 months:
    2 slots (half) in March, 3 in April, 4 from May."""
    team = {
        "reps": 4,
        "leads_per_rep": 4,
        "stages": ["qualified"],
        "hiring": [{"from": "2027-03-01", "reps": 6, "ramp_months": 2}],
    }
    scenario = build(months=6, sales_team=team, costs={"rep_per_month": 1000})
    data = run(scenario, replications=2, workers=1).data.isel(replication=0)
    days = [31, 28, 31, 30, 31, 30]
    slots = [16, 16, 16 + 2 * 2, 16 + 2 * 3, 24, 24]
    np.testing.assert_allclose(data.slot_days.values, np.array(slots) * np.array(days))
    assert (data.busy_slot_days.values <= data.slot_days.values + 1e-9).all()


def test_a_smaller_team_lets_current_leads_finish():
    team = {
        "reps": 4,
        "leads_per_rep": 2,
        "stages": ["qualified", "proposal"],
        "hiring": [{"from": "2027-03-01", "reps": 1}],
    }
    scenario = build(months=6, sales_team=team)
    data = run(scenario, replications=4, workers=1).data
    # after the cut only 2 slots are available, yet every lead is accounted for
    per_rep = data.sum("period")
    ended = (per_rep.won + per_rep.lost).sum("channel") + data.open.isel(period=-1).sum("stage")
    np.testing.assert_array_equal(per_rep.leads.sum("channel"), ended)
    assert (data.slot_days.isel(period=slice(3, None)).values <= 2 * 31 + 1e-9).all()


def test_highest_value_first_serves_bigger_deals():
    team = {
        "reps": 2,
        "leads_per_rep": 2,
        "stages": ["proposal"],
        "patience": {"dist": "exponential", "mean": 5},
    }
    common = {"deal_value": {"dist": "lognormal", "median": 10000, "sigma": 1.0}}
    fifo = run(build(common, sales_team=team), replications=40, workers=2).data.sum("period")
    best = run(
        build(common, sales_team={**team, "queue": "highest_value_first"}),
        replications=40,
        workers=2,
    ).data.sum("period")
    # same leads (paired draws): serving the biggest first books more revenue per win
    gain = best.revenue.sum("channel").values / best.won.sum("channel").values - (
        fifo.revenue.sum("channel").values / fifo.won.sum("channel").values
    )
    assert gain.mean() > 4 * gain.std(ddof=1) / np.sqrt(gain.size)


def test_conservation_with_a_busy_team_and_pipeline():
    team = {
        "reps": 2,
        "leads_per_rep": 3,
        "stages": ["qualified", "proposal"],
        "patience": {"dist": "gamma", "mean": 6, "shape": 2},
        "skill": [1.2, 0.8],
    }
    scenario = build(
        sales_team=team, pipeline={"proposal": {"count": 12, "days_in_stage": 3}, "qualified": 9}
    )
    data = run(scenario, replications=6, workers=1).data
    per_rep = data.sum("period")
    ended = (per_rep.won + per_rep.lost).sum("channel") + data.open.isel(period=-1).sum("stage")
    np.testing.assert_array_equal(per_rep.leads.sum("channel") + 21, ended)
    stock = data.open.sum("stage").values
    flow = (data.leads - data.won - data.lost).sum("channel").values
    previous = np.concatenate([np.full((6, 1), 21), stock[:, :-1]], axis=1)
    np.testing.assert_array_equal(stock, previous + flow)
    assert (data.queue.values <= data.open.values).all()
    assert (data.waited.values <= data.entered.values).all()


STAFFED = {
    "channels": {"web": {"leads_per_month": 200}},
    "deal_value": 10000,
    "sales_team": {
        "reps": 3,
        "leads_per_rep": 4,
        "stages": ["qualified", "proposal"],
        "patience": {"dist": "exponential", "mean": 8},
        "hiring": [{"from": "2027-06-01", "reps": 5}],
    },
    "costs": {"rep_per_month": 5000},
}


def test_staff_compares_sizes_on_the_same_leads():
    from funnelsim.staffing import staff

    result = staff(build(STAFFED), [1, 3, 6], max_wait=1.0, replications=20, workers=2)
    rows = {r["reps"]: r for r in result["rows"]}
    assert list(rows) == [1, 3, 6]
    # more reps: fewer leads go cold and shorter waits, on the same leads
    assert (
        rows[1]["went_cold"]["mean"] > rows[3]["went_cold"]["mean"] > rows[6]["went_cold"]["mean"]
    )
    assert (
        rows[1]["wait_days"]["mean"] > rows[3]["wait_days"]["mean"] > rows[6]["wait_days"]["mean"]
    )
    # constant teams over 12 months: reps × 12 × 5000
    assert rows[3]["rep_cost"] == pytest.approx(3 * 12 * 5000)
    best = max(rows.values(), key=lambda r: r["revenue"]["mean"] - r["rep_cost"])
    assert result["best_reps"] == best["reps"]
    meeting = [n for n, r in rows.items() if r["wait_days"]["mean"] <= 1.0]
    assert result["smallest_reps_within_max_wait"] == (min(meeting) if meeting else None)
    # the same leads arrive whatever the team: identical new-lead counts per replication
    from funnelsim.scenario import scenario_with

    small = run(
        scenario_with(build(STAFFED), ["sales_team.reps=1", "sales_team.hiring=[]"]),
        replications=5,
        workers=1,
    )
    large = run(
        scenario_with(build(STAFFED), ["sales_team.reps=6", "sales_team.hiring=[]"]),
        replications=5,
        workers=1,
    )
    np.testing.assert_array_equal(small.data.leads.values, large.data.leads.values)


def test_staff_cli_writes_files_and_marks_sizes(tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from funnelsim.cli import main

    path = tmp_path / "team.yaml"
    data = {**BASE, **STAFFED}
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main,
        [
            "staff",
            str(path),
            "--reps",
            "2..6..2",
            "--max-wait",
            "3",
            "-n",
            "10",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "most revenue minus rep cost" in result.output
    saved = json.loads((out / "staff.json").read_text())
    assert [r["reps"] for r in saved["rows"]] == [2, 4, 6]
    header = (out / "staff.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["reps", "revenue_mean"] and "rep_cost" in header
    bad = CliRunner().invoke(main, ["staff", str(path), "--reps", "6..2"])
    assert bad.exit_code == 2 and "expected sizes like 2..12" in bad.output
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump(BASE))
    none = CliRunner().invoke(main, ["staff", str(plain), "--reps", "2..3"])
    assert none.exit_code == 2 and "has no sales_team section" in none.output


def test_run_reports_the_team(tmp_path):
    import json

    import yaml
    from click.testing import CliRunner

    from funnelsim.cli import main

    path = tmp_path / "team.yaml"
    path.write_text(yaml.safe_dump({**BASE, **STAFFED}))
    out = tmp_path / "out"
    args = ["run", str(path), "-n", "8", "--workers", "1", "--out", str(out), "--by", "quarter"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "went cold waiting for a rep" in result.output and "wait for rep" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert {"went_cold", "rep_utilization"} <= set(summary["totals"])
    assert {"wait_days", "waited", "went_cold", "queue_at_end"} <= set(
        summary["stages"]["proposal"]
    )
    assert "wait_days" not in summary["stages"]["new"]  # not a rep-worked stage
    assert {"went_cold", "rep_utilization"} <= set(summary["periods"][0])
    utilization = summary["totals"]["rep_utilization"]
    assert 0 <= utilization["p5"] <= utilization["p95"] <= 1
    refused = CliRunner().invoke(main, ["run", str(path), "-n", "2", "--engine", "vectorized"])
    assert refused.exit_code == 2 and "cannot model a sales team" in refused.output


def test_the_opening_pipeline_wins_with_its_reps_skill():
    """200 open leads in `proposal` aged 10 days, one rep with skill 1.5, no new leads: a
    lead wins with P = s·p_won·S_won(10) / (s·p_won·S_won(10) + (1 − s·p_won)·S_lost(10))
    (issue 2's age conditioning with the skilled probabilities). Tolerance: 4 standard
    errors of the replications' won shares."""
    team = {"reps": 1, "leads_per_rep": 1000, "stages": ["proposal"], "skill": [1.5]}
    scenario = build(
        channels={"web": {"leads_per_month": 0}},
        sales_team=team,
        pipeline={"proposal": {"count": 200, "days_in_stage": 10}},
    )
    duration = scenario.stages["proposal"].duration
    s_won, s_lost = float(duration["won"].sf(10.0)), float(duration["lost"].sf(10.0))

    def p_won(skill):
        return skill * 0.4 * s_won / (skill * 0.4 * s_won + (1 - skill * 0.4) * s_lost)

    total = run(scenario, replications=30, workers=2).data.sum("period")
    won, lost = total.won.sum("channel").values, total.lost.sum("channel").values
    np.testing.assert_array_equal(won + lost, 200)  # every open lead closes in the year
    ok, message = within(won / 200, p_won(1.5))
    assert ok, message
    assert not within(won / 200, p_won(1.0))[0]  # the rep's skill made the difference
