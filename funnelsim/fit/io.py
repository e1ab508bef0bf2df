"""Read a transaction log and summarise it per customer for the repeat-purchase models.

A transaction log has one row per purchase: ``customer_id,date,amount`` (CSV, or Parquet
when the file ends in ``.parquet`` or ``.pq``). Times are whole calendar days; amounts are in
the log's currency. Purchases by one customer on the same day count as one purchase (their
amounts summed), as in Fader, Hardie & Lee (2005) on CDNOW.
"""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelsim.errors import InputError, Problem, did_you_mean, read_text

COLUMNS = ("customer_id", "date", "amount")
PARQUET_SUFFIXES = (".parquet", ".pq")
DATE_FORMS = "YYYY-MM-DD, YYYYMMDD or a timestamp YYYY-MM-DD HH:MM[:SS]"

# Why a row was skipped in lenient mode (keys of ``skipped_reasons``); a row with several
# problems is counted once, under the first of these that applies.
MALFORMED = "malformed row"
EMPTY_ID = "empty customer_id"
BAD_DATE = "unparseable date"
BAD_AMOUNT = "non-numeric amount"
NOT_POSITIVE = "amount not > 0"
DUPLICATE = "duplicated row"
ONLY_AFTER_AS_OF = "customer only buys after as_of"

_ISO = r"\d{4}-\d{2}-\d{2}"
_DIGITS = r"\d{8}"
_STAMP = _ISO + r"[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)?"


@dataclass(frozen=True, eq=False)
class Transactions:
    """Purchases from a transaction log: one per customer and day, sorted by customer then day.

    ``day`` is the calendar day (``datetime64[D]``); ``amount`` the day's total in the log's
    currency (purchases on the same day merged). ``skipped`` counts the log rows skipped in
    lenient mode, ``skipped_reasons`` the same rows by reason, ``skipped_rows`` the problems
    found in them (in row order). ``row`` is the log row of each
    day's first purchase (CSV: the header is row 1; Parquet: data rows from 1), for messages.
    """

    customer_id: np.ndarray
    day: np.ndarray
    amount: np.ndarray
    source: str
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    row: np.ndarray | None = None
    skipped_rows: tuple[Problem, ...] = ()  # why each skipped row was skipped, by row


@dataclass(frozen=True, eq=False)
class CustomerSummary:
    """Each customer's calibration history up to ``as_of`` (inclusive), in days.

    ``x`` counts repeat purchases (distinct purchase days − 1); ``t_x_days`` is the time from
    the first to the last purchase, ``T_days`` from the first purchase to ``as_of``;
    ``mean_spend`` the mean amount of the repeat purchases in the log's currency (NaN when
    ``x`` is 0). ``dropped_customers`` counts customers left out in lenient mode because all
    their purchases are after ``as_of``.
    """

    customer_id: np.ndarray
    first_day: np.ndarray
    x: np.ndarray
    t_x_days: np.ndarray
    T_days: np.ndarray
    mean_spend: np.ndarray
    as_of: date
    dropped_customers: int = 0

    def __len__(self) -> int:
        return len(self.customer_id)


# ---------------------------------------------------------------- reading the log


def read_transactions(
    path: str | os.PathLike[str],
    *,
    columns: dict[str, str] | None = None,
    lenient: bool = False,
    allow_zero_amounts: bool = False,
    allow_duplicates: bool = False,
) -> Transactions:
    """Read a transaction log ``customer_id,date,amount`` (CSV, or Parquet by suffix).

    ``columns`` maps the expected names to the log's own, e.g. ``{"amount": "Total"}``.
    Dates are ``YYYY-MM-DD`` (also ``YYYYMMDD`` or a timestamp, of which the day is kept);
    amounts are numbers > 0 in the log's currency (>= 0 with ``allow_zero_amounts``: free
    purchases still count as purchases). A row repeating an earlier one exactly (customer,
    date and amount) is an error unless ``allow_duplicates`` (then both are purchases).
    Bad rows raise :class:`InputError` naming every one, or with ``lenient`` are skipped and
    counted. A log without a valid row is always an error.
    """
    source = str(path)
    names = column_names(columns, COLUMNS, source)
    frame, rows, malformed = read_table(Path(path), source, TRANSACTION_LOG)
    frame = _pick_columns(frame, names, source)
    parsed = _parse_rows(frame, rows, allow_zero_amounts=allow_zero_amounts)
    if not allow_duplicates:
        mark_duplicates(parsed, ["customer_id", "day", "time_of_day", "amount"])
    bad = parsed["reason"].notna().to_numpy()
    problems: list[Problem] = []
    if malformed or bad.any():
        labels = {n: n if names[n] == n else f"{n} (column {names[n]!r})" for n in COLUMNS}
        least = ">= 0" if allow_zero_amounts else "> 0"
        problems = _sorted(
            malformed
            + row_problems(
                parsed[bad],
                frame[bad],
                lambda record, raw: _value_messages(record, raw, labels, least),
                _duplicate_message,
            )
        )
    if problems and not lenient:
        raise InputError(source, problems)
    good = parsed[~bad]
    reasons = Counter(parsed["reason"][bad].tolist()) + Counter({MALFORMED: len(malformed)})
    if good.empty:
        raise InputError(
            source, _no_rows_problems(len(parsed) + len(malformed), reasons) + problems
        )
    return _merge_days(good, source, reasons, tuple(problems))


def column_names(
    columns: dict[str, str] | None, expected: tuple[str, ...], source: str
) -> dict[str, str]:
    """The file's column name for each ``expected`` one, from ``--columns``-style
    ``{name: column}``: unknown names, empty columns and two names on one column are
    errors."""
    names = {name: name for name in expected}
    problems = []
    for name, given in (columns or {}).items():
        if name not in expected:
            problems.append(
                Problem(
                    "--columns",
                    f"{name}={given}: unknown name {name!r}{did_you_mean(name, expected)}; "
                    f"expected one of {', '.join(expected)}",
                )
            )
        elif not str(given).strip():
            problems.append(Problem("--columns", f"{name}= names no column; expected {name}=NAME"))
        else:
            names[name] = str(given).strip()
    by_column: dict[str, list[str]] = {}
    for name, column in names.items():
        by_column.setdefault(column, []).append(name)
    for column, mapped in by_column.items():
        if len(mapped) > 1:
            problems.append(
                Problem(
                    "--columns",
                    f"{' and '.join(mapped)} {'both' if len(mapped) == 2 else 'all'} map to "
                    f"column {column!r}; expected different columns",
                )
            )
    if problems:
        raise InputError(source, problems)
    return names


TRANSACTION_LOG = ("transaction log", "a header customer_id,date,amount and a row a purchase")


def read_table(
    path: Path, source: str, kind: tuple[str, str]
) -> tuple[pd.DataFrame, np.ndarray, list[Problem]]:
    """A log (CSV, or Parquet by suffix) as a table of text, each row's number for messages,
    and the rows too malformed to read. ``kind``: what the file is and what it should hold,
    for messages, e.g. :data:`TRANSACTION_LOG`."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        frame = _read_parquet(path, source, kind[0])
        return frame, np.arange(1, len(frame) + 1), []
    return _read_csv(path, source, kind)


def _read_parquet(path: Path, source: str, what: str) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError:
        raise InputError(source, f"{what} not found") from None
    except ImportError as exc:
        raise InputError(source, f"reading Parquet needs pyarrow: {exc}") from None
    except (OSError, ValueError) as exc:
        raise InputError(source, f"cannot read the Parquet file: {exc}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame.reset_index(drop=True)


def _read_csv(
    path: Path, source: str, kind: tuple[str, str]
) -> tuple[pd.DataFrame, np.ndarray, list[Problem]]:
    """Read every value as text; row numbers count the header as row 1, like a spreadsheet."""
    text = read_text(path, kind[0])
    if not text.strip():
        raise InputError(source, f"the file is empty; expected {kind[1]}")
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skip_blank_lines=False
        )
    except pd.errors.ParserError:  # rows with more values than the header: read them one by one
        return _read_csv_by_row(text)
    if '"' in text and frame.apply(lambda c: c.str.contains("\n|\r").any()).any():
        return _read_csv_by_row(text)  # a quoted line break shifts the row numbers
    frame.columns = [str(c).strip() for c in frame.columns]
    rows = np.arange(2, len(frame) + 2)
    blank = (frame == "").all(axis=1).to_numpy()
    return frame[~blank].reset_index(drop=True), rows[~blank], []


def _read_csv_by_row(text: str) -> tuple[pd.DataFrame, np.ndarray, list[Problem]]:
    """The slow path for logs pandas cannot split: exact row numbers, malformed rows listed."""
    reader = csv.reader(io.StringIO(text))
    header = [c.strip() for c in next(reader)]
    records, rows, malformed = [], [], []
    start = reader.line_num + 1
    for record in reader:
        where = f"row {start}"
        if len(record) > len(header):
            malformed.append(
                Problem(
                    where,
                    f"has {len(record)} values but the header has {len(header)} columns "
                    f"({','.join(header)})",
                )
            )
        elif any("\n" in value or "\r" in value for value in record):
            malformed.append(Problem(where, "a quoted value runs over lines (a stray '\"'?)"))
        elif any(value.strip() for value in record):
            records.append(record + [""] * (len(header) - len(record)))
            rows.append(start)
        start = reader.line_num + 1
    frame = pd.DataFrame(records, columns=header, dtype=str)
    return frame, np.asarray(rows, dtype=np.int64), malformed


def _pick_columns(frame: pd.DataFrame, names: dict[str, str], source: str) -> pd.DataFrame:
    """The three columns under their expected names, or an error listing the columns found."""
    found = [str(c) for c in frame.columns]
    missing = [name for name in COLUMNS if names[name] not in found]
    if missing:
        raise InputError(
            source,
            missing_columns_message(
                missing,
                names,
                found,
                ",".join(names[name] for name in COLUMNS),
                "customer_id=Client,date=Order Date,amount=Total",
            ),
        )
    picked = frame[[names[name] for name in COLUMNS]]
    picked.columns = list(COLUMNS)
    return picked


def missing_columns_message(
    missing: list[str], names: dict[str, str], found: list[str], expected: str, example: str
) -> str:
    """One message for all the missing columns: each with a guess at what was meant (and the
    mapping that named it), the header expected, the header found and an example mapping."""
    parts = []
    for name in missing:
        if names[name] == name:
            parts.append(f"{name}{did_you_mean(name, found)}")
        else:
            parts.append(
                f"{names[name]!r} (the {name} column, mapped by --columns "
                f"{name}={names[name]}){did_you_mean(names[name], found)}"
            )
    return (
        f"missing column(s) {'; '.join(parts)}; expected a header with {expected} "
        f"(found: {','.join(found) or 'nothing'}); other column names can be mapped, "
        f"e.g. --columns {example}"
    )


def _parse_rows(frame: pd.DataFrame, rows: np.ndarray, *, allow_zero_amounts: bool) -> pd.DataFrame:
    """Parsed values with, per row, the first reason it is bad (missing when it is good)."""
    customer_id = _text(frame["customer_id"])
    day, time_of_day = _parse_days(frame["date"])
    amount = _parse_amounts(frame["amount"])
    finite = np.isfinite(amount)
    too_small = finite & ((amount < 0) if allow_zero_amounts else (amount <= 0))
    reason = np.select(
        [customer_id.to_numpy() == "", np.isnat(day), ~finite, too_small],
        [EMPTY_ID, BAD_DATE, BAD_AMOUNT, NOT_POSITIVE],
        default="",
    )
    return pd.DataFrame(
        {
            "row": rows,
            "customer_id": customer_id.to_numpy(dtype=object),
            "day": day,
            "time_of_day": time_of_day,
            "amount": amount,
            "reason": pd.Series(reason, dtype=object).replace("", None),
            "repeats": 0,
        }
    )


def _text(values: pd.Series) -> pd.Series:
    """Values as stripped text, "" when missing; whole floats (1.0) written as integers."""
    if pd.api.types.is_float_dtype(values):
        known = values.dropna().to_numpy()
        if np.isfinite(known).all() and (known == np.floor(known)).all():
            values = values.astype("Int64")
    return values.astype("string").fillna("").str.strip()


def _parse_days(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each value's calendar day (``datetime64[D]``, NaT when not a date) and time of day.

    The time of day (text, or a timedelta for Parquet timestamps) only tells apart two
    purchases on the same day when the log has times.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        local = values.dt.tz_localize(None) if values.dt.tz is not None else values
        return local.to_numpy().astype("datetime64[D]"), (local - local.dt.floor("D")).to_numpy()
    text = _text(values)
    iso = text.str.fullmatch(_ISO).to_numpy(dtype=bool)
    stamp = text.str.fullmatch(_STAMP).to_numpy(dtype=bool)
    digits = text.str.fullmatch(_DIGITS).to_numpy(dtype=bool)
    joined = text.str.slice(0, 4) + "-" + text.str.slice(4, 6) + "-" + text.str.slice(6, 8)
    day_text = np.where(iso | stamp, text.str.slice(0, 10), np.where(digits, joined, ""))
    day = pd.to_datetime(pd.Series(day_text, dtype=object), format="%Y-%m-%d", errors="coerce")
    time_of_day = np.where(stamp, text.str.slice(10).str.strip(), "")
    return day.to_numpy().astype("datetime64[D]"), time_of_day.astype(object)


def _parse_amounts(values: pd.Series) -> np.ndarray:
    """Amounts as floats (the log's currency); NaN where a value is not a number."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    numbers = pd.to_numeric(_text(values), errors="coerce")
    return numbers.to_numpy(dtype=float, na_value=np.nan)


def mark_duplicates(parsed: pd.DataFrame, keys: list[str]) -> None:
    """Mark good rows repeating an earlier good row on ``keys``; ``repeats`` holds that row."""
    good = parsed[parsed["reason"].isna()]
    repeated = good.duplicated(keys, keep="first")
    if not repeated.any():
        return
    first_row = good.groupby(keys, sort=False, dropna=False)["row"].transform("first")
    index = repeated[repeated].index
    parsed.loc[index, "reason"] = DUPLICATE
    parsed.loc[index, "repeats"] = first_row[index]


def row_problems(
    bad: pd.DataFrame,
    frame: pd.DataFrame,
    value_messages: Callable[[dict[str, Any], dict[str, Any]], list[str]],
    duplicate_message: Callable[[dict[str, Any], dict[str, Any]], str],
) -> list[Problem]:
    """One problem per bad value of each bad row (the only loop over rows: messages).

    ``bad`` holds the parsed bad rows, ``frame`` the same rows as read; the two functions
    word a row's bad values and a repeated row, from the parsed record and the raw one.
    """
    problems = []
    for record, raw in zip(bad.to_dict("records"), frame.to_dict("records"), strict=True):
        where = f"row {record['row']}"
        if record["reason"] == DUPLICATE:
            problems.append(Problem(where, duplicate_message(record, raw)))
            continue
        for message in value_messages(record, raw):
            problems.append(Problem(where, message))
    return problems


def _value_messages(
    record: dict[str, Any], raw: dict[str, Any], labels: dict[str, str], least: str
) -> list[str]:
    messages = []
    if record["customer_id"] == "":
        messages.append(f"{labels['customer_id']} is empty; expected the customer's id")
    if pd.isna(record["day"]):
        messages.append(
            f"{labels['date']} is empty; expected a date {DATE_FORMS}"
            if _blank(raw["date"])
            else f"{labels['date']} {_shown(raw['date'])} is not a date; expected {DATE_FORMS}"
        )
    amount = record["amount"]
    if _blank(raw["amount"]):
        messages.append(f"{labels['amount']} is empty; expected a number in the log's currency")
    elif not np.isfinite(amount):
        messages.append(
            f"{labels['amount']} {_shown(raw['amount'])} is not a number; expected an amount "
            "in the log's currency"
        )
    elif record["reason"] == NOT_POSITIVE:
        what, why = ("zero", "pass --allow-zero-amounts to count free purchases")
        if amount < 0:
            what, why = ("negative", "refunds are not purchases")
        messages.append(
            f"{labels['amount']} {_shown(raw['amount'])} is {what}; expected an amount "
            f"{least} in the log's currency ({why})"
        )
    return messages


def _duplicate_message(record: dict[str, Any], raw: dict[str, Any]) -> str:
    return (
        f"repeats row {record['repeats']} (customer_id {_shown(raw['customer_id'])}, date "
        f"{_shown(raw['date'])}, amount {_shown(raw['amount'])}); expected each purchase once "
        "(if identical purchases on one day are real, pass --allow-duplicates)"
    )


def _blank(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or str(value).strip() in ("", "nan")


def _shown(value: Any) -> str:
    """A value as the user wrote it: text quoted, numbers and dates plain."""
    if isinstance(value, str):
        return repr(value.strip())
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, np.integer):
        return str(int(value))
    return str(value)


def _sorted(problems: list[Problem]) -> list[Problem]:
    """Problems in the order of their rows (stable within a row)."""
    return sorted(problems, key=lambda p: int(p.where.split()[1]) if p.where else 0)


def _no_rows_problems(total: int, reasons: Counter) -> list[Problem]:
    if total == 0:
        return [Problem("", "the log has no purchases; expected a row per purchase")]
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common() if n)
    return [Problem("", f"no valid purchase: all {total} rows were skipped ({counts})")]


def _merge_days(
    good: pd.DataFrame, source: str, reasons: Counter, problems: tuple[Problem, ...] = ()
) -> Transactions:
    """One purchase per customer and day (amounts summed), sorted by customer then day."""
    merged = good.groupby(["customer_id", "day"], sort=True).agg(
        amount=("amount", "sum"), row=("row", "min")
    )
    customer_id = merged.index.get_level_values("customer_id").to_numpy(dtype=object)
    day = merged.index.get_level_values("day").to_numpy().astype("datetime64[D]")
    skipped_reasons = {reason: n for reason, n in reasons.items() if n}
    return Transactions(
        customer_id=_frozen(customer_id),
        day=_frozen(day),
        amount=_frozen(merged["amount"].to_numpy(dtype=float)),
        source=source,
        skipped=sum(skipped_reasons.values()),
        skipped_reasons=skipped_reasons,
        row=_frozen(merged["row"].to_numpy(dtype=np.int64)),
        skipped_rows=problems,
    )


def _frozen(values: np.ndarray) -> np.ndarray:
    values = np.array(values)
    values.setflags(write=False)
    return values


# ---------------------------------------------------------------- per-customer summary


def summarize(
    tx: Transactions, as_of: date | None = None, *, lenient: bool = False
) -> CustomerSummary:
    """Each customer's repeat purchases, recency and age in days at ``as_of``.

    The calibration period is every day up to and including ``as_of`` (default: the last
    day of the log); later purchases are ignored here (see :func:`repeat_purchases_between`).
    A customer whose purchases are all after ``as_of`` is an error naming its rows, or with
    ``lenient`` is left out and counted in ``dropped_customers``.
    """
    if len(tx.day) == 0:
        raise InputError(tx.source, "the log has no purchases; expected a row per purchase")
    cutoff = tx.day.max() if as_of is None else _day(as_of)
    starts = _group_starts(tx.customer_id)
    first_days = tx.day[starts]
    if (first_days > cutoff).all():
        raise InputError(
            tx.source,
            [
                Problem(
                    "as_of",
                    f"{_date(cutoff)} is before every customer's first purchase (the earliest "
                    f"is {_date(first_days.min())}); expected a date on or after it",
                )
            ],
        )
    late = first_days > cutoff
    if late.any() and not lenient:
        raise InputError(tx.source, _late_problems(tx, starts, late, cutoff))
    calibration = tx.day <= cutoff
    summary = _summary_of(
        tx.customer_id[calibration], tx.day[calibration], tx.amount[calibration], cutoff
    )
    return CustomerSummary(**summary, as_of=_date(cutoff), dropped_customers=int(late.sum()))


def _summary_of(
    customer_id: np.ndarray, day: np.ndarray, amount: np.ndarray, cutoff: np.datetime64
) -> dict[str, np.ndarray]:
    """Per-customer arrays from purchase days sorted by customer then day."""
    starts = _group_starts(customer_id)
    counts = np.diff(np.append(starts, len(day)))
    first_day = day[starts]
    last_day = day[starts + counts - 1]
    later = np.ones(len(day), dtype=bool)
    later[starts] = False
    repeat_spend = np.add.reduceat(np.where(later, amount, 0.0), starts)
    x = counts - 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_spend = np.where(x > 0, repeat_spend / x, np.nan)
    return {
        "customer_id": _frozen(customer_id[starts]),
        "first_day": _frozen(first_day),
        "x": _frozen(x.astype(np.int64)),
        "t_x_days": _frozen((last_day - first_day).astype(np.int64)),
        "T_days": _frozen((cutoff - first_day).astype(np.int64)),
        "mean_spend": _frozen(mean_spend),
    }


def _late_problems(
    tx: Transactions, starts: np.ndarray, late: np.ndarray, cutoff: np.datetime64
) -> list[Problem]:
    ends = np.append(starts[1:], len(tx.day))
    problems = []
    for start, end in zip(starts[late], ends[late], strict=True):
        cid = tx.customer_id[start]
        where = f"customer_id {cid!r}" if tx.row is None else _rows_text(tx.row[start:end])
        problems.append(
            Problem(
                where,
                f"customer_id {cid!r} first buys on {_date(tx.day[start])}, after --as-of "
                f"{_date(cutoff)}; expected every customer to buy on or before --as-of "
                "(choose a later --as-of, or pass --lenient to leave such customers out)",
            )
        )
    return problems


def _rows_text(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    more = f", ... ({len(rows)} rows)" if len(rows) > limit else ""
    return f"row {shown}" if len(rows) == 1 else f"rows {shown}{more}"


def _group_starts(customer_id: np.ndarray) -> np.ndarray:
    """Index of each customer's first entry in an array sorted by customer."""
    if len(customer_id) == 0:
        return np.zeros(0, dtype=np.int64)
    changes = customer_id[1:] != customer_id[:-1]
    return np.flatnonzero(np.concatenate(([True], changes)))


def _day(value: date) -> np.datetime64:
    if isinstance(value, datetime):
        value = value.date()
    return np.datetime64(value, "D")


def _date(value: np.datetime64) -> date:
    return value.astype("datetime64[D]").astype(object)


# ---------------------------------------------------------------- holdout and output

# Every file ``funnelsim fit`` can write into --out: a refit removes those of them it does
# not write this time, so no stale file (e.g. an old holdout.json) sits beside new ones.
FIT_OUTPUTS = (
    "estimates.json",
    "diagnostics.txt",
    "posterior.nc",
    "scenario.yaml",
    "customers.csv",
    "open_leads.csv",
    "holdout.json",
)


def read_for_fit(
    path: str | os.PathLike[str],
    as_of: date | None,
    holdout_until: date | None,
    *,
    lenient: bool = False,
    **options: Any,
) -> tuple[Transactions, CustomerSummary]:
    """The log and its customer summary for a fit, with every input problem in one error.

    Without ``lenient``, bad rows, dates outside the log (:func:`check_dates`) and customers
    who only buy after ``as_of`` are reported together (the latter two judged on the good
    rows), instead of one kind per attempt. ``options`` go to :func:`read_transactions`.
    """
    try:
        tx = read_transactions(path, lenient=True, **options)
    except InputError:
        tx = read_transactions(path, lenient=lenient, **options)  # raises, worded as read
    problems = [] if lenient else list(tx.skipped_rows)
    try:
        check_dates(tx, as_of, holdout_until)
        summary = summarize(tx, as_of, lenient=lenient)
    except InputError as exc:
        problems += exc.problems
    if problems:
        raise InputError(tx.source, problems)
    return tx, summary


def check_dates(tx: Transactions, as_of: date | None, holdout_until: date | None) -> None:
    """Refuse an ``as_of`` outside the log's span and a ``holdout_until`` not after ``as_of``
    or past the log's last day, before anything is fitted."""
    if len(tx.day) == 0:
        return
    first, last = _date(tx.day.min()), _date(tx.day.max())
    span = f"the log spans {first} to {last}"
    problems = []
    if as_of is not None and not first <= as_of <= last:
        problems.append(
            Problem(
                "--as-of",
                f"{as_of} is {'before the first' if as_of < first else 'after the last'} "
                f"purchase ({span}); expected a date within the log",
            )
        )
    cutoff = last if as_of is None else as_of
    if holdout_until is not None and holdout_until <= cutoff:
        problems.append(
            Problem(
                "--holdout-until",
                f"{holdout_until} is not after --as-of {cutoff} ({span}); expected a later "
                "date, the end of the period to compare predictions with",
            )
        )
    elif holdout_until is not None and holdout_until > last:
        problems.append(
            Problem(
                "--holdout-until",
                f"{holdout_until} is after the log's last date ({span}); expected a date on "
                f"or before {last}: purchases not yet in the log would count as none",
            )
        )
    if problems:
        raise InputError(tx.source, problems)


def repeat_purchases_between(
    tx: Transactions, summary: CustomerSummary, start: date, end: date
) -> np.ndarray:
    """Each summary customer's purchase days in (``start``, ``end``], in the summary's order.

    Customers without a purchase in the period get 0; purchases of customers not in the
    summary are ignored. Used to compare a model's forecast with a holdout period.
    """
    first, last = _day(start), _day(end)
    if last < first:
        raise InputError(
            "holdout period", f"end {end} is before start {start}; expected start <= end"
        )
    inside = (tx.day > first) & (tx.day <= last)
    position = pd.Index(summary.customer_id).get_indexer(tx.customer_id[inside])
    return np.bincount(position[position >= 0], minlength=len(summary.customer_id))


def write_customers_csv(summary: CustomerSummary, path: str | os.PathLike[str]) -> None:
    """Write ``customer_id,repeat_purchases,recency_days,age_days,mean_spend`` (days; the
    log's currency; ``mean_spend`` empty without repeat purchases), the customers file of
    ``existing_customers``. The file appears whole or not at all."""
    table = pd.DataFrame(
        {
            "customer_id": summary.customer_id,
            "repeat_purchases": summary.x,
            "recency_days": summary.t_x_days,
            "age_days": summary.T_days,
            "mean_spend": summary.mean_spend,
        }
    )
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as out:
            table.to_csv(out, index=False, na_rep="", lineterminator="\n")
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(str(path), f"cannot write the customers file: {exc}") from None
