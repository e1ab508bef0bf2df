"""`funnelsim fit --transactions` on the command line: dates checked before sampling, a refit
leaving one run's set of files, the --lenient warning, --columns and Parquet logs, --unit day,
poor diagnostics marked in the outputs, and --help without PyMC.

The sampler is replaced by independent draws around fixed values (a fake posterior with good
diagnostics), so these tests take seconds; the real NUTS runs are in tests/test_fit.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from funnelsim.cli import main
from funnelsim.fit import transactions

FIRST, LAST = date(2027, 1, 1), date(2027, 12, 31)
AS_OF = "2027-06-30"
VALUES = {
    "r": 0.5,
    "alpha": 20.0,
    "a": 0.8,
    "b": 2.5,
    "s": 0.6,
    "beta": 12.0,
    "p": 6.0,
    "q": 4.0,
    "gamma": 15.0,
}
COUNT_NAMES = {"bg_nbd": ("r", "alpha", "a", "b"), "pareto_nbd": ("r", "alpha", "s", "beta")}


def fake_sample(poor: bool = False):
    """A stand-in for transactions._sample: iid draws around VALUES (or, with ``poor``,
    chains stuck apart, which fail R-hat)."""

    def sample(model, x, t_x, age, spend_x, spend, spend_fit, draws, tune, chains, seed, cores):
        import arviz as az

        rng = np.random.default_rng(seed)
        names = COUNT_NAMES[model] + (("p", "q", "gamma") if spend_fit is not None else ())
        shape = (4, 500)
        posterior = {}
        for name in names:
            values = VALUES[name] * rng.lognormal(0, 0.05, shape)
            if poor:
                values = values * np.arange(1, 5)[:, None]
            posterior[name] = values
        return az.from_dict(
            posterior=posterior, sample_stats={"diverging": np.zeros(shape, dtype=bool)}
        )

    return sample


@pytest.fixture
def fast(monkeypatch):
    monkeypatch.setattr(transactions, "_sample", fake_sample())


@pytest.fixture
def no_sampling(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the sampler ran before the dates were checked")

    monkeypatch.setattr(transactions, "_sample", fail)


def log_frame(customers: int = 80, seed: int = 3) -> pd.DataFrame:
    """Purchases of ``customers`` customers over 2027: every one buys in the first half,
    some buy again (some after AS_OF), the first on FIRST and the last on LAST."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(customers):
        start = FIRST + timedelta(days=int(rng.integers(0, 150)))
        days = {start}
        for _ in range(int(rng.poisson(3))):
            days.add(start + timedelta(days=int(rng.integers(1, (LAST - start).days))))
        for day in sorted(days):
            rows.append((f"c{i:03d}", day.isoformat(), round(float(rng.uniform(5, 50)), 2)))
    rows += [("c000", FIRST.isoformat(), 9.0), ("c001", LAST.isoformat(), 11.0)]
    return pd.DataFrame(rows, columns=["customer_id", "date", "amount"])


@pytest.fixture
def log(tmp_path) -> Path:
    path = tmp_path / "tx.csv"
    log_frame().to_csv(path, index=False)
    return path


def fit(log: Path, out: Path, *extra: str):
    args = ["fit", "--transactions", str(log), "--allow-duplicates", "--out", str(out), *extra]
    return CliRunner().invoke(main, args)


# ---------------------------------------------------------------- dates, before sampling


@pytest.mark.parametrize(
    "extra, option, value",
    [
        (["--as-of", "2030-01-01"], "--as-of", "2030-01-01"),
        (["--as-of", "2026-06-01"], "--as-of", "2026-06-01"),
        (["--as-of", AS_OF, "--holdout-until", AS_OF], "--holdout-until", AS_OF),
        (["--as-of", AS_OF, "--holdout-until", "2027-03-01"], "--holdout-until", "2027-03-01"),
        (["--as-of", AS_OF, "--holdout-until", "2028-12-31"], "--holdout-until", "2028-12-31"),
    ],
)
def test_dates_outside_the_log_are_refused_before_sampling(
    no_sampling, log, tmp_path, extra, option, value
):
    out = tmp_path / "out"
    result = fit(log, out, *extra)
    assert result.exit_code == 2, result.output
    assert f"{log}: {option}: {value}" in result.output
    assert f"the log spans {FIRST} to {LAST}" in result.output
    assert "Traceback" not in result.output and "AssertionError" not in result.output
    assert not out.exists()


# ---------------------------------------------------------------- a refit into the same --out


def test_a_refit_without_holdout_removes_the_old_holdout_file(fast, log, tmp_path):
    out = tmp_path / "out"
    first = fit(log, out, "--as-of", AS_OF, "--holdout-until", LAST.isoformat())
    assert first.exit_code == 0, first.output
    assert (out / "holdout.json").exists()
    (out / "notes.txt").write_text("mine\n")
    (out / "open_leads.csv").write_text("from an earlier --events fit\n")
    second = fit(log, out, "--as-of", AS_OF)
    assert second.exit_code == 0, second.output
    assert not (out / "holdout.json").exists()
    assert not (out / "open_leads.csv").exists()
    assert (out / "notes.txt").read_text() == "mine\n"  # not a fit output: kept
    assert sorted(p.name for p in out.iterdir()) == [
        "customers.csv",
        "diagnostics.txt",
        "estimates.json",
        "notes.txt",
        "posterior.nc",
        "scenario.yaml",
    ]


# ---------------------------------------------------------------- --lenient and the hints


def test_lenient_warns_with_the_count_and_the_first_rows_and_fits(fast, tmp_path):
    frame = log_frame()
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    with path.open("a") as f:
        f.write("c900,not a day,10\nc901,2027-02-01,-3\n")
    rows = len(frame) + 2  # the header is row 1
    result = fit(path, tmp_path / "out", "--as-of", AS_OF, "--lenient")
    assert result.exit_code == 0, result.output
    assert "warning: --lenient: skipped 2 bad rows (1 unparseable date, 1 amount not > 0)" in (
        result.output
    )
    assert f"  - row {rows}: date 'not a day' is not a date" in result.output
    assert f"  - row {rows + 1}: amount '-3' is negative" in result.output
    assert (tmp_path / "out" / "estimates.json").exists()


def test_one_skipped_row_is_one_bad_row(fast, tmp_path):
    path = tmp_path / "tx.csv"
    log_frame().to_csv(path, index=False)
    with path.open("a") as f:
        f.write("c900,not a day,10\n")
    result = fit(path, tmp_path / "out", "--lenient")
    assert result.exit_code == 0, result.output
    assert "skipped 1 bad row (" in result.output


def test_hints_name_the_flags(tmp_path):
    path = tmp_path / "tx.csv"
    path.write_text(
        "customer_id,date,amount\nc1,2027-01-05,10\nc1,2027-01-05,10\nc2,2027-01-06,0\n"
    )
    result = CliRunner().invoke(
        main, ["fit", "--transactions", str(path), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "pass --allow-duplicates" in result.output
    assert "pass --allow-zero-amounts" in result.output
    other = tmp_path / "other.csv"
    other.write_text("Client,date,amount\nc1,2027-01-05,10\n")
    result = CliRunner().invoke(
        main, ["fit", "--transactions", str(other), "--out", str(tmp_path / "out")]
    )
    assert result.exit_code == 2
    assert "e.g. --columns customer_id=Client" in result.output


def test_customers_buying_only_after_as_of_are_named(no_sampling, log, tmp_path):
    frame = log_frame()
    frame.loc[len(frame)] = ("late1", "2027-09-01", 20.0)
    frame.loc[len(frame)] = ("late2", "2027-10-01", 20.0)
    path = tmp_path / "late.csv"
    frame.to_csv(path, index=False)
    result = fit(path, tmp_path / "out", "--as-of", AS_OF)
    assert result.exit_code == 2, result.output
    assert "customer_id 'late1' first buys on 2027-09-01, after --as-of 2027-06-30" in (
        result.output
    )
    assert "customer_id 'late2'" in result.output and "--lenient" in result.output
    assert not (tmp_path / "out").exists()


def test_lenient_leaves_out_one_customer_in_the_singular(fast, tmp_path):
    frame = log_frame()
    frame.loc[len(frame)] = ("late1", "2027-09-01", 20.0)
    path = tmp_path / "late.csv"
    frame.to_csv(path, index=False)
    result = fit(path, tmp_path / "out", "--as-of", AS_OF, "--lenient")
    assert result.exit_code == 0, result.output
    assert "left out 1 customer whose purchases all come after --as-of" in result.output


# ---------------------------------------------------------------- other logs and units


def test_columns_map_the_log_names(fast, tmp_path):
    path = tmp_path / "crm.csv"
    log_frame().rename(
        columns={"customer_id": "Client", "date": "Order Date", "amount": "Total"}
    ).to_csv(path, index=False)
    result = fit(
        path,
        tmp_path / "out",
        "--columns",
        "customer_id=Client,date=Order Date,amount=Total",
        "--as-of",
        AS_OF,
    )
    assert result.exit_code == 0, result.output
    estimates = json.loads((tmp_path / "out" / "estimates.json").read_text())
    assert estimates["customers"] == 80 and estimates["as_of"] == AS_OF


def test_a_parquet_log(fast, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "tx.parquet"
    log_frame().to_parquet(path, index=False)
    result = fit(path, tmp_path / "out", "--as-of", AS_OF, "--holdout-until", LAST.isoformat())
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "holdout.json").exists()
    csv = tmp_path / "tx.csv"
    log_frame().to_csv(csv, index=False)
    fit(csv, tmp_path / "from_csv", "--as-of", AS_OF)
    assert (tmp_path / "out" / "customers.csv").read_text() == (
        tmp_path / "from_csv" / "customers.csv"
    ).read_text()


def test_unit_day_fits_in_days_and_the_scenario_runs(fast, log, tmp_path):
    out = tmp_path / "out"
    result = fit(log, out, "--as-of", AS_OF, "--unit", "day")
    assert result.exit_code == 0, result.output
    estimates = json.loads((out / "estimates.json").read_text())
    assert estimates["unit"] == "day"
    assert estimates["models"]["bg_nbd"]["loglik_time_unit"] == "day"
    assert "log-likelihood (time in days)" in result.output
    assert "unit: day" in (out / "scenario.yaml").read_text()
    week = fit(log, tmp_path / "week", "--as-of", AS_OF)
    in_weeks = json.loads((tmp_path / "week" / "estimates.json").read_text())
    assert in_weeks["models"]["bg_nbd"]["loglik_time_unit"] == "week"
    assert "log-likelihood (time in weeks)" in week.output
    run = CliRunner().invoke(
        main, ["run", str(out / "scenario.yaml"), "-n", "20", "--workers", "1"]
    )
    assert run.exit_code == 0, run.output


# ---------------------------------------------------------------- poor diagnostics


def test_poor_diagnostics_are_marked_in_the_scenario_and_estimates(monkeypatch, log, tmp_path):
    monkeypatch.setattr(transactions, "_sample", fake_sample(poor=True))
    out = tmp_path / "out"
    result = fit(log, out, "--as-of", AS_OF)
    assert result.exit_code == 3, result.output
    scenario = (out / "scenario.yaml").read_text()
    assert scenario.startswith("# WARNING: the sampler's diagnostics were poor")
    estimates = json.loads((out / "estimates.json").read_text())
    assert estimates["diagnostics"]["ok"] is False
    assert any(p.startswith("r: R-hat") for p in estimates["diagnostics"]["problems"])


def test_good_diagnostics_say_so(fast, log, tmp_path):
    out = tmp_path / "out"
    assert fit(log, out, "--as-of", AS_OF).exit_code == 0
    estimates = json.loads((out / "estimates.json").read_text())
    assert estimates["diagnostics"] == {"ok": True, "problems": []}
    assert not (out / "scenario.yaml").read_text().startswith("# WARNING")


# ---------------------------------------------------------------- imports


def test_fit_help_does_not_import_pymc():
    probe = textwrap.dedent(
        """
        import json, sys
        from click.testing import CliRunner
        from funnelsim.cli import main
        result = CliRunner().invoke(main, ["fit", "--help"])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pymc", "arviz", "pytensor"))
        print(json.dumps({"code": result.exit_code, "heavy": heavy}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "heavy": []}


def test_bad_rows_and_late_customers_are_reported_together(no_sampling, tmp_path):
    frame = log_frame()
    frame.loc[len(frame)] = ("late1", "2027-09-01", 20.0)
    path = tmp_path / "both.csv"
    frame.to_csv(path, index=False)
    with path.open("a") as f:
        f.write("c900,not a day,10\n")
    result = fit(path, tmp_path / "out", "--as-of", AS_OF)
    assert result.exit_code == 2, result.output
    assert "date 'not a day' is not a date" in result.output
    assert "customer_id 'late1' first buys on 2027-09-01" in result.output
    assert not (tmp_path / "out").exists()
