"""The command line: help texts, validate, schema, run and its output files, imports."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
import xarray as xr
from click.testing import CliRunner, Result

import funnelsim
from funnelsim.cli import main
from funnelsim.scenario import load_scenario

TINY = """\
version: 1
name: tiny
start: 2027-01-01
months: 6
replications: 50
seed: 3
currency: EUR
deal_value: {dist: lognormal, median: 9000, sigma: 0.5}
channels:
  web:
    leads_per_month: 30
    seasonality: [1, 1, 1, 1.1, 1, 1, 1, 1, 1, 1, 1.2, 0.8]
  referral:
    leads_per_month: 8
stages:
  qualify:
    duration: {dist: exponential, mean: 5}
    next: {demo: 0.5, lost: 0.5}
  demo:
    duration: {won: 7, lost: {dist: gamma, mean: 10, shape: 2}}
    next: {won: 0.3, lost: 0.7}
pipeline:
  demo: {count: 5, channel: referral, days_in_stage: 2}
"""

FAST = ["-n", "20", "--workers", "1", "--seed", "11"]
STATS = {"mean", "sd", "p5", "p50", "p95"}
PERIODS_HEADER = ["period", "stage", "channel", "metric", "mean", "sd", "p5", "p50", "p95"]

SHIPPED = sorted(Path(__file__).parents[1].glob("scenarios/*.yaml"))
SHIPPED_PARAMS = [pytest.param(p, id=p.name) for p in SHIPPED] or [
    pytest.param(None, marks=pytest.mark.skip(reason="no scenarios/*.yaml shipped yet"), id="none")
]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY, encoding="utf-8")
    return path


def invoke(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def ok(result: Result) -> str:
    """The output of a command that must succeed (re-raising what it raised, if anything)."""
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    return result.output


# ---------------------------------------------------------------- help


def all_commands() -> list:
    found = [("funnelsim", main)]
    todo = [("funnelsim", main)]
    while todo:
        name, group = todo.pop()
        for sub_name, sub in group.commands.items():
            found.append((f"{name} {sub_name}", sub))
            if isinstance(sub, click.Group):
                todo.append((f"{name} {sub_name}", sub))
    return [pytest.param(name, command, id=name) for name, command in found]


@pytest.mark.parametrize(("name", "command"), all_commands())
def test_every_command_has_help_text(name, command):
    assert command.help and command.help.strip(), f"`{name}` has no docstring/help"
    assert command.get_short_help_str().strip(), f"`{name}` has no short help"
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert param.help, f"`{name}` option {param.opts} has no help"


def test_expected_commands_exist():
    assert {"validate", "schema", "run", "compare", "levers", "goal"} <= set(main.commands)


def test_group_help_lists_the_commands():
    output = ok(invoke("--help"))
    assert "Usage:" in output
    for name in ("validate", "schema", "run"):
        assert name in output


@pytest.mark.parametrize("name", ["validate", "schema", "run"])
def test_command_help(name):
    output = ok(invoke(name, "--help"))
    assert main.commands[name].help.splitlines()[0] in " ".join(output.split())


def test_version():
    assert funnelsim.__version__ in ok(invoke("--version"))


def test_python_dash_m_funnelsim_help():
    result = subprocess.run(
        [sys.executable, "-m", "funnelsim", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout
    assert "run" in result.stdout


# ---------------------------------------------------------------- validate


def test_validate_reports_bad_input_with_exit_code_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("next: {won: 0.3, lost: 0.7}", "next: {won: 0.3, lost: 0.6}"))
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert "bad.yaml" in result.output
    assert "stages -> demo -> next" in result.output
    assert "sum to 0.9" in result.output
    assert "Traceback" not in result.output


def test_validate_bad_set_exits_2(tiny):
    result = invoke("validate", tiny, "--set", "channels.web.seasonality.12=1")
    assert result.exit_code == 2
    assert "index 12 is outside the list of 12 items" in result.output
    assert "Traceback" not in result.output


def test_validate_missing_file_exits_2(tmp_path):
    result = invoke("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml" in result.output
    assert "not found" in result.output
    assert "Traceback" not in result.output


def test_validate_valid_scenario_prints_the_funnel(tiny):
    output = ok(invoke("validate", tiny))
    assert "valid" in output
    assert "qualify" in output
    assert "P(won)" in output


@pytest.mark.parametrize(
    ("overrides", "counts"),
    [
        (["pipeline.demo.count=1"], ["Opening pipeline: 1 open lead;"]),
        (["pipeline.demo.count=5"], ["Opening pipeline: 5 open leads;"]),
        (
            ["sales_team={reps: 1, leads_per_rep: 1, stages: [demo]}"],
            ["Sales team: 1 rep × 1 lead at once"],
        ),
        (
            [
                "sales_team={reps: 2, leads_per_rep: 3, stages: [demo], "
                "hiring: [{from: 2027-03-01, reps: 1, ramp_months: 1}]}"
            ],
            ["Sales team: 2 reps × 3 leads at once", "from 2027-03-01: 1 rep (ramp 1 month)"],
        ),
    ],
    ids=["one_lead", "five_leads", "one_rep", "hiring"],
)
def test_validate_counts_agree_with_their_nouns(tiny, overrides, counts):
    args = ["validate", tiny]
    for item in overrides:
        args += ["--set", item]
    output = ok(invoke(*args))
    for text in counts:
        assert text in output


def test_bad_input_message_has_one_error_prefix(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("months: 6", "months: 0"))
    result = invoke("validate", path)
    assert result.exit_code == 2
    assert result.output.lower().count("error:") == 1


# ---------------------------------------------------------------- schema


def test_schema_is_json_with_channels_and_stages():
    schema = json.loads(ok(invoke("schema")))
    assert {"channels", "stages"} <= set(schema["properties"])
    assert {"version", "start", "months", "currency", "channels", "stages"} <= set(
        schema["required"]
    )


def test_tiny_scenario_fits_the_schema(tiny):
    jsonschema = pytest.importorskip("jsonschema")
    from funnelsim.scenario import parse_yaml

    schema = json.loads(ok(invoke("schema")))
    jsonschema.validate(parse_yaml(tiny.read_text(), str(tiny)), schema)


# ---------------------------------------------------------------- shipped scenarios


@pytest.mark.parametrize("path", SHIPPED_PARAMS)
def test_shipped_scenario_loads(path):
    scenario = load_scenario(path)
    assert scenario.stages and scenario.channels


@pytest.mark.parametrize("path", SHIPPED_PARAMS)
def test_shipped_scenario_fits_the_schema(path):
    from funnelsim.scenario import parse_yaml

    schema = json.loads(ok(invoke("schema")))
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    assert set(data) <= set(schema["properties"])
    assert set(schema["required"]) <= set(data)
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(data, schema)


@pytest.mark.parametrize("path", SHIPPED_PARAMS)
def test_validate_shipped_scenario(path):
    output = ok(invoke("validate", path))
    assert "valid" in output


# ---------------------------------------------------------------- run


def test_run_prints_the_totals_table(tiny):
    output = ok(invoke("run", tiny, *FAST))
    assert "Totals over the horizon" in output
    for label in ("new leads", "won", "lost", "revenue (EUR)", "open at end"):
        assert label in output
    assert "20 replications, seed 11" in output
    assert "2027-01" in output and "2027-06" in output


def test_run_is_reproducible(tiny, tmp_path):
    ok(invoke("run", tiny, *FAST, "--out", tmp_path / "a"))
    ok(invoke("run", tiny, *FAST, "--out", tmp_path / "b"))
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a == b


def test_run_out_writes_summary_periods_and_netcdf(tiny, tmp_path):
    out = tmp_path / "out"
    output = ok(invoke("run", tiny, *FAST, "--out", out))
    assert sorted(p.name for p in out.iterdir()) == ["forecast.nc", "periods.csv", "summary.json"]
    assert "Wrote" in output

    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "scenario",
        "engine",
        "replications",
        "seed",
        "funnelsim_version",
        "scenario_sha256",
        "totals",
        "stages",
        "periods",
    ):
        assert key in summary
    assert summary["scenario"] == "tiny"
    assert summary["replications"] == 20
    assert summary["seed"] == 11
    assert summary["funnelsim_version"] == funnelsim.__version__
    assert summary["scenario_sha256"] == load_scenario(tiny).sha256
    assert len(summary["scenario_sha256"]) == 64
    assert summary["engine"] in ("vectorized", "des")
    for metric, stats in summary["totals"].items():
        assert set(stats) == STATS, metric
    assert set(summary["stages"]) == {"qualify", "demo"}
    for stage in summary["stages"].values():
        for stats in stage.values():
            assert set(stats) == STATS
    assert [p["period"] for p in summary["periods"]] == [f"2027-0{m}" for m in range(1, 7)]
    for period in summary["periods"]:
        for metric, value in period.items():
            if metric not in ("period", "stages", "channels"):
                assert set(value) == STATS, metric
        assert set(period["stages"]) == {"qualify", "demo"}
        assert set(period["channels"]) == {"web", "referral"}
        for group in (*period["stages"].values(), *period["channels"].values()):
            for stats in group.values():
                assert set(stats) == STATS

    with (out / "periods.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == PERIODS_HEADER
    assert {r[0] for r in rows[1:]} == {"total", *(f"2027-0{m}" for m in range(1, 7))}

    with xr.open_dataset(out / "forecast.nc") as ds:
        assert "replication" in ds.dims and "period" in ds.dims
        assert ds.sizes["replication"] == 20
        assert ds.sizes["period"] == 6
        assert "revenue" in ds


def test_run_by_quarter(tiny, tmp_path):
    out = tmp_path / "out"
    output = ok(invoke("run", tiny, *FAST, "--by", "quarter", "--out", out))
    assert "2027-Q1" in output and "2027-Q2" in output
    summary = json.loads((out / "summary.json").read_text())
    assert [p["period"] for p in summary["periods"]] == ["2027-Q1", "2027-Q2"]
    with (out / "periods.csv").open(newline="") as f:
        assert {row["period"] for row in csv.DictReader(f)} == {"total", "2027-Q1", "2027-Q2"}


def test_run_with_set_overrides(tiny, tmp_path):
    out = tmp_path / "out"
    ok(invoke("run", tiny, *FAST, "--set", "months=3", "--set", "name=shorter", "--out", out))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "shorter"
    assert [p["period"] for p in summary["periods"]] == ["2027-01", "2027-02", "2027-03"]
    assert summary["scenario_sha256"] != load_scenario(tiny).sha256


@pytest.mark.parametrize(
    ("change", "overrides", "fragment"),
    [
        (("currency: EUR", "currency: euro"), (), "currency"),
        (("next: {demo: 0.5, lost: 0.5}", "next: {dmeo: 0.5, lost: 0.5}"), (), "did you mean"),
        (("", ""), ("--set", "channels.web.seasonality.3=-1"), "seasonality -> 3"),
        (("", ""), ("--set", "months"), "PATH=VALUE"),
    ],
    ids=["bad_currency", "unknown_outcome", "bad_set_value", "set_without_equals"],
)
def test_run_with_bad_input_writes_nothing(tmp_path, change, overrides, fragment):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace(*change))
    out = tmp_path / "out"
    result = invoke("run", path, *FAST, *overrides, "--out", out)
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())


def test_run_with_bad_input_leaves_an_existing_folder_untouched(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("months: 6", "months: 0"))
    out = tmp_path / "out"
    out.mkdir()
    result = invoke("run", path, *FAST, "--out", out)
    assert result.exit_code == 2
    assert list(out.iterdir()) == []


def test_run_rejects_zero_replications(tiny):
    result = invoke("run", tiny, "-n", "0")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


# ---------------------------------------------------------------- imports


IMPORT_PROBE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    HEAVY = ("pymc", "arviz", "pytensor")
    attempted = []

    class Spy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                attempted.append(name)
            return None

    sys.meta_path.insert(0, Spy())
    from click.testing import CliRunner, Result
    from funnelsim.cli import main

    runner = CliRunner()
    codes = []
    tiny, fast = sys.argv[1], ["-n", "3", "--workers", "1"]
    for args in (
        ["--help"],
        ["run", "--help"],
        ["validate", tiny],
        ["validate", tiny, "--set", "months=3"],
        ["schema"],
        ["run", tiny, *fast],
        *([name, "--help"] for name in ("compare", "levers", "goal", "report")),
        ["compare", tiny, "--variant", "v:channels.web.leads_per_month=40", *fast],
        ["levers", tiny, *fast],
        ["goal", tiny, "--target", "won=1", "--lever", "deal_value", *fast],
        ["report", tiny, "--levers", *fast, "-o", tiny.rsplit(".", 1)[0] + ".html"],
    ):
        result = runner.invoke(main, args)
        codes.append([" ".join(args[:2]), result.exit_code, result.output[-300:]])
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
    print(json.dumps({"codes": codes, "attempted": attempted, "loaded": loaded}))
    """
)


def test_validate_schema_run_experiments_report_and_help_do_not_import_pymc(tiny):
    """Nor ArviZ or PyTensor: they come with the fitting commands only (and take seconds)."""
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_PROBE, str(tiny)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for args, code, output in report["codes"]:
        assert code == 0, (args, output)
    assert report["loaded"] == []
    assert report["attempted"] == []
