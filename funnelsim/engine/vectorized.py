"""The vectorized engine: whole batches of replications as NumPy arrays.

Exact, not an approximation, whenever leads do not interact (no shared sales-team
capacity): every lead's stays are drawn from its own key exactly as the DES draws them.
Leads wait in a queue per stage; each pass takes every stage's queue in funnel order, draws
the outcomes and durations of all its stays at once (all replications of the batch
together), books what closed and hands the rest to the next stages' queues. A loop-free
funnel takes one pass; loops take as many as the longest route. Pure: a funnel and
replication keys in, a tally out.

Counts are kept per *cell* ``rc = replication × channels + channel`` and period, so each
booking is one ``bincount``; they are reshaped into a :class:`Tally` at the end.
"""

from __future__ import annotations

import numpy as np

from funnelsim.engine.common import (
    Cohort,
    StayDraws,
    Tally,
    arrivals,
    draw_inputs,
    opening_leads,
)
from funnelsim.funnel import Funnel

_FIELDS = ("rc", "t_in", "p_in", "key", "born", "value", "visits")


class _Stays:
    """Stays of one stage: parallel arrays, one entry per lead.

    ``rc`` is the lead's replication × channels + channel; ``p_in`` the period the stay
    began in; ``born`` the arrival time (NaN for the opening pipeline); ``value`` a known
    deal value (NaN: draw it; the array is None when no lead has one); ``visits`` (loops
    only) counts each lead's earlier stays per stage.
    """

    __slots__ = _FIELDS

    def __init__(self, rc, t_in, p_in, key, born, value, visits):
        self.rc, self.t_in, self.p_in, self.key = rc, t_in, p_in, key
        self.born, self.value, self.visits = born, value, visits

    def take(self, index: np.ndarray) -> _Stays:
        columns = (getattr(self, name) for name in _FIELDS)
        return _Stays(*(None if a is None else a[index] for a in columns))

    @staticmethod
    def join(parts: list[_Stays]) -> _Stays:
        if len(parts) == 1:
            return parts[0]
        columns = []
        for name in _FIELDS:
            values = [getattr(p, name) for p in parts]
            columns.append(None if values[0] is None else np.concatenate(values))
        return _Stays(*columns)


class _Run:
    """One batch: the stage queues and the counts, filled stage by stage."""

    def __init__(self, funnel: Funnel, draws: StayDraws, reps: int):
        self.funnel, self.draws = funnel, draws
        cal = funnel.calendar
        self.periods, self.stages = cal.periods, len(funnel.stages)
        self.channels = len(funnel.channels)
        self.reps = reps
        self.cells = reps * self.channels
        flows = (self.cells, self.periods)
        self.leads, self.won, self.lost = np.zeros(flows), np.zeros(flows), np.zeros(flows)
        self.revenue, self.cycle_days = np.zeros(flows), np.zeros(flows)
        self.cycle_count, self.silent = np.zeros(flows), np.zeros(flows)
        self.silent_by_stage = np.zeros((self.stages, self.cells, self.periods))
        # per stage, per cell and period (P: after the horizon): stays begun (the opening
        # pipeline's in period 0), stays ended, and the days of the stays begun
        stock = (self.stages, self.cells, self.periods + 1)
        self.started, self.opening = np.zeros(stock), np.zeros(stock)
        self.ended, self.stay_days = np.zeros(stock), np.zeros(stock)
        self.queues: list[list[_Stays]] = [[] for _ in range(self.stages)]
        self.targets = [t.targets.tolist() for t in funnel.tables]
        self.loops = funnel.has_loops
        self.known_values = bool(np.isfinite(funnel.open_value).any())
        self.won_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # new customers

    def period(self, t: np.ndarray) -> np.ndarray:
        """Period of each time (days); P at or after the horizon."""
        return self.funnel.calendar.period_or_after(t)

    def drain(self) -> None:
        """Process the queues until every lead has closed or outlived the horizon."""
        while any(self.queues):
            for s in range(self.stages):
                if self.queues[s]:
                    stays = _Stays.join(self.queues[s])
                    self.queues[s] = []
                    visit = stays.visits[:, s] if self.loops else None
                    slot = self.draws.outcome(s, stays.rc, stays.key, visit)
                    days = self.draws.duration(s, slot, stays.rc, stays.key, visit)
                    slot, days = self.draws.close(s, slot, days)
                    self.settle(s, stays, slot, days, opening=False)

    def settle(self, s: int, stays: _Stays, slot, days, *, opening: bool) -> None:
        """Book the stays of stage ``s`` and queue those moving on to other stages."""
        periods, width = self.periods, self.periods + 1
        t_out = stays.t_in + days
        p_out = self.period(t_out)
        cell_in = stays.rc * width + stays.p_in
        size = self.cells * width
        started = np.bincount(cell_in, minlength=size).reshape(self.cells, width)
        self.started[s] += started
        if opening:
            self.opening[s] += started
        else:
            days_in = np.bincount(cell_in, weights=days, minlength=size)
            self.stay_days[s] += days_in.reshape(self.cells, width)
        targets = self.targets[s]
        kinds = len(targets) + 1  # the outcome slots, and "still open at the horizon"
        code = np.where(p_out < periods, slot, kinds - 1)
        counts = np.bincount(
            (stays.rc * width + p_out) * kinds + code, minlength=size * kinds
        ).reshape(self.cells, width, kinds)
        self.ended[s] += counts.sum(axis=2)
        for k, target in enumerate(targets):
            if target == self.funnel.lost:
                self.lost += counts[:, :periods, k]
                continue
            if target == self.funnel.silent:
                self.silent += counts[:, :periods, k]
                self.silent_by_stage[s] += counts[:, :periods, k]
                continue
            index = np.flatnonzero(code == k)
            if index.size == 0:
                continue
            if target == self.funnel.won:
                self.won += counts[:, :periods, k]
                self._book_won(stays, index, t_out[index], p_out[index])
                continue
            moving = stays.take(index)
            moving.t_in = t_out[index]
            moving.p_in = p_out[index]
            if self.loops:  # the stay just ended counts as a visit of stage s
                moving.visits[:, s] += 1
            self.queues[target].append(moving)

    def _book_won(self, stays: _Stays, index, closed_at, period) -> None:
        rc = stays.rc[index]
        where = rc * self.periods + period
        key = stays.key[index]
        if stays.value is None:
            value = self.draws.deal_value(rc, key)
        else:
            value = stays.value[index]
            unknown = np.isnan(value)
            if unknown.any():
                value[unknown] = self.draws.deal_value(rc[unknown], key[unknown])
        _add(self.revenue, where, value)
        if self.funnel.repeat is not None:
            self.won_parts.append((rc, closed_at, key))
        born = stays.born[index]
        new = ~np.isnan(born)
        if new.any():
            _add(self.cycle_days, where[new], closed_at[new] - born[new])
            _add(self.cycle_count, where[new])

    def finish(self) -> Tally:
        reps, c, p, s = self.reps, self.channels, self.periods, self.stages

        def by_channel(a: np.ndarray) -> np.ndarray:  # (cells, P) -> (R, P, C)
            return a.reshape(reps, c, p).transpose(0, 2, 1)

        def by_stage(a: np.ndarray) -> np.ndarray:  # (S, cells, P+1) -> (R, P, S)
            return a.reshape(s, reps, c, p + 1).sum(axis=2).transpose(1, 2, 0)[:, :p]

        # open at the end of period p: stays begun before its end and ended after it
        stock = np.cumsum(self.started, axis=2) - np.cumsum(self.ended, axis=2)
        customers = None
        if self.funnel.repeat is not None:
            parts = self.won_parts or [(np.zeros(0, np.intp), np.zeros(0), np.zeros(0, np.uint64))]
            rc, t, key = (np.concatenate([w[j] for w in parts]) for j in range(3))
            customers = Cohort(rc // c, rc % c, t, key.astype(np.uint64))
        return Tally(
            customers=customers,
            leads=by_channel(self.leads),
            won=by_channel(self.won),
            lost=by_channel(self.lost),
            revenue=by_channel(self.revenue),
            cycle_days=by_channel(self.cycle_days),
            cycle_count=by_channel(self.cycle_count),
            entered=by_stage(self.started - self.opening),
            stay_days=by_stage(self.stay_days),
            open=by_stage(stock),
            silent_lost=by_channel(self.silent),
            silent_lost_by_stage=self.silent_by_stage.reshape(s, reps, c, p)
            .sum(axis=2)
            .transpose(1, 2, 0),
        )


def _add(target: np.ndarray, flat: np.ndarray, weights=None) -> None:
    """target.flat[flat] += weights (or 1), with repeated indices adding up."""
    target += np.bincount(flat, weights=weights, minlength=target.size).reshape(target.shape)


def simulate(funnel: Funnel, rep_keys: np.ndarray) -> Tally:
    """Simulate one replication per key; returns their tally (rows in key order)."""
    reps, n_stages, n_channels = len(rep_keys), len(funnel.stages), len(funnel.channels)
    inputs = draw_inputs(funnel, rep_keys)
    draws = StayDraws(funnel, inputs)
    run = _Run(funnel, draws, reps)

    def visits(n: int):
        return np.zeros((n, n_stages), dtype=np.int64) if run.loops else None

    opening, entry = opening_leads(funnel, rep_keys)
    for s in np.unique(funnel.open_stage[entry]).tolist():
        index = np.flatnonzero(funnel.open_stage[entry] == s)
        part = opening.take(index)
        slot, days = draws.opening(s, part, funnel.open_age[entry[index]])
        stays = _Stays(
            part.rep * n_channels + part.channel,
            np.zeros(index.size),
            np.zeros(index.size, dtype=np.intp),
            part.key,
            np.full(index.size, np.nan),
            funnel.open_value[entry[index]] if run.known_values else None,
            visits(index.size),
        )
        run.settle(s, stays, slot, days, opening=True)

    for periods in arrival_groups(funnel):
        new = arrivals(funnel, rep_keys, inputs.rates, periods)
        rc = new.rep * n_channels + new.channel
        _add(run.leads, rc * funnel.calendar.periods + new.period)
        value = np.full(len(new), np.nan) if run.known_values else None
        stays = _Stays(rc, new.t, new.period, new.key, new.t, value, visits(len(new)))
        run.queues[0].append(stays)
        run.drain()
    return run.finish()


LEADS_PER_GROUP = 250_000
"""Expected new leads of one replication simulated together: a replication with more is
simulated a few months at a time, so memory does not grow with the number of leads."""


def arrival_groups(funnel: Funnel) -> list[range]:
    """Consecutive periods whose expected new leads (per replication) stay within
    :data:`LEADS_PER_GROUP`; usually one group, the whole horizon. The groups depend on
    the funnel only (not on the batch), so the numbers do not depend on the workers."""
    from funnelsim.analytic import expected_leads

    per_period = expected_leads(funnel).sum(axis=0)
    groups, first, total = [], 0, 0.0
    for p, leads in enumerate(per_period.tolist()):
        if p > first and total + leads > LEADS_PER_GROUP:
            groups.append(range(first, p))
            first, total = p, 0.0
        total += leads
    groups.append(range(first, funnel.calendar.periods))
    return groups
