"""The funnel of a scenario in the form the engines and the analytic module compute with.

:func:`compile_funnel` turns a validated :class:`~funnelsim.scenario.Scenario` into arrays:
stages and their outcomes (union over channels), per-channel probabilities (fixed or
Dirichlet), duration distributions per channel and outcome, the calendar of the horizon and
each channel's daily arrival rate per period, and the opening pipeline. Outcome codes are
stage indices ``0..S-1``, ``S`` for won and ``S+1`` for lost.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date

import numpy as np

from funnelsim import streams
from funnelsim.distributions import _Dist
from funnelsim.scenario import (
    DAYS_PER_MONTH,
    LOST,
    WON,
    Dirichlet,
    Scenario,
    add_months,
    month_label,
    stage_duration,
    stage_next,
)


@dataclass(frozen=True)
class Calendar:
    """Periods (calendar months intersecting the horizon) in days from the start date."""

    start: date
    labels: tuple[str, ...]
    edges: np.ndarray  # P+1 boundaries, days from start; edges[-1] is the horizon
    calendar_month: np.ndarray  # 1..12 per period
    months_from_start: np.ndarray  # whole calendar months from the start month
    month_days: np.ndarray  # length of each period's full calendar month

    @property
    def horizon(self) -> float:
        return float(self.edges[-1])

    @property
    def periods(self) -> int:
        return len(self.labels)

    def period_of(self, t: np.ndarray) -> np.ndarray:
        """Period index of times ``t`` (days) in [0, horizon)."""
        return np.searchsorted(self.edges[1:-1], t, side="right")


def make_calendar(start: date, months: int) -> Calendar:
    end = add_months(start, months)
    labels, edges, cal, k, mdays = [], [0.0], [], [], []
    first = date(start.year, start.month, 1)
    i = 0
    while True:
        month_start = add_months(first, i)
        if month_start >= end:
            break
        month_end = add_months(first, i + 1)
        labels.append(month_label(month_start))
        edges.append(float((min(month_end, end) - start).days))
        cal.append(month_start.month)
        k.append(i)
        mdays.append(calendar.monthrange(month_start.year, month_start.month)[1])
        i += 1
    return Calendar(
        start=start,
        labels=tuple(labels),
        edges=np.asarray(edges),
        calendar_month=np.asarray(cal),
        months_from_start=np.asarray(k),
        month_days=np.asarray(mdays, dtype=float),
    )


@dataclass(frozen=True)
class StageTable:
    """One stage: outcomes, probabilities per channel, durations per channel and outcome."""

    name: str
    index: int
    stable_id: int
    targets: np.ndarray  # outcome codes, union over channels
    probs: np.ndarray  # (C, K) mean probabilities (Dirichlet means for uncertain ones)
    source_of: np.ndarray  # (C,) index into `sources`: which probability spec a channel uses
    sources: tuple[tuple[int, np.ndarray | None], ...]  # (salt part, Dirichlet alpha or None)
    dist_of: np.ndarray  # (C, K) index into `dists`, -1 where the outcome is impossible
    dists: tuple[_Dist, ...]

    @property
    def uncertain(self) -> bool:
        return any(alpha is not None for _, alpha in self.sources)


@dataclass(frozen=True)
class Funnel:
    """Everything an engine needs, as arrays; built once per run from a scenario."""

    stages: tuple[str, ...]
    channels: tuple[str, ...]
    channel_ids: np.ndarray  # stable ids (uint64) of the channel names
    tables: tuple[StageTable, ...]
    calendar: Calendar
    daily_rate: np.ndarray  # (C, P) leads per day for a base volume of 1
    base_volume: tuple[float | _Dist, ...]  # per channel: fixed number or drawn per replication
    deal_value: tuple[_Dist, ...]  # per channel
    # the opening pipeline, one entry per lead
    open_stage: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    open_channel: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    open_age: np.ndarray = field(default_factory=lambda: np.zeros(0))
    open_value: np.ndarray = field(default_factory=lambda: np.zeros(0))  # nan = draw
    open_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    @property
    def won(self) -> int:
        return len(self.stages)

    @property
    def lost(self) -> int:
        return len(self.stages) + 1

    def target_name(self, code: int) -> str:
        if code == self.won:
            return WON
        if code == self.lost:
            return LOST
        return self.stages[code]

    def mean_volume(self, c: int) -> float:
        v = self.base_volume[c]
        return v.expected_value() if isinstance(v, _Dist) else float(v)

    @property
    def has_loops(self) -> bool:
        """Whether a lead can enter some stage twice."""
        n = len(self.stages)
        adj = np.zeros((n, n), dtype=bool)
        for t in self.tables:
            for k, code in enumerate(t.targets):
                if code < n and (t.probs[:, k] > 0).any():
                    adj[t.index, code] = True
        reach = adj.copy()
        for _ in range(n):
            reach = reach | ((reach.astype(int) @ adj.astype(int)) > 0)
        return bool(np.diag(reach).any())


def compile_funnel(scenario: Scenario) -> Funnel:
    stages = tuple(scenario.stages)
    channels = tuple(scenario.channels)
    code = {name: i for i, name in enumerate(stages)}
    code[WON], code[LOST] = len(stages), len(stages) + 1
    tables = []
    for s_index, sname in enumerate(stages):
        sid = streams.stable_id(sname)
        outcomes: dict[str, None] = {}
        for cname in channels:
            nxt = stage_next(scenario, sname, cname)
            for outcome in nxt.dirichlet if isinstance(nxt, Dirichlet) else nxt:
                outcomes[outcome] = None
        names = list(outcomes)
        k_count = len(names)
        probs = np.zeros((len(channels), k_count))
        source_of = np.zeros(len(channels), dtype=np.int64)
        sources: list[tuple[int, np.ndarray | None]] = []
        source_index: dict[int, int] = {}
        dists: list[_Dist] = []
        dist_of = np.full((len(channels), k_count), -1, dtype=np.int64)
        for c, cname in enumerate(channels):
            nxt = stage_next(scenario, sname, cname)
            override = scenario.stages[sname].channels.get(cname)
            part = (
                sid
                if not (override and override.next is not None)
                else sid ^ streams.stable_id(cname)
            )
            if isinstance(nxt, Dirichlet):
                alpha = np.array([nxt.dirichlet.get(n, 0.0) for n in names])
                probs[c] = alpha / alpha.sum()
            else:
                alpha = None
                probs[c] = [nxt.get(n, 0.0) for n in names]
            if part not in source_index:
                source_index[part] = len(sources)
                sources.append((part, alpha))
            source_of[c] = source_index[part]
            duration = stage_duration(scenario, sname, cname)
            for k, n in enumerate(names):
                dist = duration.get(n) if isinstance(duration, dict) else duration
                if dist is None:
                    continue
                if dist not in dists:
                    dists.append(dist)
                dist_of[c, k] = dists.index(dist)
        tables.append(
            StageTable(
                name=sname,
                index=s_index,
                stable_id=sid,
                targets=np.array([code[n] for n in names], dtype=np.int64),
                probs=probs,
                source_of=source_of,
                sources=tuple(sources),
                dist_of=dist_of,
                dists=tuple(dists),
            )
        )
    cal = make_calendar(scenario.start, scenario.months)
    daily = np.zeros((len(channels), cal.periods))
    base: list[float | _Dist] = []
    for c, ch in enumerate(scenario.channels.values()):
        volume = ch.leads_per_month
        if isinstance(volume, dict):  # a monthly plan: expected leads per calendar month
            base.append(1.0)
            planned = np.array([volume.get(label, 0.0) for label in cal.labels])
            daily[c] = planned / cal.month_days
        else:
            base.append(volume)
            season = np.ones(12) if ch.seasonality is None else np.asarray(ch.seasonality)
            growth = (1.0 + ch.growth_per_month) ** cal.months_from_start
            daily[c] = season[cal.calendar_month - 1] * growth / DAYS_PER_MONTH
    leads = scenario.open_leads
    ch_code = {name: i for i, name in enumerate(channels)}
    return Funnel(
        stages=stages,
        channels=channels,
        channel_ids=np.array([streams.stable_id(c) for c in channels], dtype=np.uint64),
        tables=tuple(tables),
        calendar=cal,
        daily_rate=daily,
        base_volume=tuple(base),
        deal_value=tuple(scenario.deal_value_of(c) for c in channels),
        open_stage=np.array([code[x.stage] for x in leads], dtype=np.int64),
        open_channel=np.array([ch_code[x.channel] for x in leads], dtype=np.int64),
        open_age=np.array([x.days_in_stage for x in leads], dtype=float),
        open_value=np.array([np.nan if x.value is None else x.value for x in leads], dtype=float),
        open_ids=np.array([streams.stable_id(x.lead_id) for x in leads], dtype=np.uint64),
    )
