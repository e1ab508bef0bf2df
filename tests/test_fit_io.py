"""Reading transaction logs and summarising them per customer (funnelsim.fit.io).

The published check: on the CDNOW sample (2,357 customers, calibration to 1997-09-30) the
summary matches the x, t_x, T and zbar of Fader & Hardie's summary file for every customer
(946 repeat buyers), and the holdout to 1998-06-30 holds 1,882 repeat purchases.
"""

from __future__ import annotations

import math
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from funnelsim.errors import InputError
from funnelsim.fit.io import (
    BAD_AMOUNT,
    BAD_DATE,
    DUPLICATE,
    EMPTY_ID,
    MALFORMED,
    NOT_POSITIVE,
    CustomerSummary,
    Transactions,
    read_transactions,
    repeat_purchases_between,
    summarize,
    write_customers_csv,
)
from funnelsim.scenario import read_customers

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow"
CALIBRATION_END = date(1997, 9, 30)
HOLDOUT_END = date(1998, 6, 30)
ROUNDING = 0.005 + 1e-9  # the summary file is rounded to 2 decimals
HEADER = "customer_id,date,amount\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(excinfo: pytest.ExceptionInfo[InputError]) -> list[str]:
    return [str(p) for p in excinfo.value.problems]


def needs_cdnow(name: str) -> Path:
    """The CDNOW file ``name``, or skip the test when the shared data is not there."""
    path = DATA / name
    if not path.exists():
        pytest.skip(f"CDNOW data not found at {DATA} (shared/ beside the project)")
    return path


def cdnow_sample() -> pd.DataFrame:
    return pd.read_csv(
        needs_cdnow("CDNOW_sample.txt"),
        sep=r"\s+",
        header=None,
        names=["master_id", "id", "date", "cds", "dollars"],
        dtype={"date": str},
    )


@pytest.fixture(scope="module")
def cdnow_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CDNOW sample as a customer_id,date,amount log (ISO dates, the 1..2357 ids)."""
    raw = cdnow_sample()
    log = pd.DataFrame(
        {
            "customer_id": raw["id"],
            "date": pd.to_datetime(raw["date"], format="%Y%m%d").dt.strftime("%Y-%m-%d"),
            "amount": raw["dollars"],
        }
    )
    path = tmp_path_factory.mktemp("cdnow") / "cdnow.csv"
    log.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def cdnow_tx(cdnow_csv: Path) -> Transactions:
    # CDNOW has 8 free ($0) first purchases and 21 rows repeating another exactly (identical
    # CDs bought twice on one day); the published summary counts both as purchases.
    return read_transactions(cdnow_csv, allow_zero_amounts=True, allow_duplicates=True)


@pytest.fixture(scope="module")
def cdnow_summary(cdnow_tx: Transactions) -> CustomerSummary:
    return summarize(cdnow_tx, CALIBRATION_END)


# ---------------------------------------------------------------- CDNOW: published numbers


def test_cdnow_summary_matches_the_published_summary_for_every_customer(cdnow_summary):
    published = pd.read_csv(needs_cdnow("cdnow_customers_summary_with_transactions.csv"))
    published = published.set_index("ID").loc[cdnow_summary.customer_id.astype(int)]
    assert len(cdnow_summary) == 2357
    assert cdnow_summary.as_of == CALIBRATION_END
    np.testing.assert_array_equal(cdnow_summary.x, published["x"])
    np.testing.assert_allclose(cdnow_summary.t_x_days / 7, published["t_x"], rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(cdnow_summary.T_days / 7, published["T"], rtol=0, atol=ROUNDING)
    buyers = cdnow_summary.x > 0
    assert buyers.sum() == 946
    np.testing.assert_allclose(
        cdnow_summary.mean_spend[buyers], published["zbar"][buyers], rtol=0, atol=ROUNDING
    )
    assert np.isnan(cdnow_summary.mean_spend[~buyers]).all()


def test_cdnow_holdout_has_the_published_1882_repeat_purchases(cdnow_tx, cdnow_summary):
    holdout = repeat_purchases_between(cdnow_tx, cdnow_summary, CALIBRATION_END, HOLDOUT_END)
    assert holdout.shape == (2357,)
    assert holdout.sum() == 1882
    assert (
        repeat_purchases_between(cdnow_tx, cdnow_summary, HOLDOUT_END, date(1999, 1, 1)).sum() == 0
    )


def test_cdnow_free_and_repeated_rows_are_errors_by_default_and_skipped_leniently(cdnow_csv):
    with pytest.raises(InputError) as excinfo:
        read_transactions(cdnow_csv)
    problems = problems_of(excinfo)
    assert len(problems) == 8 + 21
    assert problems[0] == (
        "row 227: amount '0.0' is zero; expected an amount > 0 in the log's currency "
        "(pass --allow-zero-amounts to count free purchases)"
    )
    assert problems[1].startswith(
        "row 404: repeats row 403 (customer_id '147', date '1997-07-31', amount '9.77')"
    )
    assert str(excinfo.value).startswith(f"{cdnow_csv}: 29 problems\n")
    assert "... and 17 more problems" in str(excinfo.value)

    tx = read_transactions(cdnow_csv, lenient=True)
    assert tx.skipped == 29
    assert tx.skipped_reasons == {NOT_POSITIVE: 8, DUPLICATE: 21}


def test_cdnow_dates_as_yyyymmdd_digits_read_the_same(tmp_path, cdnow_tx):
    raw = cdnow_sample()
    path = tmp_path / "digits.csv"
    raw.rename(columns={"id": "customer_id", "dollars": "amount"})[
        ["customer_id", "date", "amount"]
    ].to_csv(path, index=False)
    tx = read_transactions(path, allow_zero_amounts=True, allow_duplicates=True)
    np.testing.assert_array_equal(tx.customer_id, cdnow_tx.customer_id)
    np.testing.assert_array_equal(tx.day, cdnow_tx.day)
    np.testing.assert_array_equal(tx.amount, cdnow_tx.amount)


def test_cdnow_customers_file_reads_back_with_read_customers(tmp_path, cdnow_summary):
    path = tmp_path / "customers.csv"
    write_customers_csv(cdnow_summary, path)
    history = read_customers(path)
    assert history.customer_id == tuple(cdnow_summary.customer_id)
    np.testing.assert_array_equal(history.repeat_purchases, cdnow_summary.x)
    np.testing.assert_array_equal(history.recency_days, cdnow_summary.t_x_days)
    np.testing.assert_array_equal(history.age_days, cdnow_summary.T_days)
    np.testing.assert_array_equal(history.mean_spend, cdnow_summary.mean_spend)  # NaN == NaN
    assert [p.name for p in tmp_path.iterdir()] == ["customers.csv"]  # no temporary left


def test_cdnow_master_has_23570_customers(tmp_path):
    master = pd.read_csv(needs_cdnow("CDNOW_master.txt"), sep=r"\s+", dtype={"date": str})
    path = tmp_path / "master.csv"
    master.rename(columns={"dollar_value": "amount"})[["customer_id", "date", "amount"]].to_csv(
        path, index=False
    )
    tx = read_transactions(path, allow_zero_amounts=True, allow_duplicates=True)
    summary = summarize(tx)
    assert len(summary) == 23570
    assert summary.as_of == date(1998, 6, 30)
    assert math.isclose(tx.amount.sum(), master["dollar_value"].sum(), rel_tol=1e-12)
    assert len(tx.day) == master.groupby(["customer_id", "date"]).ngroups


# ---------------------------------------------------------------- reading: good logs


def test_same_day_purchases_merge_and_sort_by_customer_then_day(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "b,2024-03-02,5\na,2024-03-05,1.25\nb,2024-03-01,2\nb,2024-03-02,7.5\n",
    )
    tx = read_transactions(path)
    assert tx.customer_id.tolist() == ["a", "b", "b"]
    assert tx.day.tolist() == [date(2024, 3, 5), date(2024, 3, 1), date(2024, 3, 2)]
    assert tx.amount.tolist() == [1.25, 2.0, 12.5]
    assert tx.row.tolist() == [3, 4, 2]  # a day's first row
    assert tx.day.dtype == np.dtype("datetime64[D]")
    assert tx.source == str(path) and tx.skipped == 0 and tx.skipped_reasons == {}


def test_dates_iso_digits_and_timestamps_keep_the_day(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,2024-01-05,1\n"
        "b,20240106,1\n"
        "c,2024-01-07T23:59:59+05:00,1\n"
        "d,2024-01-08 08:30,1\n"
        "d,2024-01-08 17:45,1\n",  # same amount, other time: two purchases, one day
    )
    tx = read_transactions(path)
    assert tx.day.astype(str).tolist() == ["2024-01-05", "2024-01-06", "2024-01-07", "2024-01-08"]
    assert tx.amount.tolist() == [1, 1, 1, 2]


def test_columns_map_other_names(tmp_path):
    path = write(
        tmp_path / "export.csv",
        "Order Date,Client,Total,Items\n2024-01-05,C1,10,1\n2024-02-05,C1,20,2\n",
    )
    tx = read_transactions(
        path, columns={"customer_id": "Client", "date": "Order Date", "amount": "Total"}
    )
    assert tx.customer_id.tolist() == ["C1", "C1"] and tx.amount.tolist() == [10, 20]


def test_blank_lines_are_ignored_and_rows_keep_their_numbers(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,2024-01-05,1\n\n,,\na,2024-01-09,-1\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    assert problems_of(excinfo) == [
        "row 5: amount '-1' is negative; expected an amount > 0 in the log's currency "
        "(refunds are not purchases)"
    ]


def test_parquet_round_trip(tmp_path, cdnow_csv, cdnow_tx):
    log = pd.read_csv(cdnow_csv)
    log["date"] = pd.to_datetime(log["date"])
    log.to_parquet(tmp_path / "cdnow.parquet")
    tx = read_transactions(
        tmp_path / "cdnow.parquet", allow_zero_amounts=True, allow_duplicates=True
    )
    np.testing.assert_array_equal(tx.customer_id, cdnow_tx.customer_id)
    np.testing.assert_array_equal(tx.day, cdnow_tx.day)
    np.testing.assert_array_equal(tx.amount, cdnow_tx.amount)


def test_parquet_with_text_dates_mapped_columns_and_rows_from_one(tmp_path):
    frame = pd.DataFrame(
        {"Client": ["a", "a", "b"], "When": ["2024-01-05", "2024-01-07", "soon"], "Sum": [1, 2, 3]}
    )
    path = tmp_path / "log.PQ"
    frame.to_parquet(path)
    mapping = {"customer_id": "Client", "date": "When", "amount": "Sum"}
    with pytest.raises(InputError) as excinfo:
        read_transactions(path, columns=mapping)
    assert problems_of(excinfo) == [
        "row 3: date (column 'When') 'soon' is not a date; expected YYYY-MM-DD, YYYYMMDD or "
        "a timestamp YYYY-MM-DD HH:MM[:SS]"
    ]
    tx = read_transactions(path, columns=mapping, lenient=True)
    assert tx.customer_id.tolist() == ["a", "a"] and tx.skipped_reasons == {BAD_DATE: 1}


def test_parquet_timestamps_keep_the_local_day(tmp_path):
    stamps = pd.to_datetime(["2024-01-05 23:30", "2024-01-05 01:00"]).tz_localize("US/Eastern")
    pd.DataFrame({"customer_id": [7, 7], "date": stamps, "amount": [1.5, 1.5]}).to_parquet(
        tmp_path / "log.parquet"
    )
    tx = read_transactions(tmp_path / "log.parquet")
    assert tx.customer_id.tolist() == ["7"]
    assert tx.day.tolist() == [date(2024, 1, 5)] and tx.amount.tolist() == [3.0]


# ---------------------------------------------------------------- reading: errors


def test_missing_file(tmp_path):
    for name in ("absent.csv", "absent.parquet"):
        with pytest.raises(InputError, match="transaction log not found") as excinfo:
            read_transactions(tmp_path / name)
        assert excinfo.value.source == str(tmp_path / name)


def test_unreadable_files(tmp_path):
    (tmp_path / "latin1.csv").write_bytes(HEADER.encode() + "Zoë,2024-01-05,1\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.csv: cannot read the transaction log"):
        read_transactions(tmp_path / "latin1.csv")
    write(tmp_path / "fake.parquet", "not parquet")
    with pytest.raises(InputError, match="fake.parquet: cannot read the Parquet file"):
        read_transactions(tmp_path / "fake.parquet")
    with pytest.raises(InputError, match="cannot read the transaction log"):
        read_transactions(tmp_path)  # a directory


def test_empty_file_and_header_only(tmp_path):
    with pytest.raises(InputError, match="the file is empty; expected a header"):
        read_transactions(write(tmp_path / "empty.csv", "\n"))
    with pytest.raises(InputError, match="the log has no purchases"):
        read_transactions(write(tmp_path / "header.csv", HEADER))


def test_missing_columns_name_the_expected_and_found_columns(tmp_path):
    path = write(tmp_path / "log.csv", "customer_id,day,amount\na,2024-01-05,1\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    assert str(excinfo.value).startswith(
        f"{path}: missing column(s) date; expected a header with customer_id,date,amount "
        "(found: customer_id,day,amount)"
    )


def test_missing_mapped_column_names_the_mapping(tmp_path):
    path = write(tmp_path / "log.csv", "Client,Order Date,Totals\na,2024-01-05,1\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(
            path, columns={"customer_id": "Client", "date": "Order Date", "amount": "Total"}
        )
    message = str(excinfo.value)
    assert (
        "missing column(s) 'Total' (the amount column, mapped by --columns amount=Total)" in message
    )
    assert "(did you mean 'Totals'?)" in message
    assert "(found: Client,Order Date,Totals)" in message


def test_bad_mapping(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,2024-01-05,1\n")
    with pytest.raises(InputError, match="unknown name 'amont' \\(did you mean 'amount'\\?\\)"):
        read_transactions(path, columns={"amont": "Total"})
    with pytest.raises(InputError, match="customer_id and date both map to column 'X'"):
        read_transactions(path, columns={"customer_id": "X", "date": "X"})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "a,2024-02-30,1",
            "date '2024-02-30' is not a date; expected YYYY-MM-DD, YYYYMMDD or a timestamp "
            "YYYY-MM-DD HH:MM[:SS]",
        ),
        ("a,05/01/2024,1", "date '05/01/2024' is not a date; expected YYYY-MM-DD"),
        ("a,2024-1-5,1", "date '2024-1-5' is not a date"),
        ("a,,1", "date is empty; expected a date YYYY-MM-DD"),
        (
            "a,2024-01-05,-2.5",
            "amount '-2.5' is negative; expected an amount > 0 in the log's currency "
            "(refunds are not purchases)",
        ),
        ("a,2024-01-05,0", "amount '0' is zero; expected an amount > 0 in the log's currency"),
        (
            "a,2024-01-05,$12",
            "amount '$12' is not a number; expected an amount in the log's currency",
        ),
        ("a,2024-01-05,inf", "amount 'inf' is not a number"),
        ("a,2024-01-05,", "amount is empty; expected a number in the log's currency"),
        ("  ,2024-01-05,1", "customer_id is empty; expected the customer's id"),
    ],
)
def test_bad_values_name_the_file_row_and_value(tmp_path, line, message):
    path = write(tmp_path / "log.csv", HEADER + "ok,2024-01-01,1\n" + line + "\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    assert excinfo.value.source == str(path)
    [problem] = problems_of(excinfo)
    assert problem.startswith(f"row 3: {message}")
    assert str(excinfo.value).startswith(f"{path}: row 3: ")


def test_duplicated_row_names_the_row_it_repeats(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,2024-01-05,1\nb,2024-01-05,2\na,2024-01-06,1\na,20240105,1.0\n",
    )
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    [problem] = problems_of(excinfo)
    assert problem.startswith(
        "row 5: repeats row 2 (customer_id 'a', date '20240105', amount '1.0'); "
        "expected each purchase once"
    )
    tx = read_transactions(path, allow_duplicates=True)
    assert tx.amount.tolist() == [2.0, 1.0, 2.0]  # a's two purchases of 2024-01-05 merged


def test_a_row_with_several_bad_values_reports_each(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + ",someday,abc\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    assert [p.split(":")[0] for p in problems_of(excinfo)] == ["row 2"] * 3
    assert "3 problems" in str(excinfo.value)


def test_all_bad_rows_are_reported_and_twelve_shown(tmp_path):
    lines = [f"c{i},2024-01-{i % 28 + 1:02d},-{i}" for i in range(1, 21)]
    path = write(tmp_path / "log.csv", HEADER + "ok,2024-01-01,1\n" + "\n".join(lines) + "\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    assert len(excinfo.value.problems) == 20
    assert [p.where for p in excinfo.value.problems] == [f"row {i}" for i in range(3, 23)]
    rendered = str(excinfo.value)
    assert rendered.startswith(f"{path}: 20 problems\n")
    assert rendered.count("\n  - row ") == 12
    assert rendered.endswith("... and 8 more problems")


def test_malformed_rows_and_quoted_line_breaks(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + 'a,2024-01-01,1\n\nb,"2024-01\n-02",2\nc,2024-01-03,3,4\nd,2024-01-04,5\n',
    )
    with pytest.raises(InputError) as excinfo:
        read_transactions(path)
    assert problems_of(excinfo) == [
        "row 4: a quoted value runs over lines (a stray '\"'?)",
        "row 6: has 4 values but the header has 3 columns (customer_id,date,amount)",
    ]
    tx = read_transactions(path, lenient=True)
    assert tx.customer_id.tolist() == ["a", "d"] and tx.row.tolist() == [2, 7]
    assert tx.skipped_reasons == {MALFORMED: 2}


# ---------------------------------------------------------------- lenient mode


def test_lenient_skips_and_counts_bad_rows_by_first_reason(tmp_path):
    path = write(
        tmp_path / "log.csv",
        HEADER + "a,2024-01-01,1\n"
        ",2024-01-02,1\n"  # empty id
        ",never,x\n"  # empty id first
        "a,2024-13-01,1\n"  # bad date
        "a,2024-01-03,n/a\n"  # not a number
        "a,2024-01-04,0\n"  # zero
        "a,2024-01-05,-3\n"  # negative
        "a,2024-01-01,1\n"  # duplicate of row 2
        "b,2024-01-06,4\n",
    )
    tx = read_transactions(path, lenient=True)
    assert tx.customer_id.tolist() == ["a", "b"]
    assert tx.skipped == 7
    assert tx.skipped_reasons == {
        EMPTY_ID: 2,
        BAD_DATE: 1,
        BAD_AMOUNT: 1,
        NOT_POSITIVE: 2,
        DUPLICATE: 1,
    }
    tx = read_transactions(path, lenient=True, allow_zero_amounts=True, allow_duplicates=True)
    assert tx.amount.tolist() == [2, 0, 4] and tx.skipped == 5


def test_lenient_with_no_valid_row_is_still_an_error(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,2024-01-01,0\nb,someday,1\n")
    with pytest.raises(InputError) as excinfo:
        read_transactions(path, lenient=True)
    problems = problems_of(excinfo)
    assert problems[0] == (
        "no valid purchase: all 2 rows were skipped (1 amount not > 0, 1 unparseable date)"
    )
    assert problems[1].startswith("row 2: amount '0' is zero")


# ---------------------------------------------------------------- summarising


@pytest.fixture
def small_tx(tmp_path) -> Transactions:
    return read_transactions(
        write(
            tmp_path / "log.csv",
            HEADER + "a,2024-01-01,10\n"
            "a,2024-01-11,20\n"
            "a,2024-01-31,40\n"
            "a,2024-03-01,80\n"
            "b,2024-01-21,5\n"
            "c,2024-02-15,7\n",
        )
    )


def test_summary_in_days_with_the_last_day_as_default_as_of(small_tx):
    summary = summarize(small_tx)
    assert summary.as_of == date(2024, 3, 1)
    assert summary.customer_id.tolist() == ["a", "b", "c"]
    assert summary.first_day.astype(str).tolist() == ["2024-01-01", "2024-01-21", "2024-02-15"]
    assert summary.x.tolist() == [3, 0, 0]
    assert summary.t_x_days.tolist() == [60, 0, 0]
    assert summary.T_days.tolist() == [60, 40, 15]
    assert summary.mean_spend[0] == pytest.approx((20 + 40 + 80) / 3)
    assert np.isnan(summary.mean_spend[1:]).all()


def test_purchases_after_as_of_are_left_out(small_tx):
    summary = summarize(small_tx, datetime(2024, 2, 20, 13, 0))  # a datetime keeps its day
    assert summary.as_of == date(2024, 2, 20)
    assert summary.x.tolist() == [2, 0, 0]
    assert summary.t_x_days.tolist() == [30, 0, 0]
    assert summary.T_days.tolist() == [50, 30, 5]
    assert summary.mean_spend[0] == 30.0
    holdout = repeat_purchases_between(small_tx, summary, date(2024, 2, 20), date(2024, 3, 1))
    assert holdout.tolist() == [1, 0, 0]
    assert repeat_purchases_between(
        small_tx, summary, date(2023, 12, 31), date(2024, 1, 31)
    ).tolist() == [3, 1, 0]


def test_customer_only_after_as_of_is_an_error_naming_its_rows(small_tx):
    with pytest.raises(InputError) as excinfo:
        summarize(small_tx, date(2024, 2, 1))
    assert problems_of(excinfo) == [
        "row 7: customer_id 'c' first buys on 2024-02-15, after --as-of 2024-02-01; expected "
        "every customer to buy on or before --as-of (choose a later --as-of, or pass "
        "--lenient to leave such customers out)"
    ]
    summary = summarize(small_tx, date(2024, 2, 1), lenient=True)
    assert summary.customer_id.tolist() == ["a", "b"] and summary.dropped_customers == 1


def test_rows_of_a_late_customer_are_all_named(tmp_path):
    path = write(tmp_path / "log.csv", HEADER + "a,2024-01-01,1\nz,2024-02-01,1\nz,2024-02-09,1\n")
    with pytest.raises(InputError, match=r"rows 3, 4: customer_id 'z' first buys on 2024-02-01"):
        summarize(read_transactions(path), date(2024, 1, 15))


def test_as_of_before_every_first_purchase_is_an_error(small_tx):
    for lenient in (False, True):
        with pytest.raises(InputError) as excinfo:
            summarize(small_tx, date(2023, 12, 31), lenient=lenient)
        assert problems_of(excinfo) == [
            "as_of: 2023-12-31 is before every customer's first purchase (the earliest is "
            "2024-01-01); expected a date on or after it"
        ]


def test_holdout_end_before_start_is_an_error(small_tx):
    summary = summarize(small_tx)
    with pytest.raises(InputError, match="end 2024-01-01 is before start 2024-02-01"):
        repeat_purchases_between(small_tx, summary, date(2024, 2, 1), date(2024, 1, 1))


def test_customers_file_format(tmp_path, small_tx):
    path = tmp_path / "customers.csv"
    write_customers_csv(summarize(small_tx, date(2024, 2, 20)), path)
    assert path.read_text(encoding="utf-8") == (
        "customer_id,repeat_purchases,recency_days,age_days,mean_spend\n"
        "a,2,30,50,30.0\n"
        "b,0,0,30,\n"
        "c,0,0,5,\n"
    )


def test_customers_file_in_a_missing_folder_is_an_error(tmp_path, small_tx):
    with pytest.raises(InputError, match="cannot write the customers file"):
        write_customers_csv(summarize(small_tx), tmp_path / "no" / "customers.csv")
