"""The funnel of a scenario in the form the engines and the analytic module compute with.

:func:`compile_funnel` turns a validated :class:`~funnelsim.scenario.Scenario` into arrays:
stages and their outcomes (union over channels), per-channel probabilities (fixed or
Dirichlet), duration distributions per channel and outcome, the calendar of the horizon and
each channel's daily arrival rate per period, and the opening pipeline. Outcome codes are
stage indices ``0..S-1``, ``S`` for won, ``S+1`` for lost and ``S+2`` for silent_loss (a loss
the CRM never records: no duration, ``dist_of`` −1).
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from funnelsim import streams
from funnelsim.distributions import Fixed, _Dist
from funnelsim.scenario import (
    DAYS_PER_MONTH,
    LOST,
    SILENT_LOSS,
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

    @functools.cached_property
    def _day_period(self) -> np.ndarray:
        days = np.arange(int(round(self.horizon)) + 1)
        return np.searchsorted(self.edges[1:], days, side="right")

    def period_or_after(self, t: np.ndarray) -> np.ndarray:
        """Period of times ``t`` (days ≥ 0), or P at or after the horizon: a table lookup by
        whole day (period edges are whole days), faster than a search."""
        table = self._day_period
        return table[np.minimum(t, table.size - 1).astype(np.intp)]


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
    dist_of: np.ndarray  # (C, K) index into `dists`, -1: impossible, or silent_loss
    dists: tuple[_Dist, ...]
    # days after which a lead still in the stage is closed as lost (inf: never)
    stale_after: float = float("inf")

    @property
    def uncertain(self) -> bool:
        return any(alpha is not None for _, alpha in self.sources)


@dataclass(frozen=True)
class Team:
    """The sales team, compiled: which stages reps work and how the team changes.

    ``changes`` lists, in time order, (day, rep, slots, skill, active): from ``day`` rep
    ``rep`` has ``slots`` slots and ``skill``, and takes new leads if ``active``. Day-0
    entries are the team at the start. A hired rep ramps from half to full slots and skill in
    monthly steps over ``ramp_months`` (slots rounded down, at least 1).
    """

    worked: np.ndarray  # (S,) bool: stage occupies a slot of the lead's rep
    leads_per_rep: int
    patience: _Dist | None
    highest_value_first: bool
    size: int  # the most reps the team ever has
    changes: tuple[tuple[float, int, int, float, bool], ...]
    rep_per_month: float | None
    rep_months: np.ndarray  # (P,) rep-months paid in each period (team size × share of month)


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
    team: Team | None = None
    budget: np.ndarray | None = None  # (C, P) fixed marketing spend per period (currency)
    cost_per_lead: np.ndarray | None = None  # (C,) spend per realised lead when no budget
    repeat: Any = None  # the scenario's repeat model (customers.py simulates it)
    existing_count: int = 0  # a fresh cohort of existing customers
    history: Any = None  # or existing customers with their histories (CustomerHistory)
    posterior: Any = None  # joint draws of the repeat parameters, {name: array}
    # (C,) word of mouth: leads per active customer per month (times daily_rate's profile)
    referral: np.ndarray | None = None

    @property
    def won(self) -> int:
        return len(self.stages)

    @property
    def lost(self) -> int:
        return len(self.stages) + 1

    @property
    def silent(self) -> int:
        """The code of silent_loss: the lead leaves at once and no loss is recorded."""
        return len(self.stages) + 2

    @property
    def has_silent_loss(self) -> bool:
        """Whether some stage can lose a lead silently, i.e. lists silent_loss and has no
        ``stale_after`` (whose rule closes such leads as lost): then forecasts have
        ``silent_lost``."""
        return any(
            (t.targets == self.silent).any() and not np.isfinite(t.stale_after) for t in self.tables
        )

    def target_name(self, code: int) -> str:
        if code == self.won:
            return WON
        if code == self.lost:
            return LOST
        if code == self.silent:
            return SILENT_LOSS
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
    code[WON], code[LOST], code[SILENT_LOSS] = len(stages), len(stages) + 1, len(stages) + 2
    tables = []
    for s_index, sname in enumerate(stages):
        sid = streams.stable_id(sname)
        outcomes: dict[str, None] = {}
        for cname in channels:
            nxt = stage_next(scenario, sname, cname)
            for outcome in nxt.dirichlet if isinstance(nxt, Dirichlet) else nxt:
                outcomes[outcome] = None
        team = scenario.sales_team
        if team is not None and sname in team.stages and LOST not in outcomes:
            outcomes[LOST] = None  # a rep with skill below 1 loses some leads here
        stale_after = scenario.stages[sname].stale_after
        if stale_after is not None and LOST not in outcomes:
            outcomes[LOST] = None  # leads that go stale here are lost
        names = list(outcomes)
        k_count = len(names)
        probs = np.zeros((len(channels), k_count))
        source_of = np.zeros(len(channels), dtype=np.int64)
        sources: list[tuple[int, np.ndarray | None]] = []
        source_index: dict[int, int] = {}
        dists: list[_Dist] = []
        # one entry per distinct duration; per-outcome durations never share one, so a
        # posterior can give each outcome its own draws
        dist_keys: list[tuple[str | None, _Dist]] = []
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
                if dist is None or n == SILENT_LOSS:  # a silent loss takes no time
                    continue
                key = (n if isinstance(duration, dict) else None, dist)
                if key not in dist_keys:
                    dist_keys.append(key)
                    dists.append(dist)
                dist_of[c, k] = dist_keys.index(key)
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
                stale_after=float("inf") if stale_after is None else float(stale_after),
            )
        )
    cal = make_calendar(scenario.start, scenario.months)
    daily = np.zeros((len(channels), cal.periods))
    base: list[float | _Dist] = []
    channel_costs = scenario.costs.channels if scenario.costs else {}
    budget = np.zeros((len(channels), cal.periods))  # marketing spend per period (currency)
    per_lead = np.zeros(len(channels))  # spend per realised lead (currency)
    referral = np.zeros(len(channels))
    for c, (name, ch) in enumerate(scenario.channels.items()):
        cost = channel_costs.get(name)
        volume = ch.leads_per_month
        if ch.leads_per_active_customer_per_month is not None:  # word of mouth: no base volume
            referral[c], volume = ch.leads_per_active_customer_per_month, 0.0
        if cost is not None and cost.budget_per_month is not None:
            budget[c] = cost.budget_per_month * np.diff(cal.edges) / cal.month_days
            if volume is None:  # money-driven: the budget buys leads at cost_per_lead
                volume = cost.budget_per_month / cost.cost_per_lead
        elif cost is not None and cost.cost_per_lead is not None:
            per_lead[c] = cost.cost_per_lead
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
    existing = scenario.existing_customers
    return Funnel(
        team=_compile_team(scenario, cal),
        budget=budget,
        cost_per_lead=per_lead,
        repeat=scenario.repeat,
        existing_count=getattr(existing, "count", 0),
        history=scenario.customer_history,
        posterior=scenario.posterior_draws,
        referral=referral if referral.any() else None,
        stages=stages,
        channels=channels,
        channel_ids=np.array([streams.stable_id(c) for c in channels], dtype=np.uint64),
        tables=tuple(tables),
        calendar=cal,
        daily_rate=daily,
        base_volume=tuple(base),
        # a subscription without a one-off fee: the first payment is the price alone
        deal_value=tuple(scenario.deal_value_of(c) or Fixed(value=0.0) for c in channels),
        open_stage=np.array([code[x.stage] for x in leads], dtype=np.int64),
        open_channel=np.array([ch_code[x.channel] for x in leads], dtype=np.int64),
        open_age=np.array([x.days_in_stage for x in leads], dtype=float),
        open_value=np.array([np.nan if x.value is None else x.value for x in leads], dtype=float),
        open_ids=np.array([streams.stable_id(x.lead_id) for x in leads], dtype=np.uint64),
    )


def _compile_team(scenario: Scenario, cal: Calendar) -> Team | None:
    team = scenario.sales_team
    if team is None:
        return None
    size = max([team.reps] + [h.reps for h in team.hiring])
    skill = list(team.skill) + [1.0] * max(0, size - len(team.skill))
    full = team.leads_per_rep
    changes: list[tuple[float, int, int, float, bool]] = [
        (0.0, r, full, skill[r], True) for r in range(team.reps)
    ]
    current = team.reps
    start = scenario.start
    # team size in effect on each day, for what the reps cost
    horizon = int(round(cal.horizon))
    size_on_day = np.full(horizon, float(team.reps))
    for hire in team.hiring:
        day = float((hire.from_ - start).days)
        size_on_day[int(day) :] = hire.reps
        if hire.reps < current:
            changes += [(day, r, full, skill[r], False) for r in range(hire.reps, current)]
        for r in range(current, hire.reps):
            steps = hire.ramp_months
            for k in range(steps + 1):
                share = 1.0 if steps == 0 else 0.5 + 0.5 * k / steps
                when = float((add_months(hire.from_, k) - start).days)
                if when >= cal.horizon:
                    break
                slots = max(1, int(full * share + 1e-9))
                changes.append((when, r, slots, skill[r] * share, True))
        current = hire.reps
    changes.sort(key=lambda change: change[0])
    rep_months = np.array(
        [
            size_on_day[int(cal.edges[p]) : int(cal.edges[p + 1])].sum() / cal.month_days[p]
            for p in range(cal.periods)
        ]
    )
    costs = scenario.costs
    return Team(
        worked=np.array([name in team.stages for name in scenario.stages]),
        leads_per_rep=full,
        patience=team.patience,
        highest_value_first=team.queue == "highest_value_first",
        size=size,
        changes=tuple(changes),
        rep_per_month=None if costs is None else costs.rep_per_month,
        rep_months=rep_months,
    )
