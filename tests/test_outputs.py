"""Output files are written as a set: a failure at any point leaves the folder as it was,
with one clear message (exit 2) and no traceback; a bad --out is refused before simulating."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from funnelsim import forecast as forecast_module
from funnelsim.cli import main
from funnelsim.errors import InputError
from funnelsim.forecast import write_atomically

SCENARIO = Path(__file__).resolve().parents[1] / "scenarios" / "agency.yaml"
FAST = ["-n", "4", "--workers", "1"]


def invoke(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def earlier(tmp_path: Path) -> Path:
    """A folder holding an earlier run's files (and a file of the user's)."""
    out = tmp_path / "out"
    out.mkdir()
    for name in ("summary.json", "periods.csv", "forecast.nc", "notes.txt"):
        (out / name).write_text(f"earlier {name}\n")
    return out


def test_a_file_that_cannot_be_written_leaves_the_earlier_files(earlier, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    before = contents(earlier)
    monkeypatch.setattr(forecast_module.xr.Dataset, "to_netcdf", disk_full)
    result = invoke("run", SCENARIO, *FAST, "--out", earlier)
    assert result.exit_code == 2, result.output
    assert "forecast.nc: cannot write: No space left on device" in result.output
    assert "Traceback" not in result.output
    assert contents(earlier) == before  # no new summary.json beside the old forecast.nc


def test_a_folder_in_the_way_of_a_file_is_reported_and_nothing_is_moved(earlier):
    (earlier / "forecast.nc").unlink()
    (earlier / "forecast.nc").mkdir()
    before = files_of(earlier)
    result = invoke("run", SCENARIO, *FAST, "--out", earlier)
    assert result.exit_code == 2, result.output
    assert "forecast.nc: is a folder; expected to write a file there" in result.output
    assert files_of(earlier) == before
    assert [p.name for p in earlier.iterdir() if p.name.startswith(".")] == []


def test_a_failed_move_puts_the_earlier_files_back(earlier, monkeypatch):
    """The third move fails (e.g. the disk is removed): the two files already moved are
    taken out again and the earlier ones restored."""
    before = contents(earlier)
    moves = []
    real_replace = os.replace

    def flaky_replace(source, target):
        if Path(source).parent.name.startswith(".funnelsim-") and Path(target).parent == earlier:
            moves.append(Path(target).name)
            if len(moves) == 3:
                raise OSError(5, "Input/output error")
        return real_replace(source, target)

    monkeypatch.setattr(forecast_module.os, "replace", flaky_replace)
    files = {"summary.json": "new\n", "periods.csv": "new\n", "forecast.nc": "new\n"}
    with pytest.raises(InputError, match="forecast.nc: cannot write: Input/output error"):
        write_atomically(earlier, files)
    assert moves == ["summary.json", "periods.csv", "forecast.nc"]
    assert contents(earlier) == before


def test_new_files_replace_the_earlier_ones_and_leave_the_users(earlier):
    written = write_atomically(earlier, {"summary.json": "new\n", "extra.csv": "x\n"})
    assert written == [earlier / "summary.json", earlier / "extra.csv"]
    assert contents(earlier) == {
        "extra.csv": b"x\n",
        "forecast.nc": b"earlier forecast.nc\n",
        "notes.txt": b"earlier notes.txt\n",
        "periods.csv": b"earlier periods.csv\n",
        "summary.json": b"new\n",
    }


@pytest.mark.parametrize("command", ["run", "staff", "levers"])
def test_an_out_folder_under_a_file_is_refused_before_simulating(tmp_path, command):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder\n")
    extra = {"staff": ["--reps", "1..2"], "levers": []}.get(command, [])
    result = invoke(command, SCENARIO, *extra, *FAST, "--out", blocker / "sub")
    assert result.exit_code == 2, result.output
    assert "is a file; expected a folder" in result.output
    assert "Traceback" not in result.output
    assert "simulating" not in result.output and "Totals" not in result.output


def test_summary_units_name_the_currency_and_only_the_metrics_present(tmp_path):
    import json

    result = invoke("run", SCENARIO, *FAST, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    present = set(summary["totals"]).union(*summary["stages"].values())
    present |= set().union(*summary["channels"].values())
    assert set(summary["units"]) == present
    currency = summary["currency"]
    assert summary["units"]["revenue"] == currency
    assert summary["units"]["cycle_days"] == "days"
    assert not any("currency" in unit for unit in summary["units"].values())


def test_periods_cut_by_the_horizon_are_marked_in_the_table():
    result = invoke("run", SCENARIO, *FAST, "--set", "start=2027-02-10", "--by", "quarter")
    assert result.exit_code == 0, result.output
    table = result.output[result.output.index("By quarter") :]
    marked = [line.split()[0] for line in table.splitlines() if line.strip()[:4].isdigit()]
    assert marked == ["2027-Q1*", "2027-Q2", "2027-Q3", "2027-Q4", "2028-Q1*"]
    assert "partly outside the horizon (2027-02-10 to 2028-02-10" in table
    whole = invoke("run", SCENARIO, *FAST, "--set", "start=2027-01-01", "--by", "year")
    assert "*" not in whole.output[whole.output.index("By year") :]
