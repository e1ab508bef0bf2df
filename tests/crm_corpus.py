"""A corpus of degenerate and messy CRM stage histories, for ``tests/test_fit_corpus.py``.

Each case is a function ``(path) -> Case`` writing one history as a CSV
``lead_id,channel,stage,entered_at,value`` and saying what to expect of ``funnelsim fit
--events`` on it. The histories come from one small simulated funnel (funnelsim's own engine,
:func:`funnelsim.fit.synthetic.history_rows`, fixed seeds: the same file every time), then
degraded in one way each, the way real exports are: a fixed deal value, a channel that never
wins, a stage left once, a handful of leads, gaps, dates without times, no ``lost`` rows.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path

from funnelsim import scenario_from_dict

Row = tuple[str, str, str, str, str]  # lead_id, channel, stage, entered_at, value

AS_OF = date(2026, 4, 30)  # four months of history for most cases

BASE = {
    "version": 1,
    "name": "corpus base",
    "start": "2026-01-01",
    "months": 4,
    "seed": 5,
    "currency": "USD",
    "channels": {
        "web": {
            "leads_per_month": 150,
            "deal_value": {"dist": "lognormal", "median": 4000, "sigma": 0.5},
        },
        "partner": {
            "leads_per_month": 60,
            "deal_value": {"dist": "lognormal", "median": 9000, "sigma": 0.4},
        },
    },
    "stages": {
        "new": {
            "duration": {"dist": "lognormal", "median": 4, "sigma": 0.6},
            "next": {"qualified": 0.6, "lost": 0.4},
        },
        "qualified": {
            "duration": {"dist": "gamma", "mean": 10, "shape": 2},
            "next": {"proposal": 0.5, "lost": 0.5},
        },
        "proposal": {
            "duration": {"dist": "lognormal", "median": 12, "sigma": 0.5},
            "next": {"won": 0.4, "lost": 0.6},
            "channels": {"partner": {"next": {"won": 0.6, "lost": 0.4}}},
        },
    },
}


@dataclass(frozen=True)
class Case:
    """What to expect: ``exit_codes`` allowed; for a refused history (exit 2), words the one
    message must contain (the stage, channel or parameter and why)."""

    as_of: date = AS_OF
    exit_codes: tuple[int, ...] = (0, 3)
    message: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()  # further CLI options
    says: tuple[str, ...] = ()  # words a fit's report must contain (what it noticed)


@cache
def _base_rows(months: int = 4, seed: int = 1) -> tuple[Row, ...]:
    scenario = scenario_from_dict({**BASE, "months": months})
    from funnelsim.fit.synthetic import history_rows

    return tuple(history_rows(scenario, seed=seed))


def _write(path: Path, rows: list[Row] | tuple[Row, ...]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["lead_id", "channel", "stage", "entered_at", "value"])
        writer.writerows(rows)


def _leads(rows) -> dict[str, list[Row]]:
    by_lead: dict[str, list[Row]] = {}
    for row in rows:
        by_lead.setdefault(row[0], []).append(row)
    return by_lead


def _at(row: Row) -> datetime:
    return datetime.fromisoformat(row[3])


def _lose(row: Row) -> Row:
    """A won row turned into a lost one (no value)."""
    return (row[0], row[1], "lost", row[3], "") if row[2] == "won" else row


# ---------------------------------------------------------------- the cases


def equal_values(path: Path) -> Case:
    """Every won deal is worth exactly 5,000: a fixed price list, no spread to fit (sigma 0)."""
    _write(path, [(*r[:4], "5000.00") if r[2] == "won" else r for r in _base_rows()])
    return Case(says=("channel web: every won deal is worth 5,000, a fixed value",))


def one_channel_equal_values(path: Path) -> Case:
    """The partner channel's deals are all worth 12,000 (a fixed fee), web's vary."""
    rows = [(*r[:4], "12000") if r[2] == "won" and r[1] == "partner" else r for r in _base_rows()]
    _write(path, rows)
    return Case(says=("channel partner: every won deal is worth 12,000, a fixed value",))


def channel_without_wins(path: Path) -> Case:
    """The partner channel never wins: every one of its closes is a loss, so it has no deal
    value at all (its value prior must come from the other channels)."""
    _write(path, [_lose(r) if r[1] == "partner" else r for r in _base_rows()])
    return Case()


def channel_with_two_wins(path: Path) -> Case:
    """The partner channel wins twice (with different values); its other wins are losses."""
    rows, wins = [], 0
    for r in _base_rows():
        if r[1] == "partner" and r[2] == "won":
            wins += 1
            if wins > 2:
                r = _lose(r)
        rows.append(r)
    _write(path, rows)
    return Case()


def channel_with_one_win(path: Path) -> Case:
    """The partner channel wins once: one deal value, no spread to estimate from it."""
    rows, wins = [], 0
    for r in _base_rows():
        if r[1] == "partner" and r[2] == "won":
            wins += 1
            if wins > 1:
                r = _lose(r)
        rows.append(r)
    _write(path, rows)
    return Case()


def channel_with_three_leads(path: Path) -> Case:
    """A 'referral' channel with three leads in four months (one won, one lost, one open)."""
    rows = list(_base_rows())
    rows += [
        ("R1", "referral", "new", "2026-01-10 09:00:00", ""),
        ("R1", "referral", "qualified", "2026-01-14 10:00:00", ""),
        ("R1", "referral", "proposal", "2026-01-25 11:00:00", ""),
        ("R1", "referral", "won", "2026-02-10 12:00:00", "7000.00"),
        ("R2", "referral", "new", "2026-02-20 09:00:00", ""),
        ("R2", "referral", "lost", "2026-02-23 09:00:00", ""),
        ("R3", "referral", "new", "2026-04-20 09:00:00", ""),
    ]
    _write(path, rows)
    return Case()


def _with_legal(rows, *, completed: int) -> list[Row]:
    """A 'legal' stage between proposal and won: ``completed`` won leads pass through it and
    leave it; four proposals still open at --as-of are in it."""
    by_lead = _leads(rows)
    out: list[Row] = []
    passed = 0
    opened = 0
    for rows_of in by_lead.values():
        last = rows_of[-1]
        if last[2] == "won" and passed < completed and _at(last) < datetime(2026, 4, 1):
            passed += 1
            legal = _at(last) - timedelta(days=3)
            rows_of = [*rows_of[:-1], (*last[:2], "legal", legal.isoformat(sep=" "), ""), last]
        elif last[2] == "proposal" and opened < 4:
            opened += 1
            legal = min(_at(last) + timedelta(hours=6), datetime(2026, 4, 30, 20))
            rows_of = [*rows_of, (*last[:2], "legal", legal.isoformat(sep=" "), "")]
        out += rows_of
    return out


def stage_with_one_exit(path: Path) -> Case:
    """A 'legal' stage left by a single lead (to won); four more sit in it, open."""
    rows = [r for r in _base_rows() if _at(r) < datetime(2026, 5, 1)]
    _write(path, _with_legal(rows, completed=1))
    return Case()


def stage_never_left(path: Path) -> Case:
    """A 'legal' stage that four open leads entered and none has left: its outcomes cannot be
    fitted; the fit must say so, naming the stage."""
    rows = [r for r in _base_rows() if _at(r) < datetime(2026, 5, 1)]
    _write(path, _with_legal(rows, completed=0))
    return Case(exit_codes=(2,), message=("legal", "no lead has left stage"))


def one_month(path: Path) -> Case:
    """One month of history (January): one arrival count per channel, no trend to test, and
    most leads still open."""
    _write(path, [r for r in _base_rows() if _at(r) < datetime(2026, 2, 1)])
    return Case(as_of=date(2026, 1, 31))


def timestamps_with_offsets(path: Path) -> Case:
    """Timestamps with a 'T', fractions of a second and a UTC offset (dropped: wall clock)."""
    rows = [
        (*r[:3], _at(r).isoformat(timespec="milliseconds") + "+02:00", r[4]) for r in _base_rows()
    ]
    _write(path, rows)
    return Case()


def dates_without_times(path: Path) -> Case:
    """Days only, no times: many stays last 0 days (entered and left on one day)."""
    _write(path, [(*r[:3], _at(r).date().isoformat(), r[4]) for r in _base_rows()])
    return Case()


def month_without_leads(path: Path) -> Case:
    """February has no new lead at all (an export gap): its leads are removed whole."""
    by_lead = _leads(_base_rows())
    rows = [
        r
        for rows_of in by_lead.values()
        if not datetime(2026, 2, 1) <= _at(rows_of[0]) < datetime(2026, 3, 1)
        for r in rows_of
    ]
    _write(path, rows)
    return Case(says=("no lead at all in 2026-02: read as a gap in the export",))


def no_recorded_losses(path: Path) -> Case:
    """The CRM records no losses: every ``lost`` row is missing, leads that go nowhere just
    stop (they look open, ever older): the fit finds them silent."""
    _write(path, [r for r in _base_rows() if r[2] != "lost"])
    return Case(says=("of leads leave unrecorded",))


def values_missing_but_one(path: Path) -> Case:
    """Only the first won row has a value; the others are empty: refused, naming the rows."""
    rows, seen = [], False
    for r in _base_rows():
        if r[2] == "won":
            if seen:
                r = (*r[:4], "")
            seen = True
        rows.append(r)
    _write(path, rows)
    return Case(exit_codes=(2,), message=("value is empty on a won row",))


def equal_durations(path: Path) -> Case:
    """Every stay in 'qualified' lasts exactly 7 days (an automated step): a duration with no
    spread, which no family with a spread fits: refused, naming the stage."""
    by_lead = _leads(_base_rows())
    rows: list[Row] = []
    for rows_of in by_lead.values():
        shift = timedelta(0)
        for i, r in enumerate(rows_of):
            r = (*r[:3], (_at(r) + shift).isoformat(sep=" "), r[4])
            if r[2] == "qualified" and i + 1 < len(rows_of):
                shift += _at(r) + timedelta(days=7) - (_at(rows_of[i + 1]) + shift)
            rows.append(r)
    _write(path, [r for r in rows if _at(r) < datetime(2026, 5, 1)])
    return Case(exit_codes=(2,), message=("stage qualified", "lasted exactly 7 days"))


CASES: dict[str, Callable[[Path], Case]] = {
    f.__name__: f
    for f in (
        equal_values,
        one_channel_equal_values,
        channel_without_wins,
        channel_with_one_win,
        channel_with_two_wins,
        channel_with_three_leads,
        stage_with_one_exit,
        stage_never_left,
        one_month,
        timestamps_with_offsets,
        dates_without_times,
        month_without_leads,
        no_recorded_losses,
        values_missing_but_one,
        equal_durations,
    )
}
