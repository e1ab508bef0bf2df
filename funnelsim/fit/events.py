"""Read a CRM stage history and reconstruct each lead's stays in the funnel's stages.

A stage history has one row per lead per stage entered: ``lead_id,channel,stage,entered_at``
and an optional ``value`` (CSV, or Parquet when the file ends in ``.parquet`` or ``.pq``), the
shape of HubSpot's deal-stage history and Salesforce's opportunity history. A lead closes with
a row at stage ``won`` (its ``value``, the deal's value in the log's currency, required) or
``lost``; a lead without such a row is still open at ``as_of``. ``entered_at`` is a day
``YYYY-MM-DD`` (midnight) or a timestamp ``YYYY-MM-DD HH:MM[:SS]`` whose time is kept: every
duration is in fractional days. Timestamps are read as wall-clock times (an offset such as
``+02:00`` is dropped, as is the zone of a Parquet timestamp).

Rows of one lead are put in time order (at the same time, a close comes last, then the log's
order decides), so a stay lasts from its row to the lead's next row.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelsim.errors import InputError, Problem, did_you_mean
from funnelsim.fit.io import (
    _DIGITS,
    _ISO,
    _STAMP,
    BAD_DATE,
    DATE_FORMS,
    DUPLICATE,  # noqa: F401 -- one of this reader's skip reasons, beside the others
    MALFORMED,
    _blank,
    _date,
    _day,
    _frozen,
    _parse_amounts,
    _shown,
    _sorted,
    _text,
    column_names,
    mark_duplicates,
    missing_columns_message,
    read_table,
    row_problems,
)

COLUMNS = ("lead_id", "channel", "stage", "entered_at", "value")
REQUIRED = COLUMNS[:4]
STAGE_HISTORY = (
    "stage history",
    f"a header {','.join(REQUIRED)}[,value] and a row per stage a lead entered",
)
WON, LOST = "won", "lost"
OPEN_OUTCOME, WON_OUTCOME, LOST_OUTCOME = 0, 1, 2  # values of ``CrmHistory.outcome``
NS_PER_DAY = 86_400 * 10**9

# Why a row was skipped in lenient mode (keys of ``skipped_reasons``); a row with several
# problems is counted once, under the first of these that applies. MALFORMED, BAD_DATE and
# DUPLICATE are the transaction log's reasons.
EMPTY_ID = "empty lead_id"
EMPTY_CHANNEL = "empty channel"
EMPTY_STAGE = "empty stage"
BAD_VALUE = "non-numeric value"
NEGATIVE = "negative value"
NO_VALUE = "won without a value"
UNKNOWN_STAGE = "unknown stage"
# Why a lead was dropped whole in lenient mode (its rows counted under the first that applies).
CLOSED_TWICE = "lead closed twice"
AFTER_CLOSE = "lead has rows after its close"
CHANNEL_CHANGES = "inconsistent channel"
WRONG_ENTRY = "inconsistent stages"

_ZONE = r"\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"  # a timestamp's offset, dropped


@dataclass(frozen=True, eq=False)
class CrmHistory:
    """Each lead's path through the funnel up to the end of ``as_of``, in days from ``start``.

    Per lead (leads in arrival order): ``lead_id``; ``channel`` (index into ``channels``);
    ``arrived``, the days from ``start`` (midnight) to its first row; ``outcome`` (0 open at
    ``as_of``, 1 won, 2 lost); ``closed_at`` (days from ``start``, NaN when open); ``value``,
    the last value given on its rows (a won lead's deal value; NaN when none was given), in
    the log's currency.

    Per stay (one per row entering a stage, re-entries included; grouped by lead in time
    order): ``stay_lead`` (lead index); ``stay_stage`` (index into ``stages``);
    ``stay_entered`` (days from ``start``); ``stay_days``, the time to the lead's next row or,
    for a lead still open, its age at the end of the ``as_of`` day; ``stay_outcome``, where
    the lead went next (a stage index, ``len(stages)`` for won, ``len(stages) + 1`` for lost,
    -1 while still in the stage at ``as_of``); ``stay_visit`` (0 for the lead's first stay in
    the stage, 1 for its first re-entry, ...); ``stay_row``, the log row it came from (CSV:
    the header is row 1; Parquet: data rows from 1), for messages.

    ``skipped_rows`` counts the log rows skipped in lenient mode (bad rows and every row of a
    dropped lead), ``skipped_reasons`` the same rows by reason, ``dropped_leads`` the leads
    dropped whole for an inconsistency.
    """

    source: str
    as_of: date
    start: date
    stages: tuple[str, ...]
    channels: tuple[str, ...]
    currency_values_seen: bool
    lead_id: np.ndarray
    channel: np.ndarray
    arrived: np.ndarray
    outcome: np.ndarray
    closed_at: np.ndarray
    value: np.ndarray
    stay_lead: np.ndarray
    stay_stage: np.ndarray
    stay_entered: np.ndarray
    stay_days: np.ndarray
    stay_outcome: np.ndarray
    stay_visit: np.ndarray
    stay_row: np.ndarray
    skipped_rows: int = 0
    dropped_leads: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.lead_id)

    @property
    def won(self) -> int:
        """The ``stay_outcome`` code of a win."""
        return len(self.stages)

    @property
    def lost(self) -> int:
        """The ``stay_outcome`` code of a loss."""
        return len(self.stages) + 1

    def monthly_arrivals(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """New leads per channel and calendar month, and how much of each month is observed.

        Returns the months ``YYYY-MM`` from ``start``'s to ``as_of``'s, the counts (channels ×
        months) and the exposure (months,): the share of each month's days from ``start`` to
        ``as_of`` inclusive (below 1 for a partly observed first or last month), 0 for a month
        read as a gap in the export (:meth:`export_gaps`).
        """
        months, counts, exposure = self._monthly_arrivals()
        return months, counts, np.where(_gaps(counts, exposure), 0.0, exposure)

    def export_gaps(self) -> list[str]:
        """The months ``YYYY-MM`` without a single new lead in any channel where the rest of
        the history expects more than ``EXPORT_GAP_LEADS`` (a Poisson chance of none below
        1e-6): read as a gap in the export, not as a month without leads, and left out of the
        arrivals' fit."""
        months, counts, exposure = self._monthly_arrivals()
        return [m for m, gap in zip(months, _gaps(counts, exposure), strict=True) if gap]

    def _monthly_arrivals(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        first = np.datetime64(self.start, "M")
        months = np.arange(first, np.datetime64(self.as_of, "M") + 1)
        day = np.datetime64(self.start, "D") + np.floor(self.arrived).astype("timedelta64[D]")
        month = (day.astype("datetime64[M]") - first).astype(np.int64)
        counts = np.zeros((len(self.channels), len(months)), dtype=np.int64)
        np.add.at(counts, (self.channel, month), 1)
        begins = months.astype("datetime64[D]")
        ends = (months + 1).astype("datetime64[D]")
        observed = np.minimum(ends, _day(self.as_of) + 1) - np.maximum(begins, _day(self.start))
        exposure = observed.astype(np.int64) / (ends - begins).astype(np.int64)
        return [str(m) for m in months], counts, exposure

    def open_leads(self) -> list[tuple[str, str, str, float, float | None]]:
        """The leads open at ``as_of``: ``(lead_id, channel, stage, days_in_stage, value)``,
        their last stage and its age at the end of the ``as_of`` day (days), value in the
        log's currency or None: the rows of a scenario's pipeline file."""
        stays = np.flatnonzero(self.stay_outcome < 0)
        return [
            (
                str(self.lead_id[lead]),
                self.channels[self.channel[lead]],
                self.stages[stage],
                float(days),
                None if np.isnan(self.value[lead]) else float(self.value[lead]),
            )
            for lead, stage, days in zip(
                self.stay_lead[stays].tolist(),
                self.stay_stage[stays].tolist(),
                self.stay_days[stays].tolist(),
                strict=True,
            )
        ]


EXPORT_GAP_LEADS = 14.0  # expected new leads above which a month without any is a gap


def _gaps(counts: np.ndarray, exposure: np.ndarray) -> np.ndarray:
    """Months without a new lead where the other months' rate expects more than
    ``EXPORT_GAP_LEADS`` of them (exposure-weighted)."""
    total = counts.sum(axis=0).astype(float)
    busy = (total > 0) & (exposure > 0)
    if not busy.any():
        return np.zeros(total.size, dtype=bool)
    rate = total[busy].sum() / exposure[busy].sum()  # leads per fully observed month
    return (total == 0) & (rate * exposure > EXPORT_GAP_LEADS)


# ---------------------------------------------------------------- reading the history


def read_events(
    path: str | os.PathLike[str],
    *,
    columns: dict[str, str] | None = None,
    stages: list[str] | None = None,
    as_of: date | None = None,
    lenient: bool = False,
    won: str = WON,
    lost: str = LOST,
) -> CrmHistory:
    """Read a stage history ``lead_id,channel,stage,entered_at[,value]`` and rebuild the stays.

    ``columns`` maps the expected names to the log's own, e.g. ``{"lead_id": "Deal ID"}``.
    ``stages`` lists the funnel's stages in order, the first being where new leads enter;
    without it the stages are those seen, ordered by their median position in the leads'
    paths, and leads enter at the most common first stage. ``won`` and ``lost`` name the
    terminal stages as the CRM does (e.g. ``"Closed Won"``; any case). ``as_of`` (default:
    the last day in the log) ends the history: rows after the end of that day are ignored,
    so leads arriving later are absent and leads closing later are open.

    Bad rows (and, among the rows up to ``as_of``, leads closed twice, with rows after their
    close, changing channel or not starting at the entry stage) raise :class:`InputError`
    naming every one, or with ``lenient`` are skipped (the inconsistent leads dropped whole)
    and counted. A history without a lead is always an error.
    """
    source = str(path)
    funnel = _stage_list(stages, source)
    names = column_names(columns, COLUMNS, source)
    frame, rows, malformed = read_table(Path(path), source, STAGE_HISTORY)
    has_values = names["value"] in [str(c) for c in frame.columns]
    frame = _pick_columns(frame, names, source)
    parsed = _parse_rows(_with_outcomes(frame, won, lost, source), rows, funnel)
    wins = int((parsed["closing"] == WON_OUTCOME).sum())
    if wins and not has_values:
        raise InputError(
            source,
            f"no column {names['value']!r}, but the {wins:,} won rows need the deal's value; "
            "expected a value column (other names can be mapped: columns value=Amount)",
        )
    mark_duplicates(parsed, ["lead_id", "channel", "stage", "at", "value"])
    bad = parsed["reason"].notna().to_numpy()
    labels = {n: n if names[n] == n else f"{n} (column {names[n]!r})" for n in COLUMNS}
    problems = malformed + row_problems(
        parsed[bad],
        frame[bad],
        lambda record, raw: _value_messages(record, raw, labels, funnel),
        _duplicate_message,
    )
    reasons = Counter(parsed["reason"][bad].tolist()) + Counter({MALFORMED: len(malformed)})
    good = parsed[~bad]
    if good.empty:
        total = len(parsed) + len(malformed)
        raise InputError(source, _no_rows_problems(total, reasons) + _sorted(problems))

    cutoff = _cutoff(good, as_of, source, [] if lenient else _sorted(problems))
    end = (cutoff + 1).astype("datetime64[ns]")
    before_end = good["at"].to_numpy() < end
    r = _in_lead_order(good[before_end])
    quiet = np.isin(r["lead_id"], parsed["lead_id"][bad].unique())  # leads with a bad row
    entry = funnel[0] if funnel else _most_common_first_stage(r, quiet)
    flags = _lead_flags(r, entry)
    problems = _sorted(problems + _lead_problems(r, flags, entry, inferred=not funnel, quiet=quiet))
    if problems and not lenient:
        raise InputError(source, problems)

    dropped = flags["drop"][r["lead"]]
    reasons.update(flags["reason"][r["lead"][dropped]].tolist())
    r = {name: values[~dropped] for name, values in r.items()}
    skipped_reasons = {reason: n for reason, n in reasons.items() if n}
    if len(r["row"]) == 0:
        message = _no_lead_message(skipped_reasons, int((~before_end).sum()))
        raise InputError(source, [message, *problems])
    return _history(
        r,
        source=source,
        as_of=_date(cutoff),
        end=end,
        stages=funnel or _stage_order(r, entry),
        skipped_reasons=skipped_reasons,
        dropped_leads=int(flags["drop"].sum()),
    )


def _cutoff(good: pd.DataFrame, as_of: Any, source: str, problems: list[Problem]) -> np.datetime64:
    """The last day of the history: ``as_of``, by default the log's last day. An ``as_of``
    before every row is an error (listed before the rows' ``problems``)."""
    first, last = good["at"].min().to_datetime64(), good["at"].max().to_datetime64()
    if as_of is None:
        return last.astype("datetime64[D]")
    if not isinstance(as_of, date):
        raise InputError(
            source, [Problem("as_of", f"{as_of!r} is not a date; expected a date YYYY-MM-DD")]
        )
    cutoff = _day(as_of)
    if cutoff < first.astype("datetime64[D]"):
        late = Problem(
            "as_of",
            f"{_date(cutoff)} is before every lead's first row (the earliest is "
            f"{_date(first)}); expected a date on or after it",
        )
        raise InputError(source, [late, *problems])
    return cutoff


def _stage_list(stages: list[str] | None, source: str) -> tuple[str, ...]:
    """The funnel's stages as given (entry first), or () to infer them from the history."""
    if stages is None:
        return ()
    problems = []
    if isinstance(stages, str) or len(stages) == 0:
        problems.append(
            Problem("stages", f"{stages!r}: expected a list of stage names, entry stage first")
        )
    seen: set[str] = set()
    for name in [] if problems else [str(s).strip() for s in stages]:
        if not name:
            problems.append(Problem("stages", "an empty name; expected stage names"))
        elif name.lower() in (WON, LOST):
            problems.append(
                Problem("stages", f"{name!r} is an outcome; expected the stages before won/lost")
            )
        elif name in seen:
            problems.append(Problem("stages", f"{name!r} is listed twice; expected each once"))
        seen.add(name)
    if problems:
        raise InputError(source, problems)
    return tuple(str(s).strip() for s in stages)


def _pick_columns(frame: pd.DataFrame, names: dict[str, str], source: str) -> pd.DataFrame:
    """The columns under their expected names (``value`` empty when the log has none)."""
    found = [str(c) for c in frame.columns]
    optional = names["value"] == "value"
    missing = [
        name for name in COLUMNS if names[name] not in found and not (name == "value" and optional)
    ]
    if missing:
        raise InputError(
            source,
            missing_columns_message(
                missing,
                names,
                found,
                ",".join(names[name] for name in REQUIRED) + f"[,{names['value']}]",
                "lead_id=Deal ID,stage=Deal stage,entered_at=Date entered",
            ),
        )
    picked = pd.DataFrame(
        {
            name: frame[names[name]] if names[name] in found else pd.Series("", index=frame.index)
            for name in COLUMNS
        }
    )
    return picked


def _with_outcomes(frame: pd.DataFrame, won: str, lost: str, source: str) -> pd.DataFrame:
    """The rows with the CRM's names of the terminal stages read as won and lost."""
    won, lost = str(won).strip(), str(lost).strip()
    if not won or not lost or won.lower() == lost.lower():
        raise InputError(
            source,
            Problem("won/lost", f"{won!r} and {lost!r}: expected two different stage names"),
        )
    if (won.lower(), lost.lower()) == (WON, LOST):
        return frame
    lower = _text(frame["stage"]).str.lower()
    stage = frame["stage"].where(lower != won.lower(), WON)
    return frame.assign(stage=stage.where(lower != lost.lower(), LOST))


def _parse_rows(frame: pd.DataFrame, rows: np.ndarray, funnel: tuple[str, ...]) -> pd.DataFrame:
    """Parsed values with, per row, the first reason it is bad (missing when it is good).

    ``closing`` is 1 for a won row, 2 for a lost one (any case), 0 for a stage.
    """
    lead_id = _text(frame["lead_id"]).to_numpy(dtype=object)
    channel = _text(frame["channel"]).to_numpy(dtype=object)
    stage_text = _text(frame["stage"])
    stage = stage_text.to_numpy(dtype=object)
    lower = stage_text.str.lower().to_numpy(dtype=object)
    closing = np.select([lower == WON, lower == LOST], [WON_OUTCOME, LOST_OUTCOME], 0)
    at = _parse_times(frame["entered_at"])
    blank = (_text(frame["value"]) == "").to_numpy(dtype=bool)
    value = _parse_amounts(frame["value"])
    finite = np.isfinite(value)
    unknown = np.zeros(len(stage), dtype=bool)
    if funnel:
        unknown = (closing == 0) & (stage != "") & ~np.isin(stage, np.array(funnel, dtype=object))
    reason = np.select(
        [
            lead_id == "",
            channel == "",
            stage == "",
            np.isnat(at),
            ~blank & ~finite,
            finite & (value < 0),
            (closing == WON_OUTCOME) & blank,
            unknown,
        ],
        [
            EMPTY_ID,
            EMPTY_CHANNEL,
            EMPTY_STAGE,
            BAD_DATE,
            BAD_VALUE,
            NEGATIVE,
            NO_VALUE,
            UNKNOWN_STAGE,
        ],
        default="",
    )
    return pd.DataFrame(
        {
            "row": rows,
            "lead_id": lead_id,
            "channel": channel,
            "stage": stage,
            "closing": closing,
            "at": at,
            "value": value,
            "reason": pd.Series(reason, dtype=object).replace("", None),
            "repeats": 0,
        }
    )


def _parse_times(values: pd.Series) -> np.ndarray:
    """Each value as a wall-clock time (``datetime64[ns]``), NaT when it is not a date.

    Text is ``YYYY-MM-DD`` (midnight), ``YYYYMMDD`` or a timestamp ``YYYY-MM-DD HH:MM[:SS]``
    (also with ``T``, fractions of a second and an offset, which is dropped).
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        local = values.dt.tz_localize(None) if values.dt.tz is not None else values
        return local.to_numpy().astype("datetime64[ns]")
    text = _text(values)
    iso = text.str.fullmatch(_ISO).to_numpy(dtype=bool)
    stamp = text.str.fullmatch(_STAMP).to_numpy(dtype=bool)
    digits = text.str.fullmatch(_DIGITS).to_numpy(dtype=bool)
    joined = text.str.slice(0, 4) + "-" + text.str.slice(4, 6) + "-" + text.str.slice(6, 8)
    day_text = np.where(iso | stamp, text.str.slice(0, 10), np.where(digits, joined, ""))
    day = pd.to_datetime(pd.Series(day_text, dtype=object), format="%Y-%m-%d", errors="coerce")
    at = day.to_numpy().astype("datetime64[ns]")
    if stamp.any():
        clock = text[stamp].str.slice(11).str.replace(_ZONE, "", regex=True)  # HH:MM[:SS.f]
        hours = pd.to_numeric(clock.str.slice(0, 2)).to_numpy(dtype=float)
        minutes = pd.to_numeric(clock.str.slice(3, 5)).to_numpy(dtype=float)
        seconds = clock.str.slice(6).str.replace(",", ".").replace("", "0")
        seconds = pd.to_numeric(seconds).to_numpy(dtype=float)
        offset = np.round((hours * 3600 + minutes * 60 + seconds) * 1e9).astype(np.int64)
        at[stamp] = at[stamp] + offset.astype("timedelta64[ns]")
        impossible = (hours > 23) | (minutes > 59) | (seconds >= 60)
        at[np.flatnonzero(stamp)[impossible]] = np.datetime64("NaT")
    return at


# ---------------------------------------------------------------- rows: messages


def _value_messages(
    record: dict[str, Any], raw: dict[str, Any], labels: dict[str, str], funnel: tuple[str, ...]
) -> list[str]:
    messages = []
    for name, what in (
        ("lead_id", "the lead's (deal's) id"),
        ("channel", "the channel the lead came from"),
        ("stage", "the stage the lead entered, won or lost"),
    ):
        if record[name] == "":
            messages.append(f"{labels[name]} is empty; expected {what}")
    if pd.isna(record["at"]):
        label = labels["entered_at"]
        messages.append(
            f"{label} is empty; expected a date {DATE_FORMS}"
            if _blank(raw["entered_at"])
            else f"{label} {_shown(raw['entered_at'])} is not a date; expected {DATE_FORMS}"
        )
    value, label = record["value"], labels["value"]
    if _blank(raw["value"]):
        if record["closing"] == WON_OUTCOME:
            messages.append(
                f"{label} is empty on a won row; expected the deal's value in the log's currency"
            )
    elif not np.isfinite(value):
        messages.append(
            f"{label} {_shown(raw['value'])} is not a number; expected the deal's value in the "
            "log's currency"
        )
    elif value < 0:
        messages.append(
            f"{label} {_shown(raw['value'])} is negative; expected a deal value >= 0 in the "
            "log's currency"
        )
    if funnel and record["stage"] and record["closing"] == 0 and record["stage"] not in funnel:
        choices = [*funnel, WON, LOST]
        messages.append(
            f"{labels['stage']} {_shown(raw['stage'])} is not a stage of the funnel"
            f"{did_you_mean(record['stage'], choices)}; expected one of {', '.join(choices)}"
        )
    return messages


def _duplicate_message(record: dict[str, Any], raw: dict[str, Any]) -> str:
    return (
        f"repeats row {record['repeats']} (lead_id {_shown(raw['lead_id'])}, stage "
        f"{_shown(raw['stage'])}, entered_at {_shown(raw['entered_at'])}); expected each "
        "stage entry once"
    )


def _no_rows_problems(total: int, reasons: Counter) -> list[Problem]:
    if total == 0:
        return [Problem("", "the history has no rows; expected a row per stage a lead entered")]
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common() if n)
    return [Problem("", f"no valid row: all {_rows(total)} were skipped ({counts})")]


def _no_lead_message(skipped_reasons: dict[str, int], later: int) -> Problem:
    counts = ", ".join(f"{n} {reason}" for reason, n in Counter(skipped_reasons).most_common())
    ignored = f"; {_rows(later)} after as_of ignored" if later else ""
    skipped = _rows(sum(skipped_reasons.values()))
    return Problem("", f"no lead left: {skipped} skipped ({counts}){ignored}")


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


# ---------------------------------------------------------------- leads: order and checks


def _in_lead_order(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The rows sorted by lead (in arrival order, then lead_id) then time, a close last at
    its time, then the log's order; ``lead`` numbers the leads 0, 1, ... in that order."""
    code, _ = pd.factorize(rows["lead_id"], sort=True)
    at = rows["at"].to_numpy().astype(np.int64)
    first = pd.Series(at).groupby(code).transform("min").to_numpy()
    closing = rows["closing"].to_numpy()
    row = rows["row"].to_numpy()
    order = np.lexsort((row, closing > 0, at, code, first))
    code = code[order]
    new_lead = np.ones(len(code), dtype=bool)
    new_lead[1:] = code[1:] != code[:-1]
    return {
        "lead": np.cumsum(new_lead) - 1,
        "lead_id": rows["lead_id"].to_numpy(dtype=object)[order],
        "channel": rows["channel"].to_numpy(dtype=object)[order],
        "stage": rows["stage"].to_numpy(dtype=object)[order],
        "closing": closing[order],
        "at": at[order],
        "value": rows["value"].to_numpy(dtype=float)[order],
        "row": row[order],
    }


def _starts(lead: np.ndarray) -> np.ndarray:
    """Index of each lead's first row (rows sorted by lead)."""
    return np.flatnonzero(np.diff(lead, prepend=-1))


def _most_common_first_stage(r: dict[str, np.ndarray], quiet: np.ndarray) -> str | None:
    """The stage most leads enter first (ties: the earliest lead's), leaving out leads with a
    bad row; None when no lead enters a stage."""
    first = _starts(r["lead"])
    first = first[r["closing"][first] == 0]
    if (~quiet[first]).any():
        first = first[~quiet[first]]
    if len(first) == 0:
        return None
    code, stages = pd.factorize(r["stage"][first])  # codes in order of first appearance
    return str(stages[np.argmax(np.bincount(code))])


def _lead_flags(r: dict[str, np.ndarray], entry: str | None) -> dict[str, np.ndarray]:
    """Per row the inconsistencies it shows; per lead whether it is dropped and why."""
    lead, closing, at = r["lead"], r["closing"], r["at"]
    starts = _starts(lead)
    first_row = starts[lead]
    closes = closing > 0
    n_closes = pd.Series(closes).groupby(lead).cumsum().to_numpy()
    first_close = np.full(len(starts), -1, dtype=np.int64)
    close_rows = np.flatnonzero(closes)
    leads_closed, at_first = np.unique(lead[close_rows], return_index=True)
    first_close[leads_closed] = close_rows[at_first]
    closed_at = np.where(first_close[lead] >= 0, at[np.maximum(first_close[lead], 0)], np.inf)
    flags = {
        CLOSED_TWICE: closes & (n_closes > 1),
        AFTER_CLOSE: ~closes & (at > closed_at),
        CHANNEL_CHANGES: r["channel"] != r["channel"][first_row],
        WRONG_ENTRY: (np.arange(len(lead)) == first_row) & (r["stage"] != entry),
    }
    reason = np.full(len(starts), None, dtype=object)
    for name in reversed(list(flags)):  # the first that applies wins
        reason[np.unique(lead[flags[name]])] = name
    return {**flags, "reason": reason, "drop": pd.notna(reason), "first_close": first_close}


def _lead_problems(
    r: dict[str, np.ndarray],
    flags: dict[str, np.ndarray],
    entry: str | None,
    *,
    inferred: bool,
    quiet: np.ndarray,
) -> list[Problem]:
    """One problem per inconsistent row (the loop formats messages only), except for rows in
    ``quiet`` (leads with a bad row, whose inconsistencies may come from it)."""
    starts = _starts(r["lead"])
    problems = []
    for i in np.flatnonzero((flags[CLOSED_TWICE] | flags[AFTER_CLOSE]) & ~quiet).tolist():
        lead = r["lead"][i]
        close = flags["first_close"][lead]
        how = WON if r["closing"][close] == WON_OUTCOME else LOST
        if flags[CLOSED_TWICE][i]:
            message = (
                f"lead {r['lead_id'][i]} is closed twice ({how} at row {r['row'][close]}); "
                "expected one won or lost row per lead"
            )
        else:
            message = (
                f"lead {r['lead_id'][i]} enters {r['stage'][i]!r} on {_when(r['at'][i])}, after "
                f"it was {how} at row {r['row'][close]} ({_when(r['at'][close])}); expected a "
                "lead's won or lost row to be its last (events out of order)"
            )
        problems.append(Problem(f"row {r['row'][i]}", message))
    for i in np.flatnonzero(flags[CHANNEL_CHANGES] & ~quiet).tolist():
        first = starts[r["lead"][i]]
        problems.append(
            Problem(
                f"row {r['row'][i]}",
                f"inconsistent channel: lead {r['lead_id'][i]} comes from "
                f"{r['channel'][i]!r} here but from {r['channel'][first]!r} at row "
                f"{r['row'][first]}; expected one channel per lead",
            )
        )
    for i in np.flatnonzero(flags[WRONG_ENTRY] & ~quiet).tolist():
        stage = r["stage"][i]
        if entry is None:
            message = (
                f"inconsistent stages: lead {r['lead_id'][i]} starts at {stage!r}, but no lead "
                "enters a stage; expected each lead's rows from the stage it entered first"
            )
        else:
            why = (
                f"{entry!r} is the most common first stage; name the funnel's stages to choose"
                if inferred
                else f"{entry!r} is the first of the funnel's stages"
            )
            message = (
                f"inconsistent stages: lead {r['lead_id'][i]} starts at {stage!r}, but leads "
                f"enter at {entry!r}; expected every lead's first row at {entry!r} ({why})"
            )
        problems.append(Problem(f"row {r['row'][i]}", message))
    return problems


def _when(at_ns: np.int64) -> str:
    """A time as the log would write it: the day alone at midnight."""
    stamp = pd.Timestamp(int(at_ns))
    return str(stamp.date()) if stamp == stamp.normalize() else str(stamp)


def _stage_order(r: dict[str, np.ndarray], entry: str | None) -> tuple[str, ...]:
    """The stages seen, the entry stage first, then by median position in the leads' paths
    (ties: mean position, then name)."""
    position = np.arange(len(r["lead"])) - _starts(r["lead"])[r["lead"]]
    stays = r["closing"] == 0
    table = pd.DataFrame({"stage": r["stage"][stays], "position": position[stays]})
    by_stage = table.groupby("stage")["position"].agg(["median", "mean"])
    by_stage["later"] = by_stage.index != entry
    by_stage["name"] = by_stage.index
    return tuple(by_stage.sort_values(["later", "median", "mean", "name"]).index.astype(str))


# ---------------------------------------------------------------- the history


def _history(
    r: dict[str, np.ndarray],
    *,
    source: str,
    as_of: date,
    end: np.datetime64,
    stages: tuple[str, ...],
    skipped_reasons: dict[str, int],
    dropped_leads: int,
) -> CrmHistory:
    """Per-lead and per-stay arrays from valid rows sorted by lead then time."""
    lead = np.cumsum(np.diff(r["lead"], prepend=-1) != 0) - 1  # renumbered after drops
    starts = _starts(lead)
    lasts = np.append(starts[1:], len(lead)) - 1
    at = r["at"]
    start = at[starts].min().astype("datetime64[ns]").astype("datetime64[D]")
    origin = start.astype("datetime64[ns]").astype(np.int64)
    days = (at - origin) / NS_PER_DAY
    outcome = r["closing"][lasts]
    channels = tuple(sorted(set(r["channel"][starts].tolist())))
    value = pd.Series(r["value"]).groupby(lead).last().to_numpy(dtype=float)

    stays = np.flatnonzero(r["closing"] == 0)
    stage = pd.Index(stages).get_indexer(r["stage"][stays])
    censored = stays == lasts[lead[stays]]
    following = np.minimum(stays + 1, len(lead) - 1)
    following_stage = pd.Index(stages).get_indexer(r["stage"][following])
    closing_next = r["closing"][following]
    going = np.where(closing_next > 0, len(stages) - 1 + closing_next, following_stage)
    stay_end = np.where(censored, end.astype(np.int64), at[following])
    visit = (
        pd.DataFrame({"lead": lead[stays], "stage": stage}).groupby(["lead", "stage"]).cumcount()
    )
    return CrmHistory(
        source=source,
        as_of=as_of,
        start=_date(start),
        stages=tuple(stages),
        channels=channels,
        currency_values_seen=bool(np.isfinite(r["value"]).any()),
        lead_id=_frozen(r["lead_id"][starts]),
        channel=_frozen(np.searchsorted(channels, r["channel"][starts]).astype(np.int64)),
        arrived=_frozen(days[starts]),
        outcome=_frozen(outcome.astype(np.int64)),
        closed_at=_frozen(np.where(outcome > 0, days[lasts], np.nan)),
        value=_frozen(value),
        stay_lead=_frozen(lead[stays].astype(np.int64)),
        stay_stage=_frozen(stage.astype(np.int64)),
        stay_entered=_frozen(days[stays]),
        stay_days=_frozen((stay_end - at[stays]) / NS_PER_DAY),
        stay_outcome=_frozen(np.where(censored, -1, going).astype(np.int64)),
        stay_visit=_frozen(visit.to_numpy(dtype=np.int64)),
        stay_row=_frozen(r["row"][stays].astype(np.int64)),
        skipped_rows=sum(skipped_reasons.values()),
        dropped_leads=dropped_leads,
        skipped_reasons=skipped_reasons,
    )


# ---------------------------------------------------------------- output


def write_open_leads_csv(history: CrmHistory, path: str | os.PathLike[str]) -> None:
    """Write ``lead_id,channel,stage,days_in_stage,value`` for the leads open at ``as_of``
    (days; the log's currency, empty when unknown): a scenario's pipeline file. The file
    appears whole or not at all."""
    table = pd.DataFrame(
        history.open_leads(), columns=["lead_id", "channel", "stage", "days_in_stage", "value"]
    )
    target = Path(path)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as out:
            table.to_csv(out, index=False, na_rep="", lineterminator="\n")
        os.replace(temporary, target)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise InputError(str(path), f"cannot write the pipeline file: {exc}") from None
