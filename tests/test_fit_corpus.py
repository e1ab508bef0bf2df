"""`funnelsim fit --events` on degenerate and messy CRM histories (``tests/crm_corpus.py``).

Each history is fitted through the CLI with few draws. A fit either ends with exit 0 or 3
(poor diagnostics), writes no ``nan`` anywhere and a scenario that runs, or is refused
(exit 2) with one message naming the stage, channel or parameter and why.
"""

from __future__ import annotations

import json
import re

import crm_corpus
import pytest
import yaml
from click.testing import CliRunner

from funnelsim import load_scenario
from funnelsim import run as run_forecast
from funnelsim.cli import main

pytest.importorskip("pymc")

SAMPLING = ["--draws", "200", "--tune", "200", "--chains", "2"]
NAN = re.compile(r"\bnan\b|\binf\b", re.IGNORECASE)
XFAIL: dict[str, str] = {}


def _params(name: str):
    marks = [pytest.mark.xfail(strict=True, reason=XFAIL[name])] if name in XFAIL else []
    return pytest.param(name, marks=marks, id=name)


@pytest.mark.parametrize("name", [_params(n) for n in crm_corpus.CASES])
def test_the_fit_survives(name, tmp_path):
    path = tmp_path / f"{name}.csv"
    case = crm_corpus.CASES[name](path)
    out = tmp_path / "out"
    args = ["fit", "--events", str(path), "--as-of", case.as_of.isoformat(), "--out", str(out)]
    result = CliRunner().invoke(main, [*args, *SAMPLING, *case.extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.exit_code in case.exit_codes, result.output
    if result.exit_code == 2:
        errors = [line for line in result.output.splitlines() if line.startswith("error")]
        assert len(errors) == 1, result.output
        for words in case.message:
            assert words in result.output, result.output
        assert not out.exists()
        return
    assert not NAN.search(result.output), result.output
    for words in case.says:
        assert words in result.output, result.output
    written = {f: (out / f).read_text() for f in ("estimates.json", "diagnostics.txt")}
    written["scenario.yaml"] = (out / "scenario.yaml").read_text()
    for file, text in written.items():
        assert not NAN.search(text), f"{file}:\n{text}"
    json.loads(written["estimates.json"])
    yaml.safe_load(written["scenario.yaml"])
    if result.exit_code == 3:  # the poor parameter is named
        poor = [line for line in written["diagnostics.txt"].splitlines() if "<- poor" in line]
        divergent = "divergent transitions: 0" not in written["diagnostics.txt"]
        assert poor or divergent, written["diagnostics.txt"]
        assert all(line.split()[0].count("__") or "_" in line.split()[0] for line in poor)
    scenario = load_scenario(out / "scenario.yaml")
    forecast = run_forecast(scenario, replications=50, workers=1)
    assert forecast is not None
