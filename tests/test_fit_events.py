"""Reading CRM stage histories and rebuilding each lead's stays (funnelsim.fit.events).

The reference check: one replication of the DES engine traced (every stage entry and close,
funnelsim.engine.des.trace) for a scenario with two channels, a loop back and per-outcome
durations, written as a CRM export and read back as of the middle of the horizon, gives back
the trace's stays: stages, durations (to 1e-6 days), outcomes, re-entries and open leads.
"""

from __future__ import annotations

import copy
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from funnelsim.engine.des import trace
from funnelsim.errors import InputError
from funnelsim.fit.events import (
    AFTER_CLOSE,
    BAD_DATE,
    BAD_VALUE,
    CHANNEL_CHANGES,
    CLOSED_TWICE,
    DUPLICATE,
    EMPTY_CHANNEL,
    EMPTY_ID,
    EMPTY_STAGE,
    MALFORMED,
    NEGATIVE,
    NO_VALUE,
    UNKNOWN_STAGE,
    WRONG_ENTRY,
    CrmHistory,
    read_events,
    write_open_leads_csv,
)
from funnelsim.funnel import compile_funnel
from funnelsim.scenario import scenario_from_dict

HEADER = "lead_id,channel,stage,entered_at,value\n"
START = date(2027, 1, 1)
AS_OF = date(2027, 12, 31)  # the middle of the 24-month horizon
CUT = (AS_OF - START).days + 1  # the end of the as_of day, in days from START

SCENARIO: dict[str, Any] = {
    "version": 1,
    "name": "crm history",
    "start": str(START),
    "months": 24,
    "replications": 10,
    "seed": 5,
    "currency": "USD",
    "channels": {"web": {"leads_per_month": 60}, "events": {"leads_per_month": 25}},
    "stages": {
        "new": {
            "duration": {"dist": "exponential", "mean": 4},
            "next": {"qualified": 0.6, "lost": 0.4},
        },
        "qualified": {
            "duration": {
                "proposal": {"dist": "lognormal", "median": 6, "sigma": 0.5},
                "lost": {"dist": "exponential", "mean": 10},
            },
            "next": {"proposal": 0.7, "lost": 0.3},
        },
        "proposal": {
            "duration": {
                "won": {"dist": "gamma", "mean": 15, "shape": 2},
                "lost": {"dist": "exponential", "mean": 8},
                "qualified": {"dist": "exponential", "mean": 5},
            },
            "next": {"won": 0.4, "lost": 0.35, "qualified": 0.25},  # back to qualified
        },
    },
    "deal_value": {"dist": "lognormal", "median": 10000, "sigma": 0.4},
}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(excinfo: pytest.ExceptionInfo[InputError]) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


def read_one_problem(path: Path, **options: Any) -> str:
    with pytest.raises(InputError) as excinfo:
        read_events(path, **options)
    assert excinfo.value.source == str(path)
    [problem] = problems_of(excinfo)
    assert str(excinfo.value) == f"{path}: {problem}"
    return problem


# ---------------------------------------------------------------- a simulated CRM history


@pytest.fixture(scope="module")
def crm(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One traced replication as a CRM export (timestamps to the microsecond, values on won
    rows), and the trace's events as a table sorted by lead then time."""
    funnel = compile_funnel(scenario_from_dict(SCENARIO))
    tr = trace(funnel, 1)
    names = np.array([*funnel.stages, "won", "lost"])
    events = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in tr.lead],
            "channel": np.array(funnel.channels)[tr.channel],
            "code": tr.stage,
            "stage": names[tr.stage],
            "t": tr.t,
            "value": np.where(tr.stage == funnel.won, tr.value.round(2), np.nan),
        }
    )
    micros = np.round(tr.t * 86_400e6).astype(np.int64)
    log = events[["lead_id", "channel", "stage"]].assign(
        entered_at=(pd.Timestamp(START) + pd.to_timedelta(micros, unit="us")).strftime(
            "%Y-%m-%d %H:%M:%S.%f"
        ),
        value=events["value"],
    )
    folder = tmp_path_factory.mktemp("crm")
    log.to_csv(folder / "history.csv", index=False)
    return SimpleNamespace(
        funnel=funnel, events=events, log=log, path=folder / "history.csv", folder=folder
    )


@pytest.fixture(scope="module")
def mid(crm) -> CrmHistory:
    return read_events(crm.path, as_of=AS_OF)


def expected_stays(events: pd.DataFrame, cut: float, n_stages: int) -> pd.DataFrame:
    """Each stage entry before ``cut`` with where the lead went next and after how long."""
    out = []
    for lead_id, rows in events[events["t"] < cut].groupby("lead_id", sort=False):
        codes, times = rows["code"].tolist(), rows["t"].tolist()
        visits: dict[int, int] = {}
        for k, (code, t) in enumerate(zip(codes, times, strict=True)):
            if code >= n_stages:
                continue
            last = k == len(codes) - 1
            out.append(
                {
                    "lead_id": lead_id,
                    "stage": code,
                    "entered": t,
                    "days": (cut if last else times[k + 1]) - t,
                    "outcome": -1 if last else codes[k + 1],
                    "visit": visits.get(code, 0),
                }
            )
            visits[code] = visits.get(code, 0) + 1
    return pd.DataFrame(out)


@pytest.mark.parametrize("as_of", [AS_OF, None])
def test_stays_rebuilt_from_a_simulated_history_equal_the_trace(crm, as_of):
    mid = read_events(crm.path, as_of=as_of)
    last_day = (pd.Timestamp(START) + pd.Timedelta(days=crm.events["t"].max())).date()
    assert mid.start == START and mid.as_of == (as_of or last_day)
    cut = (mid.as_of - START).days + 1  # the end of the as_of day
    expected = expected_stays(crm.events, cut, len(crm.funnel.stages))
    assert mid.stages == crm.funnel.stages  # inferred: median position, entry first
    assert mid.channels == ("events", "web")
    assert mid.skipped_rows == 0 and mid.dropped_leads == 0 and mid.currency_values_seen
    np.testing.assert_array_equal(mid.lead_id[mid.stay_lead], expected["lead_id"])
    np.testing.assert_array_equal(mid.stay_stage, expected["stage"])
    np.testing.assert_array_equal(mid.stay_outcome, expected["outcome"])
    np.testing.assert_array_equal(mid.stay_visit, expected["visit"])
    np.testing.assert_allclose(mid.stay_entered, expected["entered"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(mid.stay_days, expected["days"], rtol=0, atol=1e-6)
    assert {0, 1, 2} <= set(mid.stay_visit.tolist())  # the loop back: re-entries 1, 2, ...
    assert (mid.stay_outcome == 1).any()  # proposal -> qualified
    logged = crm.log.iloc[mid.stay_row - 2]  # the header is row 1
    np.testing.assert_array_equal(logged["stage"], np.array(mid.stages)[mid.stay_stage])


def test_leads_outcomes_and_values_equal_the_trace(crm, mid):
    kept = crm.events[crm.events["t"] < CUT]
    first = kept.groupby("lead_id", sort=False).first()
    last = kept.groupby("lead_id", sort=False).last()
    assert mid.lead_id.tolist() == first.index.tolist()  # arrival order
    np.testing.assert_array_equal(
        np.array(mid.channels)[mid.channel], first["channel"].to_numpy(dtype=str)
    )
    np.testing.assert_allclose(mid.arrived, first["t"], rtol=0, atol=1e-6)
    won, lost = crm.funnel.won, crm.funnel.lost
    outcome = np.select([last["code"] == won, last["code"] == lost], [1, 2], 0)
    np.testing.assert_array_equal(mid.outcome, outcome)
    np.testing.assert_allclose(
        mid.closed_at, np.where(outcome > 0, last["t"], np.nan), rtol=0, atol=1e-6
    )
    np.testing.assert_array_equal(mid.value, np.where(outcome == 1, last["value"], np.nan))
    assert (mid.outcome == 0).sum() > 20 and (mid.outcome == 1).sum() > 100


def test_open_leads_are_in_their_last_stage_with_its_age(crm, mid):
    kept = crm.events[crm.events["t"] < CUT]
    last = kept.groupby("lead_id", sort=False).last()
    still_open = last[last["code"] < crm.funnel.won]
    expected = [
        (lead_id, row.channel, row.stage, CUT - row.t, None)
        for lead_id, row in still_open.iterrows()
    ]
    got = mid.open_leads()
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected], rtol=0, atol=1e-6)
    assert all(g[4] is None for g in got)


def test_leads_arriving_after_as_of_are_absent_and_later_closes_leave_leads_open(crm, mid):
    first_t = crm.events.groupby("lead_id")["t"].min()
    assert set(mid.lead_id) == set(first_t.index[first_t < CUT])
    assert (first_t >= CUT).sum() > 500  # the held-out year
    assert mid.arrived.max() < CUT
    whole = read_events(crm.path)
    assert whole.as_of == (pd.Timestamp(START) + pd.Timedelta(days=crm.events["t"].max())).date()
    assert len(whole) == first_t.size and whole.lead_id.tolist()[: len(mid)] == mid.lead_id.tolist()
    closed_later = (whole.outcome[: len(mid)] > 0) & (mid.outcome == 0)
    assert closed_later.sum() > 0


def test_open_leads_file_is_a_pipeline_file_of_the_scenario(tmp_path, mid):
    write_open_leads_csv(mid, tmp_path / "open.csv")
    data = copy.deepcopy(SCENARIO)
    data["start"] = "2028-01-01"
    data["pipeline"] = {"file": "open.csv"}
    scenario = scenario_from_dict(data, source=tmp_path / "scenario.yaml")
    assert [
        (lead.lead_id, lead.channel, lead.stage, lead.days_in_stage, lead.value)
        for lead in scenario.open_leads
    ] == mid.open_leads()
    assert [p.name for p in tmp_path.iterdir()] == ["open.csv"]  # no temporary left


def test_parquet_round_trip_with_datetimes(crm, mid):
    log = crm.log.assign(entered_at=pd.to_datetime(crm.log["entered_at"]))
    log.to_parquet(crm.folder / "history.parquet")
    history = read_events(crm.folder / "history.parquet", as_of=AS_OF)
    for name in ("lead_id", "channel", "outcome", "stay_lead", "stay_stage", "stay_outcome"):
        np.testing.assert_array_equal(getattr(history, name), getattr(mid, name))
    for name in ("arrived", "closed_at", "value", "stay_days", "stay_entered"):
        np.testing.assert_allclose(getattr(history, name), getattr(mid, name), rtol=0, atol=1e-9)
    np.testing.assert_array_equal(history.stay_row, mid.stay_row - 1)  # Parquet rows from 1


# ---------------------------------------------------------------- hand-made histories

SMALL = (
    HEADER + "D1,web,new,2024-01-03,\n"  # row 2
    "D1,web,demo,2024-01-05 12:00,\n"
    "D1,web,won,2024-01-10,500\n"
    "D2,ads,new,2024-01-20 06:00,\n"  # row 5
    "D2,ads,demo,2024-02-01,1000\n"
    "D2,ads,new,2024-02-03,\n"
    "D2,ads,demo,2024-02-04,\n"
    "D3,web,lost,2024-02-10,50\n"  # row 9: a close listed before its stage at the same time
    "D3,web,new,2024-02-10,\n"
)


def test_a_small_history_in_days(tmp_path):
    history = read_events(write(tmp_path / "log.csv", SMALL))
    assert history.source == str(tmp_path / "log.csv")
    assert (history.start, history.as_of) == (date(2024, 1, 3), date(2024, 2, 10))
    assert history.stages == ("new", "demo") and history.channels == ("ads", "web")
    assert history.lead_id.tolist() == ["D1", "D2", "D3"]
    assert history.channel.tolist() == [1, 0, 1]
    assert history.arrived.tolist() == [0.0, 17.25, 38.0]
    assert history.outcome.tolist() == [1, 0, 2]
    np.testing.assert_array_equal(history.closed_at, [7.0, np.nan, 38.0])
    np.testing.assert_array_equal(history.value, [500.0, 1000.0, 50.0])  # open: last given
    assert history.stay_lead.tolist() == [0, 0, 1, 1, 1, 1, 2]
    assert history.stay_stage.tolist() == [0, 1, 0, 1, 0, 1, 0]
    assert history.stay_entered.tolist() == [0.0, 2.5, 17.25, 29.0, 31.0, 32.0, 38.0]
    assert history.stay_days.tolist() == [2.5, 4.5, 11.75, 2.0, 1.0, 7.0, 0.0]
    assert history.stay_outcome.tolist() == [1, 2, 1, 0, 1, -1, 3]  # won 2, lost 3
    assert history.stay_visit.tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert history.stay_row.tolist() == [2, 3, 5, 6, 7, 8, 10]
    assert (history.won, history.lost, len(history)) == (2, 3, 3)
    assert history.open_leads() == [("D2", "ads", "demo", 7.0, 1000.0)]
    assert not history.value.flags.writeable


def test_given_stages_set_the_order_and_may_include_stages_not_seen(tmp_path):
    history = read_events(write(tmp_path / "log.csv", SMALL), stages=["new", "demo", "deal"])
    assert history.stages == ("new", "demo", "deal")
    assert history.stay_outcome.tolist() == [1, 3, 1, 0, 1, -1, 4]


def test_inferred_stages_follow_median_position_with_the_most_common_entry_first(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,b-intro,2024-01-01,\na,web,c-demo,2024-01-02,\n"
        "b,web,b-intro,2024-01-01,\nb,web,a-pitch,2024-01-02,\nb,web,c-demo,2024-01-03,\n"
        "c,web,b-intro,2024-01-01,\nc,web,a-pitch,2024-01-02,\nc,web,c-demo,2024-01-03,\n",
    )
    assert read_events(path).stages == ("b-intro", "a-pitch", "c-demo")


def test_terminal_stages_in_any_case(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,new,2024-01-01,\na,web,Won,2024-01-02,9\n"
        "b,web,new,2024-01-01,\nb,web,LOST,2024-01-03,\n",
    )
    history = read_events(path)
    assert history.stages == ("new",) and history.outcome.tolist() == [1, 2]


def test_as_of_holds_out_rows_after_the_end_of_its_day(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,new,2024-01-01 08:00,\n"
        "a,web,demo,2024-01-10 23:59:59,\n"  # the last moment of as_of: kept
        "a,web,won,2024-01-11,10\n"  # held out: a is open in demo
        "b,web,new,2024-01-11 00:00,\n",  # arrives after as_of: absent
    )
    history = read_events(path, as_of=datetime(2024, 1, 10, 9, 30))  # a datetime: its day
    assert history.as_of == date(2024, 1, 10)
    assert history.lead_id.tolist() == ["a"] and history.outcome.tolist() == [0]
    first_stay = 9 + 15 / 24 + 59 / 1440 + 59 / 86400  # 01-01 08:00 to 01-10 23:59:59
    assert history.stay_days.tolist() == pytest.approx([first_stay, 1 / 86400])
    [(lead_id, channel, stage, age, value)] = history.open_leads()
    assert (lead_id, channel, stage, value) == ("a", "web", "demo", None)
    assert age == pytest.approx(1 / 86400)
    assert read_events(path, as_of=date(2024, 3, 1)).stay_days[-1] == 51  # b, 01-11 to 03-01


def test_timestamp_forms(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,new,2024-01-01,\n"
        "a,web,s1,2024-01-01 06:00,\n"
        "a,web,s2,2024-01-01T12:00:00,\n"
        "a,web,s3,2024-01-01 18:00:00.5,\n"
        "a,web,s4,2024-01-02T00:00:00+05:00,\n"  # the offset is dropped: wall-clock time
        "a,web,s5,20240103,\n",
    )
    history = read_events(path)
    assert history.stay_entered.tolist() == pytest.approx(
        [0, 0.25, 0.5, 0.75 + 0.5 / 86400, 1.0, 2.0]
    )


def test_monthly_arrivals_count_new_leads_and_the_share_of_each_month_observed(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,new,2024-01-15 10:00,\n"
        "b,ads,new,2024-01-31 23:00,\n"
        "b,ads,lost,2024-02-02,\n"
        "c,web,new,2024-03-01,\n"
        "d,web,new,2024-03-31,\n"
        "a,web,won,2024-04-01,100\n",
    )
    months, counts, exposure = read_events(path, as_of=date(2024, 4, 5)).monthly_arrivals()
    assert months == ["2024-01", "2024-02", "2024-03", "2024-04"]
    assert counts.tolist() == [[1, 0, 0, 0], [1, 0, 2, 0]]  # ads, web
    np.testing.assert_allclose(exposure, [17 / 31, 1, 1, 5 / 30])
    months, counts, exposure = read_events(path, as_of=date(2024, 1, 20)).monthly_arrivals()
    assert months == ["2024-01"] and counts.tolist() == [[1]]
    np.testing.assert_allclose(exposure, [6 / 31])


def test_columns_map_other_names(tmp_path):
    path = write(
        tmp_path / "deals.csv",
        "Deal ID,Deal stage,Date entered,Amount,Original source,Pipeline\n"
        "101,appointment,2024-01-05 09:00,,ORGANIC_SEARCH,default\n"
        "101,closedwon,2024-01-09 09:00,2500,ORGANIC_SEARCH,default\n",
    )
    mapping = {
        "lead_id": "Deal ID",
        "stage": "Deal stage",
        "entered_at": "Date entered",
        "value": "Amount",
        "channel": "Original source",
    }
    with pytest.raises(InputError, match="row 3: stage \\(column 'Deal stage'\\) 'closedwon'"):
        read_events(path, columns=mapping, stages=["appointment"])
    path.write_text(path.read_text().replace("closedwon", "won"))
    history = read_events(path, columns=mapping)
    assert history.lead_id.tolist() == ["101"] and history.value.tolist() == [2500.0]
    assert history.channels == ("ORGANIC_SEARCH",) and history.stay_days.tolist() == [4.0]


def test_value_column_is_optional_unless_mapped(tmp_path):
    path = write(tmp_path / "log.csv", "lead_id,channel,stage,entered_at\na,web,new,2024-01-05\n")
    history = read_events(path)
    assert not history.currency_values_seen and np.isnan(history.value).all()
    problem = read_one_problem(path, columns={"value": "Amount"})
    assert problem.startswith(
        "missing column(s) 'Amount' (the value column, mapped by --columns value=Amount); "
        "expected a header with lead_id,channel,stage,entered_at[,Amount]"
    )


def test_parquet_timestamps_keep_their_wall_clock_and_text_dates_name_rows_from_one(tmp_path):
    stamps = pd.to_datetime(["2024-01-05 06:00", "2024-01-05 18:00"]).tz_localize("US/Eastern")
    pd.DataFrame(
        {
            "lead_id": [7, 7],
            "channel": "web",
            "stage": ["new", "won"],
            "entered_at": stamps,
            "value": [np.nan, 12.5],
        }
    ).to_parquet(tmp_path / "log.parquet")
    history = read_events(tmp_path / "log.parquet")
    assert history.lead_id.tolist() == ["7"] and history.stay_days.tolist() == [0.5]
    assert history.start == date(2024, 1, 5) and history.value.tolist() == [12.5]

    frame = pd.DataFrame(
        {
            "Deal": ["a", "a", "b"],
            "channel": "web",
            "stage": ["new", "won", "new"],
            "When": ["2024-01-05", "2024-01-07", "soon"],
            "value": [None, 3.0, None],
        }
    )
    frame.to_parquet(tmp_path / "log.PQ")
    problem = read_one_problem(
        tmp_path / "log.PQ", columns={"lead_id": "Deal", "entered_at": "When"}
    )
    assert problem == (
        "row 3: entered_at (column 'When') 'soon' is not a date; expected YYYY-MM-DD, "
        "YYYYMMDD or a timestamp YYYY-MM-DD HH:MM[:SS]"
    )


# ---------------------------------------------------------------- errors


def test_missing_file_empty_file_and_header_only(tmp_path):
    for name in ("absent.csv", "absent.parquet"):
        with pytest.raises(InputError, match="stage history not found") as excinfo:
            read_events(tmp_path / name)
        assert excinfo.value.source == str(tmp_path / name)
    with pytest.raises(InputError, match="cannot read the stage history"):
        read_events(tmp_path)  # a directory
    problem = read_one_problem(write(tmp_path / "empty.csv", "\n"))
    assert problem == (
        "the file is empty; expected a header lead_id,channel,stage,entered_at[,value] and a "
        "row per stage a lead entered"
    )
    problem = read_one_problem(write(tmp_path / "header.csv", HEADER))
    assert problem == "the history has no rows; expected a row per stage a lead entered"


def test_missing_columns_name_the_expected_and_found_columns(tmp_path):
    path = write(tmp_path / "log.csv", "lead_id,source,stage,entered\na,web,new,2024-01-05\n")
    problem = read_one_problem(path)
    assert problem.startswith(
        "missing column(s) channel; entered_at (did you mean 'entered'?); expected a header with "
        "lead_id,channel,stage,entered_at[,value] (found: lead_id,source,stage,entered)"
    )
    assert "e.g. --columns lead_id=Deal ID,stage=Deal stage,entered_at=Date entered" in problem


def test_bad_mapping(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,web,new,2024-01-05,\n")
    with pytest.raises(InputError, match="unknown name 'stag' \\(did you mean 'stage'\\?\\)"):
        read_events(path, columns={"stag": "Stage"})
    with pytest.raises(InputError, match="lead_id and channel both map to column 'X'"):
        read_events(path, columns={"lead_id": "X", "channel": "X"})


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([], "stages: []: expected a list of stage names, entry stage first"),
        (["new", "won"], "stages: 'won' is an outcome; expected the stages before won/lost"),
        (["new", "new"], "stages: 'new' is listed twice; expected each once"),
        (["new", " "], "stages: an empty name; expected stage names"),
    ],
)
def test_bad_stage_lists(tmp_path, stages, message):
    path = write(tmp_path / "log.csv", HEADER + "a,web,new,2024-01-05,\n")
    assert f"{read_one_problem(path, stages=stages)}".startswith(message)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "b,web,new,2024-02-30,",
            "entered_at '2024-02-30' is not a date; expected YYYY-MM-DD, YYYYMMDD or a "
            "timestamp YYYY-MM-DD HH:MM[:SS]",
        ),
        ("b,web,new,05/01/2024,", "entered_at '05/01/2024' is not a date"),
        ("b,web,new,2024-01-05 25:00,", "entered_at '2024-01-05 25:00' is not a date"),
        ("b,web,new,,", "entered_at is empty; expected a date YYYY-MM-DD"),
        (
            "b,web,won,2024-01-05,-2.5",
            "value '-2.5' is negative; expected a deal value >= 0 in the log's currency",
        ),
        (
            "b,web,won,2024-01-05,$12",
            "value '$12' is not a number; expected the deal's value in the log's currency",
        ),
        (
            "b,web,won,2024-01-05,",
            "value is empty on a won row; expected the deal's value in the log's currency",
        ),
        ("  ,web,new,2024-01-05,", "lead_id is empty; expected the lead's (deal's) id"),
        ("b,,new,2024-01-05,", "channel is empty; expected the channel the lead came from"),
        ("b,web,,2024-01-05,", "stage is empty; expected the stage the lead entered, won or lost"),
        (
            "b,web,Demo,2024-01-05,",
            "stage 'Demo' is not a stage of the funnel (did you mean 'demo'?); expected one of "
            "new, demo, won, lost",
        ),
    ],
)
def test_bad_values_name_the_file_row_and_value(tmp_path, line, message):
    path = write(tmp_path / "log.csv", HEADER + "a,web,new,2024-01-01,\n" + line + "\n")
    problem = read_one_problem(path, stages=["new", "demo"])
    assert problem.startswith(f"row 3: {message}")


CLOSED_TWICE_LOG = (
    HEADER + "D1,web,new,2024-01-01,\n"  # row 2
    "D2,web,new,2024-01-01,\n"
    "D3,web,new,2024-01-02,\n"
    "D4,web,new,2024-01-02,\n"  # row 5
    "D5,web,new,2024-01-03,\n"
    "D6,web,new,2024-01-03,\n"
    "D7,web,new,2024-01-04,\n"
    "D7,web,won,2024-01-10,300\n"  # row 9
    "D8,web,new,2024-01-11,\n"
    "D9,web,new,2024-01-12,\n"
    "D7,web,lost,2024-01-20,\n"  # row 12
)


def test_a_lead_closed_twice(tmp_path):
    problem = read_one_problem(write(tmp_path / "log.csv", CLOSED_TWICE_LOG))
    assert problem == (
        "row 12: lead D7 is closed twice (won at row 9); expected one won or lost row per lead"
    )


def test_rows_after_the_close_are_out_of_order(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "D7,web,new,2024-01-04,\n"
        "D7,web,demo,2024-01-12 10:30,\n"
        "D7,web,lost,2024-01-10,\n"
        "D7,web,demo,2024-01-10,\n",  # at the time of the close: before it, fine
    )
    assert read_one_problem(path) == (
        "row 3: lead D7 enters 'demo' on 2024-01-12 10:30:00, after it was lost at row 4 "
        "(2024-01-10); expected a lead's won or lost row to be its last (events out of order)"
    )


def test_a_lead_changing_channel(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "D3,ads,demo,2024-01-05,\nD3,web,new,2024-01-01,\nD3,web,lost,2024-01-09,\n",
    )
    assert read_one_problem(path) == (
        "row 2: inconsistent channel: lead D3 comes from 'ads' here but from 'web' at row 3; "
        "expected one channel per lead"
    )


def test_a_lead_starting_at_another_stage(tmp_path):
    lines = "".join(
        f"L{i},web,new,2024-01-0{i},\nL{i},web,demo,2024-01-0{i + 1},\n" for i in (1, 2)
    )
    path = write(tmp_path / "log.csv", HEADER + lines + "D3,web,demo,2024-01-05,\n")
    assert read_one_problem(path) == (
        "row 6: inconsistent stages: lead D3 starts at 'demo', but leads enter at 'new'; "
        "expected every lead's first row at 'new' ('new' is the most common first stage; name "
        "the funnel's stages to choose)"
    )
    assert read_one_problem(path, stages=["new", "demo"]).endswith(
        "('new' is the first of the funnel's stages)"
    )
    history = read_events(path, stages=["demo", "new"], lenient=True)  # enter at demo
    assert history.lead_id.tolist() == ["D3"] and history.dropped_leads == 2
    assert history.skipped_reasons == {WRONG_ENTRY: 4}


def test_a_lead_with_only_a_close_starts_at_it(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,web,new,2024-01-01,\nb,web,lost,2024-01-02,\n")
    assert read_one_problem(path).startswith(
        "row 3: inconsistent stages: lead b starts at 'lost', but leads enter at 'new'"
    )


def test_duplicated_rows_name_the_row_they_repeat(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,new,2024-01-05,\n"
        "a,web,new,2024-01-05 00:00,\n"
        "a,web,new,2024-01-05 01:00,\n",
    )
    assert read_one_problem(path) == (
        "row 3: repeats row 2 (lead_id 'a', stage 'new', entered_at '2024-01-05 00:00'); "
        "expected each stage entry once"
    )


def test_a_lead_with_a_bad_row_is_not_also_blamed_for_what_that_row_causes(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,web,new,2024-01-05,\nb,web,new,someday,\nb,web,demo,2024-01-06,\n",
    )
    assert read_one_problem(path).startswith("row 3: entered_at 'someday' is not a date")


def test_all_problems_are_reported_in_row_order(tmp_path):
    path = write(
        tmp_path / "log.csv",
        CLOSED_TWICE_LOG + "D10,web,new,2024-13-01,\nD8,ads,won,2024-01-13,1\n",
    )
    with pytest.raises(InputError) as excinfo:
        read_events(path)
    assert [p.where for p in excinfo.value.problems] == ["row 12", "row 13", "row 14"]
    assert str(excinfo.value).startswith(f"{path}: 3 problems\n  - row 12: lead D7")


def test_malformed_rows(tmp_path):
    path = write(
        tmp_path / "log.csv", HEADER + "a,web,new,2024-01-01,\nb,web,new,2024-01-02,,extra\n"
    )
    assert read_one_problem(path) == (
        "row 3: has 6 values but the header has 5 columns (lead_id,channel,stage,entered_at,value)"
    )


def test_as_of_before_every_lead_is_an_error(tmp_path):
    path = write(tmp_path / "log.csv", SMALL)
    problem = read_one_problem(path, as_of=date(2023, 12, 31))
    assert problem == (
        "as_of: 2023-12-31 is before every lead's first row (the earliest is 2024-01-03); "
        "expected a date on or after it"
    )
    with pytest.raises(InputError, match="as_of: '2024-01-05' is not a date"):
        read_events(path, as_of="2024-01-05")


# ---------------------------------------------------------------- lenient mode


def test_lenient_skips_bad_rows_and_drops_inconsistent_leads_whole(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "ok,web,new,2024-01-01,\n"
        "ok,web,won,2024-01-09,10\n"
        ",web,new,2024-01-02,\n"  # empty id
        "e,,new,2024-01-02,\n"  # empty channel
        "e,web,,2024-01-02,\n"  # empty stage
        "e,web,new,someday,\n"  # bad date
        "e,web,new,2024-01-02,lots\n"  # not a number
        "e,web,new,2024-01-02,-1\n"  # negative
        "e,web,won,2024-01-02,\n"  # won without a value
        "e,web,pitch,2024-01-02,\n"  # unknown stage
        "ok,web,new,2024-01-01,\n"  # duplicate of row 2
        "twice,web,new,2024-01-01,\ntwice,web,won,2024-01-02,1\ntwice,web,lost,2024-01-03,\n"
        "after,web,new,2024-01-01,\nafter,web,lost,2024-01-02,\nafter,web,demo,2024-01-03,\n"
        "hop,web,new,2024-01-01,\nhop,ads,demo,2024-01-02,\n"
        "late,web,demo,2024-01-01,\n"
        "open,web,new,2024-01-03,\nopen,web,demo,2024-01-05,\n"
        "x,web,new,2024-01-01\n1,2,3,4,5,6\n",  # the last: malformed
    )
    history = read_events(path, stages=["new", "demo"], lenient=True)
    assert history.lead_id.tolist() == ["ok", "x", "open"]
    assert history.skipped_reasons == {
        EMPTY_ID: 1,
        EMPTY_CHANNEL: 1,
        EMPTY_STAGE: 1,
        BAD_DATE: 1,
        BAD_VALUE: 1,
        NEGATIVE: 1,
        NO_VALUE: 1,
        UNKNOWN_STAGE: 1,
        DUPLICATE: 1,
        MALFORMED: 1,
        CLOSED_TWICE: 3,
        AFTER_CLOSE: 3,
        CHANNEL_CHANGES: 2,
        WRONG_ENTRY: 1,
    }
    assert history.skipped_rows == 19 and history.dropped_leads == 4


def test_lenient_with_no_lead_left_is_still_an_error(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,web,won,2024-01-01,\nb,web,new,someday,\n")
    with pytest.raises(InputError) as excinfo:
        read_events(path, lenient=True)
    problems = problems_of(excinfo)
    assert problems[0] == (
        "no valid row: all 2 rows were skipped (1 won without a value, 1 unparseable date)"
    )
    assert problems[1].startswith("row 2: value is empty on a won row")

    path = write(
        tmp_path / "log2.csv",
        HEADER + "a,web,demo,2024-01-01,\nb,web,lost,2024-01-01,\nc,web,new,2024-01-05,\n",
    )
    with pytest.raises(InputError) as excinfo:
        read_events(path, lenient=True, as_of=date(2024, 1, 1), stages=["new"])
    assert problems_of(excinfo)[0] == (
        "no lead left: 2 rows skipped (1 unknown stage, 1 inconsistent stages); 1 row after "
        "as_of ignored"
    )


# ---------------------------------------------------------------- the open-leads file


def test_open_leads_file_text(tmp_path):
    history = read_events(write(tmp_path / "log.csv", SMALL + "D4,web,new,2024-02-09 12:00,\n"))
    write_open_leads_csv(history, tmp_path / "open.csv")
    assert (tmp_path / "open.csv").read_text() == (
        "lead_id,channel,stage,days_in_stage,value\nD2,ads,demo,7.0,1000.0\nD4,web,new,1.5,\n"
    )
    with pytest.raises(InputError, match="cannot write the pipeline file"):
        write_open_leads_csv(history, tmp_path / "absent" / "open.csv")
