"""The Python API for notebooks: the README's example runs as written, and the functions it
names (load_scenario, scenario_from_dict, run, expectations) do what it says."""

from __future__ import annotations

import inspect
import json
import math
import re
import textwrap

import pytest
from conftest import BASE, ROOT

import funnelsim

FAST_REPLICATIONS = 12


def python_blocks(markdown: str, section: str) -> list[str]:
    """The ```python blocks of one ``## section`` of a markdown text."""
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", markdown, re.S | re.M)
    assert match, f"no section '## {section}'"
    return re.findall(r"^```python\n(.*?)^```", match.group(1), re.S | re.M)


@pytest.fixture
def fast_api(monkeypatch, tmp_path):
    """Run API examples in ``tmp_path`` (which sees the shipped scenarios) with few
    replications and one worker, whatever the example asks for."""
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    monkeypatch.chdir(tmp_path)
    load, run = funnelsim.load_scenario, funnelsim.run

    def fast_load(path, overrides=()):
        return load(path, [*overrides, f"replications={FAST_REPLICATIONS}"])

    def fast_run(scenario, **options):
        return run(scenario, **{**options, "replications": FAST_REPLICATIONS, "workers": 1})

    monkeypatch.setattr(funnelsim, "load_scenario", fast_load)
    monkeypatch.setattr(funnelsim, "run", fast_run)
    return tmp_path


def test_readme_python_api_example_runs(fast_api):
    blocks = python_blocks((ROOT / "README.md").read_text(encoding="utf-8"), "Python API")
    assert blocks, "the README's Python API section has no python example"
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md (Python API)", "exec"), namespace)  # noqa: S102
    forecast, scenario = namespace["forecast"], namespace["scenario"]
    assert scenario.months == 24  # the example's override
    assert set(forecast.summary()["totals"]["revenue"]) == {"mean", "sd", "p5", "p50", "p95"}
    assert forecast.totals()["revenue"].values.shape == (FAST_REPLICATIONS,)
    written = json.loads((fast_api / "out" / "summary.json").read_text())
    assert written["replications"] == FAST_REPLICATIONS
    assert (fast_api / "reports" / "acme.html").stat().st_size > 0
    assert namespace["levers"]


def test_package_docstring_example_runs(fast_api):
    doc = funnelsim.__doc__
    code = textwrap.dedent(doc.split("::", 1)[1])
    assert "funnelsim.run(" in code
    namespace: dict = {}
    exec(compile(code, "funnelsim.__doc__", "exec"), namespace)  # noqa: S102
    assert namespace["forecast"].replications == FAST_REPLICATIONS


def test_scenario_from_dict_and_expectations_match_the_hand_computed_chain():
    scenario = funnelsim.scenario_from_dict(BASE, overrides=["months=6"])
    assert isinstance(scenario, funnelsim.Scenario)
    assert scenario.months == 6
    assert scenario.source is None
    (web,) = funnelsim.expectations(scenario)
    # new -> qualified 0.5 -> proposal 0.6 -> won 0.4, one visit each on the way
    assert web.channel == "web"
    assert web.p_won == pytest.approx(0.5 * 0.6 * 0.4)
    assert web.visits == pytest.approx({"new": 1.0, "qualified": 0.5, "proposal": 0.3})
    # exponential mean 3, lognormal median 5 sigma 0.5, gamma (won) mean 12
    assert web.days_to_close_won == pytest.approx(3 + 5 * math.exp(0.5**2 / 2) + 12)
    deal = 10000 * math.exp(0.4**2 / 2)
    assert web.deal_value == pytest.approx(deal)
    assert web.revenue_per_lead == pytest.approx(0.12 * deal)


def test_scenario_from_dict_bad_input_raises_input_error_naming_the_field():
    data = {**BASE, "months": 0}
    with pytest.raises(funnelsim.InputError) as info:
        funnelsim.scenario_from_dict(data, source="notebook")
    assert str(info.value).startswith("notebook: months:")
    assert "greater than or equal to 1" in str(info.value)


def test_run_shows_its_options():
    parameters = inspect.signature(funnelsim.run).parameters
    assert list(parameters) == ["scenario", "replications", "seed", "workers", "engine", "progress"]
    assert all(p.kind is p.KEYWORD_ONLY for name, p in parameters.items() if name != "scenario")
    for option in ("replications", "seed", "workers", "engine", "progress"):
        assert f"``{option}" in funnelsim.run.__doc__
