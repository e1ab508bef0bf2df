"""Scenario validation: every bad input gives one clear InputError naming the file, the field
path (or CSV row) and the bad value or what was expected; ``--set`` overrides.

Each bad input is a small change to BASE, a valid scenario, written to ``tmp_path``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from funnelsim.cli import main
from funnelsim.errors import InputError
from funnelsim.scenario import Scenario, load_scenario

BASE = """\
version: 1
name: tiny funnel
start: 2027-01-01
months: 6
replications: 50
seed: 7
currency: EUR
deal_value: {dist: lognormal, median: 9000, sigma: 0.5}
channels:
  web:
    leads_per_month: 40
    seasonality: [1, 1, 1, 1.1, 1, 1, 1, 1, 1, 1, 1.2, 0.8]
  referral:
    leads_per_month: 10
stages:
  qualify:
    duration: {dist: exponential, mean: 5}
    next: {demo: 0.5, lost: 0.5}
  demo:
    duration: {won: 7, lost: {dist: gamma, mean: 10, shape: 2}}
    next: {won: 0.3, lost: 0.7}
"""

SCENARIO_FILE = "scenario.yaml"


def line_of(text: str, needle: str) -> int:
    """1-based number of the first line of BASE containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# ---------------------------------------------------------------- building bad inputs

Change = Callable[[dict[str, Any]], None]


def put(path: str, value: Any) -> Change:
    """Set a dotted path (creating mappings) in the parsed scenario."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = copy.deepcopy(value)

    return change


def drop(path: str) -> Change:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node[part]
        del node[last]

    return change


def both(*changes: Change) -> Change:
    def change(data: dict[str, Any]) -> None:
        for c in changes:
            c(data)

    return change


CUSTOMERS_FILE = both(  # a BG/NBD repeat model whose existing customers come from a file
    put("repeat", {"model": "bg_nbd", "r": 0.2, "alpha": 4, "a": 0.8, "b": 2.4, "spend": 30}),
    put("existing_customers", {"file": "customers.csv"}),
)


@dataclass(frozen=True)
class Bad:
    """A bad input and the fragments its message must contain."""

    where: str  # the field path, CSV row or option ("" when there is none, e.g. empty file)
    what: tuple[str, ...]  # the bad value and/or what was expected
    change: Change | None = None  # edit of the parsed BASE
    text: Callable[[str], str] | None = None  # edit of BASE's text
    files: dict[str, str] = field(default_factory=dict)  # extra files next to the scenario
    overrides: tuple[str, ...] = ()
    source: str = SCENARIO_FILE  # the file (or option) the message must name
    write: bool = True  # False: the scenario file does not exist
    cli: bool = False  # also run it through `funnelsim validate`


def write_case(tmp_path: Path, case: Bad) -> Path:
    path = tmp_path / SCENARIO_FILE
    for name, content in case.files.items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    if not case.write:
        return path
    if case.text is not None:
        text = case.text(BASE)
    else:
        data = yaml.safe_load(BASE)
        if case.change is not None:
            case.change(data)
        text = yaml.safe_dump(data, sort_keys=False)
    path.write_text(text, encoding="utf-8")
    return path


CSV_HEADER = "lead_id,channel,stage,days_in_stage\n"
USE_CSV = put("pipeline", {"file": "open.csv"})

CASES: dict[str, Bad] = {
    # ---- unknown keys
    "unknown_top_level_key": Bad(
        "(top level)", ("unknown key 'monhts'", "did you mean 'months'"), put("monhts", 6), cli=True
    ),
    "unknown_channel_key": Bad(
        "channels -> web",
        ("unknown key 'seasonalty'", "did you mean 'seasonality'"),
        put("channels.web.seasonalty", [1] * 12),
    ),
    "unknown_stage_key": Bad(
        "stages -> qualify",
        ("unknown key 'nxt'", "did you mean 'next'"),
        put("stages.qualify.nxt", {}),
    ),
    "unknown_pipeline_key": Bad(
        "pipeline -> demo",
        ("unknown key 'chanel'", "did you mean 'channel'"),
        put("pipeline", {"demo": {"count": 2, "chanel": "web"}}),
    ),
    # ---- distributions
    "unknown_distribution": Bad(
        "stages -> qualify -> duration",
        ("unknown distribution 'exponentail'", "did you mean 'exponential'"),
        put("stages.qualify.duration", {"dist": "exponentail", "mean": 5}),
        cli=True,
    ),
    "negative_mean": Bad(
        "stages -> qualify -> duration -> mean",
        ("-5", "greater than 0"),
        put("stages.qualify.duration", {"dist": "exponential", "mean": -5}),
    ),
    "infinite_mean": Bad(
        "stages -> qualify -> duration -> mean",
        ("inf", "finite"),
        put("stages.qualify.duration", {"dist": "exponential", "mean": float("inf")}),
    ),
    "missing_parameter": Bad(
        "stages -> demo -> duration -> lost -> shape",
        ("is required",),
        put("stages.demo.duration.lost", {"dist": "gamma", "mean": 10}),
    ),
    "uniform_high_below_low": Bad(
        "stages -> qualify -> duration",
        ("high (2) must be at least low (5)",),
        put("stages.qualify.duration", {"dist": "uniform", "low": 5, "high": 2}),
    ),
    # extreme parameters: a mean that overflows float64 (was a traceback), or absurd
    "lognormal_sigma_overflows": Bad(
        "deal_value -> sigma",
        ("got 40", "at most 10", "median·exp(sigma²/2)"),
        put("deal_value", {"dist": "lognormal", "median": 1000, "sigma": 40}),
        cli=True,
    ),
    "weibull_shape_overflows": Bad(
        "stages -> qualify -> duration -> shape",
        ("got 0.0001", "at least 0.05", "Γ(1 + 1/shape)"),
        put("stages.qualify.duration", {"dist": "weibull", "scale": 2, "shape": 0.0001}),
        cli=True,
    ),
    "gamma_shape_degenerate": Bad(
        "deal_value -> shape",
        ("got 1e-05", "at least 0.001"),
        put("deal_value", {"dist": "gamma", "mean": 1000, "shape": 1e-5}),
    ),
    "gamma_huge_mean_and_shape": Bad(
        "deal_value",
        ("the mean of this gamma is 1e+300", "at most 1e15"),
        put("deal_value", {"dist": "gamma", "mean": 1e300, "shape": 1e300}),
    ),
    "lognormal_huge_median": Bad(
        "channels -> web -> deal_value",
        ("the mean of this lognormal is 1.65e+300", "at most 1e15"),
        put("channels.web.deal_value", {"dist": "lognormal", "median": 1e300, "sigma": 1}),
    ),
    "fixed_duration_too_large": Bad(
        "stages -> qualify -> duration",
        ("the value is 1e+300", "at most 1e15"),
        put("stages.qualify.duration", 1e300),
    ),
    "empirical_mean_overflows": Bad(
        "deal_value",
        ("the mean of this empirical is too large for float64", "at most 1e15"),
        put("deal_value", {"dist": "empirical", "values": [1.7e308, 1.7e308]}),
    ),
    "empty_empirical": Bad(
        "stages -> qualify -> duration -> values",
        ("at least 1 item", "[]"),
        put("stages.qualify.duration", {"dist": "empirical", "values": []}),
    ),
    "negative_fixed_duration": Bad(
        "stages -> qualify -> duration",
        ("-3", "greater than or equal to 0"),
        put("stages.qualify.duration", -3),
    ),
    "duration_not_a_distribution": Bad(
        "stages -> qualify -> duration",
        ("'five'", "expected a number or a distribution"),
        put("stages.qualify.duration", "five"),
    ),
    "duration_boolean": Bad(
        "stages -> qualify -> duration",
        ("got true", "expected a number or a distribution"),
        put("stages.qualify.duration", True),
    ),
    "negative_deal_value": Bad(
        "deal_value", ("-5", "greater than or equal to 0"), put("deal_value", -5)
    ),
    # ---- probabilities
    "probabilities_sum_below_1": Bad(
        "stages -> qualify -> next",
        ("sum to 0.9", "expected 1"),
        put("stages.qualify.next", {"demo": 0.5, "lost": 0.4}),
        cli=True,
    ),
    "probabilities_sum_just_above_tolerance": Bad(
        "stages -> demo -> next",
        ("sum to 1.00000001", "expected 1"),
        put("stages.demo.next", {"won": 0.3, "lost": 0.70000001}),
    ),
    "probability_above_1": Bad(
        "stages -> demo -> next -> won",
        ("1.5", "less than or equal to 1"),
        put("stages.demo.next", {"won": 1.5, "lost": -0.5}),
    ),
    "probability_negative": Bad(
        "stages -> demo -> next -> lost",
        ("-0.2", "greater than or equal to 0"),
        put("stages.demo.next", {"won": 1.2, "lost": -0.2}),
    ),
    "probability_nan": Bad(
        "stages -> demo -> next -> won",
        ("nan", "finite"),
        text=lambda t: t.replace("next: {won: 0.3, lost: 0.7}", "next: {won: .nan, lost: 0.7}"),
    ),
    "unknown_outcome": Bad(
        "stages -> qualify -> next -> dmeo",
        ("unknown outcome 'dmeo'", "did you mean 'demo'"),
        put("stages.qualify.next", {"dmeo": 0.5, "lost": 0.5}),
        cli=True,
    ),
    "empty_next": Bad(
        "stages -> qualify -> next",
        ("is empty", "at least one outcome"),
        put("stages.qualify.next", {}),
    ),
    "next_not_a_mapping": Bad(
        "stages -> demo -> next",
        ("won", "section of keys and values"),
        put("stages.demo.next", ["won", "lost"]),
    ),
    "dirichlet_zero_concentration": Bad(
        "stages -> qualify -> next -> dirichlet -> demo",
        ("got 0", "greater than 0"),
        put("stages.qualify.next", {"dirichlet": {"demo": 0, "lost": 5}}),
    ),
    "dirichlet_negative_concentration": Bad(
        "stages -> demo -> next -> dirichlet -> won",
        ("-1", "greater than 0"),
        put("stages.demo.next", {"dirichlet": {"won": -1, "lost": 5}}),
    ),
    "dirichlet_unknown_outcome": Bad(
        "stages -> qualify -> next -> lsot",
        ("unknown outcome 'lsot'", "did you mean 'lost'"),
        put("stages.qualify.next", {"dirichlet": {"demo": 3, "lsot": 7}}),
    ),
    # ---- per-outcome durations
    "per_outcome_duration_missing_outcome": Bad(
        "stages -> demo -> duration",
        ("no duration for outcome 'lost'",),
        put("stages.demo.duration", {"won": 7}),
    ),
    "per_outcome_duration_names_non_outcome": Bad(
        "stages -> demo -> duration -> wno",
        ("'wno' is not an outcome", "did you mean 'won'"),
        put("stages.demo.duration", {"won": 7, "lost": 3, "wno": 4}),
    ),
    # ---- the funnel graph and stage names
    "unreachable_stage": Bad(
        "stages -> orphan",
        ("cannot be reached from the entry stage 'qualify'",),
        put("stages.orphan", {"duration": 3, "next": {"won": 1}}),
        cli=True,
    ),
    "unreachable_via_zero_probability": Bad(
        "stages -> demo",
        ("cannot be reached",),
        put("stages.qualify.next", {"demo": 0, "won": 0.5, "lost": 0.5}),
    ),
    "loop_with_no_exit": Bad(
        "stages",
        ("leads in demo, trial can never reach won or lost", "loop with no exit"),
        both(
            put("stages.demo", {"duration": 3, "next": {"trial": 1}}),
            put("stages.trial", {"duration": 3, "next": {"demo": 1}}),
        ),
        cli=True,
    ),
    "self_loop_with_no_exit": Bad(
        "stages",
        ("leads in demo can never reach won or lost",),
        put("stages.demo", {"duration": 3, "next": {"demo": 1}}),
    ),
    "stage_named_won": Bad(
        "stages -> won",
        ("'won' is reserved",),
        put("stages.won", {"duration": 3, "next": {"lost": 1}}),
    ),
    "stage_named_lost": Bad(
        "stages -> lost",
        ("'lost' is reserved",),
        put("stages.lost", {"duration": 3, "next": {"won": 1}}),
    ),
    "stage_named_dirichlet": Bad(
        "stages -> dirichlet",
        ("'dirichlet' is reserved",),
        put("stages.dirichlet", {"duration": 3, "next": {"lost": 1}}),
    ),
    "stage_named_silent_loss": Bad(
        "stages -> silent_loss",
        ("'silent_loss' is reserved",),
        put("stages.silent_loss", {"duration": 3, "next": {"lost": 1}}),
    ),
    "channel_named_silent_loss": Bad(
        "channels -> silent_loss",
        ("'silent_loss' is reserved", "cannot name a channel"),
        lambda data: data["channels"].update({"silent_loss": {"leads_per_month": 3}}),
        cli=True,
    ),
    # ---- silent losses and stale leads
    "silent_loss_given_a_duration": Bad(
        "stages -> demo -> duration -> silent_loss",
        ("silent_loss has no time in the stage", "exponential(mean 3)", "expected none"),
        both(
            put("stages.demo.next", {"won": 0.3, "lost": 0.5, "silent_loss": 0.2}),
            put("stages.demo.duration.silent_loss", {"dist": "exponential", "mean": 3}),
        ),
        cli=True,
    ),
    "silent_loss_duration_in_a_channel_override": Bad(
        "stages -> demo -> channels -> web -> duration -> silent_loss",
        ("silent_loss has no time in the stage", "expected none"),
        put(
            "stages.demo.channels.web",
            {
                "next": {"won": 0.2, "silent_loss": 0.8},
                "duration": {"won": 7, "silent_loss": 1},
            },
        ),
    ),
    "stale_after_zero": Bad(
        "stages -> qualify -> stale_after",
        ("got 0", "greater than 0"),
        put("stages.qualify.stale_after", 0),
        cli=True,
    ),
    "stale_after_negative": Bad(
        "stages -> qualify -> stale_after",
        ("got -30", "greater than 0"),
        put("stages.qualify.stale_after", -30),
    ),
    "stale_after_not_a_number": Bad(
        "stages -> qualify -> stale_after",
        ("got '90 days'", "a valid number"),
        put("stages.qualify.stale_after", "90 days"),
    ),
    "stale_after_infinite": Bad(
        "stages -> qualify -> stale_after",
        ("got inf", "finite"),
        put("stages.qualify.stale_after", float("inf")),
    ),
    "channel_name_with_dot": Bad(
        "channels -> we.b",
        ("'we.b'", "no '.'"),
        lambda data: data["channels"].update({"we.b": {"leads_per_month": 3}}),
    ),
    "override_unknown_channel": Bad(
        "stages -> qualify -> channels -> wbe",
        ("unknown channel 'wbe'", "did you mean 'web'"),
        put("stages.qualify.channels", {"wbe": {"next": {"demo": 1}}}),
    ),
    "override_unknown_outcome": Bad(
        "stages -> qualify -> channels -> web -> next -> dem",
        ("unknown outcome 'dem'", "did you mean 'demo'"),
        put("stages.qualify.channels", {"web": {"next": {"dem": 1}}}),
    ),
    # ---- channels
    "seasonality_11_values": Bad(
        "channels -> web -> seasonality",
        ("has 11 values", "expected 12"),
        put("channels.web.seasonality", [1] * 11),
        cli=True,
    ),
    "seasonality_negative": Bad(
        "channels -> web -> seasonality -> 11",
        ("-1", "greater than or equal to 0"),
        put("channels.web.seasonality", [1] * 11 + [-1]),
    ),
    "growth_minus_1": Bad(
        "channels -> web -> growth_per_month",
        ("got -1", "greater than -1"),
        put("channels.web.growth_per_month", -1),
    ),
    "growth_below_minus_1": Bad(
        "channels -> web -> growth_per_month",
        ("got -1.5", "greater than -1"),
        put("channels.web.growth_per_month", -1.5),
    ),
    "negative_leads_per_month": Bad(
        "channels -> referral -> leads_per_month",
        ("-3", "greater than or equal to 0"),
        put("channels.referral.leads_per_month", -3),
    ),
    "leads_per_month_wrong_type": Bad(
        "channels -> web -> leads_per_month",
        ("'lots'", "expected a number of leads per month"),
        put("channels.web.leads_per_month", "lots"),
    ),
    "leads_per_month_boolean": Bad(
        "channels -> web -> leads_per_month",
        ("got true", "expected a number of leads per month"),
        put("channels.web.leads_per_month", True),
    ),
    "leads_per_month_beyond_simulation": Bad(
        "channels -> web -> leads_per_month",
        ("up to 8.4e12 new leads", "expected at most 1e8"),
        put("channels.web.leads_per_month", 1e12),
        cli=True,
    ),
    "growth_beyond_simulation": Bad(
        "channels -> web -> leads_per_month",
        ("up to 3.6e14 new leads", "growth over 6 months", "expected at most 1e8"),
        put("channels.web.growth_per_month", 100),
    ),
    "budget_buys_leads_beyond_simulation": Bad(
        "channels -> referral -> leads_per_month",
        ("up to 7e12 new leads", "budget ÷ cost per lead"),
        both(
            drop("channels.referral.leads_per_month"),
            put(
                "costs",
                {"channels": {"referral": {"budget_per_month": 1e6, "cost_per_lead": 1e-6}}},
            ),
        ),
    ),
    "plan_month_malformed": Bad(
        "channels -> referral -> leads_per_month",
        ("'2027-13'", "YYYY-MM"),
        put("channels.referral.leads_per_month", {"2027-13": 5}),
    ),
    "plan_month_outside_horizon": Bad(
        "channels -> referral -> leads_per_month -> 2028-03",
        ("outside the horizon 2027-01 to 2027-06",),
        put("channels.referral.leads_per_month", {"2028-03": 5}),
    ),
    "plan_with_seasonality": Bad(
        "channels -> web",
        ("monthly plan", "seasonality"),
        put("channels.web.leads_per_month", {"2027-03": 5}),
    ),
    "plan_with_growth": Bad(
        "channels -> referral",
        ("monthly plan", "growth_per_month"),
        both(
            put("channels.referral.leads_per_month", {"2027-03": 5}),
            put("channels.referral.growth_per_month", 0.1),
        ),
    ),
    # ---- top-level fields
    "missing_deal_value": Bad(
        "deal_value", ("is required", "missing for: web, referral"), drop("deal_value"), cli=True
    ),
    "bad_currency": Bad("currency", ("'euro'", "[A-Z]{3}"), put("currency", "euro")),
    "months_0": Bad("months", ("got 0", "greater than or equal to 1"), put("months", 0)),
    "months_not_integer": Bad("months", ("'six'", "valid integer"), put("months", "six")),
    "months_fractional": Bad("months", ("6.5", "valid integer"), put("months", 6.5)),
    "replications_0": Bad("replications", ("got 0",), put("replications", 0)),
    "bad_start_date": Bad(
        "start",
        ("'2027-02-30'", "expected a date YYYY-MM-DD"),
        put("start", "2027-02-30"),
        cli=True,
    ),
    "start_with_slashes": Bad("start", ("'01/02/2027'", "YYYY-MM-DD"), put("start", "01/02/2027")),
    "horizon_past_year_9999": Bad(
        "months",
        ("6 months from start 9999-11-01", "expected at most 1 month from this start"),
        put("start", "9999-11-01"),
    ),
    "start_in_the_last_month": Bad(
        "start", ("9999-12-15", "expected an earlier start"), put("start", "9999-12-15")
    ),
    "version_2": Bad("version", ("got 2", "should be 1"), put("version", 2)),
    "version_missing": Bad("version", ("is required",), drop("version")),
    "name_wrong_type": Bad("name", ("got 5", "valid string"), put("name", 5)),
    "channels_not_a_mapping": Bad(
        "channels", ("[1, 2]", "section of keys and values"), put("channels", [1, 2])
    ),
    "no_stages": Bad("stages", ("{}", "at least 1 item"), put("stages", {})),
    # ---- the opening pipeline given in the scenario
    "pipeline_unknown_stage": Bad(
        "pipeline -> demoo",
        ("unknown stage 'demoo'", "did you mean 'demo'"),
        put("pipeline", {"demoo": 3}),
        cli=True,
    ),
    "pipeline_unknown_channel": Bad(
        "pipeline -> demo -> channel",
        ("unknown channel 'wbe'", "did you mean 'web'"),
        put("pipeline", {"demo": {"count": 3, "channel": "wbe"}}),
    ),
    "pipeline_key_shortened": Bad(
        "pipeline -> demo",
        ("unknown key 'days'", "did you mean 'days_in_stage'"),
        put("pipeline", {"demo": {"count": 3, "days": 4}}),
    ),
    "pipeline_negative_count": Bad(
        "pipeline -> demo", ("-2", "greater than or equal to 0"), put("pipeline", {"demo": -2})
    ),
    "pipeline_days_in_stage_impossible": Bad(
        "pipeline -> qualify",
        ("days_in_stage 30", "stays that long in 'qualify'"),
        both(
            put("stages.qualify.duration", 7),
            put("pipeline", {"qualify": {"count": 3, "days_in_stage": 30}}),
        ),
    ),
    "pipeline_days_in_stage_equals_fixed_duration": Bad(
        "pipeline -> qualify",
        ("days_in_stage 7",),
        both(
            put("stages.qualify.duration", 7),
            put("pipeline", {"qualify": {"count": 1, "days_in_stage": 7}}),
        ),
    ),
    "pipeline_days_beyond_uniform_high": Bad(
        "pipeline -> qualify",
        ("days_in_stage 5",),
        both(
            put("stages.qualify.duration", {"dist": "uniform", "low": 1, "high": 4}),
            put("pipeline", {"qualify": {"count": 1, "days_in_stage": 5}}),
        ),
    ),
    # ---- the opening pipeline given in a CSV file (messages name the CSV and the row)
    "csv_missing_column": Bad(
        "missing column(s) days_in_stage",
        ("found: 'lead_id', 'channel', 'stage'",),
        USE_CSV,
        files={"open.csv": "lead_id,channel,stage\nA1,web,qualify\n"},
        source="open.csv",
    ),
    "csv_missing_column_with_a_stray_character": Bad(
        "missing column(s) stage",
        ("found: 'lead_id', 'channel', 'stage\\u200b', 'days_in_stage'",),
        USE_CSV,
        files={"open.csv": "lead_id,channel,stage\u200b,days_in_stage\nA1,web,qualify,2\n"},
        source="open.csv",
    ),
    "csv_unknown_column": Bad(
        "header",
        ("unknown column 'vaule'", "did you mean 'value'", "lead_id,channel,stage"),
        USE_CSV,
        files={"open.csv": CSV_HEADER.strip() + ",vaule\nA1,web,qualify,2,5000\n"},
        source="open.csv",
        cli=True,
    ),
    "csv_column_twice": Bad(
        "header",
        ("column 'value' appears twice",),
        USE_CSV,
        files={"open.csv": CSV_HEADER.strip() + ",value,value\nA1,web,qualify,2,5,6\n"},
        source="open.csv",
    ),
    "csv_column_without_name": Bad(
        "header",
        ("column 5 has no name",),
        USE_CSV,
        files={"open.csv": CSV_HEADER.strip() + ",\nA1,web,qualify,2,\n"},
        source="open.csv",
    ),
    "csv_empty": Bad(
        "missing column(s)",
        ("found: nothing",),
        USE_CSV,
        files={"open.csv": ""},
        source="open.csv",
    ),
    "csv_bad_number": Bad(
        "row 3",
        ("days_in_stage 'two' is not a number",),
        USE_CSV,
        files={"open.csv": CSV_HEADER + "A1,web,qualify,2\nA2,web,demo,two\n"},
        source="open.csv",
        cli=True,
    ),
    "csv_negative_days": Bad(
        "row 2",
        ("'-2'", ">= 0"),
        USE_CSV,
        files={"open.csv": CSV_HEADER + "A1,web,qualify,-2\n"},
        source="open.csv",
    ),
    "csv_bad_value": Bad(
        "row 2",
        ("value 'lots' is not a number",),
        USE_CSV,
        files={"open.csv": CSV_HEADER.strip() + ",value\nA1,web,qualify,2,lots\n"},
        source="open.csv",
    ),
    "csv_unknown_channel": Bad(
        "row 3",
        ("channel 'wbe'", "did you mean 'web'"),
        USE_CSV,
        files={"open.csv": CSV_HEADER + "A1,web,qualify,2\nA2,wbe,qualify,1\n"},
        source="open.csv",
    ),
    "csv_unknown_stage": Bad(
        "row 2",
        ("stage 'qualfy'", "did you mean 'qualify'"),
        USE_CSV,
        files={"open.csv": CSV_HEADER + "A1,web,qualfy,2\n"},
        source="open.csv",
    ),
    "csv_duplicate_lead_id": Bad(
        "row 4",
        ("lead_id 'A1' repeats row 2", "expected unique"),
        USE_CSV,
        files={"open.csv": CSV_HEADER + "A1,web,qualify,2\nA2,web,demo,1\nA1,web,demo,3\n"},
        source="open.csv",
    ),
    "csv_empty_lead_id": Bad(
        "row 2",
        ("lead_id is empty",),
        USE_CSV,
        files={"open.csv": CSV_HEADER + ",web,qualify,2\n"},
        source="open.csv",
    ),
    "csv_file_missing": Bad(
        "pipeline -> file", ("not found",), put("pipeline", {"file": "nope.csv"}), source="nope.csv"
    ),
    "csv_days_in_stage_impossible": Bad(
        "lead A2",
        ("days_in_stage 30",),
        both(put("stages.qualify.duration", 7), USE_CSV),
        files={"open.csv": CSV_HEADER + "A1,web,qualify,2\nA2,web,qualify,30\n"},
    ),
    # ---- YAML itself
    "yaml_syntax_error": Bad(
        f"line {line_of(BASE, 'currency:')}",
        ("invalid YAML", "mapping values are not allowed"),
        text=lambda t: t.replace("currency: EUR", "currency: EUR: USD"),
        cli=True,
    ),
    "yaml_unclosed_bracket": Bad(
        "line",
        ("invalid YAML", "expected ',' or ']'"),
        text=lambda t: t.replace("months: 6", "months: [6"),
    ),
    "python_object_tag": Bad(
        f"line {line_of(BASE, 'name:')}",
        ("tags that construct objects are not allowed", "python/object/apply:os.getcwd"),
        text=lambda t: t.replace("name: tiny funnel", "name: !!python/object/apply:os.getcwd []"),
        cli=True,
    ),
    "python_name_tag": Bad(
        "line",
        ("tags that construct objects are not allowed", "python/name:os.system"),
        text=lambda t: t + "extra: !!python/name:os.system\n",
    ),
    "duplicate_top_level_key": Bad(
        f"line {line_of(BASE, 'seed:') + 1}",
        ("duplicate key 'seed'",),
        text=lambda t: t.replace("seed: 7", "seed: 7\nseed: 8"),
        cli=True,
    ),
    "duplicate_nested_key": Bad(
        f"line {line_of(BASE, 'leads_per_month: 10') + 1}",
        ("duplicate key 'leads_per_month'",),
        text=lambda t: t.replace(
            "    leads_per_month: 10", "    leads_per_month: 10\n    leads_per_month: 11"
        ),
    ),
    "empty_file": Bad("", ("the file is empty",), text=lambda t: "", cli=True),
    "comments_only": Bad("", ("the file is empty",), text=lambda t: "# nothing here\n"),
    "top_level_list": Bad("", ("expected a mapping", "got list"), text=lambda t: "- 1\n- 2\n"),
    "missing_file": Bad("", ("file not found",), write=False, cli=True),
    # ---- --set problems
    "set_without_equals": Bad(
        "'months'", ("expected PATH=VALUE",), overrides=("months",), source="--set", cli=True
    ),
    "set_index_out_of_range": Bad(
        "channels.web.seasonality.12",
        ("index 12 is outside the list of 12 items",),
        overrides=("channels.web.seasonality.12=1",),
        source="--set",
        cli=True,
    ),
    "set_list_index_not_integer": Bad(
        "channels.web.seasonality.x",
        ("indexes a list; expected an integer",),
        overrides=("channels.web.seasonality.x=1",),
        source="--set",
    ),
    "set_path_through_scalar": Bad(
        "months.x",
        ("months is a value (6), not a section",),
        overrides=("months.x=1",),
        source="--set",
        cli=True,
    ),
    "set_empty_segment": Bad(
        "'channels..web'", ("empty segment",), overrides=("channels..web=1",), source="--set"
    ),
    "set_invalid_yaml_value": Bad(
        "line 1", ("invalid YAML",), overrides=("months=[1",), source="--set months"
    ),
    "set_python_tag": Bad(
        "line 1",
        ("tags that construct objects are not allowed",),
        overrides=("name=!!python/name:os.system",),
        source="--set name",
    ),
    "set_invalid_value": Bad(
        "months", ("'zero'", "valid integer"), overrides=("months=zero",), cli=True
    ),
    "set_invalid_list_item": Bad(
        "channels -> web -> seasonality -> 3",
        ("-1", "greater than or equal to 0"),
        overrides=("channels.web.seasonality.3=-1",),
    ),
    "set_unknown_key": Bad(
        "(top level)",
        ("did you mean 'months'", "[from --set monhts=3]"),
        overrides=("monhts=3",),
    ),
    "set_unknown_top_level_section": Bad(
        "(top level)",
        (
            "unknown key 'chanels'",
            "did you mean 'channels'",
            "[from --set chanels.web.leads_per_month=5]",
        ),
        overrides=("chanels.web.leads_per_month=5",),
        cli=True,
    ),
    "set_uniform_low_above_high": Bad(
        "channels -> referral -> leads_per_month",
        (
            "high (35) must be at least low (40)",
            "[from --set channels.referral.leads_per_month.low=40]",
        ),
        put("channels.referral.leads_per_month", {"dist": "uniform", "low": 30, "high": 35}),
        overrides=("channels.referral.leads_per_month.low=40",),
        cli=True,
    ),
    "set_index_into_a_list_the_file_lacks": Bad(
        "channels.referral.seasonality.3",
        ("channels.referral has no seasonality list", "channels.referral.seasonality=[...]"),
        overrides=("channels.referral.seasonality.3=1.2",),
        source="--set",
        cli=True,
    ),
    "set_start_past_year_9999": Bad(
        "months",
        ("from start 9999-11-01", "[from --set start=9999-11-01]"),
        overrides=("start=9999-11-01",),
        cli=True,
    ),
    "set_breaks_probability_sum": Bad(
        "stages -> demo -> next", ("sum to 1.2",), overrides=("stages.demo.next.won=0.5",)
    ),
    # ---- the sales team
    "team_unknown_stage": Bad(
        "sales_team -> stages -> 1",
        ("unknown stage 'dmo'", "did you mean 'demo'"),
        put("sales_team", {"reps": 2, "leads_per_rep": 3, "stages": ["qualify", "dmo"]}),
        cli=True,
    ),
    "team_negative_reps": Bad(
        "sales_team -> reps",
        ("-1", "greater than or equal to 0"),
        put("sales_team", {"reps": -1, "leads_per_rep": 3, "stages": ["demo"]}),
    ),
    "team_zero_slots": Bad(
        "sales_team -> leads_per_rep",
        ("0", "greater than or equal to 1"),
        put("sales_team", {"reps": 2, "leads_per_rep": 0, "stages": ["demo"]}),
    ),
    "team_skill_not_positive": Bad(
        "sales_team -> skill -> 1",
        ("0", "greater than 0", "rep 2's skill"),  # the path counts from 0, the words from 1
        put("sales_team", {"reps": 2, "leads_per_rep": 3, "stages": ["demo"], "skill": [1, 0]}),
    ),
    "team_skill_pushes_lost_below_zero": Bad(
        "sales_team -> skill -> 0",
        ("rep 1's skill 4", "'demo'", "would leave lost below 0"),
        put("sales_team", {"reps": 2, "leads_per_rep": 3, "stages": ["demo"], "skill": [4]}),
    ),
    "team_hiring_outside_horizon": Bad(
        "sales_team -> hiring -> 0 -> from",
        ("2028-03-01", "outside the horizon"),
        put(
            "sales_team",
            {
                "reps": 2,
                "leads_per_rep": 3,
                "stages": ["demo"],
                "hiring": [{"from": "2028-03-01", "reps": 3}],
            },
        ),
    ),
    "team_hiring_on_the_start_date": Bad(
        "sales_team -> hiring -> 0 -> from",
        ("2027-01-01 is the start date", "sales_team -> reps (2)", "set reps: 3 there"),
        put(
            "sales_team",
            {
                "reps": 2,
                "leads_per_rep": 3,
                "stages": ["demo"],
                "hiring": [{"from": "2027-01-01", "reps": 3}],
            },
        ),
        cli=True,
    ),
    "team_hiring_before_the_start": Bad(
        "sales_team -> hiring -> 0 -> from",
        ("2026-11-01 is before the start date", "the team on the start date is sales_team"),
        put(
            "sales_team",
            {
                "reps": 2,
                "leads_per_rep": 3,
                "stages": ["demo"],
                "hiring": [{"from": "2026-11-01", "reps": 3}],
            },
        ),
    ),
    "team_hiring_bad_date": Bad(
        "sales_team -> hiring -> 0 -> from",
        ("2027-02-30", "expected a date YYYY-MM-DD"),
        put(
            "sales_team",
            {
                "reps": 2,
                "leads_per_rep": 3,
                "stages": ["demo"],
                "hiring": [{"from": "2027-02-30", "reps": 3}],
            },
        ),
    ),
    "team_queue_unknown": Bad(
        "sales_team -> queue",
        ("'lifo'", "'fifo' or 'highest_value_first'"),
        put("sales_team", {"reps": 2, "leads_per_rep": 3, "stages": ["demo"], "queue": "lifo"}),
    ),
    "team_negative_patience": Bad(
        "sales_team -> patience -> mean",
        ("-3", "greater than 0"),
        put(
            "sales_team",
            {
                "reps": 2,
                "leads_per_rep": 3,
                "stages": ["demo"],
                "patience": {"dist": "exponential", "mean": -3},
            },
        ),
    ),
    "costs_negative_rep": Bad(
        "costs -> rep_per_month",
        ("-9000", "greater than or equal to 0"),
        put("costs", {"rep_per_month": -9000}),
    ),
    # ---- repeat sales and costs
    "repeat_negative_r": Bad(
        "repeat -> r",
        ("-0.2", "greater than 0"),
        put("repeat", {"model": "bg_nbd", "r": -0.2, "alpha": 4, "a": 0.8, "b": 2.4, "spend": 30}),
        cli=True,
    ),
    "repeat_unknown_model": Bad(
        "repeat",
        ("bg_nbdd", "bg_nbd"),
        put("repeat", {"model": "bg_nbdd", "r": 0.2, "alpha": 4, "a": 0.8, "b": 2.4, "spend": 30}),
    ),
    "repeat_gamma_gamma_q_at_most_one": Bad(
        "repeat -> spend -> q",
        ("0.9", "greater than 1"),
        put(
            "repeat",
            {
                "model": "bg_nbd",
                "r": 0.2,
                "alpha": 4,
                "a": 0.8,
                "b": 2.4,
                "spend": {"model": "gamma_gamma", "p": 6, "q": 0.9, "gamma": 15},
            },
        ),
    ),
    "churn_above_one": Bad(
        "repeat -> churn",
        ("1.5", "less than or equal to 1"),
        put("repeat", {"model": "subscription", "price": 100, "churn": 1.5}),
    ),
    "churn_beta_one_number": Bad(
        "repeat -> churn -> beta",
        ("[1.2]", "at least 2 items"),
        put("repeat", {"model": "subscription", "price": 100, "churn": {"beta": [1.2]}}),
    ),
    "costs_unknown_channel": Bad(
        "costs -> channels -> wbe",
        ("unknown channel 'wbe'", "did you mean 'web'"),
        put("costs", {"channels": {"wbe": {"budget_per_month": 1000}}}),
    ),
    "costs_margin_above_one": Bad(
        "costs -> gross_margin",
        ("1.2", "less than or equal to 1"),
        put("costs", {"gross_margin": 1.2}),
    ),
    "leads_missing_without_budget": Bad(
        "channels -> referral -> leads_per_month",
        ("is required unless", "budget_per_month"),
        drop("channels.referral.leads_per_month"),
    ),
    "existing_without_repeat": Bad(
        "existing_customers", ("needs a repeat section",), put("existing_customers", {"count": 10})
    ),
    "existing_negative_count": Bad(
        "existing_customers -> count",
        ("-5", "greater than or equal to 0"),
        both(
            put("repeat", {"model": "subscription", "price": 100, "churn": 0.1}),
            put("existing_customers", {"count": -5}),
        ),
    ),
    "customers_file_recency_after_age": Bad(
        "row 3",
        ("recency_days 50 is more than age_days 40",),
        CUSTOMERS_FILE,
        files={
            "customers.csv": (
                "customer_id,repeat_purchases,recency_days,age_days\nc1,1,5,40\nc2,2,50,40\n"
            )
        },
        source="customers.csv",
    ),
    "customers_file_fractional_purchases": Bad(
        "row 2",
        ("repeat_purchases 1.5 is not a whole number",),
        CUSTOMERS_FILE,
        files={
            "customers.csv": "customer_id,repeat_purchases,recency_days,age_days\nc1,1.5,5,40\n"
        },
        source="customers.csv",
    ),
    "customers_file_unknown_column": Bad(
        "header",
        ("unknown column 'mean_spnd'", "did you mean 'mean_spend'"),
        CUSTOMERS_FILE,
        files={
            "customers.csv": (
                "customer_id,repeat_purchases,recency_days,age_days,mean_spnd\nc1,1,5,40,20\n"
            )
        },
        source="customers.csv",
    ),
    "customers_file_missing_column": Bad(
        "",
        ("missing column(s) age_days",),
        CUSTOMERS_FILE,
        files={"customers.csv": "customer_id,repeat_purchases,recency_days\nc1,1,5\n"},
        source="customers.csv",
    ),
}


def load_case(tmp_path: Path, case: Bad) -> str:
    """Load the bad scenario and return the message of the InputError it must raise."""
    path = write_case(tmp_path, case)
    with pytest.raises(InputError) as info:
        load_scenario(path, case.overrides)
    return str(info.value)


# ---------------------------------------------------------------- tests


def test_base_scenario_is_valid(tmp_path):
    scenario = load_scenario(write_case(tmp_path, Bad("", ())))
    assert isinstance(scenario, Scenario)
    assert scenario.entry_stage == "qualify"
    assert scenario.start == date(2027, 1, 1)
    assert list(scenario.channels) == ["web", "referral"]


def test_at_least_30_distinct_bad_inputs():
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_bad_input_is_reported_clearly(tmp_path, case):
    message = load_case(tmp_path, case)
    assert case.source in message
    assert case.where in message
    for fragment in case.what:
        assert fragment in message
    assert "Traceback" not in message
    assert "pydantic" not in message.lower()
    assert "Value error" not in message


CLI_CASES = {name: case for name, case in CASES.items() if case.cli}


@pytest.mark.parametrize("case", CLI_CASES.values(), ids=CLI_CASES.keys())
def test_bad_input_through_validate_exits_2(tmp_path, case):
    path = write_case(tmp_path, case)
    args = ["validate", str(path)]
    for override in case.overrides:
        args += ["--set", override]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert case.source in result.output
    assert case.where in result.output
    for fragment in case.what:
        assert fragment in result.output
    assert "Traceback" not in result.output


def test_cli_subset_is_representative():
    assert len(CLI_CASES) >= 15


# ---------------------------------------------------------------- accepted edge cases


@pytest.mark.parametrize(
    "probabilities",
    [
        {"won": 0.1, "lost": 0.2, "demo": 0.7},  # 1.0000000000000002 in floating point
        {"won": 0.3, "lost": 0.7 + 5e-10},
        {"won": 0.3, "lost": 0.7 - 5e-10},
        {"won": 1},
    ],
)
def test_probabilities_within_tolerance_are_accepted(tmp_path, probabilities):
    change = both(put("stages.demo.next", probabilities), put("stages.demo.duration", 4))
    scenario = load_scenario(write_case(tmp_path, Bad("", (), change)))
    assert sum(scenario.stages["demo"].next.values()) == pytest.approx(1)


def test_python_tag_is_refused_before_anything_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / SCENARIO_FILE
    path.write_text(
        BASE.replace(
            "name: tiny funnel", f'name: !!python/object/apply:os.system ["touch {marker}"]'
        )
    )
    with pytest.raises(InputError, match="tags that construct objects are not allowed"):
        load_scenario(path)
    assert not marker.exists()


def test_pipeline_csv_is_read_relative_to_the_scenario(tmp_path):
    case = Bad(
        "",
        (),
        USE_CSV,
        files={
            "open.csv": CSV_HEADER.strip() + ",value\nA1,web,qualify,2,\nA2,referral,demo,1,5000\n"
        },
    )
    scenario = load_scenario(write_case(tmp_path, case))
    assert [
        (lead.lead_id, lead.channel, lead.stage, lead.value) for lead in scenario.open_leads
    ] == [
        ("A1", "web", "qualify", None),
        ("A2", "referral", "demo", 5000.0),
    ]


def test_pipeline_csv_header_names_may_have_spaces_around_them(tmp_path):
    header = " lead_id , channel,stage,  days_in_stage ,value\n"
    case = Bad("", (), USE_CSV, files={"open.csv": header + "A1,web,qualify,2,700\n"})
    scenario = load_scenario(write_case(tmp_path, case))
    (lead,) = scenario.open_leads
    assert (lead.lead_id, lead.channel, lead.stage, lead.days_in_stage, lead.value) == (
        "A1",
        "web",
        "qualify",
        2.0,
        700.0,
    )


def test_extreme_but_allowed_parameters_validate_and_have_finite_expectations(tmp_path):
    import math

    import funnelsim

    change = both(  # each at its bound; the mean at most 1e15
        put("deal_value", {"dist": "lognormal", "median": 1e-7, "sigma": 10}),
        put("stages.qualify.duration", {"dist": "weibull", "scale": 1e-4, "shape": 0.05}),
        put("channels.web.deal_value", {"dist": "gamma", "mean": 1000, "shape": 0.001}),
        put("channels.referral.deal_value", 1e15),
        put("channels.web.leads_per_month", 1e6),  # up to 1.2e6 × 7 months: under 1e8
    )
    scenario = load_scenario(write_case(tmp_path, Bad("", (), change)))
    for channel in funnelsim.expectations(scenario):
        assert math.isfinite(channel.days_to_close_won)
        assert math.isfinite(channel.revenue_per_lead)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / SCENARIO_FILE)])
    assert result.exit_code == 0, result.output


def test_horizon_may_end_on_the_last_representable_month(tmp_path):
    from funnelsim.funnel import compile_funnel

    change = both(put("start", "9999-06-30"), put("months", 5))
    scenario = load_scenario(write_case(tmp_path, Bad("", (), change)))
    assert scenario.end == date(9999, 11, 30)
    assert compile_funnel(scenario).calendar.labels[-1] == "9999-11"
    with pytest.raises(InputError, match="expected at most 5 months from this start"):
        load_scenario(tmp_path / SCENARIO_FILE, ["months=6"])


@pytest.mark.parametrize(
    ("text", "value"),
    [("1e4", 1e4), ("2.5e6", 2.5e6), ("-3E-2", -0.03), (".5e3", 500.0), ("1.0e+4", 1e4)],
)
def test_yaml_12_floats_are_numbers(tmp_path, text, value):
    from funnelsim.scenario import parse_yaml

    assert parse_yaml(f"x: {text}", "test") == {"x": value}
    assert parse_yaml(f"x: '{text}'", "test") == {"x": text}  # quoted: still text


def test_exponent_floats_in_the_file_and_in_set(tmp_path):
    path = write_case(
        tmp_path,
        Bad("", (), text=lambda t: t.replace("median: 9000", "median: 9e3")),
    )
    scenario = load_scenario(path, ["channels.web.leads_per_month=4e1", "months=6"])
    assert scenario.deal_value.median == 9000.0
    assert scenario.channels["web"].leads_per_month == 40.0
    scenario = load_scenario(path, ["deal_value=1.2e4", "channels.web.growth_per_month=-3E-2"])
    assert scenario.deal_value.expected_value() == 12000.0
    assert scenario.channels["web"].growth_per_month == -0.03


def test_a_value_error_in_a_validator_reads_without_pydantics_prefix():
    from pydantic import BaseModel, ValidationError, field_validator

    from funnelsim.scenario import _problems_from_pydantic

    class Section(BaseModel):
        x: int

        @field_validator("x")
        @classmethod
        def _small(cls, x):
            raise ValueError(f"x ({x}) must be small")

    with pytest.raises(ValidationError) as info:
        Section(x=5)
    (problem,) = _problems_from_pydantic(info.value, {"x": 5})
    assert str(problem) == "x: x (5) must be small (got 5)"


@pytest.mark.parametrize(
    ("word", "choices", "hint"),
    [
        ("days", ["count", "channel", "days_in_stage"], "days_in_stage"),  # a shortening
        ("nxt", ["duration", "next", "channels"], "next"),  # a typo
        ("Days", ["count", "days_in_stage"], "days_in_stage"),
        ("web2", ["web", "referral"], "web"),  # the word begins with the choice
        ("day", ["days_in_stage", "days_of_week"], None),  # two begin with it: no guess
        ("da", ["days_in_stage"], None),  # too short to guess from
    ],
)
def test_did_you_mean(word, choices, hint):
    from funnelsim.errors import did_you_mean

    assert did_you_mean(word, choices) == (f" (did you mean '{hint}'?)" if hint else "")


# ---------------------------------------------------------------- --set


def load_with(tmp_path: Path, *overrides: str) -> Scenario:
    return load_scenario(write_case(tmp_path, Bad("", ())), overrides)


def test_set_top_level_number(tmp_path):
    assert load_with(tmp_path, "months=12").months == 12


def test_set_list_item_by_index(tmp_path):
    seasonality = load_with(tmp_path, "channels.web.seasonality.3=1.2").channels["web"].seasonality
    assert seasonality == [1, 1, 1, 1.2, 1, 1, 1, 1, 1, 1, 1.2, 0.8]


def test_set_negative_index_counts_from_the_end(tmp_path):
    assert (
        load_with(tmp_path, "channels.web.seasonality.-1=0.5").channels["web"].seasonality[11]
        == 0.5
    )


def test_set_value_is_parsed_as_yaml(tmp_path):
    scenario = load_with(
        tmp_path,
        "stages.qualify.next={demo: 0.9, lost: 0.1}",
        "deal_value={dist: gamma, mean: 8000, shape: 3}",
        "name=renamed",
        "start=2027-03-01",
    )
    assert scenario.stages["qualify"].next == {"demo": 0.9, "lost": 0.1}
    assert scenario.deal_value.dist == "gamma"
    assert scenario.deal_value.expected_value() == 8000
    assert scenario.title == "renamed"
    assert scenario.start == date(2027, 3, 1)


def test_set_optional_fields_the_file_lacks(tmp_path):
    scenario = load_with(
        tmp_path,
        "channels.referral.growth_per_month=0.02",
        "channels.referral.seasonality=[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]",
        "stages.demo.channels.referral.next={won: 0.5, lost: 0.5}",
        "pipeline.demo=4",
    )
    assert scenario.channels["referral"].growth_per_month == 0.02
    assert scenario.channels["referral"].seasonality[11] == 2
    assert scenario.stages["demo"].channels["referral"].next == {"won": 0.5, "lost": 0.5}
    assert len(scenario.open_leads) == 4
    assert {lead.stage for lead in scenario.open_leads} == {"demo"}


def test_set_changes_the_fingerprint_but_not_the_file(tmp_path):
    path = write_case(tmp_path, Bad("", ()))
    before = path.read_text()
    plain = load_scenario(path)
    changed = load_scenario(path, ["months=12"])
    again = load_scenario(path, ["months=12"])
    assert path.read_text() == before
    assert changed.sha256 != plain.sha256
    assert changed.sha256 == again.sha256


def test_set_invalid_value_is_reported_with_its_path(tmp_path):
    with pytest.raises(InputError) as info:
        load_with(tmp_path, "channels.web.seasonality.3=-1")
    message = str(info.value)
    assert "channels -> web -> seasonality -> 3" in message
    assert "-1" in message


# ---------------------------------------------------------------- known bugs and poor messages


def test_unknown_distribution_parameter_suggests_the_name(tmp_path):
    case = Bad(
        "stages -> demo -> duration -> lost",
        ("unknown key 'shap'", "did you mean 'shape'"),
        put("stages.demo.duration.lost", {"dist": "gamma", "mean": 10, "shap": 2}),
    )
    message = load_case(tmp_path, case)
    for fragment in (case.where, *case.what):
        assert fragment in message


@pytest.mark.parametrize(
    "change",
    [
        put("months", True),
        put("stages.demo.next", {"won": True, "lost": False}),
        put("channels.web.seasonality", [True] + [1] * 11),
        put("channels.web.growth_per_month", True),
    ],
    ids=["months_true", "probability_true", "seasonality_true", "growth_true"],
)
def test_booleans_are_not_numbers(tmp_path, change):
    load_case(tmp_path, Bad("", (), change))


@pytest.mark.parametrize("start", [0, 1798761600, 20270101])
def test_integer_start_is_not_a_date(tmp_path, start):
    message = load_case(tmp_path, Bad("", (), put("start", start)))
    assert "start" in message
    assert "expected a date YYYY-MM-DD" in message


def test_invalid_set_value_names_the_option(tmp_path):
    with pytest.raises(InputError) as info:
        load_with(tmp_path, "months=zero")
    assert "--set" in str(info.value)


def test_duplicate_key_names_both_lines(tmp_path):
    case = Bad("", (), text=lambda t: t.replace("seed: 7", "seed: 7\nseed: 8"))
    message = load_case(tmp_path, case)
    first = line_of(BASE, "seed:")
    assert f"line {first}" in message
    assert f"line {first + 1}" in message


def test_loop_through_channel_overrides_names_the_channel(tmp_path):
    change = both(
        put("stages.demo.duration", 4),
        put("stages.qualify.channels", {"referral": {"next": {"demo": 1}}}),
        put("stages.demo.channels", {"referral": {"next": {"qualify": 1}}}),
    )
    message = load_case(tmp_path, Bad("", (), change))
    assert "loop with no exit" in message
    assert "referral" in message


def test_override_outcome_problem_names_the_override(tmp_path):
    change = put("stages.demo.channels", {"referral": {"next": {"won": 1}}})
    try:
        load_scenario(write_case(tmp_path, Bad("", (), change)))
    except InputError as exc:
        assert "stages -> demo -> channels -> referral" in str(exc)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (put("stages.extra", None), "stages -> extra"),
        (put("channels.referral", None), "channels -> referral"),
        (put("pipeline", {"demo": "many"}), "pipeline -> demo"),
    ],
    ids=["null_stage", "null_channel", "pipeline_count_text"],
)
def test_wrong_section_type_message_has_no_class_names(tmp_path, change, where):
    message = load_case(tmp_path, Bad("", (), change))
    assert where in message
    assert "instance of" not in message
    assert "got" in message


def test_csv_row_with_extra_fields_is_refused(tmp_path):
    case = Bad("", (), USE_CSV, files={"open.csv": CSV_HEADER + "A1,web,qualify,2,9,9\n"})
    message = load_case(tmp_path, case)
    assert "open.csv" in message
    assert "row 2" in message


def test_dirichlet_mixed_with_probabilities_names_the_stage(tmp_path):
    path = tmp_path / "scenario.yaml"
    path.write_text(BASE)
    with pytest.raises(InputError) as err:
        load_scenario(path, ["stages.demo.next={dirichlet: {won: 3, lost: 7}, won: 0.8}"])
    message = str(err.value)
    assert "stages -> demo -> next:" in message
    assert "mixes a dirichlet block with plain probabilities (won)" in message
    assert "[from --set" in message


def test_a_hiring_date_outside_the_horizon_is_reported_alone(tmp_path):
    """No knock-on "not after the previous entry" for the valid entry after a bad one."""
    hiring = [{"from": "2028-03-01", "reps": 3}, {"from": "2027-04-01", "reps": 4}]
    team = {"reps": 2, "leads_per_rep": 3, "stages": ["demo"], "hiring": hiring}
    path = write_case(tmp_path, Bad("", (), put("sales_team", team)))
    with pytest.raises(InputError) as info:
        load_scenario(path)
    assert [p.where for p in info.value.problems] == ["sales_team -> hiring -> 0 -> from"]
    # an entry in the horizon out of order is still reported
    hiring = [{"from": "2027-04-01", "reps": 3}, {"from": "2027-03-01", "reps": 4}]
    path = write_case(tmp_path, Bad("", (), put("sales_team", {**team, "hiring": hiring})))
    with pytest.raises(InputError, match="not after the previous entry"):
        load_scenario(path)


@pytest.mark.parametrize("patience", [None, {"dist": "exponential", "mean": 5}])
def test_a_team_without_reps_is_valid_with_a_warning(tmp_path, patience):
    team = {"reps": 0, "leads_per_rep": 3, "stages": ["demo"]}
    if patience:
        team["patience"] = patience
    path = write_case(tmp_path, Bad("", (), put("sales_team", team)))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning:"))
    assert str(path) in warning and "sales_team -> reps: 0 reps and no hiring" in warning
    assert ("goes cold" in warning) == bool(patience)
    # reps hired later: no warning
    later = {**team, "hiring": [{"from": "2027-03-01", "reps": 2}]}
    path = write_case(tmp_path, Bad("", (), put("sales_team", later)))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 0 and "warning:" not in result.output
