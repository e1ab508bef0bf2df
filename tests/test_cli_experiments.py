"""The command line of the experiments: compare, levers, goal, and targets in run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from test_cli import TINY, invoke, ok

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
FAST = ["-n", "12", "--workers", "1"]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


def bad(result, *fragments: str) -> None:
    """A bad-input failure: exit 2, one clear message, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.output.lower().count("error:") == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, (fragment, result.output)


def test_new_commands_exist_with_help():
    for name in ("compare", "levers", "goal"):
        output = ok(invoke(name, "--help"))
        assert "Usage:" in output


# ---------------------------------------------------------------- compare


def test_compare_files_and_variants_writes_json_and_csv(tiny, tmp_path):
    other = tmp_path / "bigger_deals.yaml"
    other.write_text(TINY.replace("median: 9000", "median: 9900").replace("seed: 3", "seed: 99"))
    out = tmp_path / "out"
    output = ok(
        invoke(
            "compare",
            tiny,
            other,
            "--variant",
            "more_web:channels.web.leads_per_month=40",
            "--variant",
            "same:months=6",
            *FAST,
            "--out",
            out,
        )
    )
    assert "P(variant > base)" in output and "more_web" in output and "bigger_deals" in output
    result = json.loads((out / "compare.json").read_text())
    assert result["replications"] == 12 and result["seed"] == 3  # the base's seed for all
    names = [v["name"] for v in result["variants"]]
    assert names == ["bigger_deals", "more_web", "same"]
    same = result["variants"][2]["metrics"]["revenue"]
    assert same["mean"] == 0 and same["p95"] == 0 and same["p_greater"] == 0
    bigger = result["variants"][0]["metrics"]
    # same draws, deal values × 1.1: revenue exactly 10% up, the same wins
    assert bigger["revenue"]["variant_mean"] == pytest.approx(1.1 * bigger["revenue"]["base_mean"])
    assert bigger["won"]["sd"] == 0
    with (out / "compare.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["variant"] for r in rows} == set(names)
    assert {"difference_mean", "difference_p5", "difference_p95", "difference_p_greater"} <= set(
        rows[0]
    )


def test_compare_is_the_same_with_one_or_two_workers(tiny, tmp_path):
    args = ["compare", tiny, "--variant", "v:channels.referral.leads_per_month=12", "-n", "10"]
    ok(invoke(*args, "--workers", "1", "--out", tmp_path / "a"))
    ok(invoke(*args, "--workers", "2", "--out", tmp_path / "b"))
    a = json.loads((tmp_path / "a" / "compare.json").read_text())
    b = json.loads((tmp_path / "b" / "compare.json").read_text())
    assert a == b


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--variant", "v:channels.wbe.leads_per_month=40"],
            ["--variant v", "channels has no 'wbe'", "did you mean 'web'"],
        ),
        (["--variant", "channels.web.leads_per_month=40"], ["--variant", "NAME:PATH=VALUE"]),
        (
            ["--variant", "v:stages.qualify.next.demo=2"],
            ["stages -> qualify -> next", "--variant v"],
        ),
        (["--set", "channels.wbe.leads_per_month=40"], ["--set", "did you mean 'web'"]),
        ([], ["no variant given"]),
    ],
    ids=["missing_channel", "no_name", "bad_value", "bad_set", "no_variant"],
)
def test_compare_bad_input_exits_2_and_writes_nothing(tiny, tmp_path, args, fragments):
    out = tmp_path / "out"
    bad(invoke("compare", tiny, *args, *FAST, "--out", out), *fragments)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_compare_on_shipped_scenarios(path):
    output = ok(invoke("compare", path, "--variant", "again:seed=0", "-n", "3", "--workers", "1"))
    assert "revenue" in output


# ---------------------------------------------------------------- levers


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_levers_on_shipped_scenarios(path, tmp_path):
    out = tmp_path / "out"
    output = ok(invoke("levers", path, "-n", "3", "--workers", "1", "--out", out))
    assert "rank" in output and "P5 to P95" in output and "What each lever changes" in output
    result = json.loads((out / "levers.json").read_text())
    assert result["not_applicable"] == []
    assert len(result["levers"]) >= 5
    with (out / "levers.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))


def test_levers_step_and_costs(tiny, tmp_path):
    path = tmp_path / "costed.yaml"
    path.write_text(
        TINY
        + "costs: {channels: {web: {cost_per_lead: 40}}}\n"
        + "levers: {step: 20%, costs: {deal_value: 5000, stages.demo.advance: {per_month: 800}}}\n"
    )
    out = tmp_path / "out"
    output = ok(invoke("levers", path, "--rank", "return", *FAST, "--out", out))
    assert "uplift per EUR" in output
    result = json.loads((out / "levers.json").read_text())
    assert result["step"] == pytest.approx(0.2) and result["rank_by"] == "return"
    costed = [r for r in result["levers"] if r["cost"]]
    assert {r["lever"] for r in costed} >= {"deal_value", "stages.demo.advance"}
    assert costed == result["levers"][: len(costed)]  # costed levers first when by return
    output = ok(invoke("levers", path, "--step", "5%", *FAST))
    assert "not 5.0%" in output


@pytest.mark.parametrize("step", ["0", "0%", "-5%", "100%", "abc"])
def test_levers_bad_step_exits_2(tiny, step):
    bad(invoke("levers", tiny, "--step", step, *FAST), "--step", "expected a share")


# ---------------------------------------------------------------- goal


def test_goal_finds_a_value_and_writes_the_search(tiny, tmp_path):
    out = tmp_path / "out"
    output = ok(
        invoke(
            "goal",
            tiny,
            "--target",
            "won=12",
            "--probability",
            "0.7",
            "--lever",
            "channels.web.leads_per_month",
            "-n",
            "30",
            "--workers",
            "1",
            "--out",
            out,
        )
    )
    assert "The smallest value that reaches the target" in output
    result = json.loads((out / "goal.json").read_text())
    assert result["status"] == "found"
    assert result["probability"] >= 0.7 > result["just_short"]["probability"]
    with (out / "goal.csv").open(newline="") as f:
        assert len(list(csv.DictReader(f))) == len(result["steps"])


def test_goal_unreachable_exits_3_with_a_clear_statement(tiny):
    result = invoke(
        "goal", tiny, "--target", "revenue=1e12", "--lever", "channels.web.leads_per_month", *FAST
    )
    assert result.exit_code == 3, result.output
    assert "No value of channels.web.leads_per_month from 0 to 120" in result.output


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (
            ["--target", "revnue=5", "--lever", "deal_value"],
            ["--target", "unknown metric 'revnue'", "did you mean 'revenue'", "leads, won, lost"],
        ),
        (["--target", "revenue", "--lever", "deal_value"], ["--target", "METRIC=VALUE"]),
        (
            ["--target", "won=5", "--lever", "channels.wbe.leads_per_month"],
            ["--lever", "neither a number in the scenario nor a lever"],
        ),
        (["--target", "won=5", "--lever", "deal_value", "--probability", "1.2"], ["probability"]),
        (
            ["--target", "won=5", "--lever", "channels.web.leads_per_month", "--min", "9"]
            + ["--max", "3"],
            ["--max", "empty"],
        ),
    ],
    ids=["unknown_metric", "no_value", "unknown_lever", "probability", "empty_range"],
)
def test_goal_bad_input_exits_2(tiny, tmp_path, args, fragments):
    out = tmp_path / "out"
    bad(invoke("goal", tiny, *args, *FAST, "--out", out), *fragments)
    assert not out.exists()


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_goal_on_shipped_scenarios(path):
    result = invoke(
        "goal", path, "--target", "won=1", "--lever", "deal_value", "-n", "2", "--workers", "1"
    )
    assert result.exit_code in (0, 3), result.output
    assert "Values tried" in result.output


# ---------------------------------------------------------------- targets in run


def test_run_reports_and_writes_the_probability_of_each_target(tiny, tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(TINY + "targets: {revenue: 2e5, won: {at_least: 1}, lost: 1000}\n")
    out = tmp_path / "out"
    output = ok(invoke("run", path, *FAST, "--out", out))
    assert "Targets" in output and "revenue >= 200,000 EUR" in output and "lost <= 1,000" in output
    summary = json.loads((out / "summary.json").read_text())
    targets = summary["targets"]
    assert set(targets) == {"revenue", "won", "lost"}
    assert targets["lost"]["at_most"] == 1000 and targets["won"]["at_least"] == 1
    assert 0 <= targets["revenue"]["probability"] <= 1


def test_run_with_an_unknown_target_metric_exits_2(tiny, tmp_path):
    path = tmp_path / "targets.yaml"
    path.write_text(TINY + "targets: {customers_new: 10}\n")
    bad(
        invoke("run", path, *FAST),
        "targets -> customers_new",
        "expected a total metric of this scenario",
    )
